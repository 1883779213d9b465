//! Following what other workers of a shared store publish: each second,
//! install the plugins and adopt the workflow versions another worker's
//! admin published ([`crate::shared`]), each through this worker's own
//! checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Admin;
use crate::error::Result;
use crate::scheduler::Scheduler;
use crate::shared::{self, documents};
use crate::workflow::Workflow;

/// How often a worker looks for what another published.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Keep this worker's plugins the store's current ones: each second,
/// install every published bundle it has not installed or refused yet.
pub fn plugins(scheduler: Scheduler, admin: Arc<Admin>) {
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
            if let Err(e) = plugins_once(&scheduler, &admin, &mut seen).await {
                tracing::warn!(error = %e, "cannot read the shared plugins");
            }
            drop(scheduler);
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    });
}

async fn plugins_once(
    scheduler: &Scheduler,
    admin: &Admin,
    seen: &mut BTreeMap<String, String>,
) -> Result<()> {
    let store = scheduler.store().clone();
    let docs = documents(store.as_ref())?;
    for (name, id) in shared::plugins::current(docs)? {
        if seen.get(&name) == Some(&id) {
            continue;
        }
        let b = shared::plugins::bundle(docs, &id)?;
        match admin.install_here(scheduler, b, shared::plugins::BY).await {
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

/// Keep `scheduler`'s workflows the store's current ones (plus `local`,
/// this worker's own: the sandbox's), looking every second. A plugin they
/// name that this worker lacks is marked unavailable
/// ([`Scheduler::lacks_plugin`]); a set it still cannot load is logged and
/// the last one kept.
pub fn workflows(scheduler: Scheduler, local: BTreeMap<String, Workflow>) {
    let weak = scheduler.downgrade();
    drop(scheduler);
    tokio::spawn(async move {
        let mut seen: Option<BTreeMap<String, String>> = None;
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            let Some(scheduler) = Scheduler::upgrade(&weak) else {
                return;
            };
            if scheduler.is_draining() {
                return;
            }
            match shared::workflows::current(scheduler.store().as_ref()) {
                Ok((workflows, hashes)) if seen.as_ref() != Some(&hashes) => {
                    for plugin in workflows.values().flat_map(Workflow::plugins) {
                        scheduler.lacks_plugin(plugin, shared::workflows::NOT_HERE);
                    }
                    let mut all = workflows;
                    all.extend(local.clone());
                    match scheduler.set_workflows(all) {
                        Ok(()) => seen = Some(hashes),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot load the shared workflows; keeping the last set")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the shared workflows"),
            }
        }
    });
}
