//! From a verified token's claims to a principal: its name and e-mail from
//! the configured claims, its roles only through the `[roles]` map.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Config;
use crate::principal::{Principal, is_email};

/// The principal the claims stand for, or why they name none.
pub(super) fn principal(config: &Config, claims: &Value) -> Result<Principal, String> {
    let name = claims[&config.name_claim]
        .as_str()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            format!(
                "the token has no `{}` claim, which names its principal",
                config.name_claim
            )
        })?
        .to_string();
    let email = claims[&config.email_claim]
        .as_str()
        .map(|e| e.trim().to_lowercase())
        .filter(|e| is_email(e));
    let mut roles = BTreeSet::new();
    for claim in &config.group_claims {
        for group in values(&claims[claim]) {
            if let Some(mapped) = config.roles.get(group) {
                roles.extend(mapped.iter().cloned());
            }
        }
    }
    Ok(Principal { name, roles, email })
}

/// A claim's values: an array of strings, or one space-separated string
/// (as `scope` is).
fn values(claim: &Value) -> Vec<&str> {
    match claim {
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        Value::String(s) => s.split_whitespace().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        toml::from_str(
            r#"
issuer = "https://login.example.com"
audience = "itsm"
client_id = "itsm-ui"
[roles]
"it-ops" = ["operator"]
"sec" = ["approver", "security"]
"#,
        )
        .unwrap()
    }

    #[test]
    fn roles_come_only_through_the_map_and_the_email_claim_names_the_person() {
        let p = principal(
            &config(),
            &serde_json::json!({
                "email": "Ann@Example.com",
                "groups": ["sec", "admins-of-everything"],
                "roles": "it-ops admin",
            }),
        )
        .unwrap();
        assert_eq!(p.name, "Ann@Example.com");
        assert_eq!(p.email.as_deref(), Some("ann@example.com"));
        assert_eq!(
            p.roles.iter().map(String::as_str).collect::<Vec<_>>(),
            ["approver", "operator", "security"],
            "`admin` and unmapped groups grant nothing"
        );
        let why = principal(&config(), &serde_json::json!({ "sub": "x" })).unwrap_err();
        assert!(why.contains("no `email` claim"), "{why}");
    }

    #[test]
    fn a_config_with_a_shared_secret_or_no_algorithm_or_plain_http_is_refused() {
        let mut c = config();
        c.algorithms = vec!["HS256".into()];
        assert!(c.check().unwrap_err().contains("HS* never are"));
        c.algorithms = vec!["none".into()];
        assert!(c.check().is_err());
        c.algorithms = vec![];
        assert!(c.check().is_err());
        c.algorithms = vec!["RS256".into()];
        assert!(c.check().is_ok());
        c.issuer = "http://login.example.com".into();
        assert!(c.check().unwrap_err().contains("must be https://"));
        c.issuer = "http://127.0.0.1:4000".into();
        assert!(c.check().is_ok(), "loopback, for tests");
    }
}
