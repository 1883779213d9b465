//! Masking secret values in everything a call leaves behind.
//!
//! A plugin can echo a secret into a log line, an output, an error or a URL
//! (by accident, or because an API reflected a header back). Whatever leaves
//! a call passes through here before it is stored or printed.

use serde_json::Value;

/// The mask that replaces a secret value.
pub const MASK: &str = "[REDACTED]";

/// Secrets shorter than this are not masked: masking "a" would shred every
/// log line, and such a secret protects nothing anyway.
const MIN_SECRET_LEN: usize = 4;

/// Replaces known secret values with [`MASK`].
#[derive(Debug, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is masked whole.
    /// Behind a lock because tokens the host fetches mid-call join it.
    needles: std::sync::RwLock<Vec<String>>,
}

impl Redactor {
    /// A redactor for these values and their common encodings.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let r = Self::default();
        for s in secrets {
            r.add(s);
        }
        r
    }

    /// Mask `secret` (and its encodings) from now on.
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let mut needles = self.needles.write().expect("redactor lock");
        needles.extend(encodings(secret));
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
    }

    /// `text` with every secret masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for n in self.needles.read().expect("redactor lock").iter() {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), MASK);
            }
        }
        out
    }

    /// A JSON value with every string (keys too) masked.
    pub fn redact_json(&self, value: Value) -> Value {
        if self.needles.read().expect("redactor lock").is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.redact(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.redact(&k), self.redact_json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// `secret` and the encodings it commonly travels in: itself, base64, JSON
/// string escaping, URL form encoding. Shared by output masking and by the
/// scrubbing of responses to credentialed requests.
pub(crate) fn encodings(secret: &str) -> Vec<String> {
    use base64::Engine;
    let escaped = serde_json::to_string(secret).expect("string serializes");
    vec![
        secret.to_string(),
        base64::engine::general_purpose::STANDARD.encode(secret),
        escaped[1..escaped.len() - 1].to_string(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_plain_base64_and_json_escaped_forms() {
        let r = Redactor::new(["s3cr\"et-token", "abc"]);
        assert_eq!(r.redact("Bearer s3cr\"et-token!"), "Bearer [REDACTED]!");
        assert_eq!(r.redact("czNjciJldC10b2tlbg=="), MASK);
        assert_eq!(
            r.redact(r#"{"t":"s3cr\"et-token"}"#),
            r#"{"t":"[REDACTED]"}"#
        );
        assert_eq!(
            r.redact("abc is too short to mask"),
            "abc is too short to mask"
        );
        let v = r.redact_json(serde_json::json!({"s3cr\"et-token": ["x s3cr\"et-token"]}));
        assert_eq!(v, serde_json::json!({"[REDACTED]": ["x [REDACTED]"]}));
    }
}
