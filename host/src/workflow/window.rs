//! Change windows: named weekly spans of wall-clock time, in one IANA
//! zone, that a step waits for.
//!
//! ```toml
//! [windows.change]
//! time_zone = "Europe/Paris"
//! open = ["Wed 14:00-16:00", "Sat-Sun 00:00-24:00", "Mon-Fri 22:00-02:00"]
//!
//! [[steps]]
//! name = "migrate"
//! plugin = "..."
//! window = "change"
//! ```
//!
//! A step with a window starts at its time (`not_before`, `delay`, or once
//! its dependencies are done) if that is inside an open span, or else at
//! the next opening; the instant is kept with the step like any other
//! (status `scheduled`). A span may run past midnight (`22:00-02:00`);
//! `24:00` is the end of the day. An operator's run-now bypasses the
//! window, with its reason in the trail (an emergency change).

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

/// A named change window, as the workflow file writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The IANA zone its wall-clock times are in.
    pub time_zone: String,
    /// Weekly spans: `"Wed 14:00-16:00"`, `"Mon-Fri 22:00-02:00"`.
    pub open: Vec<String>,
}

/// One parsed span: the days it starts on, its start, and its length.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    /// Monday = 0.
    pub(super) days: [bool; 7],
    pub(super) start: Time,
    /// Minutes from its start (at most a day).
    pub(super) minutes: i64,
}

impl Window {
    /// Check at load: the zone exists, every span reads, there is one.
    pub fn check(&self) -> Result<(), String> {
        self.parse().map(|_| ())
    }

    fn parse(&self) -> Result<(TimeZone, Vec<Span>), String> {
        let tz = TimeZone::get(&self.time_zone).map_err(|_| {
            format!(
                "time_zone {:?} is not an IANA time zone (e.g. Europe/Paris)",
                self.time_zone
            )
        })?;
        if self.open.is_empty() {
            return Err("`open` lists no spans: write e.g. [\"Wed 14:00-16:00\"]".into());
        }
        let spans = self
            .open
            .iter()
            .map(|s| span(s))
            .collect::<Result<_, _>>()?;
        Ok((tz, spans))
    }

