//! Plugin-private key-value state (granted by `kv = true` in the manifest).
//!
//! Useful for idempotency bookkeeping: remember what a key already did.

use crate::StepError;
use crate::wit::itsm::plugin::kv as wit;

/// The value at `key`, if set.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, StepError> {
    wit::get(key).map_err(StepError::fatal)
}

/// Store `value` at `key` (keys up to 256 bytes, values up to 64 KiB).
pub fn set(key: &str, value: &[u8]) -> Result<(), StepError> {
    wit::set(key, value).map_err(StepError::fatal)
}

/// Remove `key`; a missing key is fine.
pub fn delete(key: &str) -> Result<(), StepError> {
    wit::delete(key).map_err(StepError::fatal)
}
