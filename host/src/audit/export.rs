//! Exports an auditor can check offline, cut or whole.
//!
//! Hash links alone show an edited or reordered event, but not lines cut
//! from either end: the first line of a range may sit mid-chain, and the
//! last line is just the last one left. So every export ends with a
//! [`Trailer`], signed with the server's export key (ed25519, kept in the
//! home as `audit-export.key`, created on first start; the public half is
//! `audit-export.pub` and `GET /v1/audit/key`). The trailer states the
//! scope, how many events follow from which seq to which, their time
//! range, the chain head and a digest of every event hash, so a file that
//! lost any line, or gained one, no longer matches the trailer it carries,
//! and a trailer rewritten to match no longer matches its signature.
//!
//! What a trailer proves depends on its scope:
//! - `ticket`: the file is the ticket's whole trail as the server held it
//!   at export time: it starts at the genesis link and ends at the head
//!   the ticket records.
//! - `range`: the file holds exactly the events the server selected for
//!   the range (and ticket, if named), none cut or added since; each
//!   ticket's run may start and end mid-chain, so it does not show what
//!   lies outside the range.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{AuditEvent, ChainHead, GENESIS, verify_export};
use crate::error::{Error, Result};
use crate::signing::{key_id, keygen, read_public, read_secret};

/// The export key's secret half, under the server home.
pub const KEY_FILE: &str = "audit-export.key";
/// The export key's public half, under the server home, for auditors.
pub const PUBLIC_KEY_FILE: &str = "audit-export.pub";
/// `format` of every trailer this version writes.
pub const TRAILER_FORMAT: &str = "itsm-audit-export-v1";

/// What an export covers, and so what its trailer proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One ticket's whole trail, genesis to recorded head.
    Ticket,
    /// The events of a date range (of one ticket or all), exactly as selected.
    Range,
}

/// The last line (JSON lines), `trailer` member (JSON) or `#trailer` row
/// (CSV) of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// [`TRAILER_FORMAT`].
    pub format: String,
    /// Whole ticket or range.
    pub scope: Scope,
    /// The ticket, when one was asked for.
    pub ticket: Option<String>,
    /// The range's start asked for (ms since the epoch), if any.
    pub from_ms: Option<u64>,
    /// The range's end asked for (exclusive), if any.
    pub to_ms: Option<u64>,
    /// Events in the export.
    pub events: u64,
    /// Seq of the first event.
    pub first_seq: Option<u64>,
    /// Seq of the last event.
    pub last_seq: Option<u64>,
    /// Time of the earliest event.
    pub first_at_ms: Option<u64>,
    /// Time of the latest event.
    pub last_at_ms: Option<u64>,
    /// Hash of the last event: for a ticket, the head its record holds.
    pub head: String,
    /// SHA-256 over every event hash in file order, one per line.
    pub digest: String,
    /// When the server wrote the export.
    pub exported_at_ms: u64,
    /// Id of the signing key (first 16 hex digits of its SHA-256).
    pub key_id: String,
    /// The signing key (base64 ed25519 public key).
    pub public_key: String,
    /// Base64 ed25519 signature over the trailer with this field empty.
    pub signature: String,
}

fn digest(events: &[AuditEvent]) -> String {
    let mut text = String::new();
    for e in events {
        text.push_str(&e.hash);
        text.push('\n');
    }
    crate::digest::sha256_hex(text.as_bytes())
}

impl Trailer {
    /// What the signature covers: a domain tag and the trailer's canonical
    /// JSON (sorted keys) with `signature` empty.
    fn message(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.signature = String::new();
        let canonical = serde_json::to_value(&copy)
            .expect("trailer serializes")
            .to_string();
        format!("{TRAILER_FORMAT}\n{canonical}").into_bytes()
    }

