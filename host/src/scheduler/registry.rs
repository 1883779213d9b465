//! The plugins and workflows a scheduler runs: the loaded plugin set
//! (swapped whole on an install), the ones that did not load and why, the
//! current workflow definitions and the versions tickets pinned.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Scheduler;
use super::drivers::Command;
use super::machine::{Context, Event};
use crate::audit::PluginRef;
use crate::error::{Error, Result};
use crate::runtime::Plugin;
use crate::ticket::Ticket;
use crate::workflow::Workflow;

/// Loaded plugins and what the trail says of each.
pub(super) struct PluginSet {
    pub(super) plugins: BTreeMap<String, Plugin>,
    pub(super) refs: BTreeMap<String, PluginRef>,
    /// Plugins that did not load, with why (not in `plugins`).
    pub(super) unavailable: BTreeMap<String, String>,
}

impl PluginSet {
    pub(super) fn new(
        plugins: BTreeMap<String, Plugin>,
        mut unavailable: BTreeMap<String, String>,
    ) -> Self {
        unavailable.retain(|name, _| !plugins.contains_key(name));
        let refs = plugins
            .iter()
            .map(|(n, p)| {
                let m = p.manifest();
                (
                    n.clone(),
                    PluginRef {
                        name: m.name.clone(),
                        version: m.version.clone(),
                        wasm_sha256: p.wasm_sha256().to_string(),
                    },
                )
            })
            .collect();
        Self {
            plugins,
            refs,
            unavailable,
        }
    }
}

impl Scheduler {
    /// Replace the current workflow definitions. Tickets already created
    /// keep the version they pinned.
    pub fn set_workflows(&self, workflows: BTreeMap<String, Workflow>) -> Result<()> {
        let set = self.plugin_set();
        let known = set
            .plugins
            .keys()
            .chain(set.unavailable.keys())
            .cloned()
            .collect();
        for wf in workflows.values() {
            wf.check_plugins(&known)?;
        }
        let map = workflows
            .into_iter()
            .map(|(n, w)| {
                let hash = w.hash();
                (n, (Arc::new(w), hash))
            })
            .collect();
        *self.inner.current.write().expect("workflows lock") = map;
        Ok(())
    }

    /// Current workflows by name.
    pub fn workflows(&self) -> BTreeMap<String, Arc<Workflow>> {
        let current = self.inner.current.read().expect("workflows lock");
        current
            .iter()
            .map(|(n, (wf, _))| (n.clone(), wf.clone()))
            .collect()
    }

    pub(super) fn pinned(&self, ticket: &Ticket) -> Result<Arc<Workflow>> {
        if let Some(wf) = self
            .inner
            .pinned
            .lock()
            .expect("pinned lock")
            .get(&ticket.workflow_hash)
        {
            return Ok(wf.clone());
        }
        let wf = self
            .inner
            .store
            .workflow(&ticket.workflow, &ticket.workflow_hash)?
            .ok_or_else(|| {
                Error::Store(format!(
                    "ticket {} pins workflow {}@{} which is not stored",
                    ticket.id, ticket.workflow, ticket.workflow_hash
                ))
            })?;
        if self.leases().is_some() {
            // Another worker's version, perhaps naming a plugin not here
            // (and not yet read by the workflow follower): its steps wait
            // and are left to a worker that has it, rather than fail.
            for plugin in wf.plugins() {
                self.lacks_plugin(plugin, crate::shared::workflows::NOT_HERE);
            }
        }
        let wf = Arc::new(wf);
        self.inner
            .pinned
            .lock()
            .expect("pinned lock")
            .insert(ticket.workflow_hash.clone(), wf.clone());
        Ok(wf)
    }

    /// The plugins now.
    pub(super) fn plugin_set(&self) -> Arc<PluginSet> {
        self.inner.plugins.read().expect("plugins lock").clone()
    }

    /// Loaded plugins by name.
    pub fn plugins(&self) -> BTreeMap<String, Plugin> {
        self.plugin_set().plugins.clone()
    }

    /// Add or replace a plugin: calls from now on use it. Tickets in flight
    /// pick it up at their next call, and the trail records which version
    /// (and wasm hash) made each call.
    pub fn install_plugin(&self, plugin: Plugin) {
        let name = plugin.manifest().name.clone();
        let was_unavailable = {
            let mut guard = self.inner.plugins.write().expect("plugins lock");
            let mut plugins = guard.plugins.clone();
            plugins.insert(name.clone(), plugin);
            let was = guard.unavailable.contains_key(&name);
            *guard = Arc::new(PluginSet::new(plugins, guard.unavailable.clone()));
            was
        };
        if was_unavailable {
            // Steps waiting for it start now: nudge every open ticket (a
            // tick changes nothing for those not waiting).
            let drivers: Vec<_> = self
                .inner
                .active
                .lock()
                .expect("active lock")
                .values()
                .cloned()
                .collect();
            for d in drivers {
                let _ = d.send(Command {
                    event: Event::Tick,
                    reply: None,
                });
            }
            for id in self.inner.parking.take_wanting_plugin() {
                self.wake(&id);
            }
        }
    }

    /// Plugin `name` cannot be loaded here (`why`): steps that need it
    /// wait for it rather than fail, and on a shared store they are left
    /// to workers that have it. No change if it is loaded, or already
    /// known to be unavailable.
    pub fn lacks_plugin(&self, name: &str, why: &str) {
        let mut guard = self.inner.plugins.write().expect("plugins lock");
        if guard.plugins.contains_key(name) || guard.unavailable.contains_key(name) {
            return;
        }
        let mut unavailable = guard.unavailable.clone();
        unavailable.insert(name.to_string(), why.to_string());
        *guard = Arc::new(PluginSet::new(guard.plugins.clone(), unavailable));
    }

    pub(super) fn context<'a>(
        &self,
        set: &'a PluginSet,
        wf: &'a Workflow,
        now: u64,
    ) -> Context<'a> {
        Context {
            workflow: wf,
            plugins: &set.refs,
            unavailable: &set.unavailable,
            now_ms: now,
            random: rand::random(),
        }
    }
}
