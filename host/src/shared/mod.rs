//! Documents shared by every worker of one store: the one home of what a
//! worker publishes for the others and reads back from them.
//!
//! - `plugins/NAME` and `plugin-bundles/ID`: installed plugins
//!   ([`plugins`]);
//! - `workflows/NAME`: the current workflow versions ([`workflows`]);
//! - `tokens.toml`: the API tokens (`crate::auth::TokenPlace`);
//! - the system trail's head ([`system_trail`]).
//!
//! Each is read and written through [`documents`], which names the one
//! failure they share: a store that keeps no shared documents (sled, the
//! in-memory store). The loops that follow what other workers publish
//! install through the admin, so they live above it, in
//! `crate::admin::follow`.

pub mod plugins;
pub mod system_trail;
pub mod workflows;

use crate::error::{Error, Result};
use crate::store::{Documents, Store};

/// The shared documents of `store`, or an error saying it keeps none.
pub fn documents(store: &dyn Store) -> Result<&dyn Documents> {
    store
        .documents()
        .ok_or_else(|| Error::Store("this store keeps no shared documents".into()))
}
