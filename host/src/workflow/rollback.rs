//! A workflow's rollback plan: what undoes each step that changes
//! something, most dependent first, as approvers read it before they vote
//! on a change.
//!
//! Only a workflow with `on_failure = "compensate"` has one: its plugin
//! steps are undone in reverse when a step fails for good (a failed
//! verification included). Each entry names the step, its plugin, and the
//! reverse the step declares in its config (`rollback`, as the first-party
//! `rest-change` plugin takes it, with the ticket's `{{NAME}}` inputs
//! shown filled in), or says the plugin's own `compensate` undoes it.
//! Human tasks are not undone by the host.

use serde::Serialize;
use serde_json::Value;

use super::{OnFailure, Workflow};

/// One step of a rollback plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Undo {
    /// The step undone.
    pub step: String,
    /// The plugin that undoes it.
    pub plugin: String,
    /// What undoing it does, as the step declares it.
    pub undo: String,
}

/// The rollback plan of `wf` for a ticket with `inputs`, in the order it
/// would run; empty when the workflow does not compensate.
pub fn plan(wf: &Workflow, inputs: &Value) -> Vec<Undo> {
    if wf.on_failure != OnFailure::Compensate {
        return Vec::new();
    }
    let mut steps: Vec<(usize, usize, &super::StepDef)> = wf
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.task.is_none())
        .map(|(i, s)| (wf.ancestors(&s.name).len(), i, s))
        .collect();
    // A step has more ancestors than any of its ancestors: most dependent
    // first undoes each before what it depends on.
    steps.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    steps
        .into_iter()
        .map(|(_, _, s)| Undo {
            step: s.name.clone(),
            plugin: s.plugin.clone(),
            undo: match s.config.get("rollback") {
                Some(r) => fill(r, inputs),
                None => format!("`{}` undoes what its run did (its compensate)", s.plugin),
            },
        })
        .collect()
}

/// `{{NAME}}` replaced by the input's text, for reading; a name with no
/// input stays as written.
fn fill(text: &str, inputs: &Value) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        out.push_str(&rest[..start]);
        match inputs.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(v) if !v.is_null() => out.push_str(&v.to_string()),
            _ => out.push_str(&rest[start..start + 4 + len]),
        }
        rest = &rest[start + 4 + len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_compensating_workflow_s_plan_undoes_the_most_dependent_step_first() {
        let wf = Workflow::parse(
            r#"
            name = "c"
            on_failure = "compensate"
            [[steps]]
            name = "apply"
            plugin = "rest-change"
            depends_on = ["snapshot"]
            config = { rollback = "DELETE /rules/{{rule_id}}?port={{ port }}&x={{nope}}" }
            [[steps]]
            name = "snapshot"
            plugin = "p"
            [[steps]]
            name = "review"
            depends_on = ["apply"]
            task = { group = "cab", instructions = "Review." }
            "#,
            "test",
        )
        .unwrap();
        let plan = plan(&wf, &json!({ "rule_id": "r-1", "port": 445 }));
        assert_eq!(
            plan,
            [
                Undo {
                    step: "apply".into(),
                    plugin: "rest-change".into(),
                    undo: "DELETE /rules/r-1?port=445&x={{nope}}".into(),
                },
                Undo {
                    step: "snapshot".into(),
                    plugin: "p".into(),
                    undo: "`p` undoes what its run did (its compensate)".into(),
                },
            ]
        );
        let stop = Workflow::parse(
            "name = \"s\"\n[[steps]]\nname = \"a\"\nplugin = \"p\"\n",
            "test",
        )
        .unwrap();
        assert!(super::plan(&stop, &json!({})).is_empty());
    }
}
