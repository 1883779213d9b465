//! Human tasks: a step done by a person, not a plugin.
//!
//! ```toml
//! [[steps]]
//! name = "collect-equipment"
//! task.assignee = "${inputs.manager}"      # a person, by e-mail
//! task.group = "it-support"                # and/or a group (a role)
//! task.instructions = "Collect the leaver's equipment before their last day."
//! task.checklist = ["laptop", "badge", "keys", "corporate card", "phone"]
//! task.due = "${inputs.last_day} 12:00 in ${inputs.time_zone}"   # or due_in = "2d"
//! task.remind_every = "1d"
//! task.escalate_to = "it-managers"         # a group, once overdue
//! ```
//!
//! When the step is ready (dependencies done, condition true, time come) it
//! is assigned: status `waiting_task`, a `task_assigned` event with who and
//! when it is due. The assignee (matched by e-mail or principal name) or a
//! member of the group (or of the escalation group, once escalated)
//! completes it with a note and an answer for every checklist item; an item
//! answered "no" needs the note to say why. The answers are the step's
//! outputs, so later steps' conditions can read them. An operator or a group
//! member may reassign it. Overdue, it escalates once; it is reminded every
//! `remind_every` until done.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Workflow, inputs, time};

/// A human task, as the workflow file writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    /// The person it is for: an e-mail, or `${inputs.NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// A group (role) whose members may complete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// What to do, for the person.
    pub instructions: String,
    /// Items the person answers one by one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checklist: Vec<String>,
    /// When it is due: an instant, as `not_before` takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// Or this long after it is assigned.
    #[serde(
        default,
        with = "super::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub due_in: Option<Duration>,
    /// Count `due_in` in this calendar's business hours (`[calendars.NAME]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
    /// Remind the assignee this often until it is done.
    #[serde(
        default,
        with = "super::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub remind_every: Option<Duration>,
    /// The group it goes to as well once overdue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<String>,
}

/// A task as assigned to one ticket: the definition filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The person, filled in (lower case), if any.
    pub assignee: Option<String>,
    /// When it is due, ms since the epoch, and as the workflow put it.
    pub due: Option<time::Due>,
}

