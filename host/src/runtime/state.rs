//! What one call's `Store` holds, and the host side of the plugin's imports.
//!
//! A store lives for exactly one call: no state survives between tickets
//! except what a plugin deliberately writes to its key-value namespace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{kv, log, secrets, types};
use super::kv::{KvQuota, MeteredKv};
use super::limits::{LimitNotes, MAX_FIELDS_BYTES, MAX_RESOURCES};
use super::net::NetPolicy;

/// Lines one call may log before the rest are counted and dropped.
pub const MAX_LOG_LINES: usize = 1000;
/// Bytes per log line before it is cut.
pub const MAX_LOG_LINE: usize = 8 * 1024;
pub use crate::report::LogLine;

/// Bytes of stdout or stderr kept per call.
const MAX_STDIO: usize = 64 * 1024;

/// The log of one call, capped.
pub(crate) struct LogBuffer {
    started: Instant,
    pub lines: Vec<LogLine>,
    pub dropped: usize,
}

impl LogBuffer {
    fn new(started: Instant) -> Self {
        Self {
            started,
            lines: Vec::new(),
            dropped: 0,
        }
    }

    pub fn push(&mut self, level: &str, mut message: String) {
        if self.lines.len() >= MAX_LOG_LINES {
            self.dropped += 1;
            return;
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [line cut at 8 KiB]");
        }
        self.lines.push(LogLine {
            at_ms: self.started.elapsed().as_millis() as u64,
            level: level.to_string(),
            message,
        });
    }
}

/// Enforces the manifest's memory limit and remembers that it did, so the
/// resulting trap can be reported as "memory limit" rather than a bare abort.
pub(crate) struct Limiter {
    memory_limit: usize,
    pub memory_hit: bool,
}

impl Limiter {
    pub fn new(memory_limit: usize) -> Self {
        Self {
            memory_limit,
            memory_hit: false,
        }
    }
}

/// Table elements one instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        8
    }
}

/// stdout/stderr sink that keeps the first bytes and quietly drops the rest,
/// so a chatty plugin neither traps nor grows host memory.
#[derive(Clone)]
pub(crate) struct CappedPipe {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl CappedPipe {
    pub fn new() -> Self {
        Self {
            buf: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        self.buf.lock().expect("pipe lock").clone()
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut buf = self.buf.lock().expect("pipe lock");
        let room = MAX_STDIO.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The data of one call's `Store`.
pub(crate) struct CallState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub http: WasiHttpCtx,
    pub net: NetPolicy,
    pub limiter: Limiter,
    pub log: LogBuffer,
    pub stdout: CappedPipe,
    pub stderr: CappedPipe,
    pub plugin: Arc<str>,
    /// `None` when the manifest does not grant `kv`.
    pub kv: Option<(Arc<MeteredKv>, KvQuota)>,
    /// Secrets the manifest grants for reading, with the values supplied.
    pub readable: BTreeMap<String, Option<String>>,
    /// Host limits the call ran into.
    pub notes: LimitNotes,
}

impl CallState {
    pub fn new(
        plugin: Arc<str>,
        net: NetPolicy,
        memory_limit: usize,
        kv: Option<(Arc<MeteredKv>, KvQuota)>,
        readable: BTreeMap<String, Option<String>>,
        notes: LimitNotes,
    ) -> Self {
        let stdout = CappedPipe::new();
        let stderr = CappedPipe::new();
        // No env, args, preopened dirs, stdin or sockets: a plugin gets
        // WASI's clocks and random, and nothing else of the machine.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        // Host memory the plugin can make the host hold: open resources,
        // each header set at most MAX_FIELDS_BYTES (see limits.rs).
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        Self {
            wasi,
            table,
            http,
            net,
            limiter: Limiter::new(memory_limit),
            log: LogBuffer::new(Instant::now()),
            stdout,
            stderr,
            plugin,
            kv,
            readable,
            notes,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.net,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl types::Host for CallState {}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.log.push(level, message);
        Ok(())
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        Ok(self
            .kv_backend()
            .and_then(|(kv, _)| kv.get(&self.plugin, &key)))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let result = self
            .kv_backend()
            .and_then(|(kv, quota)| kv.set(&self.plugin, &key, value, quota));
        if let Err(e) = &result
            && e.starts_with("kv quota")
        {
            self.notes.hit(e);
        }
        Ok(result)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self
            .kv_backend()
            .and_then(|(kv, _)| kv.delete(&self.plugin, &key)))
    }
}

impl CallState {
    fn kv_backend(&self) -> Result<(Arc<MeteredKv>, KvQuota), String> {
        self.kv
            .clone()
            .ok_or_else(|| "key-value state is not granted: set `kv = true` under [capabilities] in plugin.toml".to_string())
    }
}

impl secrets::Host for CallState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, String>> {
        Ok(match self.readable.get(&name) {
            Some(Some(value)) => Ok(value.clone()),
            Some(None) => Err(format!("secret `{name}` is granted but was not supplied")),
            None => Err(format!(
                "secret `{name}` is not granted: list it in [capabilities] secrets in plugin.toml"
            )),
        })
    }
}
