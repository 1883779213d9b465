//! HR webhook intake: signed events from an HR system become one ticket per
//! person.
//!
//! Each hook is configured in `hooks.toml` under the server's home:
//!
//! ```toml
//! [[hooks]]
//! name = "workday"                  # POST /v1/hooks/workday
//! workflow = "offboarding"
//! secret = "workday_hook"           # the ITSM_SECRET_WORKDAY_HOOK variable
//! event_id = "/id"                  # JSON pointer to the event's unique id
//! people = "/leavers"               # pointer to an array of people; absent: the body is one person
//! subject = "/email"                # pointer, within a person, to the ticket's subject
//! inputs = { last_day = "/last_day", manager = "/manager/email" }
//! tolerance = "5m"                  # how far the timestamp may be from now
//! ```
//!
//! The sender signs `"{timestamp}.{body}"` with HMAC-SHA256 under the shared
//! secret and sends `X-Itsm-Timestamp: <unix seconds>` and
//! `X-Itsm-Signature: sha256=<hex>`. A stale timestamp is refused, so a
//! captured request cannot be replayed later; a replay inside the window
//! creates nothing new, because each person's ticket is keyed by hook, event
//! id and position.
//!
//! A hook whose events are alerts may declare `[hooks.correlate]`: its
//! alerts of one fingerprint then make one problem once enough arrive in a
//! window ([`super::correlation`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use super::NewTicket;
use super::correlation::Correlate;
use crate::error::{Error, Result};

/// One hook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// Its URL segment.
    pub name: String,
    /// The workflow each person's ticket runs.
    pub workflow: String,
    /// Name of the secret holding the shared HMAC key.
    pub secret: String,
    /// JSON pointer to the event id.
    pub event_id: String,
    /// JSON pointer to the array of people; absent means the body is one person.
    #[serde(default)]
    pub people: Option<String>,
    /// JSON pointer, within a person, to the subject.
    pub subject: String,
    /// Ticket inputs: name to JSON pointer within a person.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Allowed clock difference; default 5 minutes.
    #[serde(default, with = "humantime_serde_opt")]
    pub tolerance: Option<Duration>,
    /// Its alerts' correlation into problems, if it has one.
    #[serde(default)]
    pub correlate: Option<Correlate>,
}

/// One person (or alert) of an event, mapped.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The ticket to create for them.
    pub ticket: NewTicket,
    /// The alert's fingerprint, when the hook correlates.
    pub fingerprint: Option<String>,
}

mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HooksFile {
    #[serde(default)]
    hooks: Vec<Hook>,
}

/// Hooks by name.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    by_name: BTreeMap<String, Hook>,
}

impl Hooks {
    /// Read `path` (a missing file configures no hooks).
    pub fn load(path: &Path) -> Result<Self> {
        let Some(text) = crate::error::read_optional(path)? else {
            return Ok(Self::default());
        };
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parse `hooks.toml` text.
    pub fn parse(text: &str) -> Result<Self> {
        let file: HooksFile =
            toml::from_str(text).map_err(|e| Error::Config(e.message().to_string()))?;
        let mut by_name = BTreeMap::new();
        for h in file.hooks {
            for (what, p) in std::iter::once(("event_id", &h.event_id))
                .chain(h.people.iter().map(|p| ("people", p)))
                .chain(std::iter::once(("subject", &h.subject)))
                .chain(h.inputs.iter().map(|(k, p)| (k.as_str(), p)))
            {
                if !p.is_empty() && !p.starts_with('/') {
                    return Err(Error::Config(format!(
                        "hook `{}`: `{what}` = {p:?} is not a JSON pointer (starts with `/`)",
                        h.name
                    )));
                }
            }
            if let Some(c) = &h.correlate {
                c.check()
                    .map_err(|e| Error::Config(format!("hook `{}`: correlate: {e}", h.name)))?;
            }
            if by_name.insert(h.name.clone(), h).is_some() {
                return Err(Error::Config("two hooks share a name".into()));
            }
        }
        Ok(Self { by_name })
    }

    /// A hook by name.
    pub fn get(&self, name: &str) -> Option<&Hook> {
        self.by_name.get(name)
    }

    /// Hook names.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.by_name.keys()
    }
}

/// Why a delivery is not accepted as authentic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// A header is missing or malformed.
    #[error("{0}")]
    Header(String),
    /// Outside the tolerance.
    #[error(
        "the timestamp is {0} s away from the server's clock (allowed: {1} s); refusing a stale or replayed delivery"
    )]
    Stale(u64, u64),
    /// Wrong signature.
    #[error(
        "the signature does not match the body (check the shared secret and that the body is sent unmodified)"
    )]
    BadSignature,
}

