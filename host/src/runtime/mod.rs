//! The sandboxed plugin runtime: wasmtime engine, compiled-code cache,
//! limits, and the host side of the `itsm:plugin` contract.
//!
//! It knows nothing of tickets or workflows: it loads a plugin and runs one
//! call of it in a fresh instance, within the manifest's grants and limits,
//! and reports what happened.

mod bindings;
mod cache;
pub mod kv;
mod limits;
pub mod net;
mod oauth;
mod outcome;
pub mod package;
pub mod redact;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

pub use crate::digest::sha256_hex;
pub use crate::report::{
    CallReport, Evidence, FailureCause, FailureKind, LogLine, Op, Outcome, StepFailure, StepInput,
};
pub use cache::CodeSource;
pub use limits::{MAX_FIELDS_BYTES, MAX_FIELDS_MEMORY, MAX_RESOURCES};
pub use package::PluginFiles;

use self::bindings::{PluginPre, types as wit};
use self::kv::{KvBackend, KvQuota, KvUsage, MemoryKv, MeteredKv};
use self::limits::{LimitNotes, RequestSlots};
use self::net::{Journal, NetGrants, NetPolicy};
use self::outcome::{
    Returned, check_returned, classify_trap, from_step_error, mask_outcome, timeout_failure,
    with_notes,
};
use self::redact::Redactor;
use self::state::CallState;
use crate::cpu;
use crate::error::{Error, Result};
use crate::manifest::{MAX_MEMORY_MB, Manifest};

/// How often the engine's epoch advances: a running call yields to the
/// executor at each tick (see [`cpu`]), so a tick is the longest a plugin
/// holds a thread that short work is waiting for.
const EPOCH_TICK: Duration = Duration::from_micros(500);
/// Largest `outputs` a plugin may return.
pub const MAX_OUTPUTS_BYTES: usize = 1024 * 1024;
/// Largest evidence (all fields together) a plugin may return.
pub const MAX_EVIDENCE_BYTES: usize = 256 * 1024;
/// Largest error message kept from a plugin.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// Settings for a [`Runtime`].
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where compiled code is cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Instances alive at once across all plugins (the pool's size).
    pub max_instances: u32,
    /// Backing store for plugin key-value state.
    pub kv: Arc<dyn KvBackend>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 100,
            kv: Arc::new(MemoryKv::default()),
        }
    }
}

/// Loads plugins and runs their calls. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<cache::CodeCache>,
    kv: Arc<MeteredKv>,
    ticker_stop: Arc<AtomicBool>,
    /// Access tokens the host fetched for credentials, shared by all calls.
    tokens: Arc<oauth::TokenCache>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// An engine with the pooling allocator, epoch interruption and the
    /// host's imports linked.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        let engine = Engine::new(&engine_config(config.max_instances))
            .map_err(|e| Error::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        link_host(&mut linker).map_err(|e| Error::Engine(e.to_string()))?;
        let cache = config
            .cache_dir
            .as_deref()
            .map(cache::CodeCache::new)
            .transpose()?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone());

        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                kv: Arc::new(MeteredKv::new(config.kv)),
                ticker_stop,
                tokens: Arc::new(oauth::TokenCache::new()),
            }),
        })
    }

    /// The wasmtime engine (for benches and tools).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Load a plugin folder or built plugin crate.
    pub fn load_dir(&self, dir: &Path) -> Result<Plugin> {
        let files = PluginFiles::read(dir)?;
        self.load(files.manifest, &files.wasm)
    }

    /// Load a plugin from its manifest and wasm bytes: compile (or load the
    /// cached code) and link it once; each call then only instantiates.
    pub fn load(&self, manifest: Manifest, wasm: &[u8]) -> Result<Plugin> {
        let name = manifest.name.clone();
        let wasm_sha256 = sha256_hex(wasm);
        let (component, source) = match &self.inner.cache {
            Some(c) => c.load_or_compile(&self.inner.engine, &name, wasm, &wasm_sha256)?,
            None => (
                cache::compile(&self.inner.engine, &name, wasm)?,
                CodeSource::Compiled,
            ),
        };
        let instance_pre =
            self.inner.linker.instantiate_pre(&component).map_err(|e| {
                Error::plugin(&name, format!("cannot be linked: {}", import_hint(&e)))
            })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| {
            Error::plugin(&name, format!("does not export the step interface: {e}"))
        })?;
        let slots = Arc::new(Semaphore::new(manifest.limits.max_instances as usize));
        let requests = Arc::new(Semaphore::new(
            manifest.limits.plugin_requests_in_flight as usize,
        ));
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                manifest,
                wasm_sha256,
                source,
                pre,
                slots,
                requests,
                runtime: self.inner.clone(),
                ran_long: AtomicBool::new(false),
            }),
        })
    }
}

