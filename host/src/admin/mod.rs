//! Installing plugins and changing workflows on a running server: the
//! admin's side, with the checks that make it safe.
//!
//! A plugin is accepted only if a trusted publisher signed its manifest and
//! wasm together, and only if its version is not lower than one installed
//! before (the system trail is the record) nor an old version number reused
//! for different code. `--dev` relaxes both, loudly. Every change lands in
//! the system trail with its principal.

pub mod follow;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::audit::{AuditKind, Draft};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
pub use crate::runtime::package::Bundle;
use crate::runtime::{Plugin, Runtime, package::PluginFiles, sha256_hex};
use crate::scheduler::Scheduler;
use crate::shared::system_trail::SystemTrail;
use crate::signing::{SIGNATURE_FILE, TrustedKeys};
use crate::ticket::now_ms;
use crate::workflow::Workflow;

/// What may be installed.
#[derive(Debug, Clone, Default)]
pub struct PluginPolicy {
    /// Publishers' keys.
    pub trusted: TrustedKeys,
    /// A `trusted-keys/` folder, re-read on every check so a key added
    /// takes effect without a restart.
    pub trusted_dir: Option<PathBuf>,
    /// Development mode: accept unsigned, untrusted or tampered plugins and
    /// downgrades, with a warning.
    pub dev: bool,
}

/// What an install did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Installed {
    /// Plugin name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The version it replaced.
    pub previous: Option<String>,
    /// Who signed it (none in `--dev` for an unsigned plugin).
    pub signed_by: Option<String>,
    /// SHA-256 of the wasm.
    pub wasm_sha256: String,
    /// False when the very same plugin was installed already.
    pub changed: bool,
}

/// A plugin folder found unusable at start-up, and skipped.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    /// The plugin it holds: its manifest's name if that much reads, else
    /// the folder's (an install names the folder after the plugin).
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
    /// Why it cannot be loaded.
    pub reason: String,
}

/// The admin operations of one server home.
pub struct Admin {
    plugins_dir: PathBuf,
    workflows_dir: PathBuf,
    settings_path: PathBuf,
    runtime: Runtime,
    policy: PluginPolicy,
    system: Arc<SystemTrail>,
    /// One change at a time: installs compile, check history, then swap.
    lock: tokio::sync::Mutex<()>,
}

