//! The current workflow definitions, shared by the workers of one store.
//!
//! Each workflow's current version is a document `workflows/NAME` holding
//! its content hash; the definition is the pinned version in the store, so
//! every worker runs the very definition the publishing worker validated
//! (its home's `settings.toml` applied). A `PUT /v1/workflows/NAME` on any
//! worker publishes; every worker follows within a second.

use std::collections::BTreeMap;

use super::documents;
use crate::error::{Error, Result};
use crate::store::{Batch, Store};
use crate::workflow::Workflow;

const PREFIX: &str = "workflows/";

/// Make `wf` the current version of its workflow for every worker: pin
/// it, then point its document at it.
pub fn publish(store: &dyn Store, wf: &Workflow) -> Result<()> {
    let hash = wf.hash();
    store.commit(&[Batch {
        workflows: vec![(wf.name.clone(), hash.clone(), wf.clone())],
        ..Batch::default()
    }])?;
    let docs = documents(store)?;
    let name = format!("{PREFIX}{}", wf.name);
    loop {
        let version = docs.get(&name)?.map(|(_, v)| v);
        if docs.put(&name, &hash, version)? {
            return Ok(());
        }
    }
}

/// The store's current workflows, and the hash each document named.
pub fn current(
    store: &dyn Store,
) -> Result<(BTreeMap<String, Workflow>, BTreeMap<String, String>)> {
    let mut workflows = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    for (doc, hash, _) in documents(store)?.list(PREFIX)? {
        let name = doc[PREFIX.len()..].to_string();
        let wf = store.workflow(&name, &hash)?.ok_or_else(|| {
            Error::Store(format!(
                "the current version of workflow `{name}` ({hash}) is not pinned in the store"
            ))
        })?;
        workflows.insert(name.clone(), wf);
        hashes.insert(name, hash);
    }
    Ok((workflows, hashes))
}

/// Start-up on a shared store: publish the home's workflows the store has
/// no current version of (the first worker brings them in), and return the
/// store's current set, which the other homes' copies give way to.
pub fn adopt(
    store: &dyn Store,
    home: BTreeMap<String, Workflow>,
) -> Result<BTreeMap<String, Workflow>> {
    let (known, _) = current(store)?;
    for (name, wf) in &home {
        if !known.contains_key(name) {
            publish(store, wf)?;
        } else if known[name].hash() != wf.hash() {
            tracing::info!(workflow = %name, "the home's copy differs from the shared current version, which applies");
        }
    }
    Ok(current(store)?.0)
}

/// Why a plugin a shared workflow names is missing here.
pub const NOT_HERE: &str = "not installed on this worker: a workflow another worker \
     published names it (one installed over the API is installed here as soon as it is read; \
     its steps wait, and are offered to the other workers meanwhile)";

/// The plugins `workflows` name that `has` says this worker lacks. The
/// worker that accepted a workflow had its plugins, so on a shared store
/// such a plugin is another worker's (installed over the API and not yet
/// read here, refused here, or in another home's folder): its steps wait
/// here rather than the whole set being refused.
pub fn lacking(
    workflows: &BTreeMap<String, Workflow>,
    has: impl Fn(&str) -> bool,
) -> std::collections::BTreeSet<String> {
    workflows
        .values()
        .flat_map(Workflow::plugins)
        .filter(|p| !has(p))
        .map(str::to_string)
        .collect()
}