    /// The trailer for `events`, signed with `key`. For a whole ticket,
    /// `head` is the head its record holds: an export of a store that lost
    /// events does not match it.
    #[expect(clippy::too_many_arguments, reason = "one plain constructor")]
    pub fn seal(
        key: &SigningKey,
        scope: Scope,
        ticket: Option<&str>,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
        events: &[AuditEvent],
        head: Option<&ChainHead>,
        now_ms: u64,
    ) -> Self {
        let (count, head) = match head {
            Some(h) => (
                h.len,
                if h.len == 0 {
                    GENESIS.to_string()
                } else {
                    h.hash.clone()
                },
            ),
            None => (
                events.len() as u64,
                events
                    .last()
                    .map_or_else(|| GENESIS.to_string(), |e| e.hash.clone()),
            ),
        };
        let public = key.verifying_key();
        let mut t = Self {
            format: TRAILER_FORMAT.into(),
            scope,
            ticket: ticket.map(str::to_string),
            from_ms,
            to_ms,
            events: count,
            first_seq: events.first().map(|e| e.seq),
            last_seq: events.last().map(|e| e.seq),
            first_at_ms: events.iter().map(|e| e.at_ms).min(),
            last_at_ms: events.iter().map(|e| e.at_ms).max(),
            head,
            digest: digest(events),
            exported_at_ms: now_ms,
            key_id: key_id(&public),
            public_key: B64.encode(public.as_bytes()),
            signature: String::new(),
        };
        t.signature = B64.encode(key.sign(&t.message()).to_bytes());
        t
    }

    fn check_signature(&self) -> std::result::Result<VerifyingKey, ExportError> {
        let key = read_public(&self.public_key)
            .map_err(|e| ExportError::Malformed(format!("the trailer's key: {e}")))?;
        let bad = || ExportError::Signature;
        let bytes = B64.decode(self.signature.trim()).map_err(|_| bad())?;
        let sig = Signature::from_slice(&bytes).map_err(|_| bad())?;
        key.verify(&self.message(), &sig).map_err(|_| bad())?;
        if key_id(&key) != self.key_id {
            return Err(ExportError::Malformed(format!(
                "the trailer names key {} but carries key {}",
                self.key_id,
                key_id(&key)
            )));
        }
        Ok(key)
    }
}

/// Why an export does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Nothing in the file.
    #[error("the file is empty: an export holds its events and a trailer")]
    Empty,
    /// One line: an event without its trailer, or a trailer without events.
    #[error("the file is one line: an export holds at least one event and its trailer")]
    OneLine,
    /// The last line is not a trailer.
    #[error(
        "no trailer: the last line is not the export's signed trailer, so lines may have been cut from the end"
    )]
    NoTrailer,
    /// A trailer that is not where it belongs, or not one this version reads.
    #[error("{0}")]
    Malformed(String),
    /// The trailer was changed after it was signed.
    #[error("the trailer's signature does not verify: the trailer was changed after export")]
    Signature,
    /// Signed by another key than the one the auditor holds.
    #[error("the trailer is signed by key {found}, not by the server key {expected} given")]
    WrongKey {
        /// The trailer's key id.
        found: String,
        /// The pinned key's id.
        expected: String,
    },
    /// A hash or link inside the events is wrong.
    #[error("BROKEN at ticket {ticket}, event {seq}: {reason}")]
    Chain {
        /// The ticket.
        ticket: String,
        /// The event.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The events are not the ones the trailer describes.
    #[error("{0}")]
    Mismatch(String),
}

/// What a verified export is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Events checked.
    pub events: usize,
    /// Tickets among them.
    pub tickets: usize,
    /// The trailer's scope.
    pub scope: Scope,
    /// The ticket the trailer names, if any.
    pub ticket: Option<String>,
    /// The key that signed it.
    pub key_id: String,
}

