//! Finding a plugin on disk: a packaged folder or a plugin crate.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// A manifest and the wasm it describes, read from disk.
#[derive(Debug, Clone)]
pub struct PluginFiles {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The manifest's text, as signed.
    pub manifest_text: String,
    /// `plugin.sig`, if there is one.
    pub signature: Option<String>,
    /// Where the component is.
    pub wasm_path: PathBuf,
    /// The component's bytes.
    pub wasm: Vec<u8>,
}

impl PluginFiles {
    /// Read a plugin from `dir`: a folder holding `plugin.toml` and the wasm it
    /// names, or a plugin crate (`Cargo.toml` + `plugin.toml`) already built
    /// for `wasm32-wasip2`, whose wasm is found under the nearest `target/`.
    pub fn read(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join("plugin.toml");
        if !manifest_path.is_file() {
            return Err(Error::Usage(format!(
                "{} has no plugin.toml: give a plugin folder or a plugin crate",
                dir.display()
            )));
        }
        let manifest_text = std::fs::read_to_string(&manifest_path).map_err(|e| Error::Io {
            path: manifest_path.clone(),
            source: e,
        })?;
        let manifest = Manifest::parse(&manifest_text).map_err(|e| match e {
            Error::Manifest(msg) => Error::Manifest(format!("{}: {msg}", manifest_path.display())),
            other => other,
        })?;
        let signature = std::fs::read_to_string(dir.join(crate::signing::SIGNATURE_FILE)).ok();
        let wasm_path = match (&manifest.wasm, dir.join("Cargo.toml")) {
            (Some(wasm), _) => dir.join(wasm),
            (None, cargo) if cargo.is_file() => built_crate_wasm(dir, &cargo)?,
            (None, _) => dir.join("plugin.wasm"),
        };
        let wasm = std::fs::read(&wasm_path).map_err(|e| Error::Io {
            path: wasm_path.clone(),
            source: e,
        })?;
        Ok(Self {
            manifest,
            manifest_text,
            signature,
            wasm_path,
            wasm,
        })
    }
}

/// The newest `<crate>.wasm` a build of this crate left in a `target/` above it.
fn built_crate_wasm(dir: &Path, cargo_toml: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(cargo_toml).map_err(|e| Error::Io {
        path: cargo_toml.to_path_buf(),
        source: e,
    })?;
    let doc: toml::Table = toml::from_str(&text)
        .map_err(|e| Error::Usage(format!("{}: {e}", cargo_toml.display())))?;
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| Error::Usage(format!("{} has no [package] name", cargo_toml.display())))?;
    let file = format!("{}.wasm", package.replace('-', "_"));
    let dir = dir.canonicalize().map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut candidates = Vec::new();
    for ancestor in dir.ancestors() {
        for target in ["target", "target/plugins"] {
            for profile in ["release", "debug"] {
                let p = ancestor
                    .join(target)
                    .join("wasm32-wasip2")
                    .join(profile)
                    .join(&file);
                if let Ok(meta) = p.metadata() {
                    candidates.push((meta.modified().ok(), p));
                }
            }
        }
    }
    candidates.sort();
    candidates.pop().map(|(_, p)| p).ok_or_else(|| {
        Error::Usage(format!(
            "no built {file} for crate {package}: run `cargo build --release --target wasm32-wasip2` in {}",
            dir.display()
        ))
    })
}
