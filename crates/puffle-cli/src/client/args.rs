//! Value parsers for flags that carry JSON. Clap reports their errors as usage errors (exit 2)
//! naming the flag, before any request is made.

use serde_json::Value;

/// Any JSON value.
pub fn json_value(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON ({e})"))
}

/// A JSON array.
pub fn json_array(s: &str) -> Result<Value, String> {
    match json_value(s)? {
        v @ Value::Array(_) => Ok(v),
        _ => Err("expected a JSON array, e.g. [\"…\"]".into()),
    }
}

/// A JSON object.
pub fn json_object(s: &str) -> Result<Value, String> {
    match json_value(s)? {
        v @ Value::Object(_) => Ok(v),
        _ => Err("expected a JSON object, e.g. {\"key\": \"value\"}".into()),
    }
}

/// A JSON object when it looks like one (starts with `{`), otherwise the plain string as is.
pub fn json_object_or_string(s: &str) -> Result<Value, String> {
    if s.trim_start().starts_with('{') {
        json_object(s)
    } else {
        Ok(Value::String(s.to_string()))
    }
}

/// An integer when it is one, otherwise the plain string.
pub fn string_or_integer(s: &str) -> Result<Value, String> {
    Ok(match s.trim().parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::String(s.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parsers_accept_their_kind_and_reject_others() {
        assert_eq!(json_array(r#"["a"]"#), Ok(json!(["a"])));
        assert!(json_array(r#"{"a":1}"#).is_err());
        assert!(json_array("[1,").is_err());
        assert_eq!(json_object(r#"{"a":null}"#), Ok(json!({"a": null})));
        assert!(json_object("[]").is_err());
        assert_eq!(
            json_object_or_string("Ada Lovelace"),
            Ok(json!("Ada Lovelace"))
        );
        assert_eq!(
            json_object_or_string(r#"{"full":"Ada"}"#),
            Ok(json!({"full": "Ada"}))
        );
        assert!(json_object_or_string("{full").is_err());
        assert_eq!(string_or_integer("250"), Ok(json!(250)));
        assert_eq!(string_or_integer("51-200"), Ok(json!("51-200")));
    }
}