/// Check `events` against `trailer`, and its signature (against `pinned`,
/// the server's public key, when the auditor has it).
pub fn verify_with_trailer(
    events: &[AuditEvent],
    trailer: &Trailer,
    pinned: Option<&VerifyingKey>,
) -> std::result::Result<Verified, ExportError> {
    let mismatch = |m: String| Err(ExportError::Mismatch(m));
    let tickets = verify_export(events).map_err(|(ticket, brk)| ExportError::Chain {
        ticket,
        seq: brk.seq,
        reason: brk.reason,
    })?;
    if trailer.format != TRAILER_FORMAT {
        return Err(ExportError::Malformed(format!(
            "the trailer's format is `{}`; this version reads `{TRAILER_FORMAT}`",
            trailer.format
        )));
    }
    let key = trailer.check_signature()?;
    if let Some(p) = pinned
        && p != &key
    {
        return Err(ExportError::WrongKey {
            found: trailer.key_id.clone(),
            expected: key_id(p),
        });
    }
    if let Some(id) = &trailer.ticket
        && let Some(other) = events.iter().find(|e| &e.ticket_id != id)
    {
        return mismatch(format!(
            "the trailer is for ticket {id} but event {} belongs to ticket {}",
            other.seq, other.ticket_id
        ));
    }
    if trailer.scope == Scope::Ticket
        && let Some(first) = events.first()
        && (first.seq != 0 || first.prev_hash != GENESIS)
    {
        return mismatch(format!(
            "the trail does not start at the genesis link: its first event has seq {}, so lines were cut from the start",
            first.seq
        ));
    }
    if events.len() as u64 != trailer.events {
        return mismatch(format!(
            "the trailer counts {} events but the file holds {}: lines were deleted or added",
            trailer.events,
            events.len()
        ));
    }
    let first_seq = events.first().map(|e| e.seq);
    let last_seq = events.last().map(|e| e.seq);
    if (first_seq, last_seq) != (trailer.first_seq, trailer.last_seq) {
        return mismatch(format!(
            "the trailer spans seq {:?} to {:?} but the file spans {first_seq:?} to {last_seq:?}",
            trailer.first_seq, trailer.last_seq
        ));
    }
    let first_at = events.iter().map(|e| e.at_ms).min();
    let last_at = events.iter().map(|e| e.at_ms).max();
    if (first_at, last_at) != (trailer.first_at_ms, trailer.last_at_ms) {
        return mismatch(format!(
            "the trailer's time range ({:?} to {:?} ms) is not the file's ({first_at:?} to {last_at:?} ms)",
            trailer.first_at_ms, trailer.last_at_ms
        ));
    }
    let in_range =
        |at: u64| trailer.from_ms.is_none_or(|f| at >= f) && trailer.to_ms.is_none_or(|t| at < t);
    if let Some(e) = events.iter().find(|e| !in_range(e.at_ms)) {
        return mismatch(format!(
            "event {} of ticket {} lies outside the range the trailer states",
            e.seq, e.ticket_id
        ));
    }
    let head = events
        .last()
        .map_or_else(|| GENESIS.to_string(), |e| e.hash.clone());
    if head != trailer.head {
        return mismatch(
            "the last event's hash is not the trailer's head: the end of the trail was cut or changed"
                .into(),
        );
    }
    if digest(events) != trailer.digest {
        return mismatch(
            "the events are not the ones the trailer lists (their digest differs)".into(),
        );
    }
    Ok(Verified {
        events: events.len(),
        tickets,
        scope: trailer.scope,
        ticket: trailer.ticket.clone(),
        key_id: trailer.key_id.clone(),
    })
}

