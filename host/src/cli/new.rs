//! `itsm plugin new NAME`: a plugin crate that builds and runs at once.
//!
//! The crate depends on wit-bindgen alone and carries its own copy of the
//! contract (`wit/`), so it builds wherever crates.io is reachable, inside
//! this repository or not.

use std::path::{Path, PathBuf};

use super::Exit;
use crate::manifest::Manifest;

/// The contract files, as this binary speaks them.
const WIT: &[(&str, &str)] = &[
    ("plugin.wit", include_str!("../../../wit/plugin.wit")),
    (
        "deps/cli/cli.wit",
        include_str!("../../../wit/deps/cli/cli.wit"),
    ),
    (
        "deps/clocks/clocks.wit",
        include_str!("../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "deps/filesystem/filesystem.wit",
        include_str!("../../../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "deps/http/http.wit",
        include_str!("../../../wit/deps/http/http.wit"),
    ),
    (
        "deps/io/io.wit",
        include_str!("../../../wit/deps/io/io.wit"),
    ),
    (
        "deps/random/random.wit",
        include_str!("../../../wit/deps/random/random.wit"),
    ),
    (
        "deps/sockets/sockets.wit",
        include_str!("../../../wit/deps/sockets/sockets.wit"),
    ),
];

/// The Rust template's files, with `{{name}}` and `{{crate}}` to fill in.
const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("template/Cargo.toml.tmpl")),
    ("plugin.toml", include_str!("template/plugin.toml.tmpl")),
    ("src/lib.rs", include_str!("template/lib.rs.tmpl")),
    ("README.md", include_str!("template/README.md.tmpl")),
    (".gitignore", "/target\n"),
];

/// Write a new Rust plugin crate named `name` into `dir` (default: `./NAME`),
/// which must not exist or be empty. Returns the folder written.
pub(crate) fn new_plugin(name: &str, dir: Option<PathBuf>) -> Result<PathBuf, Exit> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let crate_name = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
    };
    // The manifest's own rules decide what a plugin may be called.
    let manifest = fill(RUST[1].1);
    Manifest::parse(&manifest).map_err(|e| Exit::Usage(format!("plugin name `{name}`: {e}")))?;
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return Err(Exit::Usage(format!(
            "plugin name `{name}`: use lower-case letters, digits and `-`, starting with a letter (it is also the crate's name)"
        )));
    }
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Exit::Usage(format!(
            "{}: exists and is not empty; pick another folder with --dir",
            dir.display()
        )));
    }
    let write = |rel: &str, text: &str| -> Result<(), Exit> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Exit::Usage(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, text).map_err(|e| Exit::Usage(format!("{}: {e}", path.display())))
    };
    for (rel, text) in RUST {
        write(rel, &fill(text))?;
    }
    for (rel, text) in WIT {
        write(&Path::new("wit").join(rel).to_string_lossy(), text)?;
    }
    Ok(dir)
}
