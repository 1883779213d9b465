//! Step conditions: `when = "<CEL expression>"`.
//!
//! CEL (the Common Expression Language of Kubernetes and Google APIs) is a
//! known language with a spec, no side effects and no loops that can run
//! away, so a condition cannot hang the machine or reach anything. It sees
//! three variables:
//!
//! - `subject`: the ticket's subject (text);
//! - `inputs`: the ticket's inputs, every declared one present (`null` when
//!   not given);
//! - `steps`: the steps this one depends on (directly or through others),
//!   each `{"status": "succeeded" | "skipped", "outputs": {...}}`. A step name
//!   with `-` is read by index: `steps["find-device"].outputs.managed`.
//!
//! At load, a condition must parse, and name only declared inputs and steps
//! it depends on; the error gives the position. At run time, a condition
//! that does not give a bool (a missing output, a type error) fails its step
//! for good, saying why: it is the workflow that is wrong, and running the
//! step anyway could do what the condition was there to prevent.

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr};
use cel::{Context, IdedExpr, Program};
use serde_json::{Map, Value};

use super::{StepDef, Workflow};

/// What a condition reads, by the variable it reads it from.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// `inputs.NAME`.
    pub inputs: BTreeSet<String>,
    /// `steps.NAME` / `steps["NAME"]`.
    pub steps: BTreeSet<String>,
}

/// Check `when` of `step` at load: it parses and reads only what it may.
pub(super) fn check(wf: &Workflow, step: &StepDef, when: &str) -> Result<(), String> {
    check_reading(wf, &wf.ancestors(&step.name), when)
}

/// Check a rule over the ticket alone (a triage rule): it parses and reads
/// only the subject and declared inputs, no step.
pub(super) fn check_ticket(wf: &Workflow, when: &str) -> Result<(), String> {
    check_reading(wf, &BTreeSet::new(), when)
}

fn check_reading(wf: &Workflow, ancestors: &BTreeSet<&str>, when: &str) -> Result<(), String> {
    let program = compile(when)?;
    let mut problem = None;
    walk(program.expression(), &mut Vec::new(), &mut |id, read| {
        if problem.is_some() {
            return;
        }
        let why = match read {
            Read::Input(name) if !wf.inputs.contains_key(name) => Some(if wf.inputs.is_empty() {
                format!("reads input `{name}`, but the workflow declares no [inputs]")
            } else {
                format!("reads input `{name}`, which [inputs] does not declare")
            }),
            Read::Step(name) if !ancestors.contains(name) => Some(if wf.step(name).is_some() {
                format!(
                    "reads step `{name}`, which this step does not depend on (add it to depends_on)"
                )
            } else {
                format!("reads step `{name}`, which the workflow does not have")
            }),
            Read::Unknown(name) => Some(format!(
                "unknown variable `{name}` (a condition reads subject, inputs and steps)"
            )),
            _ => None,
        };
        problem = why.map(|w| (id, w));
    });
    match problem {
        Some((id, why)) => {
            let at = program
                .source_info()
                .offset_for(id)
                .map_or(String::new(), |(start, _)| {
                    format!(" (at column {})", start + 1)
                });
            Err(format!("{when:?}: {why}{at}"))
        }
        None => Ok(()),
    }
}

/// What `when` reads (for the trail: the values that decided it).
pub fn reads(when: &str) -> Reads {
    let mut reads = Reads::default();
    if let Ok(program) = compile(when) {
        walk(
            program.expression(),
            &mut Vec::new(),
            &mut |_, read| match read {
                Read::Input(n) => {
                    reads.inputs.insert(n.to_string());
                }
                Read::Step(n) => {
                    reads.steps.insert(n.to_string());
                }
                Read::Unknown(_) => {}
            },
        );
    }
    reads
}

