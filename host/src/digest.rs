//! Content hashes: the hex SHA-256 that names a wasm file, a workflow
//! version, a plugin bundle, an audit event. A leaf, so the audit trail,
//! signing, workflows and the runtime share one definition.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
