//! Every test double at once, seeded as one small company: what `itsm
//! sandbox`, `itsm serve --sandbox` and `itsm demo` run the offboarding
//! workflow against. Test doubles only: nothing here is a real tenant.
//!
//! Each of user1..userN@example.com exists in the directory (Graph) with a
//! managed laptop (Intune), in two SCIM apps ("slack" and "zoom"), and in
//! the CRM (Salesforce); Vault has one matter for their holds. The returned
//! settings point `workflows/offboarding.toml` at the doubles and the
//! secrets are the credentials the doubles accept.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::chat_api::ChatApi;
use super::faults::Faults;
use super::firewall::Firewall;
use super::graph::Graph;
use super::salesforce::Salesforce;
use super::scim::{BASE_PATH, Scim};
use super::vault::Vault;

/// A throwaway service-account key the Vault double accepts JWTs from. It
/// grants nothing anywhere; it exists so the real JWT flow runs in demos.
const SERVICE_ACCOUNT: &str = include_str!("../../tests/fixtures/test-service-account.json");
/// The tenant the Graph double serves.
pub const TENANT: &str = "sandbox-tenant";

/// How the doubles misbehave, for retries worth watching.
#[derive(Debug, Clone, Copy, Default)]
pub struct Misbehaviour {
    /// Answer every Nth API request of each double with 429 + `Retry-After: 1`.
    pub rate_limit_every: Option<u32>,
    /// Answer this fraction of API requests with `error_status`.
    pub error_share: Option<f64>,
    /// The status for `error_share`: 500 by default; 503 and 429 carry
    /// `Retry-After: 1`.
    pub error_status: Option<u16>,
    /// Added to every API request.
    pub latency_ms: u64,
}

/// The running doubles.
#[derive(Debug, Clone)]
pub struct World {
    /// Microsoft Graph and the identity platform.
    pub graph: Graph,
    /// Google Vault and Google's token endpoint.
    pub vault: Vault,
    /// Salesforce.
    pub salesforce: Salesforce,
    /// SCIM apps by name ("slack", "zoom").
    pub scim: BTreeMap<String, Scim>,
    /// The chat's Web API, where managers are told of their tasks.
    pub chat: ChatApi,
    /// The firewall's policy API, which changes are made through.
    pub firewall: Firewall,
    /// The Vault matter holds go to.
    pub matter_id: String,
    addrs: BTreeMap<String, SocketAddr>,
    secrets: BTreeMap<String, String>,
}

async fn bind(port: Option<u16>) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0))).await
}

impl World {
    /// Start every double on loopback (ports from `base_port` up, or free
    /// ones), seeded with `users` people.
    pub async fn start(
        users: u32,
        base_port: Option<u16>,
        misbehave: Misbehaviour,
    ) -> std::io::Result<Self> {
        let port = |i: u16| base_port.map(|p| p + i);
        let random = || {
            format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            )
        };
        let (client_id, client_secret) = ("itsm-sandbox-app", random());
        let (sf_id, sf_secret) = ("itsm-sandbox-connected-app", random());
        let key: serde_json::Value =
            serde_json::from_str(SERVICE_ACCOUNT).expect("bundled key file parses");
        let client_email = key["client_email"].as_str().unwrap_or_default();

        let graph = Graph::new(TENANT, client_id, &client_secret);
        let vault = Vault::new(client_email);
        let salesforce = Salesforce::new(sf_id, &sf_secret);
        let mut scim = BTreeMap::new();
        let mut secrets = BTreeMap::from([
            (
                "entra_client".to_string(),
                format!("{client_id}:{client_secret}"),
            ),
            (
                "intune_client".to_string(),
                format!("{client_id}:{client_secret}"),
            ),
            (
                "vault_service_account".to_string(),
                SERVICE_ACCOUNT.to_string(),
            ),
            (
                "salesforce_client".to_string(),
                format!("{sf_id}:{sf_secret}"),
            ),
        ]);
        for app in ["slack", "zoom"] {
            let token = format!("{app}-{}", random());
            secrets.insert(format!("{app}_scim_token"), token.clone());
            scim.insert(app.to_string(), Scim::new(Some(&token)));
        }
        let matter_id = vault.add_matter("Offboarding holds");
        let chat_token = format!("xoxb-{}", random());
        secrets.insert("chat_bot_token".to_string(), chat_token.clone());
        let chat = ChatApi::new(&chat_token);
        // The people who get tasks: the demo's and the tests' managers.
        for i in 1..=5 {
            chat.add_user(&format!("manager{i}@example.com"));
        }
        // The antivirus console the demo plays signs its alerts with this.
        secrets.insert("av_hook".to_string(), format!("av-{}", random()));
        let firewall_token = format!("fw-{}", random());
        secrets.insert("change_api_token".to_string(), firewall_token.clone());
        let firewall = Firewall::new(&firewall_token);
        for i in 1..=users {
            let email = format!("user{i}@example.com");
            let name = format!("User {i}");
            graph.add_user(&email, &name);
            // Every fifth person has no managed device (a contractor on
            // their own laptop): nothing to wipe, nobody to ask.
            if i % 5 != 0 {
                graph.add_device(&email, &format!("LAPTOP-{i:04}"), "Windows");
            }
            salesforce.add_user(&email, &name);
            for s in scim.values() {
                s.add_user(&email, &name);
            }
        }