/// The server's export key under `home`, made on first use: the secret in
/// [`KEY_FILE`] (mode 0600), the public half in [`PUBLIC_KEY_FILE`].
pub fn load_or_create_key(home: &Path) -> Result<SigningKey> {
    let path = home.join(KEY_FILE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    if let Some(text) = crate::error::read_optional(&path)? {
        return read_secret(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())));
    }
    let (secret, public) = keygen();
    let tmp = path.with_extension("key.tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(io(&tmp))?;
        f.write_all(secret.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    let public_path = home.join(PUBLIC_KEY_FILE);
    std::fs::write(&public_path, public).map_err(io(&public_path))?;
    read_secret(&secret)
}

/// Read a `*.pub` file: the key an auditor pins with `--key`.
pub fn read_key_file(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    read_public(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// One exported file, parsed: events and trailer, in any of the formats
/// the server writes.
#[derive(Debug)]
pub struct ParsedExport {
    /// The events, in file order.
    pub events: Vec<AuditEvent>,
    /// The trailer, if the file ends with one.
    pub trailer: Option<Trailer>,
}

/// JSON lines: events, then `{"trailer": {...}}` as the last line.
pub fn parse_jsonl(text: &str) -> std::result::Result<ParsedExport, ExportError> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    match lines.len() {
        0 => return Err(ExportError::Empty),
        1 => return Err(ExportError::OneLine),
        _ => {}
    }
    let mut events = Vec::new();
    let mut trailer = None;
    let last = lines.len() - 1;
    for (n, (i, line)) in lines.into_iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| ExportError::Malformed(format!("line {}: not JSON: {e}", i + 1)))?;
        if let Some(t) = value.get("trailer") {
            if n != last {
                return Err(ExportError::Malformed(format!(
                    "line {}: a trailer before the last line (lines were added after it)",
                    i + 1
                )));
            }
            trailer = Some(serde_json::from_value(t.clone()).map_err(|e| {
                ExportError::Malformed(format!("line {}: not a trailer: {e}", i + 1))
            })?);
        } else {
            events.push(serde_json::from_value(value).map_err(|e| {
                ExportError::Malformed(format!("line {}: not an audit event: {e}", i + 1))
            })?);
        }
    }
    Ok(ParsedExport { events, trailer })
}

/// Check a parsed file: it must carry a trailer its events match.
pub fn verify_parsed(
    parsed: &ParsedExport,
    pinned: Option<&VerifyingKey>,
) -> std::result::Result<Verified, ExportError> {
    let trailer = parsed.trailer.as_ref().ok_or(ExportError::NoTrailer)?;
    verify_with_trailer(&parsed.events, trailer, pinned)
}

/// JSON: `{"events": [...], "trailer": {...}}`.
pub fn parse_json(text: &str) -> std::result::Result<ParsedExport, ExportError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        events: Vec<AuditEvent>,
        trailer: Option<Trailer>,
    }
    if text.trim().is_empty() {
        return Err(ExportError::Empty);
    }
    let doc: Doc = serde_json::from_str(text)
        .map_err(|e| ExportError::Malformed(format!("not a JSON export: {e}")))?;
    if doc.events.is_empty() && doc.trailer.is_none() {
        return Err(ExportError::Empty);
    }
    Ok(ParsedExport {
        events: doc.events,
        trailer: doc.trailer,
    })
}

/// The CSV columns, in order. The chain's fields come last; `data` and
/// the plugin's wasm hash are there so each row's hash can be recomputed.
pub const CSV_COLUMNS: [&str; 12] = [
    "ticket_id",
    "seq",
    "at",
    "kind",
    "principal",
    "step",
    "plugin",
    "plugin_version",
    "plugin_wasm_sha256",
    "data",
    "prev_hash",
    "hash",
];

/// `ticket_id` of the CSV row that holds the trailer (as JSON in `data`).
pub const CSV_TRAILER_ROW: &str = "#trailer";

/// One event as a CSV row.
pub fn csv_row(e: &AuditEvent) -> [String; 12] {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_ms);
    let kind = serde_json::to_value(e.kind).expect("kind serializes");
    let plugin = |f: fn(&super::PluginRef) -> &str| e.plugin.as_ref().map_or("", f).to_string();
    [
        e.ticket_id.clone(),
        e.seq.to_string(),
        humantime::format_rfc3339_millis(at).to_string(),
        kind.as_str().unwrap_or_default().to_string(),
        e.principal.clone(),
        e.step.clone().unwrap_or_default(),
        plugin(|p| &p.name),
        plugin(|p| &p.version),
        plugin(|p| &p.wasm_sha256),
        e.data.to_string(),
        e.prev_hash.clone(),
        e.hash.clone(),
    ]
}

