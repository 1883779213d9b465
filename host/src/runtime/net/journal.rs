//! The call's request journal: every outbound request, recorded when it is
//! sent and finished on its response, its error, or the call's end.
//!
//! A request that was on the wire when the call was stopped still reached
//! its server (with any credential attached), so it must show in the log
//! even though no answer came. The journal is also bounded: a plugin that
//! makes a thousand requests with 60 KB URLs must not make a 57 MiB report.

use std::sync::Mutex;
use std::time::Instant;

use super::RequestRecord;

/// Records kept per call; past this the rest are counted, not kept.
pub const MAX_RECORDS: usize = 200;
/// Characters of a URL kept in a record.
pub const MAX_URL_CHARS: usize = 2048;
/// Characters of an error message kept in a record.
pub const MAX_ERROR_CHARS: usize = 1024;

/// A request's place in the journal, from [`Journal::begin`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry(Option<usize>);

/// One call's outbound requests.
#[derive(Default)]
pub(crate) struct Journal {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    records: Vec<RequestRecord>,
    /// When each record's request started; `None` once it is finished.
    open: Vec<Option<Instant>>,
    /// Requests the plugin made (kept or not), for the per-call cap.
    made: usize,
    /// Records not kept because the journal was full.
    not_recorded: usize,
}

impl Journal {
    /// Record a request as it is sent; finish it with [`Journal::finish`].
    pub fn begin(&self, method: &str, url: &str) -> Entry {
        let mut j = self.inner.lock().expect("journal lock");
        j.made += 1;
        if j.records.len() >= MAX_RECORDS {
            j.not_recorded += 1;
            return Entry(None);
        }
        j.records.push(RequestRecord {
            method: cut(method, 32),
            url: cut(url, MAX_URL_CHARS),
            status: None,
            error: None,
            duration_ms: 0,
            by_host: false,
            credential: false,
        });
        j.open.push(Some(Instant::now()));
        Entry(Some(j.records.len() - 1))
    }

    /// Note that the host attached a credential to this request.
    pub fn credential_attached(&self, entry: Entry) {
        if let Some(i) = entry.0 {
            self.inner.lock().expect("journal lock").records[i].credential = true;
        }
    }

    /// The request's outcome: a status, or why none came.
    pub fn finish(&self, entry: Entry, status: Option<u16>, error: Option<String>) {
        let Some(i) = entry.0 else { return };
        let mut j = self.inner.lock().expect("journal lock");
        if let Some(started) = j.open[i].take() {
            let r = &mut j.records[i];
            r.status = status;
            r.error = error.map(|e| cut(&e, MAX_ERROR_CHARS));
            r.duration_ms = started.elapsed().as_millis() as u64;
        }
    }

    /// A request the host made for the plugin (a credential's token).
    pub fn push_host(&self, mut record: RequestRecord) {
        let mut j = self.inner.lock().expect("journal lock");
        if j.records.len() >= MAX_RECORDS {
            j.not_recorded += 1;
            return;
        }
        record.url = cut(&record.url, MAX_URL_CHARS);
        record.error = record.error.map(|e| cut(&e, MAX_ERROR_CHARS));
        j.records.push(record);
        j.open.push(None);
    }

    /// Requests the plugin has made in this call.
    pub fn made(&self) -> usize {
        self.inner.lock().expect("journal lock").made
    }

    /// The records, each request still open finished with `cancelled`, and
    /// a last line counting what was not kept.
    pub fn take(&self, cancelled: &str) -> Vec<RequestRecord> {
        let mut j = self.inner.lock().expect("journal lock");
        let Inner {
            records,
            open,
            not_recorded,
            ..
        } = std::mem::take(&mut *j);
        let mut records: Vec<RequestRecord> = records
            .into_iter()
            .zip(open)
            .map(|(mut r, open)| {
                if let Some(started) = open {
                    r.error = Some(cancelled.to_string());
                    r.duration_ms = started.elapsed().as_millis() as u64;
                }
                r
            })
            .collect();
        if not_recorded > 0 {
            records.push(RequestRecord {
                method: "-".into(),
                url: String::new(),
                status: None,
                error: Some(format!(
                    "{not_recorded} more requests not recorded (the log keeps {MAX_RECORDS} per call)"
                )),
                duration_ms: 0,
                by_host: false,
                credential: false,
            });
        }
        records
    }
}

/// `text` cut to `max` characters, saying how much was cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}… [{} bytes cut]", &text[..at], text.len() - at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_requests_are_finished_as_cancelled_and_extra_records_counted() {
        let j = Journal::default();
        let first = j.begin("GET", &"u".repeat(10_000));
        j.finish(first, Some(200), None);
        let _open = j.begin("POST", "http://a/");
        for _ in 0..MAX_RECORDS + 5 {
            j.begin("GET", "http://b/");
        }
        assert_eq!(j.made(), MAX_RECORDS + 7);
        let records = j.take("cancelled by the call's time limit");
        assert_eq!(records.len(), MAX_RECORDS + 1);
        assert!(records[0].url.len() < 2100, "{}", records[0].url.len());
        assert!(
            records[0].url.ends_with("[7952 bytes cut]"),
            "{}",
            &records[0].url[2040..]
        );
        assert_eq!(records[0].status, Some(200));
        assert_eq!(
            records[1].error.as_deref(),
            Some("cancelled by the call's time limit")
        );
        assert_eq!(
            records.last().unwrap().error.as_deref(),
            Some("7 more requests not recorded (the log keeps 200 per call)")
        );
    }
}
