//! An import's body as rows: CSV (`text/csv`, a header row with a
//! `subject` column; other columns become inputs) or JSON lines
//! (`application/x-ndjson`, objects with `subject` and optional `inputs`).
//! Each row becomes a [`NewTicket`] or its own error; a subject's second
//! row in one file is refused (one person, one ticket).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{IntakeLimits, NewTicket};
use crate::error::{Error, Result};
use crate::ticket::subject_key;

/// How a body's rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, with a header row.
    Csv,
    /// One JSON object a line.
    JsonLines,
}

impl Format {
    /// The format a `Content-Type` names; `application/octet-stream`, for
    /// clients that send files as bytes, is JSON lines when the body starts
    /// with `{` (a CSV header cannot) and CSV otherwise. `None`: not rows.
    pub fn of(content_type: &str, body: &[u8]) -> Option<Self> {
        if content_type.starts_with("text/csv") {
            Some(Self::Csv)
        } else if content_type.starts_with("application/x-ndjson")
            || content_type.starts_with("application/jsonl")
        {
            Some(Self::JsonLines)
        } else if content_type.starts_with("application/octet-stream") {
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                Some(Self::JsonLines)
            } else {
                Some(Self::Csv)
            }
        } else {
            None
        }
    }
}

/// The rows of `body` in `format`, repeats of a subject refused.
pub fn parse(body: &[u8], format: Format, shape: &Shape<'_>) -> Result<Vec<Row>> {
    let mut rows = match format {
        Format::JsonLines => json_rows(body, shape),
        Format::Csv => csv_rows(body, shape)?,
    };
    refuse_repeats(&mut rows);
    Ok(rows)
}

/// One parsed row: its number (1 = first data row) and the request, or why not.
pub type Row = (usize, Result<NewTicket, String>);

/// A subject's second row in one file is an error naming the first: one
/// person, one ticket.
pub fn refuse_repeats(rows: &mut [Row]) {
    let mut first: std::collections::HashMap<String, usize> = Default::default();
    for (row, parsed) in rows.iter_mut() {
        let Ok(req) = parsed else { continue };
        let key = subject_key(&req.subject);
        if key.is_empty() {
            continue;
        }
        match first.get(&key) {
            Some(earlier) => {
                *parsed = Err(format!(
                    "same subject as row {earlier} ({}): one ticket per person",
                    req.subject.trim()
                ))
            }
            None => {
                first.insert(key, *row);
            }
        }
    }
}

/// How to turn rows into ticket requests.
pub struct Shape<'a> {
    /// The workflow every row's ticket runs.
    pub workflow: &'a str,
    /// The batch every row's ticket joins.
    pub batch: &'a str,
    /// Create even for subjects with an open ticket of the workflow.
    pub allow_duplicate: bool,
    /// The limits rows and cells are held to.
    pub limits: IntakeLimits,
}

/// The rows of a CSV body: a header row with a `subject` column; every
/// other column becomes an input. A header that cannot be used refuses the
/// whole body; a bad row is that row's error.
pub fn csv_rows(body: &[u8], shape: &Shape<'_>) -> Result<Vec<Row>> {
    let (workflow, batch, allow_duplicate, limits) = (
        shape.workflow,
        shape.batch,
        shape.allow_duplicate,
        shape.limits,
    );
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        // Row length is checked per row below, with a message naming the counts.
        .flexible(true)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| Error::Usage(format!("CSV header row: {e}")))?
        .clone();
    if headers.len() > limits.columns {
        return Err(Error::TooLarge(format!(
            "the CSV header has {} columns; the limit is {} (itsm serve --max-columns)",
            headers.len(),
            limits.columns
        )));
    }
    let Some(subject_col) = headers.iter().position(|h| h == "subject") else {
        return Err(Error::Usage(format!(
            "the CSV header has no `subject` column (it has: {})",
            headers.iter().collect::<Vec<_>>().join(", ")
        )));
    };
    Ok(reader
        .records()
        .enumerate()
        .map(|(i, rec)| {
            let row = i + 1;
            let parsed = rec
                .map_err(|e| format!("not a CSV row: {e}"))
                .and_then(|rec| {
                    if rec.len() != headers.len() {
                        return Err(format!(
                            "has {} fields, the header has {}",
                            rec.len(),
                            headers.len()
                        ));
                    }
                    let row_len = rec.as_byte_record().as_slice().len() + rec.len();
                    if row_len > limits.row_bytes {
                        return Err(IntakeLimits::over(
                            "the row",
                            row_len,
                            limits.row_bytes,
                            "--max-row-bytes",
                        ));
                    }
                    if let Some((h, v)) = headers
                        .iter()
                        .zip(rec.iter())
                        .find(|(_, v)| v.len() > limits.cell_bytes)
                    {
                        return Err(IntakeLimits::over(
                            &format!("column `{h}`"),
                            v.len(),
                            limits.cell_bytes,
                            "--max-cell-bytes",
                        ));
                    }
                    let subject = rec.get(subject_col).unwrap_or_default().to_string();
                    let inputs: Map<String, Value> = headers
                        .iter()
                        .zip(rec.iter())
                        .filter(|(h, _)| *h != "subject")
                        .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
                        .collect();
                    Ok(NewTicket {
                        workflow: workflow.to_string(),
                        subject,
                        inputs: Value::Object(inputs),
                        batch: Some(batch.to_string()),
                        allow_duplicate,
                    })
                });
            (row, parsed)
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    subject: String,
    #[serde(default)]
    inputs: Value,
}

/// The rows of a JSON-lines body: one object with `subject` and optional
/// `inputs` a line; blank lines are skipped but keep their numbers.
pub fn json_rows(body: &[u8], shape: &Shape<'_>) -> Vec<Row> {
    let (workflow, batch, allow_duplicate, limits) = (
        shape.workflow,
        shape.batch,
        shape.allow_duplicate,
        shape.limits,
    );
    String::from_utf8_lossy(body)
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            if line.len() > limits.row_bytes {
                let e =
                    IntakeLimits::over("the row", line.len(), limits.row_bytes, "--max-row-bytes");
                return (i + 1, Err(e));
            }
            let parsed = serde_json::from_str::<JsonRow>(line)
                .map_err(|e| format!("not a valid row: {e}"))
                .map(|r| NewTicket {
                    workflow: workflow.to_string(),
                    subject: r.subject,
                    inputs: r.inputs,
                    batch: Some(batch.to_string()),
                    allow_duplicate,
                });
            (i + 1, parsed)
        })
        .collect()
}