/// Evaluate `when` over a ticket's subject, inputs and `steps` (name to
/// `{"status", "outputs"}`).
pub fn evaluate(
    when: &str,
    subject: &str,
    inputs: &Value,
    steps: &Map<String, Value>,
) -> Result<bool, String> {
    let program = compile(when)?;
    let mut cx = Context::default();
    let bind = |e: cel::SerializationError| format!("{when:?}: {e}");
    cx.add_variable("subject", subject).map_err(bind)?;
    cx.add_variable("inputs", inputs).map_err(bind)?;
    cx.add_variable("steps", steps).map_err(bind)?;
    match program.execute(&cx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "{when:?} gave {}, not true or false",
            match &other {
                cel::Value::String(s) => format!("{:?}", s.as_str()),
                cel::Value::Int(n) => n.to_string(),
                cel::Value::Null => "null".into(),
                other => format!("{other:?}"),
            }
        )),
        Err(e) => Err(format!("{when:?}: {e}")),
    }
}

/// Parse a CEL expression, or say where it does not parse.
pub(crate) fn compile(when: &str) -> Result<Program, String> {
    Program::compile(when).map_err(|e| {
        let first = e.errors.first();
        match first {
            Some(p) => format!("{when:?} does not parse at column {}: {}", p.pos.1, p.msg),
            None => format!("{when:?} does not parse"),
        }
    })
}