    /// The first instant at or after `at_ms` inside the window.
    pub fn next_open(&self, at_ms: u64) -> Result<u64, String> {
        let (tz, spans) = self.parse()?;
        let at = Timestamp::from_millisecond(at_ms as i64).map_err(|e| e.to_string())?;
        let today = at.to_zoned(tz.clone()).date();
        let mut best: Option<Timestamp> = None;
        // A span that opened yesterday may still be open; one opens within
        // the next seven days.
        for offset in -1..=7i64 {
            let day = today
                .checked_add(offset.days())
                .map_err(|e| e.to_string())?;
            let weekday = day.weekday().to_monday_zero_offset() as usize;
            for s in spans.iter().filter(|s| s.days[weekday]) {
                let start = day
                    .to_datetime(s.start)
                    .to_zoned(tz.clone())
                    .map_err(|e| e.to_string())?;
                let end = start
                    .datetime()
                    .checked_add(s.minutes.minutes())
                    .and_then(|dt| dt.to_zoned(tz.clone()))
                    .map_err(|e| e.to_string())?;
                let (start, end) = (start.timestamp(), end.timestamp());
                let candidate = if start <= at && at < end {
                    at
                } else if start > at {
                    start
                } else {
                    continue;
                };
                if best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|t| t.as_millisecond() as u64)
            .ok_or_else(|| "the window never opens".to_string())
    }
}

/// `"Mon-Fri 22:00-02:00"`, `"Wed 14:00-16:00"`, `"Sat,Sun 00:00-24:00"`.
pub(super) fn span(text: &str) -> Result<Span, String> {
    let bad = |why: &str| format!("open span {text:?}: {why}");
    let (days, times) = text
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("write days then hours, e.g. \"Mon-Fri 09:00-17:00\""))?;
    let mut set = [false; 7];
    for part in days.split(',') {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let (from, to) = (
            weekday(from).ok_or_else(|| bad("unknown day"))?,
            weekday(to).ok_or_else(|| bad("unknown day"))?,
        );
        let mut d = from;
        loop {
            set[d] = true;
            if d == to {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    let (start, end) = times
        .trim()
        .split_once('-')
        .ok_or_else(|| bad("hours are start-end, e.g. 09:00-17:00"))?;
    let minutes_of = |t: &str| -> Result<i64, String> {
        if t.trim() == "24:00" {
            return Ok(24 * 60);
        }
        let time: Time = t
            .trim()
            .parse()
            .map_err(|_| bad(&format!("{t:?} is not a time (HH:MM)")))?;
        Ok(i64::from(time.hour()) * 60 + i64::from(time.minute()))
    };
    let (from, to) = (minutes_of(start)?, minutes_of(end)?);
    if from >= 24 * 60 {
        return Err(bad("a span cannot start at 24:00"));
    }
    let minutes = if to > from {
        to - from
    } else {
        to + 24 * 60 - from
    };
    if minutes == 0 || from == to {
        return Err(bad("the span is empty"));
    }
    Ok(Span {
        days: set,
        start: Time::new((from / 60) as i8, (from % 60) as i8, 0, 0)
            .map_err(|e| bad(&e.to_string()))?,
        minutes,
    })
}

fn weekday(name: &str) -> Option<usize> {
    let day = match name.trim().to_ascii_lowercase().get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    };
    Some(day.to_monday_zero_offset() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::time::ms;

    fn window(open: &[&str]) -> Window {
        Window {
            time_zone: "Europe/Paris".into(),
            open: open.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_step_waits_for_the_next_opening_or_starts_inside_one() {
        let w = window(&["Wed 14:00-16:00"]);
        // 2026-12-02 is a Wednesday.
        let monday = ms("2026-11-30 09:00 in Europe/Paris");
        assert_eq!(
            w.next_open(monday).unwrap(),
            ms("2026-12-02 14:00 in Europe/Paris")
        );
        let inside = ms("2026-12-02 15:30 in Europe/Paris");
        assert_eq!(w.next_open(inside).unwrap(), inside);
        // At its end it has closed: next week.
        let end = ms("2026-12-02 16:00 in Europe/Paris");
        assert_eq!(
            w.next_open(end).unwrap(),
            ms("2026-12-09 14:00 in Europe/Paris")
        );
        // Summer time: 14:00-16:00 Paris is 12:00-14:00 UTC, so on
        // Wednesday 2026-07-01 13:00 UTC is inside and 14:30 is past it.
        let inside = ms("2026-07-01 13:00 in UTC");
        assert_eq!(w.next_open(inside).unwrap(), inside);
        assert_eq!(
            w.next_open(ms("2026-07-01 14:30 in UTC")).unwrap(),
            ms("2026-07-08 12:00 in UTC")
        );
    }

    #[test]
    fn spans_past_midnight_day_ranges_and_whole_days() {
        let w = window(&["Mon-Fri 22:00-02:00", "Sat,Sun 00:00-24:00"]);
        // Tuesday 01:00 is inside Monday night's span.
        let tue = ms("2026-12-01 01:00 in Europe/Paris");
        assert_eq!(w.next_open(tue).unwrap(), tue);
        // Tuesday noon waits for 22:00.
        assert_eq!(
            w.next_open(ms("2026-12-01 12:00 in Europe/Paris")).unwrap(),
            ms("2026-12-01 22:00 in Europe/Paris")
        );
        // Saturday noon is inside the weekend.
        let sat = ms("2026-12-05 12:00 in Europe/Paris");
        assert_eq!(w.next_open(sat).unwrap(), sat);
    }

    #[test]
    fn bad_windows_are_refused_naming_the_span() {
        for (open, want) in [
            (vec![], "lists no spans"),
            (vec!["Wed"], "write days then hours"),
            (vec!["Wod 14:00-16:00"], "unknown day"),
            (vec!["Wed 14:00"], "start-end"),
            (vec!["Wed 14:00-25:00"], "not a time"),
            (vec!["Wed 14:00-14:00"], "empty"),
        ] {
            let e = window(&open).check().unwrap_err();
            assert!(e.contains(want), "{open:?}: {e}");
        }
        let mut w = window(&["Wed 14:00-16:00"]);
        w.time_zone = "Mars/Olympus".into();
        assert!(w.check().unwrap_err().contains("IANA"));
    }
}
