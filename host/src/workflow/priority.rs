//! What kind of work a workflow is, and how urgent one ticket of it is.
//!
//! ```toml
//! kind = "incident"                  # request (the default), incident, problem, change
//!
//! [inputs.impact]                    # the ticket's impact and urgency: enum inputs
//! type = "enum"
//! values = ["high", "medium", "low"]
//! required = true
//! [inputs.urgency]
//! type = "enum"
//! values = ["high", "medium", "low"]
//! required = true
//!
//! [priority]                         # impact -> urgency -> priority, every pair given
//! matrix.high   = { high = "P1", medium = "P2", low = "P3" }
//! matrix.medium = { high = "P2", medium = "P3", low = "P4" }
//! matrix.low    = { high = "P3", medium = "P4", low = "P4" }
//! sla = { P1 = "4h", P2 = "8h" }     # per priority; the others take the workflow's `sla`
//! ```
//!
//! The priority is read off the pinned definition and the ticket's inputs,
//! so it is the same wherever it is shown, and it chooses the SLA at
//! creation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Workflow;
use super::inputs::InputType;

/// The kinds of ITSM work.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A service request (offboarding is one).
    #[default]
    Request,
    /// Something broken, to restore.
    Incident,
    /// The cause behind incidents.
    Problem,
    /// A planned or emergency change.
    Change,
}

impl Kind {
    /// Whether it is the default, left out of a definition's hash so
    /// workflows written before kinds keep their pins.
    pub fn is_request(&self) -> bool {
        *self == Kind::Request
    }

    /// Its name, as the workflow writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Incident => "incident",
            Kind::Problem => "problem",
            Kind::Change => "change",
        }
    }
}

/// `[priority]`: the matrix, and SLAs by priority.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Priority {
    /// Impact value -> urgency value -> priority label.
    pub matrix: BTreeMap<String, BTreeMap<String, String>>,
    /// The SLA of a priority, where it differs from the workflow's.
    #[serde(default, with = "sla_map", skip_serializing_if = "BTreeMap::is_empty")]
    pub sla: BTreeMap<String, Duration>,
}

/// The inputs the matrix reads.
const IMPACT: &str = "impact";
const URGENCY: &str = "urgency";

impl Priority {
    /// Check at load: `impact` and `urgency` are declared enum inputs, the
    /// matrix gives a priority for every pair of their values, and `sla`
    /// names only priorities the matrix gives.
    pub(super) fn check(&self, wf: &Workflow) -> Result<(), String> {
        let values = |name: &str| -> Result<Vec<String>, String> {
            match wf.inputs.get(name) {
                Some(def) if def.kind == InputType::Enum => Ok(def.values.clone()),
                _ => Err(format!(
                    "[priority] reads the input `{name}`: declare it in [inputs] as an enum (e.g. values = [\"high\", \"medium\", \"low\"])"
                )),
            }
        };
        let (impacts, urgencies) = (values(IMPACT)?, values(URGENCY)?);
        for i in &impacts {
            for u in &urgencies {
                if self.matrix.get(i).and_then(|row| row.get(u)).is_none() {
                    return Err(format!(
                        "[priority] matrix gives no priority for impact {i:?} and urgency {u:?}"
                    ));
                }
            }
        }
        let given: Vec<&String> = self.matrix.values().flat_map(|row| row.values()).collect();
        for p in self.sla.keys() {
            if !given.contains(&p) {
                return Err(format!(
                    "[priority] sla names {p:?}, which the matrix never gives"
                ));
            }
        }
        Ok(())
    }

    /// The priority of a ticket with `inputs`, if they hold both values.
    pub fn of(&self, inputs: &Value) -> Option<&str> {
        let impact = inputs.get(IMPACT)?.as_str()?;
        let urgency = inputs.get(URGENCY)?.as_str()?;
        self.matrix.get(impact)?.get(urgency).map(String::as_str)
    }
}

/// `sla = { P1 = "4h" }` through humantime.
mod sla_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(
            map.iter()
                .map(|(k, d)| (k, humantime::format_duration(*d).to_string())),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                humantime::parse_duration(&v)
                    .map(|d| (k.clone(), d))
                    .map_err(|e| {
                        serde::de::Error::custom(format!("sla {k}: bad duration {v:?}: {e}"))
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INCIDENT: &str = r#"
name = "incident"
kind = "incident"
sla = "3d"
[inputs.impact]
type = "enum"
values = ["high", "low"]
required = true
[inputs.urgency]
type = "enum"
values = ["high", "low"]
required = true
[priority]
matrix.high = { high = "P1", low = "P2" }
matrix.low = { high = "P2", low = "P3" }
sla = { P1 = "4h", P2 = "8h" }
[[steps]]
name = "triage"
task = { group = "service-desk", instructions = "Triage it." }
"#;

    #[test]
    fn the_matrix_gives_the_priority_and_the_priority_the_sla() {
        let wf = Workflow::parse(INCIDENT, "incident.toml").unwrap();
        assert_eq!(wf.kind, Kind::Incident);
        let p = wf.priority.as_ref().unwrap();
        let inputs = |i: &str, u: &str| serde_json::json!({ "impact": i, "urgency": u });
        assert_eq!(p.of(&inputs("high", "high")), Some("P1"));
        assert_eq!(p.of(&inputs("low", "high")), Some("P2"));
        let hour = 3_600_000;
        let sla = |i, u| wf.sla_times(&inputs(i, u), 0).unwrap().unwrap().0;
        assert_eq!(sla("high", "high"), 4 * hour);
        assert_eq!(sla("high", "low"), 8 * hour);
        assert_eq!(sla("low", "low"), 72 * hour, "P3: the workflow's own");
        // A workflow without a kind is a request, and hashes as before.
        let plain = "name = \"w\"\n[[steps]]\nname = \"s\"\nplugin = \"p\"\n";
        let wf = Workflow::parse(plain, "w").unwrap();
        assert_eq!(wf.kind, Kind::Request);
        assert!(!serde_json::to_string(&wf).unwrap().contains("kind"));
    }

    #[test]
    fn a_matrix_that_misses_a_pair_or_reads_undeclared_inputs_is_refused() {
        let cases = [
            (
                INCIDENT.replace(
                    "matrix.low = { high = \"P2\", low = \"P3\" }",
                    "matrix.low = { high = \"P2\" }",
                ),
                "no priority for impact \"low\" and urgency \"low\"",
            ),
            (
                INCIDENT.replace(
                    "[inputs.urgency]\ntype = \"enum\"\nvalues = [\"high\", \"low\"]\nrequired = true\n",
                    "",
                ),
                "reads the input `urgency`: declare it in [inputs] as an enum",
            ),
            (
                INCIDENT.replace("P2 = \"8h\"", "P9 = \"8h\""),
                "sla names \"P9\", which the matrix never gives",
            ),
            (
                INCIDENT.replace("kind = \"incident\"", "kind = \"outage\""),
                "unknown variant `outage`",
            ),
        ];
        for (text, want) in cases {
            let err = Workflow::parse(&text, "incident.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
        }
    }
}
