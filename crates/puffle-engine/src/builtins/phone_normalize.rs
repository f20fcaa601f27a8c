//! `phone_normalize` (any subject): a phone number in E.164, with its country and whether the
//! numbering plan says it can exist (libphonenumber's metadata, via the `phonenumber` crate).
//!
//! Reads `input.phone` when given (it wins), else the lead's first phone contact (a contact type
//! containing `phone`, or `mobile`, `cell`, `tel`). A number without a `+country` prefix is read
//! in the region of `location.country` (an ISO alpha-2 or alpha-3 code or a common country name);
//! without one it cannot be parsed. A number that parses but does not exist in its plan still
//! gets its E.164 form, with `valid: false`; one that does not parse at all, or whose E.164 form
//! would not read back as itself, gets nulls.

use std::collections::HashMap;
use std::panic;
use std::str::FromStr;
use std::sync::LazyLock;

use phonenumber::country::Id;
use phonenumber::Mode;
use puffle_domain::lead::Lead;
use serde_json::{json, Value};

use super::{input_str, nullable_string, object_schema};
use crate::Outcome;

pub fn run(lead: &Lead, input: &Value) -> Outcome {
    let Some(raw) = input_str(input, "phone").or_else(|| phone_contact(lead)) else {
        return Outcome::MissingInput;
    };
    let region = lead.fields.location.country.as_deref().and_then(region);
    Outcome::Hit(normalize(raw, region))
}

pub fn input_schema() -> Value {
    object_schema(
        json!({"phone": {"type": "string", "description": "Normalized instead of the lead's phone."}}),
        &[],
        false,
    )
}

pub fn output_schema() -> Value {
    object_schema(
        json!({"e164": nullable_string(), "country": nullable_string(), "valid": {"type": "boolean"}}),
        &["e164", "country", "valid"],
        true,
    )
}

fn phone_contact(lead: &Lead) -> Option<&str> {
    let is_phone = |kind: &str| {
        let kind = kind.trim().to_lowercase();
        kind.contains("phone") || matches!(kind.as_str(), "mobile" | "cell" | "tel")
    };
    lead.fields
        .contacts
        .iter()
        .filter(|c| c.kind.as_deref().is_some_and(is_phone))
        .map(|c| c.value.trim())
        .find(|v| !v.is_empty())
}

/// Longer than any phone number with an extension; longer input is not parsed at all.
const MAX_PHONE_LEN: usize = 64;

fn normalize(raw: &str, region: Option<Id>) -> Value {
    // The crate has panicked on odd input before (e.g. its issues #32 and #43, since fixed):
    // a panic here must not take the worker down, so it counts as "does not parse". This
    // relies on the workspace building with `panic = "unwind"` (the default).
    // A number in international form carries its country: read it without the lead's region,
    // which the crate would otherwise let change it (it reads "+39010000" as "+3910000" in DE).
    let region = region.filter(|_| !raw.trim_start().starts_with('+'));
    let parsed = (raw.len() <= MAX_PHONE_LEN)
        .then(|| {
            panic::catch_unwind(|| {
                let number = phonenumber::parse(region, raw).ok()?;
                let e164 = number.format().mode(Mode::E164).to_string();
                // For some impossible numbers (e.g. "+4901" read in Angola) the crate prints a
                // "+…" string that does not read back as itself, with or without the region;
                // that is no E.164 form.
                for reader in [None, region] {
                    let again = phonenumber::parse(reader, &e164).ok()?;
                    if again.format().mode(Mode::E164).to_string() != e164 {
                        return None;
                    }
                }
                let country = number.country().id().map(|id| id.as_ref().to_string());
                Some((e164, country, number.is_valid()))
            })
        })
        .and_then(Result::ok)
        .flatten();
    match parsed {
        Some((e164, country, valid)) => json!({"e164": e164, "country": country, "valid": valid}),
        None => json!({"e164": null, "country": null, "valid": false}),
    }
}

