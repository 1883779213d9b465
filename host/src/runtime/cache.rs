//! Compiled code on disk, so a restart loads plugins instead of compiling them.
//!
//! Entries are keyed by the SHA-256 of the wasm and by the engine's
//! compatibility hash (wasmtime version, target, compiler settings), so a
//! changed plugin or an upgraded host never loads stale code. Loading native
//! code is trusted: the cache directory must be writable by the host only,
//! like the binary itself.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};

/// Where a component came from on load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeSource {
    /// Compiled from the wasm now (and stored, if a cache is set).
    Compiled,
    /// Loaded from the compiled-code cache.
    Cache,
}

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub(crate) struct CodeCache {
    dir: PathBuf,
}

/// Feeds `Hash` output into SHA-256, so keys are stable across processes
/// (std's `DefaultHasher` promises no such thing).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CodeCache {
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path_for(&self, engine: &Engine, wasm_sha256: &str) -> PathBuf {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        self.dir.join(format!("{wasm_sha256}-{engine_key}.cwasm"))
    }

    /// The component for `wasm`, from the cache when possible.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        name: &str,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> Result<(Component, CodeSource)> {
        let path = self.path_for(engine, wasm_sha256);
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(c) => return Ok((c, CodeSource::Cache)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cache entry")
                }
            }
        }
        let component = compile(engine, name, wasm)?;
        let bytes = component
            .serialize()
            .map_err(|e| Error::plugin(name, format!("serializing compiled code: {e}")))?;
        // Write then rename, so a crash never leaves a torn entry behind.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let write = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = write {
            tracing::warn!(path = %path.display(), error = %e, "could not store compiled code");
            let _ = std::fs::remove_file(&tmp);
        }
        Ok((component, CodeSource::Compiled))
    }
}

/// Compile a component from wasm bytes, with an error that names the plugin.
pub(crate) fn compile(engine: &Engine, name: &str, wasm: &[u8]) -> Result<Component> {
    if wasm.get(..4) != Some(b"\0asm") {
        return Err(Error::plugin(
            name,
            "the file is not WebAssembly (bad magic number)",
        ));
    }
    Component::new(engine, wasm).map_err(|e| {
        let mut msg = format!("not a valid component: {e}");
        if wasmparser_says_core_module(wasm) {
            msg.push_str(" (this is a core module; build for wasm32-wasip2 to get a component)");
        }
        Error::plugin(name, msg)
    })
}

/// Core modules have version 1 in the header; components use a layer field.
fn wasmparser_says_core_module(wasm: &[u8]) -> bool {
    wasm.get(4..8) == Some(&[1, 0, 0, 0])
}

#[expect(
    unsafe_code,
    reason = "loading native code we compiled and stored ourselves"
)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // Read into memory rather than mmap the file: a cache file truncated or
    // replaced while mapped would crash the host with SIGBUS.
    let bytes = std::fs::read(path)?;
    // SAFETY: the file was produced by `Component::serialize` with an engine
    // of the same compatibility hash (it is part of the file name), and the
    // cache directory is host-owned. wasmtime still checks the header.
    unsafe { Component::deserialize(engine, &bytes) }
}
