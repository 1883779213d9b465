//! The HTTP client behind `itsm ticket`, `batch`, `audit`, `plugin` and
//! `workflow`: server and token from flags or `ITSM_SERVER` / `ITSM_TOKEN`,
//! tables for people and `--json` for scripts.

use std::time::Duration;

use clap::Args;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use super::Exit;

/// Where the server is and who is asking.
#[derive(Debug, Clone, Args)]
pub(crate) struct Connection {
    /// Server URL.
    #[arg(
        long,
        env = "ITSM_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// API token (see `itsm token create`).
    #[arg(long, env = "ITSM_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A connected client.
pub(crate) struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    /// `--json` was given.
    pub json: bool,
}

impl Connection {
    /// A client, or a usage error if there is no token.
    pub fn connect(&self) -> Result<Client, Exit> {
        let token = self
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Exit::Usage(
                "no API token: pass --token or set ITSM_TOKEN (make one with `itsm token create`)"
                    .into(),
            )
            })?;
        // reqwest's rustls needs a process-wide crypto provider; ring is the one linked.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| Exit::Usage(format!("HTTP client: {e}")))?;
        Ok(Client {
            base: self.server.trim_end_matches('/').to_string(),
            token,
            http,
            json: self.json,
        })
    }
}

impl Client {
    /// A request to `path` (which starts with `/`), with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Send, and turn a non-2xx answer into an error carrying the server's reason.
    pub async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response, Exit> {
        let resp = req.send().await.map_err(|e| {
            Exit::Usage(format!(
                "cannot reach {}: {e} (is `itsm serve` running? set --server or ITSM_SERVER)",
                self.base
            ))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let reason = body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string());
        Err(match status {
            StatusCode::UNAUTHORIZED => Exit::Refused(format!("not authenticated: {reason}")),
            StatusCode::FORBIDDEN => Exit::Refused(format!("forbidden: {reason}")),
            _ => Exit::Refused(format!("{} ({})", reason, status.as_u16())),
        })
    }

    /// Send and parse JSON.
    pub async fn call(&self, req: RequestBuilder) -> Result<Value, Exit> {
        self.send(req)
            .await?
            .json()
            .await
            .map_err(|e| Exit::Refused(format!("the server's answer is not JSON: {e}")))
    }

    /// GET `path` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, Exit> {
        self.call(self.request(Method::GET, path)).await
    }

    /// POST a JSON body to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Exit> {
        self.call(self.request(Method::POST, path).json(body)).await
    }

    /// Print `value` as JSON if `--json`, else run `table`.
    pub fn show(&self, value: &Value, table: impl FnOnce(&Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("JSON prints")
            );
        } else {
            table(value);
        }
    }
}

/// Percent-encode a query value.
pub(crate) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A plain text table: columns as wide as their widest cell.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// A JSON value as a table cell: strings bare, null empty.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Milliseconds since the epoch as `2026-11-29 10:04:05`.
pub(crate) fn time(v: &Value) -> String {
    v.as_u64()
        .map(|ms| {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(t)
                .to_string()
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_string()
        })
        .unwrap_or_default()
}