/// Explain a link failure in plugin-author terms.
fn import_hint(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    if text.contains("matching implementation was not found") {
        format!(
            "{text} (it imports something this host does not provide: only itsm:plugin@0.1.x, WASI 0.2 and wasi:http are available)"
        )
    } else {
        text
    }
}

fn engine_config(max_instances: u32) -> wasmtime::Config {
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    // Plugins are WASI 0.2 components, called one call at a time: none
    // uses the component model's async ABI. With concurrency support on,
    // every Store dropped disposes of an idle worker fiber by resuming it
    // with a "future dropped" error, which captures a backtrace whenever
    // RUST_BACKTRACE is set: measured 52 µs per call without, 70 µs with.
    cfg.concurrency_support(false);
    let mut pool = PoolingAllocationConfig::default();
    let n = max_instances.max(1);
    pool.total_component_instances(n)
        // A Rust component is its module plus a few adapter shims.
        .total_core_instances(n * 8)
        .max_core_instances_per_component(16)
        .total_memories(n * 2)
        .max_memories_per_component(4)
        .total_tables(n * 8)
        .total_stacks(n)
        .max_memory_size((MAX_MEMORY_MB as usize) << 20);
    // Recycling a slot: with PAGEMAP_SCAN (Linux 6.7+) the allocator resets
    // only the pages a call dirtied and keeps them mapped, which measured
    // 20 µs per fresh instance + call against 32-50 µs for unmapping them
    // (madvise and its TLB shootdowns). Without it, keeping pages resident
    // means zeroing all of them on every call, which measured slower still.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10);
    }
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    cfg
}

fn link_host(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    bindings::itsm::plugin::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    bindings::itsm::plugin::log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    bindings::itsm::plugin::kv::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    bindings::itsm::plugin::secrets::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// Advance the epoch so running calls can be interrupted at their deadline.
fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("itsm-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawn epoch thread");
}

/// What the operator grants one call: config values and secret values.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Config values by key.
    pub config: BTreeMap<String, String>,
    /// Secret values by name. Only those the manifest references are used.
    pub secrets: BTreeMap<String, String>,
}

/// A loaded plugin, ready to call. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    manifest: Manifest,
    wasm_sha256: String,
    source: CodeSource,
    pre: PluginPre<CallState>,
    /// Instances of this plugin at once (`limits.max_instances`).
    slots: Arc<Semaphore>,
    /// Its requests in flight across calls (`limits.plugin_requests_in_flight`).
    requests: Arc<Semaphore>,
    runtime: Arc<RuntimeInner>,
    /// Whether its last call ran long ([`cpu::CallClass::new`]).
    ran_long: AtomicBool,
}

/// A place to run one call of a plugin, from [`Plugin::slot`]. Waiting for
/// one holds nothing else, so a scheduler can queue a plugin's calls for the
/// plugin's own capacity before it takes any shared capacity.
pub struct InstanceSlot {
    _permit: OwnedSemaphorePermit,
    plugin: String,
}

impl Plugin {
    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// SHA-256 of its wasm, for the audit trail.
    pub fn wasm_sha256(&self) -> &str {
        &self.inner.wasm_sha256
    }

    /// Whether its code was compiled or loaded from the cache.
    pub fn code_source(&self) -> CodeSource {
        self.inner.source
    }

