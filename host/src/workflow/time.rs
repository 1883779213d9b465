//! When a step may start: `not_before` and `delay`.
//!
//! ```toml
//! [[steps]]
//! name = "disable-account"
//! plugin = "entra-disable"
//! not_before = "${inputs.last_day} 17:00 in ${inputs.time_zone}"
//! delay = "15m"                    # after its dependencies are done
//! ```
//!
//! `not_before`, once `${inputs.NAME}` is filled in, is an instant in one of
//! these forms:
//!
//! - `2026-12-04 17:00 in Europe/Paris` (or without `in`; seconds optional):
//!   a wall-clock time in an IANA time zone, so 17:00 is 17:00 there in
//!   summer and in winter;
//! - `2026-12-04 17:00`: the same, in UTC;
//! - `2026-12-04T17:00:00+01:00`: RFC 3339, with its offset.
//!
//! The instant is worked out once, when the step's dependencies are done,
//! and kept with the step (`retry_at_ms`, status `scheduled`), so a restart
//! or a later change of clock rules does not move it.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde_json::Value;

use super::{InputType, StepDef, Workflow, inputs};

/// When a step may start, and how to say it to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The instant, in ms since the epoch.
    pub at_ms: u64,
    /// As the workflow put it, filled in: "2026-12-04 17:00 in Europe/Paris".
    pub shown: String,
}

/// Parse one `not_before` text (inputs filled in).
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let (civil, zone) = match words.as_slice() {
        [date, time] => (format!("{date}T{time}"), "UTC"),
        [date, time, zone] | [date, time, "in", zone] => (format!("{date}T{time}"), *zone),
        _ => return Err(not_an_instant(text)),
    };
    let civil: DateTime = civil.parse().map_err(|_| not_an_instant(text))?;
    let tz = TimeZone::get(zone)
        .map_err(|_| format!("{text:?}: {zone:?} is not an IANA time zone (e.g. Europe/Paris)"))?;
    civil
        .to_zoned(tz)
        .map(|z| z.timestamp())
        .map_err(|e| format!("{text:?}: {e}"))
}

fn not_an_instant(text: &str) -> String {
    format!(
        "{text:?} is not an instant: write \"2026-12-04 17:00 in Europe/Paris\", \"2026-12-04 17:00\" (UTC) or RFC 3339 (\"2026-12-04T17:00:00+01:00\")"
    )
}

/// Check a step's `not_before` at load: its inputs are declared, and with
/// sample values of their types it reads as an instant.
pub(super) fn check(wf: &Workflow, step: &StepDef) -> Result<(), String> {
    match &step.not_before {
        Some(text) => check_instant(wf, text).map_err(|e| format!("not_before{e}")),
        None => Ok(()),
    }
}

/// Check an instant with `${inputs.NAME}` in it (a `not_before`, a task's
/// `due`) at load. The error follows the field's name.
pub(super) fn check_instant(wf: &Workflow, text: &str) -> Result<(), String> {
    let sample = inputs::substitute(text, "${inputs.", |name| {
        wf.inputs.get(name).map(|def| {
            match def.kind {
                InputType::Date => "2026-01-05",
                InputType::Datetime => "2026-01-05T17:00:00Z",
                InputType::TimeZone => "Europe/Paris",
                InputType::Time => "17:00",
                _ => "x",
            }
            .to_string()
        })
    })
    .map_err(|e| match e {
        None => " has an unclosed `${inputs.`".to_string(),
        Some(name) => {
            format!(" uses input `{name}`, which [inputs] does not declare")
        }
    })?;
    parse_instant(&sample).map(|_| ()).map_err(|e| {
        if sample == *text {
            format!(": {e}")
        } else {
            format!(" {text:?} does not read as an instant with inputs of their types ({e})")
        }
    })
}

