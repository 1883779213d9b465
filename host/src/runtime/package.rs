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
        if std::fs::symlink_metadata(&manifest_path).is_err() {
            return Err(Error::Usage(format!(
                "{} has no plugin.toml: give a plugin folder or a plugin crate",
                dir.display()
            )));
        }
        let manifest_text = String::from_utf8(read_regular(dir, Path::new("plugin.toml"))?)
            .map_err(|_| Error::Manifest(format!("{} is not UTF-8", manifest_path.display())))?;
        let manifest = Manifest::parse(&manifest_text).map_err(|e| match e {
            Error::Manifest(msg) => Error::Manifest(format!("{}: {msg}", manifest_path.display())),
            other => other,
        })?;
        let sig = Path::new(crate::signing::SIGNATURE_FILE);
        let signature =
            match std::fs::symlink_metadata(dir.join(sig)) {
                Err(_) => None,
                Ok(_) => Some(String::from_utf8(read_regular(dir, sig)?).map_err(|_| {
                    Error::Usage(format!("{} is not UTF-8", dir.join(sig).display()))
                })?),
            };
        let (wasm_path, wasm) = match (&manifest.wasm, dir.join("Cargo.toml")) {
            (Some(wasm), _) => (dir.join(wasm), read_regular(dir, Path::new(wasm))?),
            (None, cargo) if cargo.is_file() => {
                // A plugin author's crate: the build output under target/.
                let path = built_crate_wasm(dir, &cargo)?;
                let wasm = std::fs::read(&path).map_err(|e| Error::Io {
                    path: path.clone(),
                    source: e,
                })?;
                (path, wasm)
            }
            (None, _) => (
                dir.join("plugin.wasm"),
                read_regular(dir, Path::new("plugin.wasm"))?,
            ),
        };
        Ok(Self {
            manifest,
            manifest_text,
            signature,
            wasm_path,
            wasm,
        })
    }
}

/// Read `rel` inside a plugin folder, refusing anything but a regular file
/// at every step of the way: a symlink (`plugin.wasm -> /etc/shadow`), a
/// device or a FIFO would make the host read what the folder does not hold.
fn read_regular(dir: &Path, rel: &Path) -> Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let path = dir.join(rel);
    let refuse = |what: String| {
        Err(Error::Usage(format!(
            "{}: {what}; a plugin folder holds only regular files, so it is refused",
            path.display()
        )))
    };
    let mut at = dir.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let meta = std::fs::symlink_metadata(&at).map_err(|e| Error::Io {
            path: at.clone(),
            source: e,
        })?;
        let last = i + 1 == parts.len();
        if meta.file_type().is_symlink() {
            return refuse(format!("{} is a symbolic link", at.display()));
        }
        if last && !meta.file_type().is_file() {
            return refuse("not a regular file".into());
        }
        if !last && !meta.is_dir() {
            return refuse(format!("{} is not a folder", at.display()));
        }
    }
    let before = std::fs::symlink_metadata(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    let mut file = std::fs::File::open(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    // The file opened is the one checked (not swapped for a link since).
    let opened = file.metadata().map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    if (opened.dev(), opened.ino()) != (before.dev(), before.ino()) || !opened.is_file() {
        return refuse("changed while it was being read".into());
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    Ok(bytes)
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

/// A plugin as uploaded: the files a signature covers.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// `plugin.toml` text.
    pub manifest: String,
    /// The component.
    pub wasm: Vec<u8>,
    /// `plugin.sig` text.
    pub signature: Option<String>,
}
