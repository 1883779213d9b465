//! The one `bindgen!` of the host: Rust types for the `itsm:plugin` world.
//!
//! WASI and `wasi:http` come from wasmtime's own crates so their host
//! implementations (with our network policy hooked in) can be linked as is.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: trappable },
    exports: { default: async },
    require_store_data_send: true,
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
});

pub use itsm::plugin::{kv, log, secrets, types};
