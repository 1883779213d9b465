//! When each token was last used, for `itsm token list`: a token nobody
//! has used in months is one to revoke. Kept apart from the tokens
//! themselves, so a request never writes `tokens.toml`: the server notes
//! each use in memory and writes the notes out every [`FLUSH_EVERY`],
//! merged with what is stored (the later time wins, so several workers of
//! one shared store agree).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::TokenPlace;
use crate::error::{Error, Result};

/// The file beside `tokens.toml`, and the shared store's document.
pub const LAST_USE_NAME: &str = "tokens-used.json";

/// How often the server writes the uses it noted.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// A use within this of the one noted is not noted again.
const GRAIN_SECS: u64 = 60;

/// Uses noted since the last flush, by principal name (seconds since the epoch).
#[derive(Debug, Default)]
pub struct LastUse {
    noted: Mutex<BTreeMap<String, u64>>,
    /// Names noted since the last flush.
    pending: Mutex<BTreeMap<String, u64>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl LastUse {
    /// Note that `name`'s token was used now.
    pub fn touch(&self, name: &str) {
        let now = now_secs();
        let mut noted = self.noted.lock().expect("last-use lock");
        if noted
            .get(name)
            .is_some_and(|at| now.saturating_sub(*at) < GRAIN_SECS)
        {
            return;
        }
        noted.insert(name.to_string(), now);
        self.pending
            .lock()
            .expect("last-use lock")
            .insert(name.to_string(), now);
    }

    /// Write the uses noted since the last flush to `place`, merged with
    /// what is there. Nothing noted: nothing written.
    pub fn flush(&self, place: &TokenPlace) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("last-use lock"));
        if pending.is_empty() {
            return Ok(());
        }
        let merge = |stored: &mut BTreeMap<String, u64>| {
            for (name, at) in &pending {
                let e = stored.entry(name.clone()).or_default();
                *e = (*e).max(*at);
            }
        };
        let written = match place {
            TokenPlace::File(tokens) => {
                let path = tokens.with_file_name(LAST_USE_NAME);
                let mut stored = read_file(&path)?;
                merge(&mut stored);
                write_file(&path, &stored)
            }
            TokenPlace::Shared(store) => {
                let docs = crate::shared::documents(store.as_ref())?;
                loop {
                    let (mut stored, version) = match docs.get(LAST_USE_NAME)? {
                        Some((text, v)) => (parse(&text, LAST_USE_NAME)?, Some(v)),
                        None => (BTreeMap::new(), None),
                    };
                    merge(&mut stored);
                    if docs.put(LAST_USE_NAME, &text(&stored), version)? {
                        break Ok(());
                    }
                }
            }
        };
        if written.is_err() {
            // Try again at the next flush rather than lose them.
            let mut again = self.pending.lock().expect("last-use lock");
            for (name, at) in pending {
                again.entry(name).or_insert(at);
            }
        }
        written
    }
}

/// When each token of `place` was last used (seconds since the epoch).
pub fn read(place: &TokenPlace) -> Result<BTreeMap<String, u64>> {
    match place {
        TokenPlace::File(tokens) => read_file(&tokens.with_file_name(LAST_USE_NAME)),
        TokenPlace::Shared(store) => {
            match crate::shared::documents(store.as_ref())?.get(LAST_USE_NAME)? {
                Some((text, _)) => parse(&text, LAST_USE_NAME),
                None => Ok(BTreeMap::new()),
            }
        }
    }
}

fn parse(text: &str, origin: &str) -> Result<BTreeMap<String, u64>> {
    serde_json::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))
}

fn text(uses: &BTreeMap<String, u64>) -> String {
    serde_json::to_string_pretty(uses).expect("a map of names to numbers serializes")
}

fn read_file(path: &std::path::Path) -> Result<BTreeMap<String, u64>> {
    match crate::error::read_optional(path)? {
        Some(text) => parse(&text, &path.display().to_string()),
        None => Ok(BTreeMap::new()),
    }
}

/// Atomically: a temp file, then a rename.
fn write_file(path: &std::path::Path, uses: &BTreeMap<String, u64>) -> Result<()> {
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text(uses)).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_are_noted_once_a_minute_flushed_merged_and_read_back() {
        let home = tempfile::tempdir().unwrap();
        let place = TokenPlace::File(home.path().join("tokens.toml"));
        assert!(read(&place).unwrap().is_empty(), "never used");
        let uses = LastUse::default();
        uses.touch("ops");
        uses.touch("ops");
        assert_eq!(uses.pending.lock().unwrap().len(), 1);
        uses.flush(&place).unwrap();
        assert!(uses.pending.lock().unwrap().is_empty());
        let first = read(&place).unwrap()["ops"];
        assert!(first.abs_diff(now_secs()) < 5);
        // Another worker's later use of another token merges in.
        let other = LastUse::default();
        other.touch("hr-feed");
        other.flush(&place).unwrap();
        let both = read(&place).unwrap();
        assert_eq!(both.keys().collect::<Vec<_>>(), ["hr-feed", "ops"]);
        assert_eq!(both["ops"], first);
    }
}
