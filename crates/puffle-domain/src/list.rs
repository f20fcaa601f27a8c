//! Lists: named groups of leads with a lead type that members must respect.

use serde::{Deserialize, Serialize};

use crate::LeadType;

/// The name of the protected list every lead of a workspace belongs to.
pub const ALL_LIST_NAME: &str = "all";
pub const DEFAULT_LIST_NAME: &str = "Untitled List";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListLeadType {
    Person,
    Company,
    Mixed,
}

impl ListLeadType {
    pub fn as_str(self) -> &'static str {
        match self {
            ListLeadType::Person => "person",
            ListLeadType::Company => "company",
            ListLeadType::Mixed => "mixed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "person" => Some(ListLeadType::Person),
            "company" => Some(ListLeadType::Company),
            "mixed" => Some(ListLeadType::Mixed),
            _ => None,
        }
    }

    /// Whether a lead of this type may be a member.
    pub fn admits(self, lead: LeadType) -> bool {
        match self {
            ListLeadType::Mixed => true,
            ListLeadType::Person => lead == LeadType::Person,
            ListLeadType::Company => lead == LeadType::Company,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct List {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub lead_type: ListLeadType,
    pub lead_count: i64,
    pub person_count: i64,
    pub company_count: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl List {
    /// Whether current members would all still be admitted under `lead_type`.
    pub fn members_fit(&self, lead_type: ListLeadType) -> bool {
        (self.person_count == 0 || lead_type.admits(LeadType::Person))
            && (self.company_count == 0 || lead_type.admits(LeadType::Company))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_types_admit_their_members() {
        assert!(ListLeadType::Mixed.admits(LeadType::Company));
        assert!(ListLeadType::Person.admits(LeadType::Person));
        assert!(!ListLeadType::Person.admits(LeadType::Company));
        let list = List {
            id: String::new(),
            name: "x".into(),
            description: None,
            lead_type: ListLeadType::Mixed,
            lead_count: 2,
            person_count: 2,
            company_count: 0,
            created_at: String::new(),
            updated_at: String::new(),
        };
        assert!(list.members_fit(ListLeadType::Person));
        assert!(!list.members_fit(ListLeadType::Company));
    }
}
