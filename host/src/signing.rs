//! Plugin signatures: ed25519 over the manifest and the wasm together.
//!
//! A publisher makes a key pair with `itsm keygen`, signs a plugin folder
//! with `itsm plugin sign` (writing `plugin.sig` beside `plugin.toml`), and
//! a server trusts the publisher by holding its public key in
//! `trusted-keys/<publisher>.pub`. The signed message binds both files by
//! hash, so neither can be swapped: a new wasm under an old manifest (or
//! grants widened in the manifest) no longer verifies.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::digest::sha256_hex;
use crate::error::{Error, Result};

/// The signature file's name, beside `plugin.toml`.
pub const SIGNATURE_FILE: &str = "plugin.sig";

/// What is signed: a domain tag and the two files' hashes.
fn message(manifest: &[u8], wasm: &[u8]) -> Vec<u8> {
    format!(
        "itsm-plugin-signature-v1\nmanifest-sha256 {}\nwasm-sha256 {}\n",
        sha256_hex(manifest),
        sha256_hex(wasm)
    )
    .into_bytes()
}

/// A public key's short id: the first 16 hex digits of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())[..16].to_string()
}

/// `plugin.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// The signing key's id.
    pub key_id: String,
    /// Base64 ed25519 signature.
    pub signature: String,
}

/// A new key pair: (secret key file text, public key file text).
pub fn keygen() -> (String, String) {
    let seed: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&seed);
    (
        format!("{}\n", B64.encode(seed)),
        format!("{}\n", B64.encode(key.verifying_key().as_bytes())),
    )
}

/// Read a secret key file made by [`keygen`].
pub fn read_secret(text: &str) -> Result<SigningKey> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| Error::Usage(format!("not a secret key file: {e}")))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::Usage("not a secret key file: expected 32 bytes".into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Read a public key file made by [`keygen`].
pub fn read_public(text: &str) -> Result<VerifyingKey> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| Error::Usage(format!("not a public key file: {e}")))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::Usage("not a public key file: expected 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| Error::Usage(format!("not a public key: {e}")))
}

/// Sign a manifest and wasm; returns `plugin.sig`'s text.
pub fn sign(key: &SigningKey, manifest: &[u8], wasm: &[u8]) -> String {
    let sig = key.sign(&message(manifest, wasm));
    let file = SignatureFile {
        key_id: key_id(&key.verifying_key()),
        signature: B64.encode(sig.to_bytes()),
    };
    toml::to_string(&file).expect("signature file serializes")
}

/// Publishers' keys the server trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, (String, VerifyingKey)>,
}

impl TrustedKeys {
    /// Every `<publisher>.pub` in `dir` (a missing folder trusts nobody).
    pub fn load(dir: &Path) -> Result<Self> {
        let mut keys = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(Error::Io {
                    path: dir.into(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pub") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let key = read_public(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            let publisher = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("unnamed")
                .to_string();
            keys.insert(key_id(&key), (publisher, key));
        }
        Ok(Self { keys })
    }

    /// Trust one more key (tests and embedding).
    pub fn add(&mut self, publisher: &str, key: VerifyingKey) {
        self.keys.insert(key_id(&key), (publisher.into(), key));
    }

    /// Trust `other`'s keys too.
    pub fn extend(&mut self, other: &TrustedKeys) {
        self.keys
            .extend(other.keys.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No keys at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The publisher that signed `manifest` + `wasm`, or why not.
    pub fn verify(
        &self,
        manifest: &[u8],
        wasm: &[u8],
        signature: Option<&str>,
    ) -> std::result::Result<String, SignatureError> {
        let text = signature.ok_or(SignatureError::Unsigned)?;
        let file: SignatureFile =
            toml::from_str(text).map_err(|e| SignatureError::Malformed(e.message().to_string()))?;
        let (publisher, key) = self
            .keys
            .get(&file.key_id)
            .ok_or_else(|| SignatureError::Untrusted(file.key_id.clone()))?;
        let bytes = B64
            .decode(file.signature.trim())
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let sig =
            Signature::from_slice(&bytes).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        key.verify(&message(manifest, wasm), &sig)
            .map_err(|_| SignatureError::Tampered(publisher.clone()))?;
        Ok(publisher.clone())
    }
}

/// Why a plugin's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `plugin.sig`.
    #[error("it is not signed (sign it with `itsm plugin sign`)")]
    Unsigned,
    /// A `plugin.sig` that does not parse.
    #[error("its signature file is malformed: {0}")]
    Malformed(String),
    /// Signed by a key not in `trusted-keys/`.
    #[error(
        "it is signed by key {0}, which this server does not trust (add the publisher's .pub to trusted-keys/)"
    )]
    Untrusted(String),
    /// The signature does not match the files.
    #[error("its signature by {0} does not match its manifest and wasm (changed after signing)")]
    Tampered(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_manifest_and_wasm_to_a_trusted_key() {
        let (secret, public) = keygen();
        let key = read_secret(&secret).unwrap();
        let mut trusted = TrustedKeys::default();
        trusted.add("acme", read_public(&public).unwrap());
        let sig = sign(&key, b"name = \"x\"", b"\0asm");

        assert_eq!(
            trusted.verify(b"name = \"x\"", b"\0asm", Some(&sig)),
            Ok("acme".to_string())
        );
        assert_eq!(
            trusted.verify(b"name = \"x\"", b"\0asm", None),
            Err(SignatureError::Unsigned)
        );
        assert!(matches!(
            trusted.verify(b"name = \"x\"", b"\0asm!", Some(&sig)),
            Err(SignatureError::Tampered(p)) if p == "acme"
        ));
        assert!(matches!(
            trusted.verify(b"name = \"y\"", b"\0asm", Some(&sig)),
            Err(SignatureError::Tampered(_))
        ));
        let (other_secret, _) = keygen();
        let other = sign(&read_secret(&other_secret).unwrap(), b"m", b"w");
        assert!(matches!(
            trusted.verify(b"m", b"w", Some(&other)),
            Err(SignatureError::Untrusted(_))
        ));
        assert!(matches!(
            trusted.verify(b"m", b"w", Some("key_id = 1")),
            Err(SignatureError::Malformed(_))
        ));
    }
}
