//! First-party plugins compiled into the binary, so `itsm demo` and
//! `itsm serve` run with no plugins folder set up.

use crate::error::Result;
use crate::manifest::Manifest;

/// A plugin shipped inside the binary.
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    /// Its `plugin.toml`.
    pub manifest: &'static str,
    /// Its component.
    pub wasm: &'static [u8],
}

impl Bundled {
    /// The parsed manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        Manifest::parse(self.manifest)
    }
}

/// `plugins/scim-deprovision`.
pub const SCIM_DEPROVISION: Bundled = Bundled {
    manifest: include_str!("../../plugins/scim-deprovision/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_scim_deprovision.wasm"
    )),
};