impl TaskDef {
    /// Check at load: someone can do it, its inputs are declared, its due
    /// time reads, its checklist has no blank or repeated item.
    pub(super) fn check(&self, wf: &Workflow) -> Result<(), String> {
        if self.assignee.is_none() && self.group.is_none() {
            return Err("task: give an `assignee` or a `group` (or both)".into());
        }
        if self.instructions.trim().is_empty() {
            return Err("task: `instructions` is empty".into());
        }
        if self.group.as_deref() == Some(super::triage::TRIAGE_GROUP) && wf.triage.is_empty() {
            return Err(format!(
                "task: group `{}` is the group triage routes to, but there are no [[triage]] rules",
                super::triage::TRIAGE_GROUP
            ));
        }
        if self.due.is_some() && self.due_in.is_some() {
            return Err("task: give `due` or `due_in`, not both".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for item in &self.checklist {
            if item.trim().is_empty() || !seen.insert(item.trim().to_lowercase()) {
                return Err(format!(
                    "task: checklist item {item:?} is blank or repeated"
                ));
            }
        }
        if let Some(a) = &self.assignee {
            inputs::substitute(a, "${inputs.", |name| {
                wf.inputs.get(name).map(|_| String::new())
            })
            .map_err(|e| match e {
                None => "task: assignee has an unclosed `${inputs.`".to_string(),
                Some(name) => {
                    format!("task: assignee uses input `{name}`, which [inputs] does not declare")
                }
            })?;
        }
        if let Some(due) = &self.due {
            time::check_instant(wf, due).map_err(|e| format!("task: due{e}"))?;
        }
        if let Some(c) = &self.calendar {
            if !wf.calendars.contains_key(c) {
                return Err(format!(
                    "task: calendar `{c}` is not declared in [calendars]"
                ));
            }
            if self.due_in.is_none() {
                return Err("task: `calendar` counts `due_in`, which is not set".into());
            }
        }
        Ok(())
    }

    /// Fill in the assignee and work out the due time, at `now_ms` (in
    /// `wf`'s calendar, when the task names one).
    pub fn assign(&self, wf: &Workflow, inputs: &Value, now_ms: u64) -> Result<Assignment, String> {
        let assignee = match &self.assignee {
            Some(a) => {
                let filled = time::fill_inputs(a, inputs)?;
                let filled = filled.trim().to_lowercase();
                if filled.is_empty() {
                    // An optional input left empty: the group has it.
                    if self.group.is_none() {
                        return Err(format!(
                            "the assignee {a:?} is empty for this ticket and the task has no group"
                        ));
                    }
                    None
                } else {
                    Some(filled)
                }
            }
            None => None,
        };
        let due = match (&self.due, self.due_in) {
            (Some(text), _) => Some(time::instant(text, inputs)?),
            (None, Some(d)) => Some(
                match self
                    .calendar
                    .as_ref()
                    .and_then(|c| wf.calendars.get(c).map(|cal| (c, cal)))
                {
                    Some((name, cal)) => time::Due {
                        at_ms: cal.add(now_ms, d.as_millis() as u64)?,
                        shown: format!(
                            "{} of {name} business hours after it was assigned",
                            humantime::format_duration(d)
                        ),
                    },
                    None => time::Due {
                        at_ms: now_ms.saturating_add(d.as_millis() as u64),
                        shown: format!("{} after it was assigned", humantime::format_duration(d)),
                    },
                },
            ),
            (None, None) => None,
        };
        Ok(Assignment { assignee, due })
    }

    /// Check a completion's answers: one per checklist item (matched
    /// case-blind), no others, and a note when any is "no". Returns them
    /// keyed by the items as the workflow writes them.
    pub fn answers(
        &self,
        given: &BTreeMap<String, bool>,
        note: &str,
    ) -> Result<BTreeMap<String, bool>, String> {
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        for item in &self.checklist {
            let key = item.trim().to_lowercase();
            match given.iter().find(|(k, _)| k.trim().to_lowercase() == key) {
                Some((_, v)) => {
                    out.insert(item.clone(), *v);
                }
                None => missing.push(item.as_str()),
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "answer every checklist item: missing {}",
                missing.join(", ")
            ));
        }
        let unknown: Vec<&str> = given
            .keys()
            .filter(|k| {
                !self
                    .checklist
                    .iter()
                    .any(|i| i.trim().to_lowercase() == k.trim().to_lowercase())
            })
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "not on the checklist: {} (it has: {})",
                unknown.join(", "),
                self.checklist.join(", ")
            ));
        }
        let no: Vec<&str> = out
            .iter()
            .filter(|(_, v)| !**v)
            .map(|(k, _)| k.as_str())
            .collect();
        if !no.is_empty() && note.trim().is_empty() {
            return Err(format!(
                "say in the note why these are not done: {}",
                no.join(", ")
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wf(task: &str) -> Result<Workflow, String> {
        Workflow::parse(
            &format!(
                "name = \"w\"\n[inputs.manager]\ntype = \"email\"\n[inputs.last_day]\ntype = \"date\"\n\
                 [[steps]]\nname = \"collect\"\ntask = {task}\n"
            ),
            "w.toml",
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_task_is_assigned_from_the_inputs_with_its_due_time() {
        let wf = wf(r#"{ assignee = "${inputs.manager}", instructions = "Collect", checklist = ["laptop", "badge"], due = "${inputs.last_day} 12:00 in Europe/Paris" }"#).unwrap();
        let task = wf.steps[0].task.as_ref().unwrap();
        let a = task
            .assign(
                &wf,
                &json!({ "manager": "Boss@Example.com", "last_day": "2026-12-04" }),
                0,
            )
            .unwrap();
        assert_eq!(a.assignee.as_deref(), Some("boss@example.com"));
        let due = a.due.unwrap();
        assert_eq!(due.shown, "2026-12-04 12:00 in Europe/Paris");
        assert_eq!(time::utc(due.at_ms), "2026-12-04T11:00:00Z");
        // Every item answered; a "no" needs a note.
        let yes = BTreeMap::from([("Laptop".to_string(), true), ("badge".to_string(), true)]);
        assert_eq!(
            task.answers(&yes, "").unwrap(),
            BTreeMap::from([("badge".to_string(), true), ("laptop".to_string(), true)])
        );
        let no = BTreeMap::from([("laptop".to_string(), false), ("badge".to_string(), true)]);
        assert!(
            task.answers(&no, " ")
                .unwrap_err()
                .contains("why these are not done: laptop")
        );
        assert!(task.answers(&no, "left in Lyon office").is_ok());
        let short = BTreeMap::from([("laptop".to_string(), true)]);
        assert!(
            task.answers(&short, "")
                .unwrap_err()
                .contains("missing badge")
        );
        let extra = BTreeMap::from([
            ("laptop".to_string(), true),
            ("badge".to_string(), true),
            ("car".to_string(), true),
        ]);
        assert!(
            task.answers(&extra, "")
                .unwrap_err()
                .contains("not on the checklist: car")
        );
    }

    #[test]
    fn a_task_due_in_business_hours_counts_on_its_calendar() {
        let wf = Workflow::parse(
            r#"
            name = "w"
            [calendars.support]
            time_zone = "Europe/Paris"
            hours = ["Mon-Fri 09:00-17:00"]
            [[steps]]
            name = "triage"
            task = { group = "support", instructions = "Triage", due_in = "4h", calendar = "support" }
            "#,
            "w.toml",
        )
        .unwrap();
        let task = wf.steps[0].task.as_ref().unwrap();
        // Assigned on Friday at 15:00: two hours that day, two on Monday.
        let friday = time::ms("2026-12-04 15:00 in Europe/Paris");
        let a = task.assign(&wf, &json!({}), friday).unwrap();
        let due = a.due.unwrap();
        assert_eq!(
            time::utc(due.at_ms),
            "2026-12-07T10:00:00Z",
            "Monday 11:00 Paris"
        );
        assert_eq!(
            due.shown,
            "4h of support business hours after it was assigned"
        );
        let e = Workflow::parse(
            "name = \"w\"\n[[steps]]\nname = \"t\"\ntask = { group = \"g\", instructions = \"x\", due_in = \"1h\", calendar = \"nope\" }\n",
            "w.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("task: calendar `nope` is not declared"), "{e}");
    }

    #[test]
    fn bad_tasks_fail_at_load_naming_the_step_and_field() {
        for (task, want) in [
            (
                r#"{ instructions = "x" }"#,
                "step `collect`: task: give an `assignee` or a `group`",
            ),
            (
                r#"{ group = "g", instructions = " " }"#,
                "`instructions` is empty",
            ),
            (
                r#"{ assignee = "${inputs.boss}", instructions = "x" }"#,
                "assignee uses input `boss`, which [inputs] does not declare",
            ),
            (
                r#"{ group = "g", instructions = "x", checklist = ["a", "A"] }"#,
                "checklist item \"A\" is blank or repeated",
            ),
            (
                r#"{ group = "g", instructions = "x", due = "friday" }"#,
                "task: due:",
            ),
            (
                r#"{ group = "g", instructions = "x", due = "2026-12-04 12:00", due_in = "1d" }"#,
                "not both",
            ),
        ] {
            let e = wf(task).unwrap_err();
            assert!(e.contains(want), "{task}: {e}");
            assert!(e.contains("w.toml: step `collect`: "), "{e}");
        }
        let e = Workflow::parse(
            "name = \"w\"\n[[steps]]\nname = \"s\"\nplugin = \"p\"\ntask = { group = \"g\", instructions = \"x\" }\n",
            "w.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("step `s`: give a `plugin` or a `task`, not both"),
            "{e}"
        );
        let e = Workflow::parse("name = \"w\"\n[[steps]]\nname = \"s\"\n", "w.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("step `s`: give a `plugin` or a `task`"), "{e}");
    }
}
