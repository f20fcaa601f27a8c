//! Credit prices: the registry behind `GET /api/credits/config` and every charge.

use serde_json::{json, Value};

/// Credits a new workspace starts with (the free plan).
pub const FREE_PLAN_CREDITS: i64 = 1000;

/// A billable operation: its action id, label, price and the unit it is billed per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    pub id: &'static str,
    pub label: &'static str,
    pub credits: i64,
    pub billable_unit: &'static str,
    pub unit_label: &'static str,
    pub feature_group: &'static str,
}

/// Enrichment credit actions (the `costModel.creditAction` of catalog entries).
pub const OPERATIONS: &[Operation] = &[
    op("builtin", "Built-in enrichment", 0, "lead", "lead"),
    op("custom_http", "Custom HTTP enrichment", 1, "lead", "lead"),
    op("custom_ai", "Custom AI enrichment", 1, "lead", "lead"),
    op(
        "work_email_lookup",
        "Work email lookup",
        2,
        "provider_submission",
        "lookup",
    ),
];

const fn op(
    id: &'static str,
    label: &'static str,
    credits: i64,
    billable_unit: &'static str,
    unit_label: &'static str,
) -> Operation {
    Operation {
        id,
        label,
        credits,
        billable_unit,
        unit_label,
        feature_group: "enrichments",
    }
}

/// The hosted service's legacy per-unit price table, kept for clients that read `costs`.
pub const LEGACY_COSTS: &[(&str, i64)] = &[
    ("FIND_PERSON", 1),
    ("IMPORT_LEAD", 1),
    ("EMAIL_LOOKUP", 2),
    ("PHONE_LOOKUP", 8),
    ("LINKEDIN_PROFILE", 1),
    ("LINKEDIN_POSTS", 1),
    ("COMPANY_NEWS", 4),
    ("PERSON_NEWS", 4),
    ("HIRING_STATUS", 1),
    ("WEBSITE_ENRICHMENT", 1),
    ("SITE_CRAWL_ENRICHMENT", 4),
    ("CUSTOM_ENRICHMENT_AI", 1),
    ("CUSTOM_ENRICHMENT_WEB", 1),
    ("DEEP_RESEARCH", 40),
    ("AI_MESSAGE_GENERATION", 2),
    ("AGENT_SEARCH", 10),
    ("SEARCH_CONTINUE", 5),
];

/// The price table: operations from configuration override the defaults by id.
#[derive(Debug, Clone)]
pub struct Prices {
    overrides: Vec<(String, i64)>,
}

impl Default for Prices {
    fn default() -> Self {
        Prices::new(Vec::new())
    }
}

impl Prices {
    pub fn new(overrides: Vec<(String, i64)>) -> Self {
        Prices { overrides }
    }

    /// Credits per unit of `action` (an operation id or a legacy action name); `None` if unknown.
    pub fn price(&self, action: &str) -> Option<i64> {
        if let Some((_, c)) = self.overrides.iter().find(|(id, _)| id == action) {
            return Some(*c);
        }
        if let Some(op) = OPERATIONS.iter().find(|o| o.id == action) {
            return Some(op.credits);
        }
        LEGACY_COSTS
            .iter()
            .find(|(name, _)| *name == action)
            .map(|(_, c)| *c)
    }

    /// The body of `GET /api/credits/config`.
    pub fn config_document(&self) -> Value {
        let operations: serde_json::Map<String, Value> = OPERATIONS
            .iter()
            .map(|o| {
                let credits = self.price(o.id).unwrap_or(o.credits);
                (
                    o.id.to_string(),
                    json!({
                        "id": o.id, "label": o.label, "credits": credits,
                        "billableUnit": o.billable_unit, "unitLabel": o.unit_label,
                        "featureGroup": o.feature_group, "certainty": "maximum",
                    }),
                )
            })
            .collect();
        // Every action a client may price: ours, then the hosted service's legacy names.
        let costs: serde_json::Map<String, Value> = OPERATIONS
            .iter()
            .map(|o| (o.id, o.credits))
            .chain(LEGACY_COSTS.iter().copied())
            .map(|(name, c)| (name.to_string(), json!(self.price(name).unwrap_or(c))))
            .collect();
        json!({
            "registryVersion": "billing-registry:v1",
            "operations": operations,
            "plans": {
                "free": {"id": "free", "billingProductId": null, "credits": FREE_PLAN_CREDITS,
                         "display": {"name": "Free", "order": 1, "badge": null,
                                     "positioning": "Self-hosted: every workspace starts here"}}
            },
            "entitlements": {"keys": []},
            "legacyCreditActions": {},
            "costs": costs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_follow_spec_and_overrides() {
        let p = Prices::default();
        assert_eq!(p.price("builtin"), Some(0));
        assert_eq!(p.price("custom_http"), Some(1));
        assert_eq!(p.price("work_email_lookup"), Some(2));
        assert_eq!(p.price("DEEP_RESEARCH"), Some(40));
        assert_eq!(p.price("nope"), None);
        let p = Prices::new(vec![("custom_http".into(), 3)]);
        assert_eq!(p.price("custom_http"), Some(3));
        assert_eq!(
            p.config_document()["operations"]["custom_http"]["credits"],
            3
        );
    }
}