/// `location.country` as a phone region: a name or alpha-3 code from the shipped table, else an
/// alpha-2 code the phone metadata knows. Unknown → no region.
fn region(country: &str) -> Option<Id> {
    let key = country.trim().to_lowercase();
    let code = match COUNTRY_NAMES.get(key.as_str()) {
        Some(code) => code.to_string(),
        None => key.to_uppercase(),
    };
    (code.len() == 2)
        .then(|| Id::from_str(&code).ok())
        .flatten()
}

/// `name → alpha-2`, from `data/countries.txt` (`AA|name|name…`).
static COUNTRY_NAMES: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
    include_str!("../../data/countries.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('|'))
        .flat_map(|(code, names)| {
            names
                .split('|')
                .map(move |n| (n.trim().to_lowercase(), code))
        })
        .collect()
});

#[cfg(test)]
mod tests {
    use super::super::test_support::{lead, person};
    use super::*;
    use proptest::prelude::*;
    use puffle_domain::LeadType;

    fn normalized(phone: &str, country: Option<&str>) -> Value {
        let lead = person(json!({"contacts": [{"type": "phone", "value": phone}],
                                 "location": {"country": country}}));
        match run(&lead, &json!({})) {
            Outcome::Hit(v) => v,
            other => panic!("{phone:?}: expected a hit, got {other:?}"),
        }
    }

    #[test]
    fn international_numbers_need_no_region() {
        assert_eq!(
            normalized("+1 (650) 253-0000", None),
            json!({"e164": "+16502530000", "country": "US", "valid": true})
        );
        assert_eq!(
            normalized("+44 20 7946 0958", None),
            json!({"e164": "+442079460958", "country": "GB", "valid": true})
        );
        assert_eq!(
            normalized("+49 30 901820", Some("France")),
            json!({"e164": "+4930901820", "country": "DE", "valid": true})
        );
    }

    #[test]
    fn national_numbers_use_the_leads_country() {
        for country in ["DE", "de", "Germany", "deutschland", "DEU", " germany "] {
            assert_eq!(
                normalized("030 901820", Some(country)),
                json!({"e164": "+4930901820", "country": "DE", "valid": true}),
                "{country}"
            );
        }
        for country in ["US", "USA", "United States", "united states of america"] {
            assert_eq!(
                normalized("(650) 253-0000", Some(country))["e164"],
                "+16502530000"
            );
        }
        for country in ["UK", "United Kingdom", "GB", "England"] {
            assert_eq!(normalized("020 7946 0958", Some(country))["country"], "GB");
        }
        assert_eq!(
            normalized("01 42 68 53 00", Some("France"))["e164"],
            "+33142685300"
        );
    }

    #[test]
    fn without_a_usable_region_a_national_number_does_not_parse() {
        let nothing = json!({"e164": null, "country": null, "valid": false});
        for country in [None, Some("Atlantis"), Some("XX"), Some(""), Some("U")] {
            assert_eq!(normalized("030 901820", country), nothing, "{country:?}");
        }
    }

    #[test]
    fn parseable_but_impossible_numbers_are_not_valid() {
        let v = normalized("+1 555 0100", None);
        assert_eq!(v["valid"], false);
        assert_eq!(v["e164"], "+15550100");
    }

    #[test]
    fn an_e164_form_always_reads_back_as_itself() {
        // Found by the idempotence property: "+4901" read in Angola.
        let angola = Id::from_str("AO").ok();
        let v = normalize("+4901 ", angola);
        if let Some(e164) = v["e164"].as_str() {
            assert_eq!(normalize(e164, angola)["e164"], e164, "{v}");
            assert_eq!(normalize(e164, None)["e164"], e164, "{v}");
        }
    }

    #[test]
    fn garbage_is_a_hit_with_nulls() {
        let nothing = json!({"e164": null, "country": null, "valid": false});
        for junk in [
            "call me",
            "++",
            "+",
            "12",
            "🦀📞",
            "  2 22#:",
            &"9".repeat(65),
            &"1".repeat(10_000),
        ] {
            assert_eq!(normalized(junk, Some("US")), nothing, "{junk:?}");
        }
        // The input of the crate's old panic (its issue #32): parsed or not, no panic.
        let v = normalized("003-836-4618x3001", Some("CH"));
        assert!(v["valid"].is_boolean());
    }

