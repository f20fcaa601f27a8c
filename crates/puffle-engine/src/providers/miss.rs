//! `miss_when`: the conditions under which a provider's 2xx answer is a miss although it is not
//! null at the result pointer. Vendors answer "not found" with 200 and a stub, a low score or a
//! status field; each rule names a JSON Pointer into the answer (from its root) and one test.
//!
//! The rules of a step are OR-ed: the answer is a miss when any rule matches.
//!
//! | test              | matches when the value at `pointer` …                                   |
//! |-------------------|--------------------------------------------------------------------------|
//! | `equals = V`      | equals `V` (numbers compare by value: `1` equals `1.0`)                  |
//! | `not_equals = V`  | is absent, null, or anything other than `V`                              |
//! | `below = N`       | is a number smaller than `N` (a non-number does not match)               |
//! | `above = N`       | is a number greater than `N`                                             |
//! | `missing = true`  | is absent or null                                                        |
//! | `empty = true`    | is absent, null, `""` (after trimming), `[]` or `{}`                     |

use serde::Deserialize;
use serde_json::Value;

/// One test of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Equals(Value),
    NotEquals(Value),
    Below(f64),
    Above(f64),
    Missing,
    Empty,
}

/// A pointer and the test its value is put to.
#[derive(Debug, Clone, PartialEq)]
pub struct MissRule {
    pub pointer: String,
    pub condition: Condition,
}

/// A rule as written in `puffle.toml`: exactly one test besides `pointer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMissRule {
    pub pointer: String,
    pub equals: Option<Value>,
    pub not_equals: Option<Value>,
    pub below: Option<f64>,
    pub above: Option<f64>,
    pub missing: Option<bool>,
    pub empty: Option<bool>,
}

impl RawMissRule {
    /// The rule, or why it is not one (the message names the field).
    pub fn check(self) -> Result<MissRule, String> {
        if !super::http::is_json_pointer(&self.pointer) {
            return Err(format!(
                "pointer: {:?} is not a JSON Pointer (RFC 6901), e.g. \"/data/email\"",
                self.pointer
            ));
        }
        let mut tests = Vec::new();
        if let Some(v) = self.equals {
            tests.push(Condition::Equals(v));
        }
        if let Some(v) = self.not_equals {
            tests.push(Condition::NotEquals(v));
        }
        if let Some(n) = self.below {
            tests.push(Condition::Below(n));
        }
        if let Some(n) = self.above {
            tests.push(Condition::Above(n));
        }
        for (flag, condition, name) in [
            (self.missing, Condition::Missing, "missing"),
            (self.empty, Condition::Empty, "empty"),
        ] {
            match flag {
                Some(true) => tests.push(condition),
                Some(false) => {
                    return Err(format!("{name}: only `{name} = true` is meaningful"));
                }
                None => {}
            }
        }
        if tests.len() != 1 {
            return Err(
                "needs exactly one of equals, not_equals, below, above, missing, empty".into(),
            );
        }
        Ok(MissRule {
            pointer: self.pointer,
            condition: tests.remove(0),
        })
    }
}

impl MissRule {
    /// Whether `answer` is a miss by this rule.
    pub fn matches(&self, answer: &Value) -> bool {
        let value = answer.pointer(&self.pointer).filter(|v| !v.is_null());
        match &self.condition {
            Condition::Equals(expected) => value.is_some_and(|v| same(v, expected)),
            Condition::NotEquals(expected) => !value.is_some_and(|v| same(v, expected)),
            Condition::Below(n) => value.and_then(Value::as_f64).is_some_and(|v| v < *n),
            Condition::Above(n) => value.and_then(Value::as_f64).is_some_and(|v| v > *n),
            Condition::Missing => value.is_none(),
            Condition::Empty => match value {
                None => true,
                Some(Value::String(s)) => s.trim().is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                Some(_) => false,
            },
        }
    }
}

/// Whether any rule makes `answer` a miss.
pub fn is_miss(rules: &[MissRule], answer: &Value) -> bool {
    rules.iter().any(|r| r.matches(answer))
}

/// JSON equality, numbers by value (TOML `50` and a vendor's `50.0` are the same score).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(toml_text: &str) -> Result<MissRule, String> {
        let raw: RawMissRule = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        raw.check()
    }

    #[test]
    fn each_test_matches_what_it_says() {
        let answer = json!({
            "score": 42, "status": "not_found", "email": "", "tags": [], "person": {},
            "name": "Ada", "ratio": 0.5, "gone": null
        });
        let cases = [
            ("pointer = \"/score\"\nbelow = 50", true),
            ("pointer = \"/score\"\nbelow = 42", false),
            ("pointer = \"/score\"\nabove = 40", true),
            ("pointer = \"/ratio\"\nabove = 0.5", false),
            ("pointer = \"/name\"\nbelow = 50", false),
            ("pointer = \"/absent\"\nbelow = 50", false),
            ("pointer = \"/status\"\nequals = \"not_found\"", true),
            ("pointer = \"/score\"\nequals = 42.0", true),
            ("pointer = \"/status\"\nequals = \"found\"", false),
            ("pointer = \"/status\"\nnot_equals = \"found\"", true),
            ("pointer = \"/status\"\nnot_equals = \"not_found\"", false),
            ("pointer = \"/absent\"\nnot_equals = \"found\"", true),
            ("pointer = \"/absent\"\nmissing = true", true),
            ("pointer = \"/gone\"\nmissing = true", true),
            ("pointer = \"/name\"\nmissing = true", false),
            ("pointer = \"/email\"\nempty = true", true),
            ("pointer = \"/tags\"\nempty = true", true),
            ("pointer = \"/person\"\nempty = true", true),
            ("pointer = \"/name\"\nempty = true", false),
            ("pointer = \"/score\"\nempty = true", false),
        ];
        for (text, expected) in cases {
            let r = rule(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.matches(&answer), expected, "{text}");
        }
    }

    #[test]
    fn rules_are_ored() {
        let rules = vec![
            rule("pointer = \"/score\"\nbelow = 50").unwrap(),
            rule("pointer = \"/status\"\nequals = \"not_found\"").unwrap(),
        ];
        assert!(is_miss(
            &rules,
            &json!({"score": 90, "status": "not_found"})
        ));
        assert!(is_miss(&rules, &json!({"score": 10, "status": "ok"})));
        assert!(!is_miss(&rules, &json!({"score": 90, "status": "ok"})));
        assert!(!is_miss(&[], &json!(null)));
    }

    #[test]
    fn a_rule_has_one_test_and_a_valid_pointer() {
        assert!(rule("pointer = \"/a\"")
            .unwrap_err()
            .contains("exactly one"));
        assert!(rule("pointer = \"/a\"\nbelow = 1\nabove = 2")
            .unwrap_err()
            .contains("exactly one"));
        assert!(rule("pointer = \"a\"\nmissing = true")
            .unwrap_err()
            .starts_with("pointer:"));
        assert!(rule("pointer = \"/a\"\nmissing = false")
            .unwrap_err()
            .starts_with("missing:"));
        assert!(rule("pointer = \"/a\"\nsmaller = 3").is_err());
    }
}
