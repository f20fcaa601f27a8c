//! Enrichment runs and their items: statuses, legal transitions, scopes and filters.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lead::Lead;
use crate::{Invalid, LeadType};

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            /// The accepted spellings, for error messages.
            pub fn choices() -> String {
                [$($text),+].join(", ")
            }
        }
    };
}

string_enum!(
    /// `pending` (accepted) → `running` → `completed` | `failed` | `cancelled`.
    RunStatus {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

string_enum!(
    /// `pending → running → completed | failed`, `pending → skipped`, `running → pending` (retry).
    ItemStatus {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Skipped => "skipped",
        Failed => "failed",
    }
);

string_enum!(
    SkipReason {
        RunCancelled => "run_cancelled",
        RunFailed => "run_failed",
        MissingInput => "missing_input",
        SubjectMismatch => "subject_mismatch",
        AlreadyHasValue => "already_has_value",
        LeadDeleted => "lead_deleted",
    }
);

string_enum!(RunMode { Persisted => "persisted", Preview => "preview" });
string_enum!(WritePolicy { Overwrite => "overwrite", FillEmpty => "fill_empty" });
string_enum!(OutputTarget { Lead => "lead", Membership => "membership" });
string_enum!(Subject { Person => "person", Company => "company", Any => "any" });

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    pub fn is_cancellable(self) -> bool {
        matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

impl ItemStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemStatus::Completed | ItemStatus::Skipped | ItemStatus::Failed
        )
    }
}

impl Subject {
    /// Whether a lead of this type is what the enrichment works on.
    pub fn admits(self, lead: LeadType) -> bool {
        match self {
            Subject::Any => true,
            Subject::Person => lead == LeadType::Person,
            Subject::Company => lead == LeadType::Company,
        }
    }
}

/// Item counts by status: exact at every moment, summing to the run's resolved count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pending: i64,
    pub running: i64,
    pub completed: i64,
    pub skipped: i64,
    pub failed: i64,
}

impl Counts {
    pub fn total(&self) -> i64 {
        self.pending + self.running + self.completed + self.skipped + self.failed
    }
}

/// The scope of a run as a client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Scope {
    #[serde(rename_all = "camelCase")]
    ExplicitLeads {
        lead_ids: Vec<String>,
        #[serde(default)]
        list_id: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    List { list_id: String },
    #[serde(rename_all = "camelCase")]
    FilteredList { list_id: String, filter: Filter },
}

