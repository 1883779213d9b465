//! Relations a workflow makes: its tickets, when created, relate to the
//! tickets their inputs name.
//!
//! ```toml
//! [inputs.problem]
//! type = "string"
//! description = "The problem this change fixes (T-...)"
//!
//! [[relate]]
//! rel = "fixes"                    # parent, child, caused_by, causes, fixes, fixed_by, related
//! ticket = "${inputs.problem}"
//! ```
//!
//! A ticket created with the input set is related to that ticket (and it
//! back, with the reverse) as soon as it exists, by `workflow:NAME`, each
//! side in its own trail. An input naming no ticket refuses the create
//! (422, naming the input); an input left empty relates nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Workflow;
use crate::ticket::Rel;

/// One relation the workflow's tickets make.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RelateRule {
    /// How the new ticket relates to the other.
    pub rel: Rel,
    /// The other ticket: `${inputs.NAME}`.
    pub ticket: String,
}

impl RelateRule {
    /// The input naming the other ticket.
    fn input(&self) -> Option<&str> {
        self.ticket
            .trim()
            .strip_prefix("${inputs.")?
            .strip_suffix('}')
            .map(str::trim)
    }
}

/// Check the rules at load: each names a declared input.
pub(super) fn check(wf: &Workflow) -> Result<(), String> {
    for (i, rule) in wf.relate.iter().enumerate() {
        let Some(name) = rule.input() else {
            return Err(format!(
                "relate rule {}: ticket = {:?} must be `${{inputs.NAME}}`",
                i + 1,
                rule.ticket
            ));
        };
        if !wf.inputs.contains_key(name) {
            return Err(format!(
                "relate rule {}: input `{name}` is not declared in [inputs]",
                i + 1
            ));
        }
    }
    Ok(())
}

/// The relations a ticket of `wf` with `inputs` makes: (relation, the
/// input that names the other ticket, its id), for each input given.
pub fn targets<'a>(wf: &'a Workflow, inputs: &Value) -> Vec<(Rel, &'a str, String)> {
    wf.relate
        .iter()
        .filter_map(|rule| {
            let name = rule.input()?;
            let id = inputs.get(name)?.as_str()?.trim();
            (!id.is_empty()).then(|| (rule.rel, name, id.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WF: &str = r#"
        name = "change"
        [inputs.problem]
        type = "string"
        [[relate]]
        rel = "fixes"
        ticket = "${inputs.problem}"
        [[steps]]
        name = "apply"
        plugin = "p"
    "#;

    #[test]
    fn a_rule_names_a_declared_input_and_relates_only_when_it_is_given() {
        let wf = Workflow::parse(WF, "change.toml").unwrap();
        assert_eq!(
            targets(&wf, &json!({ "problem": " T-1 " })),
            [(Rel::Fixes, "problem", "T-1".to_string())]
        );
        assert!(targets(&wf, &json!({ "problem": "" })).is_empty());
        assert!(targets(&wf, &json!({})).is_empty());
        let e = Workflow::parse(
            &WF.replace("${inputs.problem}", "${inputs.issue}"),
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("relate rule 1") && e.contains("issue"), "{e}");
        let e = Workflow::parse(&WF.replace("${inputs.problem}", "T-1"), "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("${inputs.NAME}"), "{e}");
        let e = Workflow::parse(&WF.replace("\"fixes\"", "\"repairs\""), "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("repairs"), "{e}");
    }
}
