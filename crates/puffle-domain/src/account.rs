//! Workspaces, users, roles and API keys.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub workspace_id: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// The literal start of every key.
pub const KEY_PREFIX: &str = "pk_live_";
/// Characters of a key that may be stored and shown: `pk_live_` + 16 hex.
pub const KEY_PUBLIC_LEN: usize = 24;
const KEY_HEX_LEN: usize = 64;

/// A well-formed API key: `pk_live_` followed by 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix(KEY_PREFIX)?;
        let ok = hex.len() == KEY_HEX_LEN
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| ApiKey(s.to_string()))
    }

    /// A key made from 32 random bytes supplied by the caller (the domain does no IO).
    pub fn from_random(bytes: [u8; 32]) -> Self {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        ApiKey(format!("{KEY_PREFIX}{hex}"))
    }

    /// The non-secret prefix that identifies the key in storage and listings.
    pub fn public_prefix(&self) -> &str {
        &self.0[..KEY_PUBLIC_LEN]
    }

    /// The whole secret. Only ever shown once, to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Never print a key by accident: debug output shows only its public prefix.
impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}…)", self.public_prefix())
    }
}

/// A lenient email check for account emails: something on both sides of the last `@`, no
/// whitespace (`admin@localhost` is fine). Returns the lowercased address.
pub fn parse_account_email(s: &str) -> Option<String> {
    let s = s.trim();
    let (local, domain) = s.rsplit_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace);
    ok.then(|| s.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_only_in_their_exact_shape() {
        let key = ApiKey::from_random([0xab; 32]);
        assert_eq!(ApiKey::parse(key.expose()), Some(key.clone()));
        assert_eq!(key.public_prefix(), "pk_live_abababababababab");
        assert!(ApiKey::parse("pk_live_abc").is_none());
        assert!(ApiKey::parse(&key.expose().to_uppercase()).is_none());
        assert!(ApiKey::parse(&format!("pk_test_{}", &key.expose()[8..])).is_none());
        assert!(!format!("{key:?}").contains(&key.expose()[24..]));
    }

    #[test]
    fn account_emails() {
        assert_eq!(
            parse_account_email(" Ann@Example.COM "),
            Some("ann@example.com".into())
        );
        assert_eq!(
            parse_account_email("admin@localhost"),
            Some("admin@localhost".into())
        );
        for bad in ["", "ann", "ann@", "@x.com", "ann@localhost.", "a b@x.com"] {
            assert_eq!(parse_account_email(bad), None, "{bad}");
        }
    }
}