impl Scope {
    pub fn type_name(&self) -> &'static str {
        match self {
            Scope::ExplicitLeads { .. } => "explicit_leads",
            Scope::List { .. } => "list",
            Scope::FilteredList { .. } => "filtered_list",
        }
    }

    pub fn list_id(&self) -> Option<&str> {
        match self {
            Scope::ExplicitLeads { list_id, .. } => list_id.as_deref(),
            Scope::List { list_id } | Scope::FilteredList { list_id, .. } => Some(list_id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(rename = "where", default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub field: String,
    pub op: FilterOp,
    #[serde(default)]
    pub value: Option<Value>,
}

string_enum!(FilterOp {
    Eq => "eq",
    Neq => "neq",
    Contains => "contains",
    Exists => "exists",
    NotExists => "not_exists",
});

/// The lead fields a filter may test.
const FILTER_FIELDS: &str =
    "type, name, title, company, domain, email, industry, location, attributes.<key>";

impl Filter {
    /// Check every condition names a known field and carries the value its op needs.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (i, c) in self.conditions.iter().enumerate() {
            let at = |f: &str| format!("scope.filter.where[{i}].{f}");
            let known = matches!(
                c.field.as_str(),
                "type"
                    | "name"
                    | "title"
                    | "company"
                    | "domain"
                    | "email"
                    | "industry"
                    | "location"
            ) || c
                .field
                .strip_prefix("attributes.")
                .is_some_and(|k| !k.is_empty());
            if !known {
                return Err(Invalid::new(
                    at("field"),
                    format!("must be one of {FILTER_FIELDS}, got {:?}", c.field),
                ));
            }
            let needs_value = matches!(c.op, FilterOp::Eq | FilterOp::Neq | FilterOp::Contains);
            match &c.value {
                None | Some(Value::Null) if needs_value => {
                    return Err(Invalid::new(
                        at("value"),
                        format!("is required with op {}", c.op.as_str()),
                    ))
                }
                Some(Value::Array(_) | Value::Object(_)) if c.op == FilterOp::Contains => {
                    return Err(Invalid::new(at("value"), "must be a string or a number"))
                }
                _ => {}
            }
        }
        if self.limit == Some(0) {
            return Err(Invalid::new("scope.filter.limit", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether `lead` satisfies every condition (AND).
    pub fn matches(&self, lead: &Lead) -> bool {
        self.conditions.iter().all(|c| c.matches(lead))
    }
}

impl Condition {
    fn matches(&self, lead: &Lead) -> bool {
        let values = field_values(lead, &self.field);
        let text = |v: &Value| match v {
            Value::String(s) => s.to_lowercase(),
            other => other.to_string().to_lowercase(),
        };
        let wanted = self.value.as_ref().map(text).unwrap_or_default();
        match self.op {
            FilterOp::Exists => !values.is_empty(),
            FilterOp::NotExists => values.is_empty(),
            FilterOp::Eq => values.iter().any(|v| text(v) == wanted),
            FilterOp::Neq => !values.iter().any(|v| text(v) == wanted),
            FilterOp::Contains => values.iter().any(|v| text(v).contains(&wanted)),
        }
    }
}

/// The non-empty values a filter field has on a lead (several for `email`, `domain`, `location`).
fn field_values(lead: &Lead, field: &str) -> Vec<Value> {
    let f = &lead.fields;
    let strings = |items: &[&Option<String>]| -> Vec<Value> {
        items
            .iter()
            .filter_map(|s| s.as_ref())
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.clone()))
            .collect()
    };
    match field {
        "type" => vec![Value::String(lead.kind.as_str().to_string())],
        "name" => strings(&[&f.name.full]),
        "title" => strings(&[&f.title]),
        "company" => strings(&[&f.company.name]),
        "domain" => strings(&[&f.domain, &f.company.domain]),
        "industry" => strings(&[&f.industry]),
        "location" => {
            let l = &f.location;
            strings(&[&l.raw, &l.city, &l.state, &l.country])
        }
        "email" => f
            .contacts
            .iter()
            .filter(|c| c.is_email())
            .map(|c| Value::String(c.value.clone()))
            .collect(),
        other => match other.strip_prefix("attributes.") {
            Some(key) => match lead.attributes.get(key) {
                None | Some(Value::Null) => vec![],
                Some(Value::String(s)) if s.is_empty() => vec![],
                Some(v) => vec![v.clone()],
            },
            None => vec![],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::LeadInput;
    use serde_json::json;

    fn lead(v: Value) -> Lead {
        let new = serde_json::from_value::<LeadInput>(v)
            .unwrap()
            .into_new_lead(crate::new_id)
            .unwrap();
        Lead {
            id: crate::new_id(),
            kind: new.kind,
            fields: new.fields,
            attributes: new.attributes,
            lists: vec![],
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn filter(v: Value) -> Filter {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn scopes_parse_by_type() {
        let s: Scope = serde_json::from_value(json!({"type": "list", "listId": "x"})).unwrap();
        assert_eq!(s.list_id(), Some("x"));
        let s: Scope =
            serde_json::from_value(json!({"type": "explicit_leads", "leadIds": ["a"]})).unwrap();
        assert_eq!(s.type_name(), "explicit_leads");
        assert!(serde_json::from_value::<Scope>(json!({"type": "everything"})).is_err());
        assert!(serde_json::from_value::<Scope>(json!({"type": "list"})).is_err());
    }

    #[test]
    fn filters_match_every_op() {
        let ann = lead(json!({"type": "person", "name": "Ann Lee", "title": "CTO",
            "contacts": [{"value": "ann@acme.com"}], "attributes": {"score": 7}}));
        let f = |v| filter(v).matches(&ann);
        assert!(f(
            json!({"where": [{"field": "title", "op": "eq", "value": "cto"}]})
        ));
        assert!(f(
            json!({"where": [{"field": "name", "op": "contains", "value": "LEE"}]})
        ));
        assert!(f(
            json!({"where": [{"field": "email", "op": "contains", "value": "acme"}]})
        ));
        assert!(f(
            json!({"where": [{"field": "attributes.score", "op": "eq", "value": 7}]})
        ));
        assert!(f(
            json!({"where": [{"field": "industry", "op": "not_exists"}]})
        ));
        assert!(f(
            json!({"where": [{"field": "type", "op": "neq", "value": "company"}]})
        ));
        assert!(!f(
            json!({"where": [{"field": "attributes.x", "op": "exists"}]})
        ));
        assert!(!f(json!({"where": [
            {"field": "title", "op": "eq", "value": "cto"},
            {"field": "title", "op": "eq", "value": "ceo"}
        ]})));
    }

    #[test]
    fn filters_are_validated() {
        let bad = filter(json!({"where": [{"field": "shoe_size", "op": "eq", "value": 1}]}));
        assert_eq!(
            bad.validate().unwrap_err().field,
            "scope.filter.where[0].field"
        );
        let bad = filter(json!({"where": [{"field": "title", "op": "eq"}]}));
        assert_eq!(
            bad.validate().unwrap_err().field,
            "scope.filter.where[0].value"
        );
        assert!(
            filter(json!({"where": [{"field": "attributes.k", "op": "exists"}]}))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn statuses_know_what_is_terminal() {
        assert!(RunStatus::Cancelled.is_terminal());
        assert!(RunStatus::Running.is_cancellable());
        assert!(!RunStatus::Completed.is_cancellable());
        assert_eq!(ItemStatus::parse("skipped"), Some(ItemStatus::Skipped));
        assert_eq!(ItemStatus::parse("done"), None);
        assert_eq!(SkipReason::RunCancelled.as_str(), "run_cancelled");
        assert!(Subject::Person.admits(LeadType::Person));
        assert!(!Subject::Company.admits(LeadType::Person));
    }
}
