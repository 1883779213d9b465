//! Log lines for the step's log in the ticket's trail. The host masks
//! secret values and caps the volume.

use crate::wit::itsm::plugin::log::{Level, log};

/// Debug detail.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}
/// Normal progress.
pub fn info(message: &str) {
    log(Level::Info, message);
}
/// Something odd that did not stop the step.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}
/// Something that failed.
pub fn error(message: &str) {
    log(Level::Error, message);
}
