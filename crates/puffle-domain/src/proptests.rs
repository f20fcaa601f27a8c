//! Property tests of the parsers a user feeds directly: lead input (names, emails, domains),
//! scope filters, and ids used as cursors. Properties that can fail: no panic on any input,
//! normalization is idempotent, serialization round-trips, `neq` is the negation of `eq`.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::lead::{normalize_email, parse_domain, Lead, LeadInput};
use crate::run::{Condition, Filter, FilterOp, Scope};

/// Arbitrary JSON, a few levels deep, with the strings users type.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}|type|name|value|where|op|field", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A lead input object whose fields are arbitrary text in the places users fill.
fn lead_json() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("person"), Just("company")],
        "\\PC{0,20}",
        "\\PC{0,20}",
        "[a-zA-Z0-9.@ _-]{0,20}",
        "[a-zA-Z0-9.:/ -]{0,20}",
        "\\PC{0,10}",
    )
        .prop_map(|(kind, name, title, email, domain, attr)| {
            json!({"type": kind, "name": name, "title": title, "domain": domain,
                   "company": {"name": title, "domain": domain},
                   "location": name, "industry": attr,
                   "contacts": [{"value": email}], "attributes": {"k": attr}})
        })
}

fn lead_from(v: Value) -> Option<Lead> {
    let new = serde_json::from_value::<LeadInput>(v)
        .ok()?
        .into_new_lead(crate::new_id)
        .ok()?;
    Some(Lead {
        id: crate::new_id(),
        kind: new.kind,
        fields: new.fields,
        attributes: new.attributes,
        lists: vec![],
        created_at: String::new(),
        updated_at: String::new(),
    })
}

fn filter_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("type".to_string()),
        Just("name".to_string()),
        Just("title".to_string()),
        Just("company".to_string()),
        Just("domain".to_string()),
        Just("email".to_string()),
        Just("industry".to_string()),
        Just("location".to_string()),
        "attributes\\.[a-z]{0,3}",
        "\\PC{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn lead_input_never_panics(v in any_json()) {
        if let Ok(input) = serde_json::from_value::<LeadInput>(v) {
            let _ = input.into_new_lead(crate::new_id);
        }
    }

    #[test]
    fn typed_lead_input_never_panics(v in lead_json()) {
        let _ = lead_from(v);
    }

    #[test]
    fn email_normalization_is_idempotent(s in "\\PC{0,30}|[a-zA-Z0-9._%+-]{1,12}@[a-zA-Z0-9-]{1,10}\\.[a-zA-Z]{2,5}") {
        if let Some(email) = normalize_email(&s) {
            prop_assert_eq!(normalize_email(&email), Some(email.clone()));
            prop_assert!(email.contains('@'));
            prop_assert_eq!(email.trim(), email.as_str());
        }
    }

    #[test]
    fn domain_parsing_is_idempotent(s in "\\PC{0,30}|(https?://)?(www\\.)?[a-zA-Z0-9-]{1,10}\\.[a-z]{2,4}(:[0-9]{1,4})?(/[a-z]{0,5})?") {
        if let Some(domain) = parse_domain(&s) {
            prop_assert_eq!(parse_domain(&domain), Some(domain.clone()));
            prop_assert!(domain.contains('.'));
            prop_assert_eq!(domain.to_lowercase(), domain.clone());
        }
    }

    #[test]
    fn filters_parse_validate_and_match_without_panic(v in any_json(), lead in lead_json()) {
        if let Ok(filter) = serde_json::from_value::<Filter>(v) {
            if filter.validate().is_ok() {
                if let Some(lead) = lead_from(lead) {
                    let _ = filter.matches(&lead);
                }
            }
            // What parsed serializes back to the same filter.
            let again: Filter = serde_json::from_value(serde_json::to_value(&filter).unwrap()).unwrap();
            prop_assert_eq!(again, filter);
        }
    }

    #[test]
    fn neq_is_the_negation_of_eq(field in filter_field(), value in "\\PC{0,8}", lead in lead_json()) {
        let Some(lead) = lead_from(lead) else { return Ok(()) };
        let cond = |op| Filter {
            conditions: vec![Condition { field: field.clone(), op, value: Some(json!(value)) }],
            limit: None,
        };
        let eq = cond(FilterOp::Eq);
        if eq.validate().is_ok() {
            prop_assert_eq!(cond(FilterOp::Neq).matches(&lead), !eq.matches(&lead));
            prop_assert_eq!(
                cond(FilterOp::NotExists).matches(&lead),
                !cond(FilterOp::Exists).matches(&lead)
            );
            // Equal implies contained.
            if eq.matches(&lead) {
                prop_assert!(cond(FilterOp::Contains).matches(&lead));
            }
        }
    }

    #[test]
    fn scopes_never_panic(v in any_json()) {
        let _ = serde_json::from_value::<Scope>(v);
    }

    #[test]
    fn only_minted_ids_are_cursors(s in "\\PC{0,40}|[0-9a-fA-F-]{36}") {
        if crate::is_id(&s) {
            prop_assert_eq!(s.len(), 36);
            prop_assert_eq!(s.to_lowercase(), s);
        }
    }

    #[test]
    fn minted_ids_are_cursors_in_creation_order(_n in 0..8u8) {
        let a = crate::new_id();
        let b = crate::new_id();
        prop_assert!(crate::is_id(&a) && crate::is_id(&b));
        prop_assert!(a < b, "{} then {}", a, b);
    }
}
