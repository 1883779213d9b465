//! Plugins installed through one worker, installed on every worker of a
//! shared store.
//!
//! An install over the API on a shared store publishes its bundle (the
//! manifest, the wasm and the signature, the files the signature covers):
//! the document `plugin-bundles/ID` holds it, written once under its
//! content hash, and `plugins/NAME` names the current bundle. Every worker
//! looks at `plugins/` each second and installs a bundle it does not run
//! yet through its own checks (its trusted keys, its downgrade rule) into
//! its own home, so the plugin is there after a restart too, and records
//! it in its system trail. A bundle a worker refuses is logged once and
//! left; its steps wait there, and a worker that has the plugin runs them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::admin::{Admin, Bundle};
use crate::error::{Error, Result};
use crate::runtime::sha256_hex;
use crate::scheduler::Scheduler;
use crate::store::{Documents, Store};

const CURRENT: &str = "plugins/";
const BUNDLES: &str = "plugin-bundles/";

/// How often a worker looks for plugins installed through another.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Who the follower's installs are recorded as, in the system trail.
pub const BY: &str = "another worker of the store";

/// A bundle as a document holds it.
#[derive(Serialize, Deserialize)]
struct Stored {
    manifest: String,
    wasm_base64: String,
    signature: Option<String>,
}

fn documents(store: &dyn Store) -> Result<&dyn Documents> {
    store
        .documents()
        .ok_or_else(|| Error::Store("this store keeps no shared documents".into()))
}

/// Make `bundle` plugin `name`'s current one for every worker.
pub fn publish(store: &dyn Store, name: &str, bundle: &Bundle) -> Result<()> {
    let text = serde_json::to_string(&Stored {
        manifest: bundle.manifest.clone(),
        wasm_base64: base64::engine::general_purpose::STANDARD.encode(&bundle.wasm),
        signature: bundle.signature.clone(),
    })
    .map_err(|e| Error::Store(e.to_string()))?;
    let id = sha256_hex(text.as_bytes());
    let docs = documents(store)?;
    let stored = format!("{BUNDLES}{id}");
    // Its name is its content: written once, whoever writes it.
    if docs.get(&stored)?.is_none() {
        docs.put(&stored, &text, None)?;
    }
    let current = format!("{CURRENT}{name}");
    loop {
        let version = docs.get(&current)?.map(|(_, v)| v);
        if docs.put(&current, &id, version)? {
            return Ok(());
        }
    }
}

/// A published bundle, by id.
fn bundle(docs: &dyn Documents, id: &str) -> Result<Bundle> {
    let (text, _) = docs
        .get(&format!("{BUNDLES}{id}"))?
        .ok_or_else(|| Error::Store(format!("shared plugin bundle {id} is missing")))?;
    let stored: Stored = serde_json::from_str(&text)
        .map_err(|e| Error::Store(format!("shared plugin bundle {id}: {e}")))?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(stored.wasm_base64)
        .map_err(|e| Error::Store(format!("shared plugin bundle {id}: {e}")))?;
    Ok(Bundle {
        manifest: stored.manifest,
        wasm,
        signature: stored.signature,
    })
}

/// Keep this worker's plugins the store's current ones: each second,
/// install every published bundle it has not installed or refused yet.
pub fn follow(scheduler: Scheduler, admin: Arc<Admin>) {
    let weak = scheduler.downgrade();
    drop(scheduler);
    tokio::spawn(async move {
        // Plugin name -> the bundle id last installed or refused here.
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let Some(scheduler) = Scheduler::upgrade(&weak) else {
                return;
            };
            if scheduler.is_draining() {
                return;
            }
            if let Err(e) = follow_once(&scheduler, &admin, &mut seen).await {
                tracing::warn!(error = %e, "cannot read the shared plugins");
            }
            drop(scheduler);
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    });
}

async fn follow_once(
    scheduler: &Scheduler,
    admin: &Admin,
    seen: &mut BTreeMap<String, String>,
) -> Result<()> {
    let store = scheduler.store().clone();
    let docs = documents(store.as_ref())?;
    for (doc, id, _) in docs.list(CURRENT)? {
        let name = doc[CURRENT.len()..].to_string();
        if seen.get(&name) == Some(&id) {
            continue;
        }
        let b = bundle(docs, &id)?;
        match admin.install_here(scheduler, b, BY).await {
            Ok(installed) if installed.changed => {
                tracing::info!(plugin = %name, version = %installed.version, "installed a plugin published by another worker");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(plugin = %name, error = %e, "a plugin another worker installed is refused here; its steps run on workers that have it");
                // Its steps wait here (and are offered to the others)
                // rather than fail for want of it.
                scheduler.lacks_plugin(
                    &name,
                    &format!("another worker installed it and this one refused it: {e}"),
                );
            }
        }
        seen.insert(name, id);
    }
    Ok(())
}
