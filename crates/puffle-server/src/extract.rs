//! Request extractors that answer bad input with the spec's envelope, naming the field.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::limits::{json_depth, JsonDepth};

/// A JSON body of type `T`. Malformed JSON, wrong types, unknown enum values and missing
/// fields are `400 invalid_request` whose message names the field; an oversize body is `413`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let max_depth = req.extensions().get::<JsonDepth>().map(|d| d.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(
                    "The request body is larger than this server accepts.".into(),
                )
            } else {
                ApiError::Invalid(format!("body: could not be read ({e})"))
            }
        })?;
        if let Some(max) = max_depth {
            if json_depth(&bytes) > max {
                return Err(ApiError::invalid(
                    "body",
                    format!("nests arrays and objects deeper than {max} levels"),
                ));
            }
        }
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("body", "a JSON body is required"));
    }
    // Two steps: syntax first (whole body, trailing garbage included), then shape, so that a
    // wrong type is always reported at its field rather than as a syntax error.
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("body", format!("is not valid JSON ({e})")))?;
    // JSON can only carry a NUL character escaped, so bodies without the escape skip the walk.
    if bytes.windows(6).any(|w| w == b"\\u0000") {
        if let Some(field) = nul_at(&value, String::new()) {
            let field = if field.is_empty() {
                "body".into()
            } else {
                field
            };
            return Err(ApiError::invalid(
                &field,
                "must not contain a NUL character (\\u0000)",
            ));
        }
    }
    from_value(value)
}

/// The path of the first key or string holding a NUL character: no text Puffle stores may
/// hold one (PostgreSQL text cannot), so it is refused alike on every backend.
fn nul_at(value: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(at),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, format!("{at}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('\0') {
                Some(path)
            } else {
                nul_at(v, path)
            }
        }),
        _ => None,
    }
}

/// Deserialize a JSON value, naming the field that does not fit.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    from_value_at(value, "")
}

/// Deserialize a JSON value found at `prefix` of the body, naming the field that does not fit
/// by its full path (`scope.filter.limit`).
pub fn from_value_at<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match (prefix, path.as_str()) {
            ("", ".") => "body".to_string(),
            ("", p) => p.to_string(),
            (prefix, ".") => prefix.to_string(),
            (prefix, p) if p.starts_with('[') => format!("{prefix}{p}"),
            (prefix, p) => format!("{prefix}.{p}"),
        };
        ApiError::invalid(&field, strip_position(&e.into_inner().to_string()))
    })
}

/// serde_json appends " at line 1 column 17" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Query parameters, read one by one with typed accessors. A parameter given with an empty
/// value counts as absent.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let mut map = HashMap::new();
        for (k, v) in form_pairs(query) {
            if !v.is_empty() {
                map.insert(k, v);
            }
        }
        Ok(Params(map))
    }
}

/// Decode `a=1&b=x%20y` pairs (`+` is a space, as browsers and curl send it).
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Params {
    pub fn str(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    /// A page size: a decimal integer in `min..=max`, or `default` when absent. Values above
    /// `max` are clamped when `clamp` is set, refused otherwise.
    pub fn limit(&self, name: &str, default: u32, max: u32, clamp: bool) -> Result<u32, ApiError> {
        let Some(raw) = self.0.get(name) else {
            return Ok(default);
        };
        let bad = || {
            ApiError::invalid(
                name,
                format!("must be an integer from 1 to {max}, got {raw:?}"),
            )
        };
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // All digits: only overflow can fail, and an overflowing number is above any max.
        let n: u64 = raw.parse().unwrap_or(u64::MAX);
        match n {
            0 => Err(bad()),
            n if n > u64::from(max) && clamp => Ok(max),
            n if n > u64::from(max) => Err(bad()),
            n => Ok(n as u32),
        }
    }

    /// An enum-valued parameter: `parse` must accept it, else `400` listing the choices.
    pub fn choice<T>(
        &self,
        name: &str,
        choices: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(raw) => parse(raw).map(Some).ok_or_else(|| {
                ApiError::invalid(name, format!("must be one of {choices}, got {raw:?}"))
            }),
        }
    }
}

/// For PATCH bodies: absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let pairs: Vec<_> = form_pairs("q=ann+lee&x=%C3%A9t%C3%A9&bad=%zz&e=").collect();
        assert_eq!(pairs[0], ("q".into(), "ann lee".into()));
        assert_eq!(pairs[1], ("x".into(), "été".into()));
        assert_eq!(pairs[2], ("bad".into(), "%zz".into()));
        assert_eq!(pairs[3], ("e".into(), "".into()));
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        struct B {
            #[allow(dead_code)]
            leads: Vec<Inner>,
        }
        #[derive(serde::Deserialize, Debug)]
        struct Inner {
            #[allow(dead_code)]
            count: u32,
        }
        let err = parse_json::<B>(br#"{"leads": [{"count": 1}, {"count": "x"}]}"#).unwrap_err();
        let ApiError::Invalid(m) = err else { panic!() };
        assert!(m.starts_with("leads[1].count: invalid type"), "{m}");
        let ApiError::Invalid(m) = parse_json::<B>(b"{").unwrap_err() else {
            panic!()
        };
        assert!(m.starts_with("body: is not valid JSON"), "{m}");
        let ApiError::Invalid(m) = parse_json::<B>(b"{}").unwrap_err() else {
            panic!()
        };
        assert_eq!(m, "body: missing field `leads`");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn params(pairs: &[(&str, &str)]) -> Params {
            Params(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        }

        proptest! {
            #[test]
            fn any_query_string_decodes(q in "\\PC{0,60}|([a-z%+=&]|%[0-9a-fA-F]{0,2}){0,30}") {
                // No panic, and one pair per non-empty `&`-separated part.
                let parts = q.split('&').filter(|p| !p.is_empty()).count();
                prop_assert_eq!(form_pairs(&q).count(), parts);
            }

            #[test]
            fn encoded_text_decodes_to_itself(s in "\\PC{0,20}") {
                let encoded: String = s.bytes().map(|b| format!("%{b:02X}")).collect();
                prop_assert_eq!(percent_decode(&encoded), s);
            }

            #[test]
            fn limits_are_in_range_or_refused(raw in "\\PC{0,12}|[0-9]{1,25}", max in 1u32..1000, clamp in any::<bool>()) {
                let p = params(&[("limit", raw.as_str())]);
                if let Ok(n) = p.limit("limit", 1, max, clamp) {
                    prop_assert!((1..=max).contains(&n), "{} from {:?}", n, raw);
                }
            }
        }
    }
}
