//! Correlation of alerts: a hook may declare that its alerts which share a
//! fingerprint are one problem once enough of them arrive close together.
//!
//! ```toml
//! [[hooks]]
//! name = "antivirus"               # POST /v1/hooks/antivirus
//! workflow = "malware-incident"    # each alert's incident
//! secret = "av_hook"
//! event_id = "/alert_id"
//! subject = "/host"
//! inputs = { host = "/host", signature = "/signature" }
//!
//! [hooks.correlate]
//! fingerprint = "alert.signature"  # CEL over the alert: what makes two alerts one cause
//! window = "15m"                   # alerts this close together count together
//! threshold = 5                    # the alert that makes 5 opens the problem
//! problem = "malware-outbreak"     # the problem's workflow; its subject is the fingerprint
//! inputs = { impact = "high" }     # the problem's inputs, fixed
//! ```
//!
//! Each alert makes its incident as any hook's person does, in the batch of
//! its fingerprint (`C-…`). The alerts of a fingerprint in the window that
//! no problem has taken yet are counted; the one that reaches the threshold
//! opens the problem, the one open ticket of the problem workflow for that
//! fingerprint, and links them all to it (`caused_by` on each incident,
//! `causes` on the problem, each in its own trail). While the problem is
//! open, every later alert of the fingerprint is linked to it at once.
//! The scheduler does the counting and linking (`scheduler/correlate.rs`);
//! this file holds the declaration and the fingerprint.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::workflow::condition::compile;

/// The most alerts one fingerprint may need before its problem opens: the
/// alerts counted are read one by one, so the count stays small.
pub const MAX_THRESHOLD: u32 = 1000;

/// The longest fingerprint: it becomes the problem's subject.
pub const MAX_FINGERPRINT: usize = 200;

/// A hook's correlation of its alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correlate {
    /// CEL over `alert` (the alert's JSON: the body, or one element of its
    /// `people` array) giving text or a number.
    pub fingerprint: String,
    /// How close together alerts count together.
    #[serde(with = "duration")]
    pub window: Duration,
    /// How many alerts in the window open the problem (at least 1).
    pub threshold: u32,
    /// The problem's workflow.
    pub problem: String,
    /// The problem's inputs.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
}

mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl Correlate {
    /// Check the declaration at load: the fingerprint parses and reads
    /// only `alert`, the threshold and window are usable.
    pub fn check(&self) -> Result<(), String> {
        let program = compile(&self.fingerprint)?;
        if let Some(other) = program
            .references()
            .variables()
            .into_iter()
            .find(|v| *v != "alert")
        {
            return Err(format!(
                "fingerprint {:?} reads `{other}`: it may read only `alert`, the alert's JSON",
                self.fingerprint
            ));
        }
        if !(1..=MAX_THRESHOLD).contains(&self.threshold) {
            return Err(format!(
                "threshold = {} is outside 1..={MAX_THRESHOLD}",
                self.threshold
            ));
        }
        if self.window.is_zero() {
            return Err("window must be longer than zero".into());
        }
        Ok(())
    }

    /// The fingerprint of one alert, or why it has none.
    pub fn fingerprint_of(&self, alert: &Value) -> Result<String, String> {
        let program = compile(&self.fingerprint)?;
        let mut cx = cel::Context::default();
        cx.add_variable("alert", alert)
            .map_err(|e| format!("fingerprint {:?}: {e}", self.fingerprint))?;
        let text = match program.execute(&cx) {
            Ok(cel::Value::String(s)) => s.as_str().trim().to_string(),
            Ok(cel::Value::Int(n)) => n.to_string(),
            Ok(cel::Value::UInt(n)) => n.to_string(),
            Ok(other) => {
                return Err(format!(
                    "fingerprint {:?} gave {other:?}, not text or a number",
                    self.fingerprint
                ));
            }
            Err(e) => return Err(format!("fingerprint {:?}: {e}", self.fingerprint)),
        };
        if text.is_empty() {
            return Err(format!("fingerprint {:?} is empty", self.fingerprint));
        }
        if text.chars().count() > MAX_FINGERPRINT {
            return Err(format!(
                "fingerprint {:?} is longer than {MAX_FINGERPRINT} characters",
                self.fingerprint
            ));
        }
        Ok(text)
    }
}

/// The batch of one fingerprint's alerts (`C-…`, from the hook and the
/// fingerprint): where the window's alerts are counted, and a way to
/// follow them together.
pub fn batch_id(hook: &str, fingerprint: &str) -> String {
    let hash = crate::digest::sha256_hex(format!("{hook}\n{fingerprint}").as_bytes());
    format!("C-{}", &hash[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn correlate(fingerprint: &str, threshold: u32) -> Correlate {
        Correlate {
            fingerprint: fingerprint.into(),
            window: Duration::from_secs(60),
            threshold,
            problem: "p".into(),
            inputs: BTreeMap::new(),
        }
    }

    #[test]
    fn a_fingerprint_is_text_read_off_the_alert_or_a_named_refusal() {
        let c = correlate("alert.signature + '/' + alert.engine", 3);
        c.check().unwrap();
        assert_eq!(
            c.fingerprint_of(&json!({ "signature": "EICAR", "engine": "av" }))
                .unwrap(),
            "EICAR/av"
        );
        let err = c.fingerprint_of(&json!({ "engine": "av" })).unwrap_err();
        assert!(err.contains("signature"), "{err}");
        assert_eq!(
            correlate("alert.n", 1)
                .fingerprint_of(&json!({ "n": 7 }))
                .unwrap(),
            "7"
        );
        let err = correlate("alert.ok", 1)
            .fingerprint_of(&json!({ "ok": true }))
            .unwrap_err();
        assert!(err.contains("not text"), "{err}");
        let err = correlate("inputs.x", 1).check().unwrap_err();
        assert!(err.contains("`inputs`"), "{err}");
        assert!(correlate("alert.", 1).check().is_err());
        let err = correlate("alert.x", 0).check().unwrap_err();
        assert!(err.contains("threshold"), "{err}");
        assert_ne!(batch_id("av", "a"), batch_id("av", "b"));
        assert_ne!(batch_id("av", "a"), batch_id("edr", "a"));
    }
}