    /// What this plugin keeps in its key-value state.
    pub fn kv_usage(&self) -> Result<KvUsage> {
        self.inner
            .runtime
            .kv
            .usage(&self.inner.manifest.name)
            .map_err(Error::Store)
    }

    /// Wait for a place to run a call of this plugin (its
    /// `limits.max_instances`).
    pub async fn slot(&self) -> InstanceSlot {
        InstanceSlot {
            _permit: self
                .inner
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed"),
            plugin: self.inner.manifest.name.clone(),
        }
    }

    /// Run one export in a fresh instance. `Err` means the call could not be
    /// set up (bad config, missing secret); anything the plugin does,
    /// including trapping, is in the report's outcome.
    pub async fn call(&self, op: Op, input: &StepInput, grants: &Grants) -> Result<CallReport> {
        let slot = self.slot().await;
        self.call_in(slot, op, input, grants).await
    }

    /// [`Plugin::call`] in a place already taken with [`Plugin::slot`].
    pub async fn call_in(
        &self,
        slot: InstanceSlot,
        op: Op,
        input: &StepInput,
        grants: &Grants,
    ) -> Result<CallReport> {
        self.call_here(slot, op, input, grants).await
    }

    async fn call_here(
        &self,
        slot: InstanceSlot,
        op: Op,
        input: &StepInput,
        grants: &Grants,
    ) -> Result<CallReport> {
        let m = &self.inner.manifest;
        if slot.plugin != m.name {
            return Err(Error::plugin(&m.name, "called in another plugin's slot"));
        }
        let config = m.effective_config(&grants.config)?;
        let prepared = self.prepare(&config, grants)?;
        let started = Instant::now();
        let ctx = wit_context(input, &config);
        let memory_limit = (m.limits.memory_mb as usize) << 20;
        let journal = Arc::new(Journal::default());
        let notes = LimitNotes::default();
        let net = NetPolicy::new(NetGrants {
            allowed: prepared.allowed,
            credentials: prepared.credentials,
            journal: journal.clone(),
            redactor: prepared.redactor.clone(),
            tokens: self.inner.runtime.tokens.clone(),
            slots: RequestSlots {
                call: Arc::new(Semaphore::new(m.limits.requests_in_flight as usize)),
                call_limit: m.limits.requests_in_flight,
                plugin: self.inner.requests.clone(),
                plugin_limit: m.limits.plugin_requests_in_flight,
                plugin_name: m.name.clone(),
            },
            notes: notes.clone(),
        });
        let quota = KvQuota {
            max_keys: m.limits.kv_max_keys,
            max_bytes: m.limits.kv_max_bytes,
        };
        let state = CallState::new(
            m.name.as_str().into(),
            net,
            memory_limit,
            m.capabilities
                .kv
                .then(|| (self.inner.runtime.kv.clone(), quota)),
            prepared.readable,
            notes.clone(),
        );
        let mut store = Store::new(&self.inner.runtime.engine, state);
        store.limiter(|s| &mut s.limiter);
        let timeout = Duration::from_millis(m.limits.timeout_ms);
        // Yield to the executor at every epoch tick, so a plugin spinning on
        // the CPU never holds a worker thread; the timeout below ends it.
        store.set_epoch_deadline(1);
        let class = cpu::CallClass::new(self.inner.ran_long.load(Ordering::Relaxed));
        store.epoch_deadline_callback(cpu::pacer(EPOCH_TICK, class.clone()));

        let pre = &self.inner.pre;
        let raw = tokio::time::timeout(
            timeout,
            class.run(async {
                let instance = pre.instantiate_async(&mut store).await?;
                let step = instance.itsm_plugin_step();
                Ok::<_, wasmtime::Error>(match op {
                    Op::Run => step.call_run(&mut store, &ctx).await?.map(Returned::Run),
                    Op::Verify => step
                        .call_verify(&mut store, &ctx)
                        .await?
                        .map(Returned::Evidence),
                    Op::Compensate => step
                        .call_compensate(&mut store, &ctx)
                        .await?
                        .map(Returned::Evidence),
                })
            }),
        )
        .await;

        self.inner
            .ran_long
            .store(class.ran_long(), Ordering::Relaxed);
        let redactor = &prepared.redactor;
        let timed_out = raw.is_err();
        let outcome = match raw {
            Err(_elapsed) => Outcome::Failed {
                error: timeout_failure(m.limits.timeout_ms),
            },
            Ok(Err(trap)) => Outcome::Failed {
                error: classify_trap(&trap, &store, m),
            },
            Ok(Ok(Err(step_error))) => Outcome::Failed {
                error: from_step_error(step_error),
            },
            Ok(Ok(Ok(returned))) => check_returned(returned, redactor),
        };
        let outcome = mask_outcome(with_notes(outcome, &notes), redactor);
        let data = store.into_data();
        let state::CallState {
            mut log,
            stdout,
            stderr,
            table,
            ..
        } = data;
        drop(table);
        // `data`'s table is dropped: requests still pending were cancelled
        // with it, and are finished in the journal as such.
        let requests = journal.take(if timed_out {
            "cancelled by the call's time limit (limits.timeout_ms) before a response"
        } else {
            "cancelled: the call ended before a response"
        });
        if log.dropped > 0 {
            let n = log.dropped;
            log.dropped = 0;
            log.lines.truncate(state::MAX_LOG_LINES - 1);
            log.push("warn", format!("log cut: {n} more lines dropped"));
        }
        for (level, pipe) in [("stdout", &stdout), ("stderr", &stderr)] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.is_empty())
            {
                log.push(level, line.to_string());
            }
        }
        let log = log
            .lines
            .into_iter()
            .map(|mut l| {
                l.message = redactor.redact(&l.message);
                l
            })
            .collect();
        Ok(CallReport {
            plugin: m.name.clone(),
            version: m.version.clone(),
            wasm_sha256: self.inner.wasm_sha256.clone(),
            op,
            outcome,
            log,
            requests,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Resolve grants for one call: origins, credentials, readable secrets.
    fn prepare(&self, config: &BTreeMap<String, String>, grants: &Grants) -> Result<Prepared> {
        let m = &self.inner.manifest;
        let caps = &m.capabilities;
        let allowed = caps
            .allowed_hosts
            .iter()
            .map(|h| m.resolve_origin(h, config))
            .collect::<Result<Vec<_>>>()?;
        let (credentials, mut secret_values) = net::resolve(m, config, &grants.secrets, &allowed)?;
        let mut readable = BTreeMap::new();
        for name in &caps.secrets {
            readable.insert(name.clone(), grants.secrets.get(name).cloned());
        }
        // Mask every supplied secret, even ones this plugin was not granted:
        // an operator's secret must not surface through any plugin.
        secret_values.extend(grants.secrets.values().cloned());
        Ok(Prepared {
            allowed,
            credentials,
            readable,
            redactor: Arc::new(Redactor::new(secret_values.iter().map(String::as_str))),
        })
    }
}

struct Prepared {
    allowed: Vec<crate::manifest::Origin>,
    credentials: Vec<net::AttachedCredential>,
    readable: BTreeMap<String, Option<String>>,
    redactor: Arc<Redactor>,
}

fn wit_context(input: &StepInput, config: &BTreeMap<String, String>) -> wit::StepContext {
    let json = |v: &Value, empty: &str| {
        if v.is_null() {
            empty.to_string()
        } else {
            v.to_string()
        }
    };
    let idempotency_key = if input.idempotency_key.is_empty() {
        format!("{}/{}", input.ticket_id, input.step)
    } else {
        input.idempotency_key.clone()
    };
    wit::StepContext {
        ticket_id: input.ticket_id.clone(),
        step: input.step.clone(),
        subject: input.subject.clone(),
        inputs: json(&input.inputs, "{}"),
        prior_outputs: json(&input.prior_outputs, "{}"),
        config: config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        attempt: input.attempt.max(1),
        idempotency_key,
    }
}