/// The trailer as a CSV row.
pub fn csv_trailer_row(t: &Trailer) -> [String; 12] {
    let mut row: [String; 12] = Default::default();
    row[0] = CSV_TRAILER_ROW.to_string();
    row[9] = serde_json::to_string(t).expect("trailer serializes");
    row
}

/// CSV: the header, one row per event, the `#trailer` row last.
pub fn parse_csv(text: &str) -> std::result::Result<ParsedExport, ExportError> {
    if text.trim().is_empty() {
        return Err(ExportError::Empty);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| ExportError::Malformed(format!("CSV header: {e}")))?
        .clone();
    if header.iter().ne(CSV_COLUMNS.iter().copied()) {
        return Err(ExportError::Malformed(format!(
            "the CSV header is not an export's ({})",
            CSV_COLUMNS.join(",")
        )));
    }
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ExportError::Malformed(format!("CSV: {e}")))?;
    match rows.len() {
        0 => return Err(ExportError::OneLine),
        1 if rows[0].get(0) == Some(CSV_TRAILER_ROW) => return Err(ExportError::OneLine),
        _ => {}
    }
    let mut events = Vec::new();
    let mut trailer = None;
    let last = rows.len() - 1;
    for (n, row) in rows.iter().enumerate() {
        let line = n + 2;
        let bad = |what: &str| ExportError::Malformed(format!("CSV row {line}: {what}"));
        let col = |i: usize| row.get(i).unwrap_or_default();
        if col(0) == CSV_TRAILER_ROW {
            if n != last {
                return Err(bad(
                    "a trailer before the last row (rows were added after it)",
                ));
            }
            trailer = Some(
                serde_json::from_str(col(9)).map_err(|e| bad(&format!("not a trailer: {e}")))?,
            );
            continue;
        }
        let at = humantime::parse_rfc3339(col(2)).map_err(|e| bad(&format!("`at`: {e}")))?;
        let at_ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| bad("`at` is before 1970"))?
            .as_millis() as u64;
        let text_or_none = |s: &str| (!s.is_empty()).then(|| s.to_string());
        events.push(AuditEvent {
            ticket_id: col(0).to_string(),
            seq: col(1).parse().map_err(|_| bad("`seq` is not a number"))?,
            at_ms,
            kind: serde_json::from_value(serde_json::Value::String(col(3).to_string()))
                .map_err(|_| bad(&format!("unknown `kind` {}", col(3))))?,
            principal: col(4).to_string(),
            step: text_or_none(col(5)),
            plugin: text_or_none(col(6)).map(|name| super::PluginRef {
                name,
                version: col(7).to_string(),
                wasm_sha256: col(8).to_string(),
            }),
            data: serde_json::from_str(col(9)).map_err(|e| bad(&format!("`data`: {e}")))?,
            prev_hash: col(10).to_string(),
            hash: col(11).to_string(),
        });
    }
    Ok(ParsedExport { events, trailer })
}

