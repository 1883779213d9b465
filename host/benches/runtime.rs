//! Runtime bench: what one plugin call costs the host, against native code,
//! and what the compiled-code cache saves on load. `cargo bench --bench runtime`.
//!
//! (a) fresh instance + `run` of the no-op plugin through `Plugin::call`
//!     (the whole host path: grants, store, instantiate, call, output checks);
//! (b) the same logic as a native Rust function;
//! (c) loading scim-deprovision from the compiled cache vs compiling its wasm.
//!
//! Timed per call with `Instant` (batched for the native case, whose calls
//! are shorter than the clock's resolution), reported as median and p99.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use itsm_host::manifest::Manifest;
use itsm_host::runtime::{CodeSource, Grants, Op, Runtime, RuntimeConfig, StepInput};
use serde_json::{Value, json};

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("ITSM_PLUGIN_WASM_DIR")).join(name))
        .expect("plugin built by build.rs")
}

fn manifest(rel: &str) -> Manifest {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(rel);
    Manifest::load(&path).expect("manifest")
}

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// What the no-op plugin and its SDK do, natively: parse the context's JSON,
/// build outputs and evidence, encode them; then the host's output parse.
fn native_noop(inputs: &str, prior: &str, attempt: u32, subject: &str) -> (Value, String, String) {
    let inputs: Value = serde_json::from_str(inputs).expect("json");
    let prior: Value = serde_json::from_str(prior).expect("json");
    black_box((&inputs, &prior));
    let outputs = json!({ "attempt": attempt }).to_string();
    let summary = "nothing done".to_string();
    let parsed: Value = serde_json::from_str(&outputs).expect("json");
    (parsed, summary, subject.to_string())
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let cache = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        max_instances: 16,
        ..RuntimeConfig::default()
    })
    .expect("runtime");

    // (a) fresh instance + run, through the host.
    let noop = runtime
        .load(
            manifest("testing/noop/plugin.toml"),
            &wasm("itsm_plugin_test_noop.wasm"),
        )
        .expect("load noop");
    let input = StepInput {
        ticket_id: "T-1".into(),
        step: "noop".into(),
        subject: "alice@example.com".into(),
        attempt: 1,
        ..StepInput::default()
    };
    let grants = Grants::default();
    let call = || {
        let report = rt
            .block_on(noop.call(Op::Run, &input, &grants))
            .expect("call");
        assert!(report.failure().is_none());
        black_box(report);
    };
    for _ in 0..2_000 {
        call();
    }
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        call();
        samples.push(t.elapsed());
    }
    let wasm_call = stats(samples);

    // (b) the same logic, native.
    const BATCH: u32 = 1_000;
    let mut samples = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let t = Instant::now();
        for i in 0..BATCH {
            black_box(native_noop(
                black_box("{}"),
                black_box("{}"),
                black_box(i),
                "alice@example.com",
            ));
        }
        samples.push(t.elapsed() / BATCH);
    }
    let native = stats(samples);

    // (c) load scim-deprovision: compiled cache vs compiling the wasm.
    let scim_wasm = wasm("itsm_plugin_scim_deprovision.wasm");
    let scim_manifest = manifest("scim-deprovision/plugin.toml");
    let uncached = Runtime::new(RuntimeConfig {
        cache_dir: None,
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let mut compile = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let p = uncached
            .load(scim_manifest.clone(), &scim_wasm)
            .expect("compile");
        compile.push(t.elapsed());
        assert_eq!(p.code_source(), CodeSource::Compiled);
    }
    runtime
        .load(scim_manifest.clone(), &scim_wasm)
        .expect("fill cache");
    let mut cached = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let p = runtime
            .load(scim_manifest.clone(), &scim_wasm)
            .expect("cached");
        cached.push(t.elapsed());
        assert_eq!(p.code_source(), CodeSource::Cache);
    }
    let (compile, cached) = (stats(compile), stats(cached));

    println!(
        "runtime bench ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  (a) fresh instance + run, no-op plugin    median {:>9.1} µs   p99 {:>9.1} µs",
        us(wasm_call.median),
        us(wasm_call.p99)
    );
    println!(
        "  (b) same logic, native Rust               median {:>9.2} µs   p99 {:>9.2} µs",
        us(native.median),
        us(native.p99)
    );
    println!(
        "      ratio (a)/(b), medians                {:>9.0}x",
        us(wasm_call.median) / us(native.median)
    );
    println!(
        "  (c) load scim-deprovision from cache      median {:>9.2} ms   p99 {:>9.2} ms",
        us(cached.median) / 1e3,
        us(cached.p99) / 1e3
    );
    println!(
        "      load scim-deprovision, compiling      median {:>9.2} ms   p99 {:>9.2} ms",
        us(compile.median) / 1e3,
        us(compile.p99) / 1e3
    );
    println!(
        "      ratio compile/cache, medians          {:>9.0}x",
        us(compile.median) / us(cached.median)
    );
}
