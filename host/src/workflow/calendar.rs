//! Business-hours calendars: when a support team works, so an SLA of
//! "16h" means sixteen working hours, not sixteen hours of the clock.
//!
//! ```toml
//! sla = "16h"
//! calendar = "emea-support"
//! sla_at_risk = 0.75              # the share of the SLA after which it is at risk
//!
//! [calendars.emea-support]
//! time_zone = "Europe/Paris"
//! hours = ["Mon-Fri 09:00-12:30", "Mon-Fri 13:30-17:30"]
//! holidays = ["2026-12-25", "2027-01-01"]
//! ```
//!
//! Hours are weekly spans as change windows write them (`Mon-Fri
//! 09:00-17:00`, one may run past midnight); they must not overlap. A
//! holiday is a whole local date on which no span starts. The deadline is
//! worked out once, at creation, and kept with the ticket.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use super::window::{Span, span};

/// A business-hours calendar, as the workflow file writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    /// The IANA zone its hours are in.
    pub time_zone: String,
    /// Weekly working spans: `"Mon-Fri 09:00-17:00"`.
    pub hours: Vec<String>,
    /// Dates (`YYYY-MM-DD`, local) with no working hours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
}

/// A calendar ready to count with.
struct Parsed {
    tz: TimeZone,
    spans: Vec<Span>,
    holidays: std::collections::BTreeSet<Date>,
}

/// The longest a count walks (a calendar with one hour a year still ends).
const MAX_DAYS: i64 = 3 * 366;

impl Calendar {
    /// Check at load: the zone, the spans, no overlap, the holidays' dates.
    pub fn check(&self) -> Result<(), String> {
        let p = self.parse()?;
        // Overlap, by minute of the week (a span past Sunday midnight wraps).
        const WEEK: i64 = 7 * 24 * 60;
        let mut taken: Vec<(i64, i64, &str)> = Vec::new();
        for (s, text) in p.spans.iter().zip(&self.hours) {
            for day in (0..7).filter(|d| s.days[*d]) {
                let start = day as i64 * 24 * 60
                    + i64::from(s.start.hour()) * 60
                    + i64::from(s.start.minute());
                for shift in [-WEEK, 0, WEEK] {
                    let (a, b) = (start + shift, start + s.minutes + shift);
                    if let Some((_, _, other)) = taken.iter().find(|(x, y, _)| a < *y && *x < b) {
                        return Err(format!("hours {text:?} overlap {other:?}"));
                    }
                }
                taken.push((start, start + s.minutes, text));
            }
        }
        Ok(())
    }

