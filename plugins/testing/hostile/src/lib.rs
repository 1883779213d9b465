//! Test plugin that misbehaves on purpose. Config `mode` picks how; the
//! host's hostile-plugin tests prove each one is stopped or refused.

use std::hint::black_box;

use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, log, secrets};
use serde_json::json;

struct Hostile;

fn recurse(n: u64) -> u64 {
    let pad = black_box([n; 64]);
    if black_box(n) == u64::MAX {
        pad[0]
    } else {
        recurse(n + 1) + pad[1]
    }
}

impl Step for Hostile {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let ok = |outputs: serde_json::Value| {
            Ok(Outcome::new(outputs, Evidence::new("hostile", "none")))
        };
        match ctx.config("mode")? {
            "loop" => loop {
                black_box(());
            },
            "memory" => {
                // Grow toward 4 GiB, 16 MiB at a time, touching every page.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                for _ in 0..256 {
                    hoard.push(vec![1u8; 16 << 20]);
                }
                ok(json!({ "held": hoard.len() }))
            }
            "recursion" => ok(json!({ "depth": recurse(0) })),
            "panic" => panic!("hostile plugin panicked on purpose"),
            "trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                unreachable!()
            }
            "big-output" => ok(json!({ "blob": "x".repeat(100 << 20) })),
            "bad-json" => Ok(Outcome::new(
                json!("not an object"),
                Evidence::new("x", "y"),
            )),
            "http" => {
                let url = ctx.config("url")?;
                let resp = http::get(url).send()?;
                ok(json!({ "status": resp.status, "body": resp.text() }))
            }
            "env" => {
                let vars: Vec<(String, String)> = std::env::vars().collect();
                let home = std::env::var("HOME").map_err(|e| e.to_string());
                ok(json!({ "vars": vars.len(), "home": format!("{home:?}") }))
            }
            "file" => {
                let read = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string());
                let dir = std::fs::read_dir("/")
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                ok(json!({ "read": format!("{read:?}"), "list": format!("{dir:?}") }))
            }
            "socket" => {
                let url = ctx.config("url")?;
                let r = std::net::TcpStream::connect(url)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                ok(json!({ "connect": format!("{r:?}") }))
            }
            "secret" => {
                // Ask for a secret; if it is handed over, try to leak it everywhere.
                let name = ctx.config("url").unwrap_or("scim_token");
                match secrets::get(name) {
                    Ok(value) => {
                        log::info(&format!("the secret is {value}"));
                        println!("stdout: {value}");
                        Err(StepError::fatal(format!("leaking {value}")))
                    }
                    Err(e) => ok(json!({ "denied": e.to_string() })),
                }
            }
            "echo-secret-output" => {
                let value = secrets::get(ctx.config("url")?)?;
                ok(json!({ "copy": value }))
            }
            "log-flood" => {
                for i in 0..100_000 {
                    log::info(&format!("line {i} {}", "y".repeat(100)));
                }
                ok(json!({}))
            }
            "static-counter" => {
                // Global state: survives only as long as the instance does.
                static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                ok(json!({ "calls": n, "ticket": ctx.ticket_id }))
            }
            "kv" => {
                itsm_sdk::kv::set("k", b"v")?;
                ok(json!({}))
            }
            other => Err(StepError::fatal(format!("unknown mode {other}"))),
        }
    }

    fn verify(_: &Context) -> Result<Evidence, StepError> {
        Err(StepError::fatal("hostile"))
    }
}

itsm_sdk::export!(Hostile);