    #[test]
    fn input_phone_wins_and_phone_like_contact_types_are_read() {
        let lead = person(json!({"contacts": [
            {"type": "email", "value": "ann@acme.com"},
            {"type": "fax", "value": "+44 20 7946 0000"},
            {"type": "Mobile", "value": "+44 7700 900123"}]}));
        let e164 = |input: Value| match run(&lead, &input) {
            Outcome::Hit(v) => v["e164"].clone(),
            other => panic!("expected a hit, got {other:?}"),
        };
        assert_eq!(e164(json!({})), "+447700900123");
        assert_eq!(e164(json!({"phone": "+1 650 253 0000"})), "+16502530000");
        assert_eq!(e164(json!({"phone": 16502530000_u64})), "+447700900123");
        for kind in [
            "phone",
            "work_phone",
            "mobile_phone",
            "cell",
            "tel",
            "TELEPHONE",
        ] {
            let l = lead_with(kind);
            assert!(matches!(run(&l, &json!({})), Outcome::Hit(_)), "{kind}");
        }
        fn lead_with(kind: &str) -> Lead {
            person(json!({"contacts": [{"type": kind, "value": "+1 650 253 0000"}]}))
        }
    }

    #[test]
    fn no_phone_is_missing_input() {
        let company = lead(
            LeadType::Company,
            json!({"contacts": [{"type": "fax", "value": "+1 650 253 0000"},
                                {"type": "phone", "value": "  "},
                                {"value": "+1 650 253 0000"}]}),
        );
        assert_eq!(run(&company, &json!({})), Outcome::MissingInput);
        assert_eq!(
            run(&company, &json!({"phone": ["+1"]})),
            Outcome::MissingInput
        );
    }

    #[test]
    fn every_shipped_country_maps_to_a_known_region() {
        for (name, code) in COUNTRY_NAMES.iter() {
            assert!(Id::from_str(code).is_ok(), "{name} → {code}");
            assert_eq!(
                region(name).map(|id| id.as_ref().to_string()).as_deref(),
                Some(*code)
            );
        }
        assert!(COUNTRY_NAMES.len() > 200);
    }

    /// Found by `normalizing_is_idempotent`: an Italian-plan number keeps its leading zero in
    /// E.164, and reading that E.164 form with another region must not drop it.
    #[test]
    fn an_international_number_ignores_the_region() {
        let v = normalize("010000", Id::from_str("VA").ok());
        assert_eq!(v["e164"], "+39010000");
        for region in ["DE", "US", "VA", "IT"] {
            assert_eq!(
                normalize("+39010000", Id::from_str(region).ok())["e164"],
                v["e164"]
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(phone in "\\PC{0,40}", country in "\\PC{0,12}") {
            let v = normalize(&phone, region(&country));
            if let Some(e164) = v["e164"].as_str() {
                prop_assert!(e164.starts_with('+'));
                prop_assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()));
            } else {
                prop_assert_eq!(&v, &json!({"e164": null, "country": null, "valid": false}));
            }
        }

        #[test]
        fn normalizing_is_idempotent(phone in "[+0-9 ()-]{0,20}", region_code in "[A-Z]{2}") {
            let v = normalize(&phone, Id::from_str(&region_code).ok());
            if let Some(e164) = v["e164"].as_str() {
                // An E.164 number needs no region: it normalizes to itself without one, in the
                // region it was read in, and (when it exists) anywhere else.
                let again = normalize(e164, None);
                prop_assert_eq!(&again["e164"], &v["e164"]);
                prop_assert_eq!(&again["valid"], &v["valid"]);
                let same = normalize(e164, Id::from_str(&region_code).ok());
                prop_assert_eq!(&same["e164"], &v["e164"]);
                if v["valid"] == true {
                    let elsewhere = normalize(e164, Id::from_str("DE").ok());
                    prop_assert_eq!(&elsewhere["e164"], &v["e164"]);
                }
            }
        }

        #[test]
        fn never_panics_on_digit_soup(phone in "[+0-9 ()x#*.-]{0,30}", region_code in "[A-Z]{2}") {
            let v = normalize(&phone, Id::from_str(&region_code).ok());
            prop_assert!(v["valid"].is_boolean());
        }
    }
}
