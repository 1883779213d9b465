//! Intake: how what comes in becomes requests for tickets, one per person.
//!
//! An import row becomes a ticket along one path, every file of it here
//! but the last step:
//!
//! 1. [`rows`] parses the body (CSV or JSON lines) into one
//!    [`NewTicket`] per row, or that row's error, holding rows and cells to
//!    the [`IntakeLimits`] and refusing a subject's second row;
//! 2. [`import`] names the batch and each row's idempotency key from the
//!    file's content (so the same file sent again creates nothing) and
//!    hands the rows to the scheduler `CONCURRENCY` at a time, stopping at
//!    the first store error;
//! 3. [`request`] holds each [`NewTicket`] to its shape and the limits,
//!    checks its inputs against the workflow's declarations (typed,
//!    defaults filled in) and builds the ticket it opens;
//! 4. the scheduler (`crate::scheduler`, `create.rs`) calls those under the
//!    locks that keep one open ticket per person and workflow and one
//!    ticket per idempotency key, and commits the ticket before answering.
//!
//! An HR webhook's event takes the same path from step 3, mapped by
//! [`webhook`]; the API's create starts at step 3.
//!
//! Intake knows nothing of HTTP (the API's handlers are thin wrappers) and
//! nothing of the scheduler: the bulk creation takes the create as a
//! function, so the scheduler can use these types and stay below.

pub mod correlation;
pub mod import;
mod limits;
mod request;
pub mod rows;
pub mod webhook;

pub use limits::IntakeLimits;
pub use request::NewTicket;