    fn parse(&self) -> Result<Parsed, String> {
        let tz = TimeZone::get(&self.time_zone).map_err(|_| {
            format!(
                "time_zone {:?} is not an IANA time zone (e.g. Europe/Paris)",
                self.time_zone
            )
        })?;
        if self.hours.is_empty() {
            return Err("`hours` lists no spans: write e.g. [\"Mon-Fri 09:00-17:00\"]".into());
        }
        let spans = self
            .hours
            .iter()
            .map(|h| span(h).map_err(|e| e.replacen("open span", "hours", 1)))
            .collect::<Result<_, _>>()?;
        let holidays = self
            .holidays
            .iter()
            .map(|d| {
                d.parse::<Date>()
                    .map_err(|_| format!("holiday {d:?} is not a date (YYYY-MM-DD)"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Parsed {
            tz,
            spans,
            holidays,
        })
    }

    /// The working intervals (ms) that end after `from_ms`, in order, for
    /// up to [`MAX_DAYS`].
    fn intervals(&self, from_ms: u64) -> Result<Vec<(u64, u64)>, String> {
        let p = self.parse()?;
        let from = Timestamp::from_millisecond(from_ms as i64).map_err(|e| e.to_string())?;
        let first = from.to_zoned(p.tz.clone()).date();
        let mut out = Vec::new();
        for offset in -1..MAX_DAYS {
            let day = first
                .checked_add(offset.days())
                .map_err(|e| e.to_string())?;
            if p.holidays.contains(&day) {
                continue;
            }
            let weekday = day.weekday().to_monday_zero_offset() as usize;
            let mut today: Vec<(u64, u64)> = Vec::new();
            for s in p.spans.iter().filter(|s| s.days[weekday]) {
                let start = day.to_datetime(s.start);
                let end = start
                    .checked_add(s.minutes.minutes())
                    .map_err(|e| e.to_string())?;
                let ms = |dt: jiff::civil::DateTime| {
                    dt.to_zoned(p.tz.clone())
                        .map(|z| z.timestamp().as_millisecond().max(0) as u64)
                        .map_err(|e| e.to_string())
                };
                let (a, b) = (ms(start)?, ms(end)?);
                if b > from_ms {
                    today.push((a.max(from_ms), b));
                }
            }
            today.sort_unstable();
            out.extend(today);
            // Enough for any deadline a year ahead; callers stop early.
            if out.len() > 4000 {
                break;
            }
        }
        Ok(out)
    }

    /// The instant `business_ms` of working time after `from_ms`.
    pub fn add(&self, from_ms: u64, business_ms: u64) -> Result<u64, String> {
        let mut left = business_ms;
        for (a, b) in self.intervals(from_ms)? {
            if b - a >= left {
                return Ok(a + left);
            }
            left -= b - a;
        }
        Err(format!(
            "the calendar has too few working hours to count {} within {MAX_DAYS} days",
            humantime::format_duration(std::time::Duration::from_millis(business_ms))
        ))
    }

    /// Working time between `from_ms` and `to_ms`.
    pub fn between(&self, from_ms: u64, to_ms: u64) -> Result<u64, String> {
        if to_ms <= from_ms {
            return Ok(0);
        }
        Ok(self
            .intervals(from_ms)?
            .into_iter()
            .take_while(|(a, _)| *a < to_ms)
            .map(|(a, b)| b.min(to_ms) - a)
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::time::ms;

    fn emea() -> Calendar {
        Calendar {
            time_zone: "Europe/Paris".into(),
            hours: vec!["Mon-Fri 09:00-12:30".into(), "Mon-Fri 13:30-17:30".into()],
            holidays: vec!["2026-12-25".into()],
        }
    }

    const H: u64 = 3_600_000;

    #[test]
    fn business_time_skips_nights_lunch_weekends_and_holidays() {
        let c = emea();
        c.check().unwrap();
        // Wednesday 2026-12-23 16:00 Paris, 16 working hours (7.5 a day):
        // 1.5 h Wednesday, 7.5 h Thursday, none on Christmas, 7 h on Monday.
        let start = ms("2026-12-23 16:00 in Europe/Paris");
        let due = c.add(start, 16 * H).unwrap();
        assert_eq!(due, ms("2026-12-28 17:00 in Europe/Paris"));
        assert_eq!(c.between(start, due).unwrap(), 16 * H);
        // Created at night: the count starts at 09:00.
        let night = ms("2026-12-21 22:00 in Europe/Paris");
        assert_eq!(
            c.add(night, H).unwrap(),
            ms("2026-12-22 10:00 in Europe/Paris")
        );
        // Over lunch.
        let late_morning = ms("2026-12-22 12:00 in Europe/Paris");
        assert_eq!(
            c.add(late_morning, H).unwrap(),
            ms("2026-12-22 14:00 in Europe/Paris")
        );
        assert_eq!(
            c.between(late_morning, ms("2026-12-22 14:00 in Europe/Paris"))
                .unwrap(),
            H
        );
    }

    #[test]
    fn overlapping_hours_and_bad_dates_fail_at_load() {
        let mut c = emea();
        c.hours.push("Wed 17:00-18:00".into());
        assert_eq!(
            c.check().unwrap_err(),
            "hours \"Wed 17:00-18:00\" overlap \"Mon-Fri 13:30-17:30\""
        );
        let mut c = emea();
        c.hours = vec!["Sun 22:00-02:00".into(), "Mon 01:00-03:00".into()];
        assert!(
            c.check().unwrap_err().contains("overlap"),
            "across the week's end"
        );
        let mut c = emea();
        c.holidays = vec!["25/12/2026".into()];
        assert!(
            c.check()
                .unwrap_err()
                .contains("holiday \"25/12/2026\" is not a date")
        );
        let e = crate::workflow::Workflow::parse(
            "name = \"w\"\nsla = \"16h\"\ncalendar = \"emea\"\n[[steps]]\nname = \"s\"\nplugin = \"p\"\n",
            "inc.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("inc.toml: calendar `emea` is not declared; [calendars] has: none"),
            "{e}"
        );
    }
}
