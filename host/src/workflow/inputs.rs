//! Declared inputs: what a ticket of a workflow must be given, with types.
//!
//! ```toml
//! subject = "email"                 # what the ticket is about: "email" or "any"
//!
//! [inputs.last_day]
//! type = "date"                     # YYYY-MM-DD
//! required = true
//! [inputs.time_zone]
//! type = "time_zone"                # an IANA name, e.g. "Europe/Paris"
//! default = "UTC"
//! [inputs.reason]
//! type = "enum"
//! values = ["resignation", "termination"]
//! ```
//!
//! Every way a ticket is made (the API, an import row, a webhook) goes
//! through [`Workflow::check_inputs`], which refuses what does not fit,
//! naming the field, and returns the inputs as the ticket keeps them: typed
//! (a CSV's `"true"` becomes `true`), defaults filled in, and every declared
//! input present (`null` when optional and not given), so conditions can
//! read any of them. A workflow that declares no inputs takes any object, as
//! before inputs could be declared.

pub use crate::principal::is_email;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Workflow;

/// What a ticket's subject must be.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// Any non-empty text (a username, an employee number).
    #[default]
    Any,
    /// An e-mail address, e.g. the leaver's sign-in address.
    Email,
}

impl SubjectKind {
    pub(crate) fn is_any(&self) -> bool {
        *self == SubjectKind::Any
    }
}

/// The type of one declared input.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    /// Any text.
    String,
    /// An e-mail address.
    Email,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant with its offset (RFC 3339), e.g. `2026-12-04T17:00:00+01:00`.
    Datetime,
    /// An IANA time zone name, e.g. `Europe/Paris`.
    TimeZone,
    /// A wall-clock time of day, `HH:MM` or `HH:MM:SS`.
    Time,
    /// `true` or `false` (from text: true/false, yes/no, 1/0).
    Bool,
    /// A whole number.
    Int,
    /// One of `values`.
    Enum,
    /// A list of texts (from text: comma-separated).
    List,
}

/// One declared input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// A ticket without it is refused (a default makes this moot).
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// The value when a ticket does not give one; checked like one given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The allowed values of an `enum`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// What it is, for people filling it in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl InputDef {
    /// `value` as this input keeps it, or why it does not fit.
    fn coerce(&self, value: &Value) -> Result<Value, String> {
        let text = value.as_str().map(str::trim);
        let want = |what: &str| Err(format!("{value} is not {what}"));
        match self.kind {
            InputType::String => match text {
                Some(t) => Ok(Value::from(t)),
                None => want("text"),
            },
            InputType::Email => match text {
                Some(t) if is_email(t) => Ok(Value::from(t)),
                _ => want("an e-mail address"),
            },
            InputType::Date => match text.map(str::parse::<jiff::civil::Date>) {
                Some(Ok(d)) => Ok(Value::from(d.to_string())),
                _ => want("a date (YYYY-MM-DD)"),
            },
            InputType::Datetime => match text.map(str::parse::<jiff::Timestamp>) {
                Some(Ok(_)) => Ok(Value::from(text.unwrap_or_default())),
                _ => want("an instant with its offset (RFC 3339, e.g. 2026-12-04T17:00:00+01:00)"),
            },
            InputType::TimeZone => match text {
                Some(t) if jiff::tz::TimeZone::get(t).is_ok() => Ok(Value::from(t)),
                _ => want("an IANA time zone (e.g. Europe/Paris)"),
            },
            InputType::Time => match text.map(str::parse::<jiff::civil::Time>) {
                Some(Ok(t)) => Ok(Value::from(if t.second() == 0 {
                    t.strftime("%H:%M").to_string()
                } else {
                    t.strftime("%H:%M:%S").to_string()
                })),
                _ => want("a time of day (HH:MM or HH:MM:SS)"),
            },
            InputType::Bool => match (value, text.map(str::to_ascii_lowercase).as_deref()) {
                (Value::Bool(b), _) => Ok(Value::Bool(*b)),
                (_, Some("true" | "yes" | "1")) => Ok(Value::Bool(true)),
                (_, Some("false" | "no" | "0")) => Ok(Value::Bool(false)),
                _ => want("true or false"),
            },
            InputType::Int => match (value.as_i64(), text.map(str::parse::<i64>)) {
                (Some(n), _) | (None, Some(Ok(n))) => Ok(Value::from(n)),
                _ => want("a whole number"),
            },
            InputType::Enum => match text {
                Some(t) if self.values.iter().any(|v| v == t) => Ok(Value::from(t)),
                _ => want(&format!("one of {}", self.values.join(", "))),
            },
            InputType::List => match value {
                Value::Array(items) if items.iter().all(Value::is_string) => Ok(value.clone()),
                Value::String(s) => Ok(Value::Array(
                    s.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(Value::from)
                        .collect(),
                )),
                _ => want("a list of texts"),
            },
        }
    }
}

