//! API key hashing. Keys carry 256 bits of randomness, so one SHA-256 is enough: nothing to
//! stretch, and a database leak reveals no usable key.

use puffle_domain::account::ApiKey;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn hash_key(key: &ApiKey) -> Vec<u8> {
    Sha256::digest(key.expose().as_bytes()).to_vec()
}

/// Compare a presented key's hash with a stored one without leaking, through timing, how many
/// leading bytes matched.
pub(crate) fn hashes_match(presented: &[u8], stored: &[u8]) -> bool {
    presented.ct_eq(stored).into()
}
