//! Free space under the store, checked before every write.
//!
//! A storage engine that meets a full disk mid-write may be left unable to
//! write again until it is reopened (sled 0.34 keeps the I/O error and
//! refuses every later write). So the store refuses a write while the
//! filesystem holding it has less than a reserve free: the refusal is a
//! clean [`Error::StorageFull`] (507 from the API), nothing is half-written,
//! reads go on, and writes resume by themselves once space is freed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The default reserve: room for the largest group commit (1,024 tickets)
/// and the engine's own log segments, with margin.
pub const DEFAULT_RESERVE: u64 = 64 << 20;

/// The reserve to keep free on the store's filesystem.
#[derive(Debug, Clone)]
pub struct Space {
    dir: PathBuf,
    reserve: u64,
}

impl Space {
    /// Keep `reserve` bytes free on the filesystem holding `dir`.
    pub fn new(dir: &Path, reserve: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            reserve,
        }
    }

    /// Bytes an unprivileged writer can still use on the filesystem.
    pub fn available(&self) -> Result<u64> {
        let s = rustix::fs::statvfs(&self.dir).map_err(|e| {
            Error::Store(format!(
                "cannot read the free space of {}: {e}",
                self.dir.display()
            ))
        })?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// `Ok` when a write may go ahead; [`Error::StorageFull`] naming the
    /// free space and the reserve otherwise.
    pub fn check(&self) -> Result<()> {
        if self.reserve == 0 {
            return Ok(());
        }
        let free = self.available()?;
        if free < self.reserve {
            return Err(Error::StorageFull(format!(
                "the disk holding {} has {} free, under the {} kept in reserve \
                 (itsm serve --min-free-mib); nothing was written: free space and retry",
                self.dir.display(),
                mib(free),
                mib(self.reserve)
            )));
        }
        Ok(())
    }
}

/// `bytes` as MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Whether an I/O error is the disk (or a quota) being full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_names_both_figures() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::new(dir.path(), u64::MAX);
        let e = space.check().unwrap_err().to_string();
        assert!(e.contains("MiB free, under the"), "{e}");
        assert!(e.contains("--min-free-mib"), "{e}");
        assert!(Space::new(dir.path(), 1).check().is_ok());
        assert!(Space::new(dir.path(), 0).check().is_ok());
    }

    #[test]
    fn enospc_is_full() {
        let e = std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        assert!(is_full(&e));
        assert!(!is_full(&std::io::Error::other("x")));
    }
}