impl Admin {
    /// Admin over `home`'s `plugins/` and `workflows/`.
    pub fn new(
        home: &Path,
        runtime: Runtime,
        policy: PluginPolicy,
        system: Arc<SystemTrail>,
    ) -> Self {
        Self {
            plugins_dir: home.join("plugins"),
            workflows_dir: home.join("workflows"),
            settings_path: home.join("settings.toml"),
            runtime,
            policy,
            system,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The system trail.
    pub fn system(&self) -> &Arc<SystemTrail> {
        &self.system
    }

    /// Check a bundle against the policy and history: the publisher, or why not.
    fn check(&self, manifest: &Manifest, bundle: &Bundle) -> Result<Option<String>> {
        let refuse = |why: String| {
            Error::Usage(format!(
                "plugin {} {} refused: {why}",
                manifest.name, manifest.version
            ))
        };
        let trusted = match &self.policy.trusted_dir {
            Some(dir) => {
                let mut keys = TrustedKeys::load(dir)?;
                keys.extend(&self.policy.trusted);
                keys
            }
            None => self.policy.trusted.clone(),
        };
        let signed_by = match trusted.verify(
            bundle.manifest.as_bytes(),
            &bundle.wasm,
            bundle.signature.as_deref(),
        ) {
            Ok(publisher) => Some(publisher),
            Err(e) if self.policy.dev => {
                tracing::warn!(plugin = %manifest.name, "accepted in --dev although {e}");
                None
            }
            Err(e) => return Err(refuse(e.to_string())),
        };
        let version = semver::Version::parse(&manifest.version)
            .map_err(|e| refuse(format!("version: {e}")))?;
        let wasm_sha256 = sha256_hex(&bundle.wasm);
        for (old, old_sha) in self.history(&manifest.name)? {
            let older = semver::Version::parse(&old).ok();
            let problem = if older.as_ref().is_some_and(|o| &version < o) {
                Some(format!(
                    "it is a downgrade: version {old} was installed before"
                ))
            } else if old == manifest.version && old_sha != wasm_sha256 {
                Some(format!(
                    "version {old} was installed before with different code; publish a new version"
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                if !self.policy.dev {
                    return Err(refuse(p));
                }
                tracing::warn!(plugin = %manifest.name, "accepted in --dev although {p}");
            }
        }
        Ok(signed_by)
    }

    /// (version, wasm hash) of every install of `name` the system trail records.
    fn history(&self, name: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .system
            .events()?
            .into_iter()
            .filter(|e| e.kind == AuditKind::PluginInstalled && e.data["name"] == name)
            .filter_map(|e| {
                Some((
                    e.data["version"].as_str()?.to_string(),
                    e.data["wasm_sha256"].as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// Load every plugin folder under `plugins/`, checking each as an
    /// install would; a plugin found on disk that the trail does not know is
    /// recorded as installed by `itsm serve`. A folder that cannot be used
    /// (unreadable, refused, not a component) is skipped with the reason, so
    /// one bad folder does not keep the rest from starting.
    pub fn load_installed(&self) -> Result<(Vec<Plugin>, Vec<Skipped>)> {
        let mut dirs: Vec<PathBuf> = match std::fs::read_dir(&self.plugins_dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("plugin.toml").is_file())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Error::Io {
                    path: self.plugins_dir.clone(),
                    source,
                });
            }
        };
        dirs.sort();
        let mut plugins = Vec::new();
        let mut skipped = Vec::new();
        for dir in dirs {
            match self.load_dir(&dir) {
                Ok(plugin) => plugins.push(plugin),
                Err(e) => skipped.push(Skipped {
                    name: folder_plugin_name(&dir),
                    reason: e.to_string(),
                    dir,
                }),
            }
        }
        Ok((plugins, skipped))
    }

    /// Load and check one plugin folder.
    fn load_dir(&self, dir: &Path) -> Result<Plugin> {
        let files = PluginFiles::read(dir)?;
        let bundle = Bundle {
            manifest: files.manifest_text.clone(),
            wasm: files.wasm.clone(),
            signature: files.signature.clone(),
        };
        let signed_by = self.check(&files.manifest, &bundle).map_err(|e| {
            Error::Usage(format!(
                "{e}{}",
                if self.policy.dev {
                    ""
                } else {
                    " (start with --dev to accept it for development)"
                }
            ))
        })?;
        let plugin = self.runtime.load(files.manifest, &files.wasm)?;
        let known = self.history(&plugin.manifest().name)?.last().cloned();
        let current = (
            plugin.manifest().version.clone(),
            plugin.wasm_sha256().to_string(),
        );
        if known.as_ref() != Some(&current) {
            self.record(&plugin, None, signed_by, "itsm serve (found on disk)")?;
        }
        Ok(plugin)
    }

    fn record(
        &self,
        plugin: &Plugin,
        previous: Option<String>,
        signed_by: Option<String>,
        by: &str,
    ) -> Result<()> {
        let m = plugin.manifest();
        self.system.append(
            Draft::new(
                AuditKind::PluginInstalled,
                json!({
                    "name": m.name,
                    "version": m.version,
                    "previous": previous,
                    "wasm_sha256": plugin.wasm_sha256(),
                    "signed_by": signed_by,
                    "capabilities": m.capabilities,
                }),
            )
            .by(by),
            now_ms(),
        )?;
        Ok(())
    }

    /// The checks an install makes before it compiles anything: the
    /// manifest parses and the signature is one the server accepts. What
    /// [`Admin::install`] would refuse at once, this refuses too.
    pub fn precheck(&self, bundle: &Bundle) -> Result<Manifest> {
        let manifest = Manifest::parse(&bundle.manifest)?;
        self.check(&manifest, bundle)?;
        Ok(manifest)
    }

    /// Check, compile, write to `plugins/<name>/`, record, and hand the
    /// plugin to the scheduler; on a shared store, publish it for the
    /// other workers to install too ([`crate::shared::plugins`]).
    pub async fn install(
        &self,
        scheduler: &Scheduler,
        bundle: Bundle,
        by: &str,
    ) -> Result<Installed> {
        let published = bundle.clone();
        let installed = self.install_here(scheduler, bundle, by).await?;
        if scheduler.store().documents().is_some() {
            let store = scheduler.store().clone();
            let name = installed.name.clone();
            tokio::task::spawn_blocking(move || {
                crate::shared::plugins::publish(store.as_ref(), &name, &published)
            })
            .await
            .map_err(|e| Error::Store(e.to_string()))?
            .map_err(|e| {
                Error::Store(format!(
                    "plugin {} is installed on this worker, but publishing it to the others \
                     failed: {e}; install it again to retry",
                    installed.name
                ))
            })?;
        }
        Ok(installed)
    }

    /// [`Admin::install`] on this worker alone.
    pub async fn install_here(
        &self,
        scheduler: &Scheduler,
        bundle: Bundle,
        by: &str,
    ) -> Result<Installed> {
        let _one_at_a_time = self.lock.lock().await;
        let manifest = Manifest::parse(&bundle.manifest)?;
        let signed_by = self.check(&manifest, &bundle)?;
        let wasm_sha256 = sha256_hex(&bundle.wasm);
        let current = scheduler.plugins().get(&manifest.name).cloned();
        let previous = current.as_ref().map(|p| p.manifest().version.clone());
        if let Some(p) = &current
            && p.wasm_sha256() == wasm_sha256
            && p.manifest() == &manifest
        {
            return Ok(Installed {
                name: manifest.name,
                version: manifest.version,
                previous,
                signed_by,
                wasm_sha256,
                changed: false,
            });
        }
        let runtime = self.runtime.clone();
        let (m, wasm) = (manifest.clone(), bundle.wasm.clone());
        let plugin = tokio::task::spawn_blocking(move || runtime.load(m, &wasm))
            .await
            .map_err(|e| Error::Engine(e.to_string()))??;
        self.write_plugin_dir(&manifest, &bundle)?;
        self.record(&plugin, previous.clone(), signed_by.clone(), by)?;
        scheduler.install_plugin(plugin);
        Ok(Installed {
            name: manifest.name,
            version: manifest.version,
            previous,
            signed_by,
            wasm_sha256,
            changed: true,
        })
    }

    /// Write the files beside, then swap the folder in.
    fn write_plugin_dir(&self, manifest: &Manifest, bundle: &Bundle) -> Result<()> {
        let name = &manifest.name;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let tag: u64 = rand::random();
        let staging = self.plugins_dir.join(format!(".{name}.new-{tag:x}"));
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        // The manifest as signed, and the wasm where it says (the manifest
        // checked that the path stays inside the folder): the signature
        // covers both, and a restart reads them back as they are.
        std::fs::write(staging.join("plugin.toml"), &bundle.manifest).map_err(io(&staging))?;
        let wasm = staging.join(manifest.wasm.as_deref().unwrap_or("plugin.wasm"));
        if let Some(parent) = wasm.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&wasm, &bundle.wasm).map_err(io(&wasm))?;
        if let Some(sig) = &bundle.signature {
            std::fs::write(staging.join(SIGNATURE_FILE), sig).map_err(io(&staging))?;
        }
        let target = self.plugins_dir.join(name);
        let old = self.plugins_dir.join(format!(".{name}.old-{tag:x}"));
        if target.exists() {
            std::fs::rename(&target, &old).map_err(io(&target))?;
        }
        std::fs::rename(&staging, &target).map_err(io(&target))?;
        if old.exists() {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(())
    }

    /// Add or replace a workflow from its TOML text: validated against the
    /// loaded plugins, written to `workflows/<name>.toml`, recorded.
    pub async fn put_workflow(
        &self,
        scheduler: &Scheduler,
        name: &str,
        text: &str,
        by: &str,
    ) -> Result<(Workflow, String, bool)> {
        let _one_at_a_time = self.lock.lock().await;
        // The home's settings.toml applies as it does at start-up.
        let settings = Workflow::load_settings(&self.settings_path)?;
        let wf = Workflow::parse_with(
            text,
            &format!("{name}.toml"),
            settings.get(name).unwrap_or(&Default::default()),
        )?;
        if wf.name != name {
            return Err(Error::Workflow(format!(
                "the file names workflow `{}` but was sent to `{name}`",
                wf.name
            )));
        }
        let hash = wf.hash();
        let mut all: std::collections::BTreeMap<String, Workflow> = scheduler
            .workflows()
            .into_iter()
            .map(|(n, w)| (n, (*w).clone()))
            .collect();
        if all.get(name).is_some_and(|w| w.hash() == hash) {
            return Ok((wf, hash, false));
        }
        all.insert(name.to_string(), wf.clone());
        scheduler.set_workflows(all)?;
        if scheduler.store().documents().is_some() {
            // Every worker of the shared store follows.
            crate::shared::workflows::publish(scheduler.store().as_ref(), &wf)?;
        }
        let path = self.workflows_dir.join(format!("{name}.toml"));
        let tmp = path.with_extension("toml.tmp");
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.workflows_dir).map_err(io)?;
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.system.append(
            Draft::new(
                AuditKind::WorkflowChanged,
                json!({ "name": name, "version": wf.version, "hash": hash }),
            )
            .by(by),
            now_ms(),
        )?;
        Ok((wf, hash, true))
    }
}

/// The plugin an unusable folder was meant to hold.
fn folder_plugin_name(dir: &Path) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    std::fs::read_to_string(dir.join("plugin.toml"))
        .ok()
        .and_then(|text| toml::from_str::<Named>(&text).ok())
        .map(|n| n.name)
        .unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}