enum Read<'a> {
    Input(&'a str),
    Step(&'a str),
    Unknown(&'a str),
}

/// Visit what `e` reads; `bound` holds the names comprehensions (`exists`,
/// `all`, `map`, ...) bind, which are not variables of ours.
fn walk<'a>(e: &'a IdedExpr, bound: &mut Vec<&'a str>, visit: &mut impl FnMut(u64, Read<'a>)) {
    // `inputs.NAME`, `inputs["NAME"]`, and the same for `steps`.
    let field_of = |e: &'a IdedExpr| -> Option<(u64, &'a str, &'a str)> {
        match &e.expr {
            Expr::Select(s) => match &s.operand.expr {
                Expr::Ident(root) => Some((s.operand.id, root.as_str(), s.field.as_str())),
                _ => None,
            },
            Expr::Call(c) if c.func_name == "_[_]" && c.target.is_none() && c.args.len() == 2 => {
                match (&c.args[0].expr, &c.args[1].expr) {
                    (
                        Expr::Ident(root),
                        Expr::Literal(cel::common::ast::LiteralValue::String(s)),
                    ) => Some((c.args[0].id, root.as_str(), s.inner())),
                    _ => None,
                }
            }
            _ => None,
        }
    };
    // Positions are those of the variable, where the reader looks.
    if let Some((at, root, field)) = field_of(e)
        && !bound.contains(&root)
    {
        match root {
            "inputs" => return visit(at, Read::Input(field)),
            "steps" => return visit(at, Read::Step(field)),
            _ => {}
        }
    }
    match &e.expr {
        Expr::Ident(name) => {
            if !bound.contains(&name.as_str())
                && !["subject", "inputs", "steps"].contains(&name.as_str())
            {
                visit(e.id, Read::Unknown(name));
            }
        }
        Expr::Select(s) => walk(&s.operand, bound, visit),
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                walk(t, bound, visit);
            }
            for a in &c.args {
                walk(a, bound, visit);
            }
        }
        Expr::List(l) => {
            for x in &l.elements {
                walk(x, bound, visit);
            }
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    walk(&me.key, bound, visit);
                    walk(&me.value, bound, visit);
                }
            }
        }
        Expr::Struct(st) => {
            for entry in &st.entries {
                if let EntryExpr::StructField(f) = &entry.expr {
                    walk(&f.value, bound, visit);
                }
            }
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, visit);
            let before = bound.len();
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            bound.push(&c.accu_var);
            for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                walk(part, bound, visit);
            }
            bound.truncate(before);
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const WF: &str = r#"
        name = "w"
        [inputs.legal_hold]
        type = "bool"
        default = false
        [inputs.apps]
        type = "list"
        [[steps]]
        name = "find-device"
        plugin = "p"
        [[steps]]
        name = "approve"
        plugin = "p"
        depends_on = ["find-device"]
        [[steps]]
        name = "wipe"
        plugin = "p"
        depends_on = ["approve"]
        when = 'steps["find-device"].outputs.managed == true'
        [[steps]]
        name = "hold"
        plugin = "p"
        when = "inputs.legal_hold && inputs.apps.exists(a, a == 'mail')"
    "#;

    #[test]
    fn conditions_read_inputs_and_the_steps_they_depend_on() {
        let wf = Workflow::parse(WF, "wf.toml").unwrap();
        let when = wf.step("wipe").unwrap().when.clone().unwrap();
        let steps = |managed: Value| {
            json!({"find-device": {"status": "succeeded", "outputs": {"managed": managed}}})
                .as_object()
                .unwrap()
                .clone()
        };
        assert_eq!(
            evaluate(&when, "a@x", &json!({}), &steps(json!(true))),
            Ok(true)
        );
        assert_eq!(
            evaluate(&when, "a@x", &json!({}), &steps(json!(false))),
            Ok(false)
        );
        assert_eq!(
            reads(&when),
            Reads {
                inputs: BTreeSet::new(),
                steps: BTreeSet::from(["find-device".to_string()])
            }
        );
        let hold = wf.step("hold").unwrap().when.clone().unwrap();
        let inputs = |hold: bool, apps: &[&str]| json!({"legal_hold": hold, "apps": apps});
        assert_eq!(
            evaluate(&hold, "a@x", &inputs(true, &["mail", "crm"]), &Map::new()),
            Ok(true)
        );
        assert_eq!(
            evaluate(&hold, "a@x", &inputs(true, &["crm"]), &Map::new()),
            Ok(false)
        );
        assert_eq!(
            evaluate(&hold, "a@x", &inputs(false, &["mail"]), &Map::new()),
            Ok(false)
        );
        assert_eq!(
            reads(&hold).inputs,
            BTreeSet::from(["legal_hold".to_string(), "apps".to_string()])
        );
    }

    #[test]
    fn a_condition_that_gives_no_bool_is_an_error_naming_it() {
        let err = evaluate("inputs.missing == 1", "a", &json!({}), &Map::new()).unwrap_err();
        assert!(
            err.contains("inputs.missing == 1") && err.contains("missing"),
            "{err}"
        );
        let err = evaluate("subject", "lee", &json!({}), &Map::new()).unwrap_err();
        assert!(err.contains("gave \"lee\", not true or false"), "{err}");
    }

    #[test]
    fn bad_conditions_fail_at_load_naming_file_step_and_position() {
        for (from, to, want) in [
            (
                "when = \"inputs.legal_hold &&",
                "when = \"inputs.legal_hold && &&",
                "step `hold`: when: \"inputs.legal_hold && && inputs.apps.exists(a, a == 'mail')\" does not parse at column",
            ),
            (
                "inputs.legal_hold &&",
                "inputs.legal_holdd &&",
                "step `hold`: when: \"inputs.legal_holdd && inputs.apps.exists(a, a == 'mail')\": reads input `legal_holdd`, which [inputs] does not declare (at column 1)",
            ),
            (
                "inputs.legal_hold &&",
                "steps.approve.outputs.ok &&",
                "step `hold`: when: \"steps.approve.outputs.ok && inputs.apps.exists(a, a == 'mail')\": reads step `approve`, which this step does not depend on",
            ),
            (
                "steps[\"find-device\"]",
                "steps[\"find-devise\"]",
                "reads step `find-devise`, which the workflow does not have",
            ),
            (
                "inputs.legal_hold &&",
                "ticket.urgent &&",
                "unknown variable `ticket`",
            ),
        ] {
            let text = WF.replace(from, to);
            assert_ne!(text, WF, "{from} not in the workflow");
            let err = Workflow::parse(&text, "wf.toml").unwrap_err().to_string();
            assert!(
                err.contains("wf.toml") && err.contains(want),
                "want {want:?} in {err}"
            );
        }
    }
}
