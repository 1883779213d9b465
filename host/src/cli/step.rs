//! `itsm step run`: one call of one plugin, the plugin author's inner loop.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Exit;
use crate::runtime::{Grants, Op, Outcome, Runtime, RuntimeConfig, StepInput};

#[derive(Debug, Subcommand)]
pub(crate) enum StepCommand {
    /// Run one call of a plugin and print the outcome, log and requests as JSON.
    ///
    /// Exit 0 on success, 1 when the step fails (the message says retryable
    /// or fatal), 2 on bad usage or a bad manifest.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A plugin folder (plugin.toml + wasm) or a plugin crate built for wasm32-wasip2.
    plugin: PathBuf,
    /// The step input as JSON, or @FILE: {"subject": "...", "inputs": {...},
    /// "ticket_id": "...", "step": "...", "attempt": 1, "idempotency_key": "..."}.
    #[arg(long, default_value = "{}")]
    input: String,
    /// A config value for the step (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// A secret value (repeatable). NAME alone reads $ITSM_SECRET_<NAME>, which
    /// keeps the value out of the process list and shell history.
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    secret: Vec<String>,
    /// Which export to call.
    #[arg(long, default_value = "run", value_parser = parse_op)]
    op: Op,
    /// Compile every time instead of using the compiled-code cache.
    #[arg(long)]
    no_cache: bool,
}

fn parse_op(s: &str) -> Result<Op, String> {
    s.parse()
}

fn key_values(pairs: &[String], what: &str) -> Result<BTreeMap<String, String>, Exit> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None if what == "--secret" => {
                let var = format!(
                    "ITSM_SECRET_{}",
                    pair.to_ascii_uppercase().replace('-', "_")
                );
                let v = std::env::var(&var).map_err(|_| {
                    Exit::Usage(format!("--secret {pair}: set {var} or pass {pair}=VALUE"))
                })?;
                (pair.clone(), v)
            }
            None => return Err(Exit::Usage(format!("{what} {pair:?}: expected KEY=VALUE"))),
        };
        if k.is_empty() {
            return Err(Exit::Usage(format!("{what} {pair:?}: empty key")));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn read_input(text: &str) -> Result<StepInput, Exit> {
    let text = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Exit::Usage(format!("--input @{path}: {e}")))?,
        None => text.to_string(),
    };
    let mut input: StepInput = serde_json::from_str(&text)
        .map_err(|e| Exit::Usage(format!("--input is not a valid step input: {e}")))?;
    for (field, value) in [
        ("inputs", &input.inputs),
        ("prior_outputs", &input.prior_outputs),
    ] {
        if !value.is_null() && !value.is_object() {
            return Err(Exit::Usage(format!(
                "--input: `{field}` must be a JSON object"
            )));
        }
    }
    if input.ticket_id.is_empty() {
        input.ticket_id = "local".into();
    }
    if input.step.is_empty() {
        input.step = "step".into();
    }
    Ok(input)
}

pub(crate) async fn run(cmd: StepCommand) -> Result<(), Exit> {
    let StepCommand::Run(args) = cmd;
    let input = read_input(&args.input)?;
    let grants = Grants {
        config: key_values(&args.config, "--config")?,
        secrets: key_values(&args.secret, "--secret")?,
    };
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: (!args.no_cache).then(|| super::data_dir().join("cache")),
        max_instances: 4,
        ..RuntimeConfig::default()
    })?;
    let plugin = runtime.load_dir(&args.plugin)?;
    let report = plugin.call(args.op, &input, &grants).await?;
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    println!("{json}");
    match &report.outcome {
        Outcome::Succeeded { .. } => Ok(()),
        Outcome::Failed { error } => {
            eprintln!("step failed ({error})");
            Err(Exit::StepFailed)
        }
    }
}
