//! `itsm plugin new NAME --lang rust|python|js`: a plugin that builds and
//! runs at once.
//!
//! Each template depends on its language's component toolchain alone
//! (wit-bindgen, componentize-py, jco + componentize-js) and carries its own
//! copy of the contract (`wit/`), so it builds wherever its package registry
//! is reachable, inside this repository or not.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::Exit;
use crate::manifest::Manifest;

/// The language a new plugin is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lang {
    /// A Rust crate built with cargo and wit-bindgen.
    Rust,
    /// Python built with componentize-py.
    Python,
    /// JavaScript built with jco and componentize-js.
    Js,
}

impl Lang {
    /// The template's files, with `{{name}}` and `{{crate}}` to fill in. The
    /// first is always the manifest.
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => RUST,
            Lang::Python => PYTHON,
            Lang::Js => JS,
        }
    }

    /// How to build and run what was written, for the message after it.
    pub(crate) fn next_steps(self) -> &'static str {
        match self {
            Lang::Rust => "cargo build --release --target wasm32-wasip2",
            Lang::Python => "pip install -r requirements.txt && ./build.sh",
            Lang::Js => "npm install && npm run build",
        }
    }
}

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

const RUST: &[(&str, &str)] = &[
    (
        "plugin.toml",
        include_str!("template/rust/plugin.toml.tmpl"),
    ),
    ("Cargo.toml", include_str!("template/rust/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("template/rust/lib.rs.tmpl")),
    ("README.md", include_str!("template/rust/README.md.tmpl")),
    (".gitignore", "/target\n"),
];

const PYTHON: &[(&str, &str)] = &[
    (
        "plugin.toml",
        include_str!("template/python/plugin.toml.tmpl"),
    ),
    ("src/app.py", include_str!("template/python/app.py.tmpl")),
    (
        "src/greet.py",
        include_str!("template/python/greet.py.tmpl"),
    ),
    (
        "tests/test_greet.py",
        include_str!("template/python/test_greet.py.tmpl"),
    ),
    ("build.sh", include_str!("template/python/build.sh.tmpl")),
    (
        "requirements.txt",
        include_str!("template/python/requirements.txt.tmpl"),
    ),
    ("README.md", include_str!("template/python/README.md.tmpl")),
    (".gitignore", "/*.wasm\n__pycache__/\n"),
];

const JS: &[(&str, &str)] = &[
    ("plugin.toml", include_str!("template/js/plugin.toml.tmpl")),
    (
        "package.json",
        include_str!("template/js/package.json.tmpl"),
    ),
    ("src/step.js", include_str!("template/js/step.js.tmpl")),
    ("src/greet.js", include_str!("template/js/greet.js.tmpl")),
    (
        "test/greet.test.js",
        include_str!("template/js/greet.test.js.tmpl"),
    ),
    ("README.md", include_str!("template/js/README.md.tmpl")),
    (".gitignore", "/node_modules\n/dist\n/*.wasm\n"),
];

/// Write a new plugin named `name` in `lang` into `dir` (default: `./NAME`),
/// which must not exist or be empty. Returns the folder written.
pub(crate) fn new_plugin(name: &str, lang: Lang, dir: Option<PathBuf>) -> Result<PathBuf, Exit> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let crate_name = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
    };
    let files = lang.files();
    // The manifest's own rules decide what a plugin may be called.
    Manifest::parse(&fill(files[0].1))
        .map_err(|e| Exit::Usage(format!("plugin name `{name}`: {e}")))?;
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return Err(Exit::Usage(format!(
            "plugin name `{name}`: use lower-case letters, digits and `-`, starting with a letter (it is also the crate's, package's or file's name)"
        )));
    }
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Exit::Usage(format!(
            "{}: exists and is not empty; pick another folder with --dir",
            dir.display()
        )));
    }
    for (rel, text) in files {
        write(&dir.join(rel), &fill(text))?;
    }
    for (rel, text) in WIT {
        write(&dir.join("wit").join(rel), text)?;
    }
    #[cfg(unix)]
    if lang == Lang::Python {
        use std::os::unix::fs::PermissionsExt as _;
        let script = dir.join("build.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Exit::Usage(format!("{}: {e}", script.display())))?;
    }
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<(), Exit> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Exit::Usage(format!("{}: {e}", parent.display())))?;
    }
    std::fs::write(path, text).map_err(|e| Exit::Usage(format!("{}: {e}", path.display())))
}