/// `sha256=<hex>` of `"{timestamp}.{body}"`: what a sender puts in `X-Itsm-Signature`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Hook {
    /// Check the signature headers against `body`, at `now` (unix seconds).
    pub fn authenticate(
        &self,
        secret: &[u8],
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: u64,
    ) -> std::result::Result<(), Rejected> {
        let ts: u64 = timestamp
            .ok_or_else(|| Rejected::Header("missing X-Itsm-Timestamp header".into()))?
            .trim()
            .parse()
            .map_err(|_| Rejected::Header("X-Itsm-Timestamp must be unix seconds".into()))?;
        let sig = signature
            .ok_or_else(|| Rejected::Header("missing X-Itsm-Signature header".into()))?
            .trim()
            .strip_prefix("sha256=")
            .ok_or_else(|| Rejected::Header("X-Itsm-Signature must be `sha256=<hex>`".into()))?;
        let sig = hex::decode(sig)
            .map_err(|_| Rejected::Header("X-Itsm-Signature must be `sha256=<hex>`".into()))?;
        let allowed = self.tolerance.unwrap_or(Duration::from_secs(300)).as_secs();
        let skew = now.abs_diff(ts);
        if skew > allowed {
            return Err(Rejected::Stale(skew, allowed));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        // Constant-time comparison.
        mac.verify_slice(&sig).map_err(|_| Rejected::BadSignature)
    }

    /// The event id and one ticket request (or why not) per person.
    pub fn map(
        &self,
        payload: &Value,
    ) -> std::result::Result<(String, Vec<std::result::Result<Mapped, String>>), String> {
        let event_id = match payload.pointer(&self.event_id) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(format!("no event id at `{}`", self.event_id)),
        };
        let people: Vec<&Value> = match &self.people {
            None => vec![payload],
            Some(p) => match payload.pointer(p) {
                Some(Value::Array(a)) => a.iter().collect(),
                _ => return Err(format!("no array of people at `{p}`")),
            },
        };
        let tickets = people
            .into_iter()
            .map(|person| {
                let subject = match person.pointer(&self.subject) {
                    Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                    _ => return Err(format!("no subject at `{}`", self.subject)),
                };
                let inputs: Map<String, Value> = self
                    .inputs
                    .iter()
                    .filter_map(|(k, p)| person.pointer(p).map(|v| (k.clone(), v.clone())))
                    .collect();
                let fingerprint = self
                    .correlate
                    .as_ref()
                    .map(|c| c.fingerprint_of(person))
                    .transpose()?;
                Ok(Mapped {
                    ticket: NewTicket {
                        workflow: self.workflow.clone(),
                        subject,
                        inputs: Value::Object(inputs),
                        batch: None,
                        // Each alert is an incident of its own, even on a
                        // host that has one open: the count is of alerts.
                        allow_duplicate: self.correlate.is_some(),
                    },
                    fingerprint,
                })
            })
            .collect();
        Ok((event_id, tickets))
    }
}

/// The batch of one event's people (`H-…`, from the hook and the event
/// id), to follow and steer together.
pub fn batch_id(hook: &str, event_id: &str) -> String {
    let hash = crate::digest::sha256_hex(format!("{hook}\n{event_id}").as_bytes());
    format!("H-{}", &hash[..16])
}

/// The idempotency key of the `index`th person of an event: a replayed
/// event creates nothing new.
pub fn person_key(hook: &str, event_id: &str, index: usize) -> String {
    format!("hook:{hook}:{event_id}:{index}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIG: &str = r#"
        [[hooks]]
        name = "workday"
        workflow = "offboarding"
        secret = "workday_hook"
        event_id = "/id"
        people = "/leavers"
        subject = "/email"
        inputs = { last_day = "/last_day" }
        tolerance = "2m"
    "#;

    #[test]
    fn signatures_are_checked_in_a_time_window() {
        let hooks = Hooks::parse(CONFIG).unwrap();
        let hook = hooks.get("workday").unwrap();
        let body = br#"{"id":"e1"}"#;
        let sig = sign(b"s3cret", 1000, body);
        assert_eq!(
            hook.authenticate(b"s3cret", Some("1000"), Some(&sig), body, 1060),
            Ok(())
        );
        assert_eq!(
            hook.authenticate(b"s3cret", Some("1000"), Some(&sig), body, 1121),
            Err(Rejected::Stale(121, 120))
        );
        assert_eq!(
            hook.authenticate(b"other", Some("1000"), Some(&sig), body, 1000),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            hook.authenticate(b"s3cret", Some("1000"), Some(&sig), br#"{"id":"e2"}"#, 1000),
            Err(Rejected::BadSignature)
        );
        // The timestamp is signed too: moving it forward breaks the signature.
        assert_eq!(
            hook.authenticate(b"s3cret", Some("1001"), Some(&sig), body, 1000),
            Err(Rejected::BadSignature)
        );
        assert!(matches!(
            hook.authenticate(b"s3cret", None, Some(&sig), body, 1000),
            Err(Rejected::Header(_))
        ));
    }

    #[test]
    fn a_payload_maps_to_one_ticket_per_person() {
        let hooks = Hooks::parse(CONFIG).unwrap();
        let hook = hooks.get("workday").unwrap();
        let (id, people) = hook
            .map(&json!({ "id": "evt-9", "leavers": [
                { "email": "a@example.com", "last_day": "2026-12-01" },
                { "name": "no email" },
            ]}))
            .unwrap();
        assert_eq!(id, "evt-9");
        let first = &people[0].as_ref().unwrap().ticket;
        assert_eq!(first.subject, "a@example.com");
        assert_eq!(first.inputs, json!({ "last_day": "2026-12-01" }));
        assert_eq!(people[1].as_ref().unwrap_err(), "no subject at `/email`");
        assert!(hook.map(&json!({ "leavers": [] })).is_err());
        assert!(
            Hooks::parse(
                "[[hooks]]\nname='x'\nworkflow='w'\nsecret='s'\nevent_id='id'\nsubject='/e'\n"
            )
            .is_err()
        );
    }
}
