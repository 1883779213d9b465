//! `itsm keygen`, `itsm plugin sign|install|list|show` and
//! `itsm workflow list|show|apply`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::Exit;
use super::client::{Client, Connection, cell, enc, print_table};
use crate::runtime::package::PluginFiles;
use crate::signing::{self, SIGNATURE_FILE};

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Path prefix: writes PREFIX.key (secret, keep it safe) and PREFIX.pub
    /// (give it to servers, as `trusted-keys/<publisher>.pub`).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Write a new plugin that builds and passes `itsm step run` at once:
    /// manifest, run/verify/compensate, tests, README, the contract (wit/).
    New {
        /// The plugin's name (lower-case letters, digits, `-`): also its
        /// crate's, package's or wasm file's.
        name: String,
        /// The language: rust (wit-bindgen), python (componentize-py) or js
        /// (jco + componentize-js).
        #[arg(long, value_enum, default_value = "rust")]
        lang: super::new::Lang,
        /// Where to write it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Sign a plugin folder (its plugin.toml and wasm): writes plugin.sig.
    Sign {
        /// Plugin folder or built plugin crate.
        dir: PathBuf,
        /// Secret key file from `itsm keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Upload a plugin folder (plugin.toml, wasm, plugin.sig) to the server.
    /// The server checks it at once and compiles it in the background; this
    /// waits for the compile unless told not to.
    Install {
        /// Plugin folder or built plugin crate.
        dir: PathBuf,
        /// Return once the server has checked it, with the job to follow
        /// (`GET /v1/plugins/installs/{id}`), rather than wait for the compile.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// Plugins on the server with what they may reach.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// One plugin: grants, limits, config keys and install history.
    Show {
        /// Plugin name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowCommand {
    /// Current workflows.
    List,
    /// One workflow: steps, and the versions tickets have pinned.
    Show {
        /// Workflow name.
        name: String,
    },
    /// Add or replace a workflow from a TOML file (admin).
    Apply {
        /// The workflow file.
        file: PathBuf,
    },
}

pub(crate) fn keygen(args: KeygenArgs) -> Result<(), Exit> {
    let (secret, public) = signing::keygen();
    let key_path = args.out.with_extension("key");
    let pub_path = args.out.with_extension("pub");
    if key_path.exists() {
        return Err(Exit::Usage(format!(
            "{} exists; not overwriting a key",
            key_path.display()
        )));
    }
    write_private(&key_path, &secret)?;
    std::fs::write(&pub_path, &public)
        .map_err(|e| Exit::Usage(format!("{}: {e}", pub_path.display())))?;
    let id = signing::key_id(&signing::read_public(&public)?);
    println!("key {id}");
    println!("  secret: {} (keep it safe)", key_path.display());
    println!(
        "  public: {} (copy to a server's trusted-keys/<publisher>.pub)",
        pub_path.display()
    );
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), Exit> {
    let err = |e: std::io::Error| Exit::Usage(format!("{}: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)
    }
    #[cfg(not(unix))]
    std::fs::write(path, text).map_err(err)
}

pub(crate) async fn run(cmd: PluginCommand) -> Result<(), Exit> {
    match cmd {
        PluginCommand::New { name, lang, dir } => {
            let dir = super::new::new_plugin(&name, lang, dir)?;
            println!(
                "wrote plugin {name} in {d}\nnext: cd {d} && {build} && itsm step run . --input '{{\"subject\": \"lee@example.com\"}}'",
                d = dir.display(),
                build = lang.next_steps(),
            );
        }
        PluginCommand::Sign { dir, key } => {
            let files = PluginFiles::read(&dir)?;
            let text = std::fs::read_to_string(&key)
                .map_err(|e| Exit::Usage(format!("{}: {e}", key.display())))?;
            let key = signing::read_secret(&text)?;
            let sig = signing::sign(&key, files.manifest_text.as_bytes(), &files.wasm);
            let out = dir.join(SIGNATURE_FILE);
            std::fs::write(&out, sig)
                .map_err(|e| Exit::Usage(format!("{}: {e}", out.display())))?;
            println!(
                "signed {} {} with key {}: {}",
                files.manifest.name,
                files.manifest.version,
                signing::key_id(&key.verifying_key()),
                out.display()
            );
        }
        PluginCommand::Install { dir, no_wait, conn } => {
            let client = conn.connect()?;
            let files = PluginFiles::read(&dir)?;
            let body = json!({
                "manifest": files.manifest_text,
                "wasm_base64": base64::engine::general_purpose::STANDARD.encode(&files.wasm),
                "signature": files.signature,
            });
            let req = client
                .request(Method::POST, "/v1/plugins")
                .header("prefer", "respond-async")
                .json(&body);
            let mut r = client.call(req).await?;
            if r["state"].is_string() {
                let path = format!(
                    "/v1/plugins/installs/{}",
                    r["id"].as_str().unwrap_or_default()
                );
                if no_wait {
                    client.show(&r, |r| {
                        println!(
                            "checked {} {}; compiling: follow {path}",
                            cell(&r["plugin"]),
                            cell(&r["version"])
                        );
                    });
                    return Ok(());
                }
                while r["state"] == "compiling" {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    r = client.get(&path).await?;
                }
                if r["state"] == "failed" {
                    return Err(Exit::Refused(format!(
                        "install of {} {} failed: {}",
                        cell(&r["plugin"]),
                        cell(&r["version"]),
                        cell(&r["error"])
                    )));
                }
                r = r["installed"].clone();
            }
            client.show(&r, |r| {
                if r["changed"] == false {
                    println!(
                        "{} {} is already installed",
                        cell(&r["name"]),
                        cell(&r["version"])
                    );
                } else {
                    println!(
                        "installed {} {}{} signed by {}",
                        cell(&r["name"]),
                        cell(&r["version"]),
                        r["previous"]
                            .as_str()
                            .map(|p| format!(" (was {p})"))
                            .unwrap_or_default(),
                        r["signed_by"].as_str().unwrap_or("nobody (--dev)")
                    );
                }
            });
        }
        PluginCommand::List { conn } => {
            let client = conn.connect()?;
            let r = client.get("/v1/plugins").await?;
            client.show(&r, |r| {
                let rows: Vec<Vec<String>> = r["plugins"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        vec![
                            cell(&p["name"]),
                            cell(&p["version"]),
                            list(&p["capabilities"]["allowed_hosts"]),
                            list(&p["capabilities"]["secrets"]),
                            cell(&p["description"]),
                        ]
                    })
                    .collect();
                print_table(
                    &["NAME", "VERSION", "HOSTS", "SECRETS", "DESCRIPTION"],
                    &rows,
                );
            });
        }
        PluginCommand::Show { name, conn } => {
            let client = conn.connect()?;
            let p = client.get(&format!("/v1/plugins/{}", enc(&name))).await?;
            client.show(&p, |p| {
                println!(
                    "{} {}: {}",
                    cell(&p["name"]),
                    cell(&p["version"]),
                    cell(&p["description"])
                );
                println!("  wasm sha256 {}", cell(&p["wasm_sha256"]));
                println!("  hosts:   {}", list(&p["capabilities"]["allowed_hosts"]));
                println!("  secrets: {}", list(&p["capabilities"]["secrets"]));
                println!("  limits:  {}", p["limits"]);
                if p["kv"].is_object() {
                    let kv = &p["kv"];
                    println!(
                        "  kv:      {} of {} keys, {} of {} bytes",
                        kv["keys"], kv["max_keys"], kv["bytes"], kv["max_bytes"]
                    );
                }
                let rows: Vec<Vec<String>> = p["installs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        vec![
                            super::client::time(&i["at_ms"]),
                            cell(&i["version"]),
                            cell(&i["by"]),
                            cell(&i["signed_by"]),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    println!();
                    print_table(&["INSTALLED", "VERSION", "BY", "SIGNED BY"], &rows);
                }
            });
        }
    }
    Ok(())
}

/// A JSON array (of strings or `{name: ...}` objects) as `a, b`.
fn list(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| cell(&x["name"]))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn run_workflow(client: &Client, cmd: WorkflowCommand) -> Result<(), Exit> {
    match cmd {
        WorkflowCommand::List => {
            let r = client.get("/v1/workflows").await?;
            client.show(&r, |r| {
                let rows: Vec<Vec<String>> = r["workflows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        vec![
                            cell(&w["name"]),
                            cell(&w["version"]),
                            w["steps"].as_array().map_or(0, Vec::len).to_string(),
                            cell(&w["sla"]),
                            cell(&w["description"]),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "VERSION", "STEPS", "SLA", "DESCRIPTION"], &rows);
            });
        }
        WorkflowCommand::Show { name } => {
            let r = client.get(&format!("/v1/workflows/{}", enc(&name))).await?;
            client.show(&r, |r| {
                let c = &r["current"];
                println!(
                    "{} v{} ({})",
                    cell(&r["name"]),
                    cell(&c["version"]),
                    cell(&c["hash"])
                );
                let rows: Vec<Vec<String>> = c["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        vec![
                            cell(&s["name"]),
                            cell(&s["plugin"]),
                            list(&s["depends_on"]),
                            cell(&s["approval"]),
                        ]
                    })
                    .collect();
                print_table(&["STEP", "PLUGIN", "AFTER", "APPROVAL"], &rows);
                println!();
                let versions: Vec<Vec<String>> = r["pinned_versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| vec![cell(&v["version"]), cell(&v["hash"])])
                    .collect();
                print_table(&["PINNED VERSION", "HASH"], &versions);
            });
        }
        WorkflowCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Exit::Usage(format!("{}: {e}", file.display())))?;
            let wf = crate::workflow::Workflow::parse(&text, &file.display().to_string())?;
            let r = client
                .call(
                    client
                        .request(Method::PUT, &format!("/v1/workflows/{}", enc(&wf.name)))
                        .header("content-type", "application/toml")
                        .body(text),
                )
                .await?;
            client.show(&r, |r| {
                println!(
                    "{} {} v{} ({})",
                    if r["changed"] == true {
                        "applied"
                    } else {
                        "unchanged:"
                    },
                    cell(&r["name"]),
                    cell(&r["version"]),
                    cell(&r["hash"])
                )
            });
        }
    }
    Ok(())
}