/// `text` with the ticket's `${inputs.NAME}` filled in.
pub fn fill_inputs(text: &str, inputs: &Value) -> Result<String, String> {
    inputs::substitute(text, "${inputs.", |name| {
        Some(
            inputs
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    })
    .map_err(|_| format!("{text:?} has an unclosed `${{inputs.`"))
}

/// The instant `text` names for a ticket with these inputs.
pub fn instant(text: &str, inputs: &Value) -> Result<Due, String> {
    let filled = fill_inputs(text, inputs)?;
    let ts = parse_instant(&filled)?;
    Ok(Due {
        at_ms: u64::try_from(ts.as_millisecond()).unwrap_or(0),
        shown: filled,
    })
}

/// When `step` may start, given the ticket's inputs and that its
/// dependencies were done at `now_ms`; `None` when it may start at once.
pub fn due(
    wf: &Workflow,
    def: &StepDef,
    inputs: &Value,
    now_ms: u64,
) -> Result<Option<Due>, String> {
    let mut due: Option<Due> = None;
    if let Some(text) = &def.not_before {
        due = Some(instant(text, inputs).map_err(|e| format!("not_before: {e}"))?);
    }
    if let Some(delay) = def.delay {
        let at_ms = now_ms.saturating_add(delay.as_millis() as u64);
        if due.as_ref().is_none_or(|d| at_ms > d.at_ms) {
            due = Some(Due {
                at_ms,
                shown: format!(
                    "{} after its dependencies",
                    humantime::format_duration(delay)
                ),
            });
        }
    }
    if let Some(name) = &def.window {
        let w = wf
            .windows
            .get(name)
            .ok_or_else(|| format!("window `{name}` is not declared"))?;
        let from = due.as_ref().map_or(now_ms, |d| d.at_ms.max(now_ms));
        let open = w
            .next_open(from)
            .map_err(|e| format!("window `{name}`: {e}"))?;
        if open > from {
            due = Some(Due {
                at_ms: open,
                shown: format!(
                    "{} in {} (window {name})",
                    local(open, &w.time_zone),
                    w.time_zone
                ),
            });
        }
    }
    Ok(due)
}

/// `at_ms` as a wall-clock time in `zone`: "2026-12-09 14:00".
fn local(at_ms: u64, zone: &str) -> String {
    Timestamp::from_millisecond(at_ms as i64)
        .ok()
        .zip(TimeZone::get(zone).ok())
        .map(|(t, tz)| t.to_zoned(tz).strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// An instant the tests write as text, in ms since the epoch.
#[cfg(test)]
pub(crate) fn ms(text: &str) -> u64 {
    parse_instant(text).expect("an instant").as_millisecond() as u64
}

/// An instant as UTC RFC 3339, for the trail beside the local form.
pub fn utc(at_ms: u64) -> String {
    Timestamp::from_millisecond(at_ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wall_clock_times_follow_the_zone_in_summer_and_winter() {
        // Paris is UTC+1 in December and UTC+2 in July.
        assert_eq!(
            ms("2026-12-04 17:00 in Europe/Paris"),
            ms("2026-12-04T16:00:00Z")
        );
        assert_eq!(
            ms("2026-07-03 17:00 Europe/Paris"),
            ms("2026-07-03T15:00:00Z")
        );
        assert_eq!(ms("2026-12-04 17:00"), ms("2026-12-04T17:00:00Z"));
        assert_eq!(ms("2026-12-04T17:00:00+01:00"), ms("2026-12-04T16:00:00Z"));
        for bad in [
            "tomorrow",
            "2026-12-04",
            "2026-12-04 25:00",
            "2026-12-04 17:00 in Mars/Olympus",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn not_before_fills_inputs_and_delay_counts_from_the_dependencies() {
        let wf = Workflow::parse(
            r#"
            name = "w"
            [inputs.last_day]
            type = "date"
            [inputs.time_zone]
            type = "time_zone"
            [[steps]]
            name = "cut"
            plugin = "p"
            not_before = "${inputs.last_day} 17:00 in ${inputs.time_zone}"
            delay = "1h"
            "#,
            "w",
        )
        .unwrap();
        let def = &wf.steps[0];
        let inputs = json!({ "last_day": "2026-12-04", "time_zone": "America/New_York" });
        let due = due(&wf, def, &inputs, 0).unwrap().unwrap();
        assert_eq!(due.at_ms, ms("2026-12-04T22:00:00Z"));
        assert_eq!(due.shown, "2026-12-04 17:00 in America/New_York");
        // An hour after the dependencies, when that is later.
        let late = ms("2026-12-04T21:30:00Z");
        let due = super::due(&wf, def, &inputs, late).unwrap().unwrap();
        assert_eq!(due.at_ms, late + 3_600_000);
        assert_eq!(due.shown, "1h after its dependencies");
    }

    #[test]
    fn a_window_moves_the_time_to_its_next_opening() {
        let wf = Workflow::parse(
            r#"
            name = "w"
            [windows.change]
            time_zone = "Europe/Paris"
            open = ["Wed 14:00-16:00"]
            [[steps]]
            name = "migrate"
            plugin = "p"
            not_before = "2026-12-03 09:00 in Europe/Paris"
            window = "change"
            [[steps]]
            name = "now-if-open"
            plugin = "p"
            window = "change"
            "#,
            "w",
        )
        .unwrap();
        // Thursday 09:00 waits for next Wednesday 14:00 Paris (13:00 UTC).
        let d = due(&wf, &wf.steps[0], &json!({}), 0).unwrap().unwrap();
        assert_eq!(d.at_ms, ms("2026-12-09T13:00:00Z"));
        assert_eq!(d.shown, "2026-12-09 14:00 in Europe/Paris (window change)");
        // Ready inside the window: no wait.
        let inside = ms("2026-12-02 15:00 in Europe/Paris");
        assert_eq!(due(&wf, &wf.steps[1], &json!({}), inside).unwrap(), None);
        // An undeclared window fails at load, naming what is declared.
        let e = Workflow::parse(
            "name = \"w\"\n[[steps]]\nname = \"s\"\nplugin = \"p\"\nwindow = \"chnage\"\n",
            "w.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("w.toml: step `s`: window `chnage` is not declared; [windows] has: none"),
            "{e}"
        );
        let e = Workflow::parse(
            "name = \"w\"\n[windows.c]\ntime_zone = \"UTC\"\nopen = [\"Wod 1:00-2:00\"]\n[[steps]]\nname = \"s\"\nplugin = \"p\"\n",
            "w.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("window `c`: open span \"Wod 1:00-2:00\": unknown day"),
            "{e}"
        );
    }

    #[test]
    fn a_not_before_that_cannot_read_as_an_instant_fails_at_load() {
        let text = |nb: &str| {
            format!(
                "name = \"w\"\n[inputs.last_day]\ntype = \"date\"\n[inputs.who]\ntype = \"email\"\n[[steps]]\nname = \"cut\"\nplugin = \"p\"\nnot_before = \"{nb}\"\n"
            )
        };
        for (nb, want) in [
            (
                "${inputs.last_day} 5pm",
                "step `cut`: not_before \"${inputs.last_day} 5pm\" does not read as an instant",
            ),
            (
                "${inputs.lastday} 17:00",
                "step `cut`: not_before uses input `lastday`, which [inputs] does not declare",
            ),
            ("${inputs.who} 17:00", "does not read as an instant"),
            (
                "next friday",
                "step `cut`: not_before: \"next friday\" is not an instant",
            ),
        ] {
            let err = Workflow::parse(&text(nb), "wf.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("wf.toml") && err.contains(want),
                "want {want:?} in {err}"
            );
        }
    }
}
