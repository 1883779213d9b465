//! Plugins installed through one worker, published for every worker of a
//! shared store (the following side is `crate::admin::follow`).
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

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::documents;
use crate::digest::sha256_hex;
use crate::error::{Error, Result};
use crate::runtime::package::Bundle;
use crate::store::{Documents, Store};

const CURRENT: &str = "plugins/";
const BUNDLES: &str = "plugin-bundles/";

/// Who the follower's installs are recorded as, in the system trail.
pub const BY: &str = "another worker of the store";

/// A bundle as a document holds it.
#[derive(Serialize, Deserialize)]
struct Stored {
    manifest: String,
    wasm_base64: String,
    signature: Option<String>,
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
pub fn bundle(docs: &dyn Documents, id: &str) -> Result<Bundle> {
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

/// Every plugin's current bundle: (plugin name, bundle id).
pub fn current(docs: &dyn Documents) -> Result<Vec<(String, String)>> {
    Ok(docs
        .list(CURRENT)?
        .into_iter()
        .map(|(doc, id, _)| (doc[CURRENT.len()..].to_string(), id))
        .collect())
}
