//! Limits on what comes in: import bodies, rows, cells, and each ticket's
//! subject and inputs.
//!
//! Without them one 50 MB cell or a million-column row becomes a ticket that
//! every listing then reads and decodes. Each refusal names its limit and the
//! flag that sets it, as a 413 for a request or a row error for an import.

/// Intake limits, with the defaults `itsm serve` documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct IntakeLimits {
    /// Largest import body (CSV or JSON lines), in bytes.
    #[arg(long = "max-import-bytes", default_value_t = 64 << 20)]
    pub import_bytes: usize,
    /// Largest row of an import, in bytes.
    #[arg(long = "max-row-bytes", default_value_t = 64 << 10)]
    pub row_bytes: usize,
    /// Most columns of a CSV import.
    #[arg(long = "max-columns", default_value_t = 64)]
    pub columns: usize,
    /// Largest cell of a CSV import (or input value of a JSON line), in bytes.
    #[arg(long = "max-cell-bytes", default_value_t = 8 << 10)]
    pub cell_bytes: usize,
    /// Largest ticket `inputs`, as JSON, in bytes.
    #[arg(long = "max-inputs-bytes", default_value_t = 64 << 10)]
    pub inputs_bytes: usize,
    /// Longest ticket subject, in bytes (an e-mail address is at most 254).
    #[arg(long = "max-subject-bytes", default_value_t = 320)]
    pub subject_bytes: usize,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        Self {
            import_bytes: 64 << 20,
            row_bytes: 64 << 10,
            columns: 64,
            cell_bytes: 8 << 10,
            inputs_bytes: 64 << 10,
            subject_bytes: 320,
        }
    }
}

impl IntakeLimits {
    /// Why `text`, the value of `what`, is over `limit` bytes set by `flag`.
    pub fn over(what: &str, size: usize, limit: usize, flag: &str) -> String {
        format!("{what} is {size} bytes; the limit is {limit} (itsm serve {flag})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: IntakeLimits,
    }

    #[test]
    fn the_flags_default_to_the_documented_defaults() {
        assert_eq!(Cli::parse_from(["x"]).limits, IntakeLimits::default());
        let set = Cli::parse_from(["x", "--max-cell-bytes", "10"]).limits;
        assert_eq!(set.cell_bytes, 10);
    }
}
