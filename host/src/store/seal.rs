//! What keeps a damaged store from passing silently or crashing the host.
//!
//! Every record is sealed with a CRC-32 of its bytes and checked on read, so
//! a flipped byte is "corrupt record t/T-..." rather than a wrong ticket;
//! and every call into the storage engine runs under [`guard`], so an engine
//! that panics on damaged files becomes a store error naming the file and
//! what to do, not a backtrace and exit 101.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use crate::error::{Error, Result};

/// First byte of a sealed record; records written before sealing begin
/// with `{` or `"` (JSON) and are read as they are.
const SEALED: u8 = 0x01;

/// `payload` with its seal: the marker byte, then CRC-32 (big-endian).
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(SEALED);
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a sealed record at `key`, or why it is damaged.
pub fn unseal<'a>(key: &[u8], bytes: &'a [u8]) -> Result<&'a [u8]> {
    match bytes.first() {
        Some(&SEALED) if bytes.len() >= 5 => {
            let (sum, payload) = bytes[1..].split_at(4);
            if crc32fast::hash(payload).to_be_bytes() == sum {
                Ok(payload)
            } else {
                Err(corrupt(key, "its checksum does not match"))
            }
        }
        // Written before records were sealed.
        Some(b'{') | Some(b'"') => Ok(bytes),
        _ => Err(corrupt(key, "it is not a record this host wrote")),
    }
}

/// [`unseal`] for values that were raw bytes before sealing (idempotency
/// ids, plugin key-value): unsealed ones are read as they are.
pub fn unseal_raw<'a>(key: &[u8], bytes: &'a [u8]) -> Result<&'a [u8]> {
    match bytes.first() {
        Some(&SEALED) => unseal(key, bytes),
        _ => Ok(bytes),
    }
}

/// The error for a damaged record, with what to do about it.
pub fn corrupt(key: &[u8], why: &str) -> Error {
    Error::Store(format!(
        "corrupt record {}: {why}; the store is damaged: stop the server and restore data/ \
         from a backup (`itsm store check` lists every damaged record)",
        String::from_utf8_lossy(key)
    ))
}

thread_local! {
    /// Set while this thread is inside [`guard`]: a panic then is the
    /// engine's, reported as an error, and not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Run `f`, a call into the storage engine at `dir`, turning a panic into a
/// store error that names the directory and what to do.
pub fn guard<T>(dir: &Path, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.get() {
                LAST_PANIC.with_borrow_mut(|m| *m = info.to_string());
            } else {
                previous(info);
            }
        }));
    });
    let was = QUIET.replace(true);
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.set(was);
    result.unwrap_or_else(|_| {
        let detail = LAST_PANIC.with_borrow_mut(std::mem::take);
        Err(Error::Store(format!(
            "the store at {} is damaged: the storage engine failed to {what} ({detail}); \
             stop the server and restore data/ from a backup, or run `itsm store check`",
            dir.display()
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_is_a_corrupt_record_naming_the_key() {
        let sealed = seal(br#"{"id":"T-1"}"#);
        assert_eq!(unseal(b"t/T-1", &sealed).unwrap(), br#"{"id":"T-1"}"#);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            let e = unseal(b"t/T-1", &bad).unwrap_err().to_string();
            assert!(e.contains("corrupt record t/T-1"), "byte {i}: {e}");
        }
    }

    #[test]
    fn a_panic_inside_the_guard_is_an_error_naming_the_store() {
        let e = guard(
            Path::new("/srv/itsm/data"),
            "read a ticket",
            || -> Result<()> { panic!("serialization.rs:662 bad tag") },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("the store at /srv/itsm/data is damaged"), "{e}");
        assert!(e.contains("bad tag"), "{e}");
        assert!(e.contains("restore data/ from a backup"), "{e}");
    }
}
