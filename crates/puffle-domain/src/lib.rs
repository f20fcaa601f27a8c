//! Puffle's pure domain: the types every other layer speaks, and the rules that need no IO.
//!
//! Values here are parsed once at the edge (`Domain::parse`, `LeadInput::validate`, …) so that the
//! layers above never hold a malformed email, domain or enum.

pub mod account;
pub mod credits;
pub mod lead;
pub mod list;
pub mod run;

#[cfg(test)]
mod proptests;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A new id: UUIDv7, lowercase and hyphenated, so that string order is creation order.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The first 28 characters of a fresh UUIDv7 (its timestamp and 42 of its random bits), for a
/// database to mint many ids in one statement: the prefix followed by a counter of 8 lowercase
/// hex digits (`printf('%s%08x', prefix, n)`, n from 1 to `u32::MAX`), the fixed-length counter
/// of RFC 9562 §6.2. Ids of one prefix sort in counter order; prefixes of different calls differ
/// in their timestamp or random bits.
pub fn id_prefix() -> String {
    let mut id = new_id();
    id.truncate(28);
    id
}

/// True when `s` is a lowercase hyphenated UUID, the only id shape we mint.
pub fn is_id(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

/// Now, as the API writes timestamps: RFC 3339 UTC with milliseconds (`2026-11-28T14:00:00.123Z`).
pub fn now_timestamp() -> String {
    format_timestamp(OffsetDateTime::now_utc())
}

/// Unix milliseconds of a timestamp the API wrote (RFC 3339); `None` for anything else.
pub fn timestamp_unix_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A unix-milliseconds time as the API writes timestamps; `None` if out of range.
pub fn timestamp_from_unix_ms(ms: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    Some(format_timestamp(t))
}

pub fn format_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A rule broken by input: which field, and why. The server answers it as `400 invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, one level deeper: `leads[3]` + `name` → `leads[3].name`.
    pub fn within(self, parent: &str) -> Self {
        let field = if self.field.is_empty() {
            parent.to_string()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        Invalid { field, ..self }
    }
}

/// Person or company: the two kinds of lead. Immutable once a lead exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeadType {
    Person,
    Company,
}

impl LeadType {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadType::Person => "person",
            LeadType::Company => "company",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "person" => Some(LeadType::Person),
            "company" => Some(LeadType::Company),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v7_in_creation_order() {
        let a = new_id();
        let b = new_id();
        assert!(is_id(&a) && is_id(&b));
        assert!(a < b, "{a} should sort before {b}");
        assert!(!is_id("not-an-id"));
        assert!(!is_id(&a.to_uppercase()));
    }

    #[test]
    fn sequenced_ids_are_uuid_v7_in_counter_order() {
        let prefix = id_prefix();
        let ids: Vec<String> = [1, 2, 0xff, 0x100, u32::MAX]
            .into_iter()
            .map(|n: u32| format!("{prefix}{n:08x}"))
            .collect();
        for id in &ids {
            assert!(is_id(id), "{id}");
            assert_eq!(
                uuid::Uuid::parse_str(id).map(|u| u.get_version_num()),
                Ok(7)
            );
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_ne!(id_prefix(), prefix);
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t = time::macros::datetime!(2026-11-28 14:00:00.123 UTC);
        assert_eq!(format_timestamp(t), "2026-11-28T14:00:00.123Z");
        assert_eq!(now_timestamp().len(), 24);
    }

    #[test]
    fn nested_field_paths() {
        let e = Invalid::new("name", "bad").within("leads[3]");
        assert_eq!(e.field, "leads[3].name");
        let e = Invalid::new("[2]", "bad").within("leadIds");
        assert_eq!(e.field, "leadIds[2]");
    }
}
