//! Builds the plugins under `plugins/` for `wasm32-wasip2`, so the binary can
//! embed the first-party ones and the tests can load the test plugins, from
//! a plain `cargo build` or `cargo test` with nothing else run first.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let host = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = host
        .parent()
        .expect("host/ sits in the workspace root")
        .to_path_buf();
    for watched in ["plugins", "sdk/src", "sdk/Cargo.toml", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root.join("plugins"))
        .args(["build", "--release", "--locked"])
        // What cargo sets for this build script is not meant for the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_MAKEFLAGS");
    let status = cmd.status().expect("run cargo for the plugins");
    if !status.success() {
        panic!(
            "building plugins/ for wasm32-wasip2 failed (see above). \
             If the target is missing: rustup target add wasm32-wasip2"
        );
    }
    let wasm_dir = root.join("target/plugins/wasm32-wasip2/release");
    println!(
        "cargo:rustc-env=ITSM_PLUGIN_WASM_DIR={}",
        wasm_dir.display()
    );
}
