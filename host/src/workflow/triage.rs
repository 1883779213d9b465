//! Triage: an incident routed to a group by rules over its fields.
//!
//! ```toml
//! [[triage]]
//! when = "inputs.service == 'email'"       # CEL over subject and inputs
//! group = "messaging"
//! [[triage]]
//! when = "inputs.impact == 'high'"
//! group = "major-incident"
//! [[triage]]
//! when = "true"                            # everything else
//! group = "service-desk"
//!
//! [[steps]]
//! name = "resolve"
//! task = { group = "${triage}", instructions = "Restore the service." }
//! ```
//!
//! The first rule that holds, in file order, routes the ticket when it is
//! created: the ticket records the group (`routed_to`), its trail the rule
//! that decided (`triaged`, with the rule's number and text), and a task
//! whose group is `${triage}` goes to that group. Reassigning the task
//! works as for any task. A ticket no rule routes, or a rule that gives no
//! true or false, is said so in the trail; a `${triage}` task with nobody
//! else to do it then fails with that reason.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Workflow, condition};

/// A task's group that means "the group triage routed the ticket to".
pub const TRIAGE_GROUP: &str = "${triage}";

/// One rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TriageRule {
    /// When it routes: CEL over `subject` and `inputs`.
    pub when: String,
    /// Where to.
    pub group: String,
}

/// What triage decided for one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The group, if a rule held.
    pub group: Option<String>,
    /// The rule that held (1-based), if any.
    pub rule: Option<usize>,
    /// Rules that gave no true or false, with why (1-based).
    pub errors: Vec<(usize, String)>,
}

/// Check the rules at load: each parses, reads only the subject and
/// declared inputs, and names a group.
pub(super) fn check(wf: &Workflow) -> Result<(), String> {
    for (i, rule) in wf.triage.iter().enumerate() {
        if rule.group.trim().is_empty() || rule.group == TRIAGE_GROUP {
            return Err(format!("triage rule {}: `group` must name a group", i + 1));
        }
        condition::check_ticket(wf, &rule.when)
            .map_err(|e| format!("triage rule {}: when: {e}", i + 1))?;
    }
    Ok(())
}

/// Route a ticket of `wf` with `subject` and `inputs`.
pub fn route(wf: &Workflow, subject: &str, inputs: &Value) -> Routing {
    let mut errors = Vec::new();
    for (i, rule) in wf.triage.iter().enumerate() {
        match condition::evaluate(&rule.when, subject, inputs, &Map::new()) {
            Ok(true) => {
                return Routing {
                    group: Some(rule.group.clone()),
                    rule: Some(i + 1),
                    errors,
                };
            }
            Ok(false) => {}
            Err(why) => errors.push((i + 1, why)),
        }
    }
    Routing {
        group: None,
        rule: None,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WF: &str = r#"
        name = "incident"
        kind = "incident"
        [inputs.service]
        type = "string"
        [inputs.impact]
        type = "enum"
        values = ["high", "low"]
        default = "low"
        [[triage]]
        when = "inputs.service == 'email'"
        group = "messaging"
        [[triage]]
        when = "inputs.impact == 'high'"
        group = "major-incident"
        [[steps]]
        name = "resolve"
        task = { group = "${triage}", instructions = "Restore it." }
    "#;

    #[test]
    fn the_first_rule_that_holds_routes_and_a_bad_rule_is_refused_at_load() {
        let wf = Workflow::parse(WF, "test").unwrap();
        let r = route(
            &wf,
            "mail down",
            &json!({ "service": "email", "impact": "high" }),
        );
        assert_eq!((r.group.as_deref(), r.rule), (Some("messaging"), Some(1)));
        let r = route(&wf, "vpn", &json!({ "service": "vpn", "impact": "high" }));
        assert_eq!(
            (r.group.as_deref(), r.rule),
            (Some("major-incident"), Some(2))
        );
        let r = route(&wf, "vpn", &json!({ "service": "vpn", "impact": "low" }));
        assert_eq!((r.group, r.rule), (None, None));
        // A rule that gives no bool is named, and the next rule decides.
        let r = route(&wf, "?", &json!({ "service": null, "impact": "high" }));
        assert_eq!(r.group.as_deref(), Some("major-incident"));

        let bad = WF.replace("inputs.service == 'email'", "inputs.team == 'x'");
        let e = Workflow::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("triage rule 1") && e.contains("team"), "{e}");
        let no_rules = WF.replace("[[triage]]", "[[nothing]]");
        assert!(Workflow::parse(&no_rules, "t.toml").is_err());
        let orphan = r#"
            name = "w"
            [[steps]]
            name = "resolve"
            task = { group = "${triage}", instructions = "Restore it." }
        "#;
        let e = Workflow::parse(orphan, "t.toml").unwrap_err().to_string();
        assert!(e.contains("[[triage]]"), "{e}");
    }
}