        let mut addrs = BTreeMap::new();
        let listener = bind(port(0)).await?;
        addrs.insert("graph".to_string(), listener.local_addr()?);
        let g = graph.clone();
        tokio::spawn(async move { g.serve(listener, std::future::pending()).await });
        let listener = bind(port(1)).await?;
        let vault_addr = listener.local_addr()?;
        addrs.insert("vault".to_string(), vault_addr);
        vault.set_token_url(&format!("http://{vault_addr}/token"));
        let v = vault.clone();
        tokio::spawn(async move { v.serve(listener, std::future::pending()).await });
        let listener = bind(port(2)).await?;
        let sf_addr = listener.local_addr()?;
        addrs.insert("salesforce".to_string(), sf_addr);
        salesforce.set_instance_url(&format!("http://{sf_addr}"));
        let s = salesforce.clone();
        tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
        for (i, (name, double)) in scim.iter().enumerate() {
            let listener = bind(port(3 + i as u16)).await?;
            addrs.insert(name.clone(), listener.local_addr()?);
            let d = double.clone();
            tokio::spawn(async move { d.serve(listener, std::future::pending()).await });
        }
        let listener = bind(port(3 + scim.len() as u16)).await?;
        addrs.insert("chat".to_string(), listener.local_addr()?);
        let c = chat.clone();
        tokio::spawn(async move { c.serve(listener, std::future::pending()).await });
        let listener = bind(port(4 + scim.len() as u16)).await?;
        addrs.insert("firewall".to_string(), listener.local_addr()?);
        let f = firewall.clone();
        tokio::spawn(async move { f.serve(listener, std::future::pending()).await });
        let world = Self {
            graph,
            vault,
            salesforce,
            scim,
            chat,
            firewall,
            matter_id,
            addrs,
            secrets,
        };
        world.misbehave(misbehave);
        Ok(world)
    }

    /// Set every double's faults.
    pub fn misbehave(&self, m: Misbehaviour) {
        let status = match m.error_share {
            Some(_) => m.error_status.unwrap_or(500),
            None => 429,
        };
        let faults = Faults {
            every: m.rate_limit_every,
            every_status: Some(status),
            share: m.error_share,
            seed: 7,
            retry_after_secs: 1,
            latency_ms: m.latency_ms,
            ..Faults::default()
        };
        self.graph.set_faults(faults.clone());
        self.vault.set_faults(faults.clone());
        self.salesforce.set_faults(faults);
        for s in self.scim.values() {
            s.set_faults(Faults {
                every: m.rate_limit_every,
                every_status: Some(429),
                retry_after_secs: 1,
                ..Faults::default()
            });
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}", self.addrs[name])
    }

    /// `[settings]` overrides that point `workflows/offboarding.toml` here.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let vault = self.url("vault");
        BTreeMap::from([
            ("tenant_id".into(), TENANT.into()),
            ("graph_url".into(), self.url("graph")),
            ("login_url".into(), self.url("graph")),
            ("vault_url".into(), vault.clone()),
            ("google_token_url".into(), format!("{vault}/token")),
            ("vault_matter_id".into(), self.matter_id.clone()),
            ("vault_admin".into(), "vault-admin@example.com".into()),
            ("salesforce_url".into(), self.url("salesforce")),
            (
                "slack_scim_url".into(),
                format!("{}{BASE_PATH}", self.url("slack")),
            ),
            (
                "zoom_scim_url".into(),
                format!("{}{BASE_PATH}", self.url("zoom")),
            ),
            ("chat_api_url".into(), format!("{}/api", self.url("chat"))),
        ])
    }

    /// `[settings]` overrides that point the change workflows
    /// (`workflows/standard-change.toml`, `emergency-change.toml`) here.
    pub fn change_settings(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "change_api_url".into(),
            format!("{}/api/v1", self.url("firewall")),
        )])
    }

    /// The credentials the doubles accept, by the workflow's secret names.
    pub fn secrets(&self) -> BTreeMap<String, String> {
        self.secrets.clone()
    }

    /// One line per double, for people.
    pub fn describe(&self) -> Vec<String> {
        vec![
            format!(
                "Microsoft Graph + identity platform  {}  (tenant {TENANT})",
                self.url("graph")
            ),
            format!(
                "Google Vault + OAuth token           {}  (matter {})",
                self.url("vault"),
                self.matter_id
            ),
            format!(
                "Salesforce                           {}",
                self.url("salesforce")
            ),
            format!(
                "SCIM 2.0 \"slack\"                     {}{BASE_PATH}",
                self.url("slack")
            ),
            format!(
                "SCIM 2.0 \"zoom\"                      {}{BASE_PATH}",
                self.url("zoom")
            ),
            format!(
                "Slack Web API (direct messages)      {}/api  (manager1..5@example.com)",
                self.url("chat")
            ),
            format!(
                "Firewall policy API (changes)        {}/api/v1",
                self.url("firewall")
            ),
        ]
    }
}
