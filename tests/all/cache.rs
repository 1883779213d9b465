//! The compiled-code cache: a restart loads instead of compiling.

use itsm_host::manifest::Manifest;
use itsm_host::runtime::{CodeSource, Op, Runtime, RuntimeConfig};

use crate::support::{grants, input, plugin_dir, wasm};

fn fresh_runtime(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_path_buf()),
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_second_runtime_loads_from_the_cache_and_a_changed_wasm_recompiles() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::load(&plugin_dir("testing/noop/plugin.toml")).unwrap();
    let noop = wasm("itsm-plugin-test-noop");

    let first = fresh_runtime(dir.path())
        .load(manifest.clone(), &noop)
        .unwrap();
    assert_eq!(first.code_source(), CodeSource::Compiled);
    // A new runtime, as after a restart.
    let second = fresh_runtime(dir.path())
        .load(manifest.clone(), &noop)
        .unwrap();
    assert_eq!(second.code_source(), CodeSource::Cache);
    let report = second
        .call(Op::Run, &input("a@example.com"), &grants(&[], &[]))
        .await
        .unwrap();
    assert!(report.failure().is_none(), "{report:?}");
    assert_eq!(report.wasm_sha256, first.wasm_sha256());

    // Another wasm is another key.
    let other = fresh_runtime(dir.path())
        .load(manifest.clone(), &wasm("itsm-plugin-test-bare-wit"))
        .unwrap();
    assert_eq!(other.code_source(), CodeSource::Compiled);

    // A corrupt entry is discarded and rebuilt, not loaded.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let rebuilt = fresh_runtime(dir.path()).load(manifest, &noop).unwrap();
    assert_eq!(rebuilt.code_source(), CodeSource::Compiled);
    let report = rebuilt
        .call(Op::Run, &input("a@example.com"), &grants(&[], &[]))
        .await
        .unwrap();
    assert!(report.failure().is_none());
}