impl Workflow {
    /// Check a ticket's subject and inputs against the declarations and
    /// return the inputs as the ticket keeps them. The error names every
    /// field that does not fit.
    pub fn check_inputs(&self, subject: &str, inputs: &Value) -> Result<Value, String> {
        let given = match inputs {
            Value::Null => Map::new(),
            Value::Object(m) => m.clone(),
            _ => return Err("`inputs` must be a JSON object".into()),
        };
        let mut problems = Vec::new();
        if self.subject == SubjectKind::Email && !is_email(subject.trim()) {
            problems.push(format!(
                "subject: {:?} is not an e-mail address",
                subject.trim()
            ));
        }
        if self.inputs.is_empty() {
            return match problems.is_empty() {
                true => Ok(Value::Object(given)),
                false => Err(problems.join("; ")),
            };
        }
        for name in given.keys() {
            if !self.inputs.contains_key(name) {
                problems.push(format!(
                    "input `{name}` is not declared (workflow `{}` takes: {})",
                    self.name,
                    self.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let mut out = Map::new();
        for (name, def) in &self.inputs {
            // An empty CSV cell is no value at all.
            let value = given
                .get(name)
                .filter(|v| !v.is_null() && v.as_str().is_none_or(|s| !s.trim().is_empty()))
                .or(def.default.as_ref());
            let kept = match value {
                Some(v) => match def.coerce(v) {
                    Ok(v) => v,
                    Err(why) => {
                        problems.push(format!("input `{name}`: {why}"));
                        continue;
                    }
                },
                None if def.required => {
                    problems.push(format!("input `{name}` is required"));
                    continue;
                }
                None => Value::Null,
            };
            out.insert(name.clone(), kept);
        }
        match problems.is_empty() {
            true => Ok(Value::Object(out)),
            false => Err(problems.join("; ")),
        }
    }

    /// Declarations that contradict themselves: an enum without values,
    /// values on anything else, a default of the wrong type.
    pub(super) fn validate_inputs(&self) -> Result<(), String> {
        for (name, def) in &self.inputs {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "input {name:?}: names are letters, digits and _ (conditions read them as inputs.NAME)"
                ));
            }
            match (def.kind, def.values.is_empty()) {
                (InputType::Enum, true) => {
                    return Err(format!("input `{name}`: an enum needs `values`"));
                }
                (InputType::Enum, false) | (_, true) => {}
                (_, false) => {
                    return Err(format!(
                        "input `{name}`: `values` is only for type = \"enum\""
                    ));
                }
            }
            if let Some(d) = &def.default {
                def.coerce(d)
                    .map_err(|why| format!("input `{name}`: default {why}"))?;
            }
        }
        Ok(())
    }
}

/// `config` with every `${inputs.NAME}` replaced by the ticket's value:
/// text as is, `null` as nothing, a list joined with commas, anything else
/// as JSON. The names were checked when the workflow loaded.
pub fn fill_config(config: &BTreeMap<String, String>, inputs: &Value) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(k, v)| {
            let filled = substitute(v, "${inputs.", |name| {
                Some(match inputs.get(name) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(","),
                    Some(other) => other.to_string(),
                })
            });
            (k.clone(), filled.unwrap_or_else(|_| v.clone()))
        })
        .collect()
}