/// Any format the server writes, told apart by its first character and shape.
pub fn parse_any(text: &str) -> std::result::Result<ParsedExport, ExportError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ExportError::Empty);
    }
    if trimmed.starts_with('{') {
        // One document with `events`, or one object per line.
        let first_line = trimmed.lines().next().unwrap_or_default();
        let is_doc = serde_json::from_str::<serde_json::Value>(first_line)
            .ok()
            .is_none_or(|v| v.get("events").is_some());
        return if is_doc {
            parse_json(text)
        } else {
            parse_jsonl(text)
        };
    }
    parse_csv(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditKind, Draft, link};
    use serde_json::json;

    fn chain(n: usize) -> (Vec<AuditEvent>, ChainHead) {
        let mut head = ChainHead::default();
        let events = (0..n)
            .map(|i| {
                link(
                    "T-1",
                    &mut head,
                    1000 + i as u64,
                    Draft::new(AuditKind::StepStarted, json!({ "i": i })),
                )
            })
            .collect();
        (events, head)
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn whole(events: &[AuditEvent], head: &ChainHead) -> Trailer {
        Trailer::seal(
            &key(),
            Scope::Ticket,
            Some("T-1"),
            None,
            None,
            events,
            Some(head),
            5,
        )
    }

    #[test]
    fn a_whole_trail_verifies_and_any_cut_end_is_named() {
        let (events, head) = chain(4);
        let t = whole(&events, &head);
        let v = verify_with_trailer(&events, &t, Some(&key().verifying_key())).unwrap();
        assert_eq!((v.events, v.tickets, v.scope), (4, 1, Scope::Ticket));

        let err = verify_with_trailer(&events[1..], &t, None).unwrap_err();
        assert!(err.to_string().contains("genesis"), "{err}");
        let err = verify_with_trailer(&events[..3], &t, None).unwrap_err();
        assert!(err.to_string().contains("deleted or added"), "{err}");

        // A trailer made for the cut file by someone without the key.
        let mut forged = whole(&events[..3], &ChainHead::default());
        forged.events = 3;
        forged.head = events[2].hash.clone();
        forged.signature = t.signature.clone();
        assert_eq!(
            verify_with_trailer(&events[..3], &forged, None),
            Err(ExportError::Signature)
        );
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(matches!(
            verify_with_trailer(&events, &t, Some(&other)),
            Err(ExportError::WrongKey { .. })
        ));
    }

    #[test]
    fn a_trail_whose_store_lost_its_tail_does_not_match_the_recorded_head() {
        let (events, head) = chain(4);
        // The server holds 3 events but the ticket records 4.
        let t = whole(&events[..3], &head);
        assert!(verify_with_trailer(&events[..3], &t, None).is_err());
    }

    #[test]
    fn a_range_may_start_mid_chain_but_not_lose_a_line() {
        let (events, _) = chain(5);
        let t = Trailer::seal(
            &key(),
            Scope::Range,
            None,
            Some(1001),
            None,
            &events[1..],
            None,
            5,
        );
        verify_with_trailer(&events[1..], &t, None).unwrap();
        let err = verify_with_trailer(&events[2..], &t, None).unwrap_err();
        assert!(err.to_string().contains("deleted or added"), "{err}");
    }

    #[test]
    fn each_format_round_trips_and_empty_or_one_line_files_are_refused() {
        let (events, head) = chain(3);
        let t = whole(&events, &head);
        let mut jsonl = String::new();
        for e in &events {
            jsonl += &serde_json::to_string(e).unwrap();
            jsonl.push('\n');
        }
        jsonl += &json!({ "trailer": t }).to_string();
        verify_parsed(&parse_any(&jsonl).unwrap(), None).unwrap();
        let doc = json!({ "events": events, "trailer": t }).to_string();
        verify_parsed(&parse_any(&doc).unwrap(), None).unwrap();
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_COLUMNS).unwrap();
        for e in &events {
            w.write_record(csv_row(e)).unwrap();
        }
        w.write_record(csv_trailer_row(&t)).unwrap();
        let csv_text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        verify_parsed(&parse_any(&csv_text).unwrap(), None).unwrap();

        assert_eq!(parse_any("").unwrap_err(), ExportError::Empty);
        let first = jsonl.lines().next().unwrap();
        assert_eq!(parse_any(first).unwrap_err(), ExportError::OneLine);
        let no_trailer: String = jsonl.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            verify_parsed(&parse_any(&no_trailer).unwrap(), None).unwrap_err(),
            ExportError::NoTrailer
        );
    }
}