/// Replace each `${PREFIX...NAME}` in `text` with `lookup(NAME)`; the error
/// says what is wrong with the first that cannot be: unclosed, or a name
/// `lookup` does not know (`Err(Some(name))`).
pub(super) fn substitute(
    text: &str,
    prefix: &str,
    mut lookup: impl FnMut(&str) -> Option<String>,
) -> Result<String, Option<String>> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(prefix) {
        out.push_str(&rest[..start]);
        let after = &rest[start + prefix.len()..];
        let end = after.find('}').ok_or(None)?;
        let name = &after[..end];
        out.push_str(&lookup(name).ok_or_else(|| Some(name.to_string()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::workflow::Workflow;

    const WF: &str = r#"
        name = "leavers"
        subject = "email"
        [inputs.last_day]
        type = "date"
        required = true
        [inputs.time_zone]
        type = "time_zone"
        default = "UTC"
        [inputs.legal_hold]
        type = "bool"
        default = false
        [inputs.reason]
        type = "enum"
        values = ["resignation", "termination"]
        [inputs.apps]
        type = "list"
        [inputs.manager]
        type = "email"
        [[steps]]
        name = "notify"
        plugin = "noop"
        config = { to = "${inputs.manager}", apps = "${inputs.apps}", hold = "${inputs.legal_hold}" }
    "#;

    #[test]
    fn inputs_are_typed_defaulted_and_every_declared_one_is_present() {
        let wf = Workflow::parse(WF, "wf.toml").unwrap();
        let kept = wf
            .check_inputs(
                "lee@example.com",
                &json!({"last_day": "2026-12-04", "legal_hold": "Yes", "apps": "slack, zoom,", "reason": "termination"}),
            )
            .unwrap();
        assert_eq!(
            kept,
            json!({"last_day": "2026-12-04", "time_zone": "UTC", "legal_hold": true, "reason": "termination", "apps": ["slack", "zoom"], "manager": null})
        );
        let config = super::fill_config(&wf.steps[0].config, &kept);
        assert_eq!(config["to"], "");
        assert_eq!(config["apps"], "slack,zoom");
        assert_eq!(config["hold"], "true");
    }

    #[test]
    fn every_field_that_does_not_fit_is_named() {
        let wf = Workflow::parse(WF, "wf.toml").unwrap();
        let err = wf
            .check_inputs(
                "lee",
                &json!({"last_day": "31/12/2026", "time_zone": "Mars/Olympus", "reason": "bored", "manger": "x@example.com", "legal_hold": "perhaps"}),
            )
            .unwrap_err();
        for want in [
            "subject: \"lee\" is not an e-mail address",
            "input `manger` is not declared",
            "input `last_day`: \"31/12/2026\" is not a date (YYYY-MM-DD)",
            "input `time_zone`: \"Mars/Olympus\" is not an IANA time zone",
            "input `reason`: \"bored\" is not one of resignation, termination",
            "input `legal_hold`: \"perhaps\" is not true or false",
        ] {
            assert!(err.contains(want), "want {want:?} in {err}");
        }
        let err = wf.check_inputs("lee@example.com", &json!({})).unwrap_err();
        assert_eq!(err, "input `last_day` is required");
        // A blank CSV cell is no value: the default, or required.
        let err = wf
            .check_inputs("lee@example.com", &json!({"last_day": " "}))
            .unwrap_err();
        assert_eq!(err, "input `last_day` is required");
    }

    #[test]
    fn bad_declarations_and_references_fail_at_load() {
        for (from, to, want) in [
            ("type = \"date\"", "type = \"day\"", "unknown variant `day`"),
            (
                "values = [\"resignation\", \"termination\"]",
                "",
                "input `reason`: an enum needs `values`",
            ),
            (
                "default = \"UTC\"",
                "default = \"Nowhere/Here\"",
                "input `time_zone`: default \"Nowhere/Here\" is not an IANA time zone",
            ),
            (
                "${inputs.manager}",
                "${inputs.boss}",
                "step `notify`: config `to` uses input `boss`, which [inputs] does not declare",
            ),
            (
                "${inputs.manager}",
                "${inputs.manager",
                "step `notify`: config `to` has an unclosed `${inputs.`",
            ),
        ] {
            let err = Workflow::parse(&WF.replace(from, to), "wf.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("wf.toml") && err.contains(want),
                "want {want:?} in {err}"
            );
        }
    }

    #[test]
    fn a_workflow_declaring_nothing_takes_any_object() {
        let wf = Workflow::parse(
            "name = \"w\"\n[[steps]]\nname = \"s\"\nplugin = \"p\"\n",
            "w",
        )
        .unwrap();
        assert_eq!(
            wf.check_inputs("anyone", &json!({"x": 1})).unwrap(),
            json!({"x": 1})
        );
    }
}
