//! Alerts correlated into one problem through the real `itsm serve`: the
//! signed hook's alerts of one fingerprint make incidents; the alert that
//! reaches the threshold opens one problem linking them, later alerts join
//! it, a re-sent alert adds no second link, two alerts crossing at the
//! same instant still make one problem; relations are listed with
//! `?related_to=`, made by a workflow (`[[relate]]`: a change naming the
//! problem it fixes) and by people with `POST /v1/tickets/{id}/links`, and
//! each is in both tickets' trails.

use serde_json::{Value, json};

use crate::hooks::{deliver, now};
use crate::support::{
    Server, client_as, create_ticket, get_json, metric, person_token, start_server_with_env,
};

const SECRET: &str = "av-hook-secret-8d1e";

/// An incident per alert, a problem per outbreak, and a change: each a
/// task, so nothing needs a plugin and the tickets stay open.
pub(crate) fn set_up(home: &std::path::Path, threshold: u32) {
    let wf = home.join("workflows");
    std::fs::create_dir_all(&wf).unwrap();
    std::fs::write(
        wf.join("malware-incident.toml"),
        r#"
name = "malware-incident"
version = "1"
kind = "incident"
[inputs.host]
type = "string"
[inputs.signature]
type = "string"
[[steps]]
name = "contain"
task = { group = "service-desk", instructions = "Isolate the workstation." }
"#,
    )
    .unwrap();
    std::fs::write(
        wf.join("malware-outbreak.toml"),
        r#"
name = "malware-outbreak"
version = "1"
kind = "problem"
[inputs.impact]
type = "string"
[[steps]]
name = "root-cause"
task = { group = "security", instructions = "Find how it spread." }
"#,
    )
    .unwrap();
    std::fs::write(
        wf.join("patch.toml"),
        r#"
name = "patch"
kind = "change"
[inputs.problem]
type = "string"
[[relate]]
rel = "fixes"
ticket = "${inputs.problem}"
[[steps]]
name = "apply"
task = { group = "cab", instructions = "Roll out the patch." }
"#,
    )
    .unwrap();
    std::fs::write(
        home.join("hooks.toml"),
        format!(
            r#"
[[hooks]]
name = "antivirus"
workflow = "malware-incident"
secret = "av_hook"
event_id = "/alert_id"
subject = "/host"
inputs = {{ host = "/host", signature = "/signature" }}

[hooks.correlate]
fingerprint = "alert.signature"
window = "10m"
threshold = {threshold}
problem = "malware-outbreak"
inputs = {{ impact = "high" }}
"#
        ),
    )
    .unwrap();
}

pub(crate) async fn start(home: &std::path::Path) -> Server {
    start_server_with_env(home, &[], &[("ITSM_SECRET_AV_HOOK", SECRET)]).await
}

/// Send one alert; the hook's answer.
pub(crate) async fn alert(server: &Server, id: &str, host: &str, signature: &str) -> Value {
    let body = json!({ "alert_id": id, "host": host, "signature": signature }).to_string();
    let url = format!("{}/v1/hooks/antivirus", server.base);
    let (status, answer) = deliver(&reqwest::Client::new(), &url, &body, now(), SECRET).await;
    assert!(status == 201 || status == 200, "{status}: {answer:#}");
    assert_eq!(answer["errors"], json!([]), "{answer:#}");
    answer
}

/// The ids of the tickets related to `id`, as `?related_to=` lists them.
async fn related(ops: &reqwest::Client, base: &str, id: &str) -> Vec<String> {
    let list = get_json(ops, &format!("{base}/v1/tickets?related_to={id}")).await;
    let ids: Vec<String> = list["tickets"]
        .as_array()
        .unwrap_or_else(|| panic!("{list:#}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(list["total"].as_u64(), Some(ids.len() as u64), "{list:#}");
    ids
}

fn linked_events(view: &Value) -> Vec<&Value> {
    view["trail"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "linked")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reaching_the_threshold_open_one_problem_that_later_alerts_join() {
    let home = tempfile::tempdir().unwrap();
    set_up(home.path(), 3);
    let server = start(home.path()).await;
    let (base, ops) = (server.base.clone(), server.client());

    // Below the threshold: incidents, no problem.
    let mut incidents = Vec::new();
    for (i, host) in ["ws-01", "ws-02"].iter().enumerate() {
        let a = alert(&server, &format!("a{i}"), host, "EICAR").await;
        assert!(a.get("problems").is_none(), "{a:#}");
        assert_eq!(a["created"], 1);
        assert!(a["batch"].as_str().unwrap().starts_with("C-"), "{a:#}");
        incidents.push(a["tickets"][0].as_str().unwrap().to_string());
    }
    // Another fingerprint counts apart.
    let other = alert(&server, "b0", "ws-01", "Mimikatz").await;
    assert!(other.get("problems").is_none(), "{other:#}");
    assert_ne!(other["batch"], json!(null));

    // The third EICAR alert opens the problem and links all three.
    let third = alert(&server, "a2", "ws-03", "EICAR").await;
    incidents.push(third["tickets"][0].as_str().unwrap().to_string());
    let problem = third["problems"][0].as_str().unwrap().to_string();
    assert_eq!(third["problems"].as_array().unwrap().len(), 1);
    let view = get_json(&ops, &format!("{base}/v1/tickets/{problem}")).await;
    assert_eq!(view["kind"], "problem", "{view:#}");
    assert_eq!(view["ticket"]["subject"], "EICAR");
    assert_eq!(view["ticket"]["workflow"], "malware-outbreak");
    assert_eq!(view["ticket"]["requested_by"], "hook:antivirus");
    assert_eq!(view["ticket"]["inputs"]["impact"], "high");
    let mut listed = related(&ops, &base, &problem).await;
    listed.sort();
    let mut want = incidents.clone();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(linked_events(&view).len(), 3, "{view:#}");
    for id in &incidents {
        let v = get_json(&ops, &format!("{base}/v1/tickets/{id}")).await;
        assert_eq!(
            v["ticket"]["links"],
            json!([{ "rel": "caused_by", "ticket": problem, "by": "hook:antivirus",
                     "at_ms": v["ticket"]["links"][0]["at_ms"] }]),
            "{v:#}"
        );
        assert_eq!(linked_events(&v)[0]["data"]["rel"], "caused_by");
        assert_eq!(related(&ops, &base, id).await, vec![problem.clone()]);
    }
    // The Mimikatz alert is no part of it.
    assert!(!listed.contains(&other["tickets"][0].as_str().unwrap().to_string()));

    // The third alert re-sent: the same incident, no second link.
    let again = alert(&server, "a2", "ws-03", "EICAR").await;
    assert_eq!(
        (again["created"].as_u64(), again["existing"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(again["problems"], json!([problem]));
    let view = get_json(&ops, &format!("{base}/v1/tickets/{problem}")).await;
    assert_eq!(linked_events(&view).len(), 3, "{view:#}");
    assert_eq!(view["ticket"]["links"].as_array().unwrap().len(), 3);

    // A later alert joins the open problem at once.
    let fourth = alert(&server, "a3", "ws-01", "EICAR").await;
    assert_eq!(fourth["problems"], json!([problem]));
    assert_eq!(related(&ops, &base, &problem).await.len(), 4);

    // A change names the problem it fixes; its workflow relates them.
    let r = ops
        .post(format!("{base}/v1/tickets"))
        .json(&json!({ "workflow": "patch", "subject": "EICAR signatures",
                       "inputs": { "problem": "T-0000000000000000000000nope" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("input `problem`") && text.contains("does not exist"),
        "{text}"
    );
    let change = create_ticket(
        &ops,
        &base,
        json!({ "workflow": "patch", "subject": "EICAR signatures", "inputs": { "problem": problem } }),
    )
    .await;
    let view = get_json(&ops, &format!("{base}/v1/tickets/{change}")).await;
    assert_eq!(view["ticket"]["links"][0]["rel"], "fixes", "{view:#}");
    assert_eq!(view["ticket"]["links"][0]["by"], "workflow:patch");
    let view = get_json(&ops, &format!("{base}/v1/tickets/{problem}")).await;
    let fixed_by: Vec<&Value> = view["ticket"]["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rel"] == "fixed_by")
        .collect();
    assert_eq!(fixed_by.len(), 1, "{view:#}");
    assert_eq!(fixed_by[0]["ticket"], change);
    let changes = get_json(
        &ops,
        &format!("{base}/v1/tickets?related_to={problem}&workflow=patch"),
    )
    .await;
    assert_eq!(changes["total"], 1, "{changes:#}");
    assert_eq!(changes["tickets"][0]["id"], change);

    // People relate tickets too: the change to the first incident.
    let r = ops
        .post(format!("{base}/v1/tickets/{change}/links"))
        .json(&json!({ "rel": "related", "ticket": incidents[0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["links"][1]["rel"], "related", "{body:#}");
    assert_eq!(body["links"][1]["by"], "operator-1");
    assert!(related(&ops, &base, &incidents[0]).await.contains(&change));

    // Bad relations are refused, naming what is wrong, and change nothing.
    let refusals = [
        (json!({ "rel": "fix", "ticket": problem }), 422, "fix"),
        (
            json!({ "rel": "fixes", "ticket": "T-nope" }),
            404,
            "no ticket T-nope",
        ),
        (json!({ "rel": "related", "ticket": change }), 422, "itself"),
    ];
    for (body, status, named) in refusals {
        let r = ops
            .post(format!("{base}/v1/tickets/{change}/links"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(named), "{body}: {text}");
    }
    let view = get_json(&ops, &format!("{base}/v1/tickets/{change}")).await;
    assert_eq!(view["ticket"]["links"].as_array().unwrap().len(), 2);

    // A person with no relation to the problem cannot list around it.
    let eve = client_as(&person_token(home.path(), "eve", "eve@example.com"));
    let r = eve
        .get(format!("{base}/v1/tickets?related_to={problem}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Each link is in the exported trail.
    let export = server
        .auditor_client()
        .get(format!("{base}/v1/audit?ticket={}", incidents[0]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        export
            .lines()
            .any(|l| l.contains("\"linked\"") && l.contains(&problem)),
        "{export}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_alerts_crossing_the_threshold_at_once_make_one_problem() {
    let home = tempfile::tempdir().unwrap();
    set_up(home.path(), 3);
    let server = start(home.path()).await;
    let (base, ops) = (server.base.clone(), server.client());
    let fingerprints: Vec<String> = (0..12).map(|i| format!("Worm.{i}")).collect();
    // Each fingerprint one alert short of its threshold ...
    for f in &fingerprints {
        for i in 0..2 {
            let a = alert(&server, &format!("{f}-{i}"), &format!("pc-{i}"), f).await;
            assert!(a.get("problems").is_none(), "{a:#}");
        }
    }
    // ... then two more each, sent at the same instant: both cross it.
    let mut pairs = Vec::new();
    for f in &fingerprints {
        let (idx, idy) = (format!("{f}-x"), format!("{f}-y"));
        let (x, y) = tokio::join!(
            alert(&server, &idx, "pc-x", f),
            alert(&server, &idy, "pc-y", f)
        );
        pairs.push((f.clone(), x, y));
    }
    for (f, x, y) in pairs {
        // Both alerts found the fingerprint over its threshold and name
        // a problem: the race happened, and they name the same one.
        let px = x["problems"][0].as_str().unwrap_or_else(|| panic!("{x:#}"));
        assert_eq!(y["problems"][0].as_str(), Some(px), "{f}: {x:#} {y:#}");
        let list = get_json(
            &ops,
            &format!("{base}/v1/tickets?workflow=malware-outbreak&subject={f}"),
        )
        .await;
        assert_eq!(list["total"], 1, "{f}: {list:#}");
        assert_eq!(related(&ops, &base, px).await.len(), 4, "{f}");
    }
    // Every fingerprint opened one problem; and at least once both alerts
    // of a pair set out to open it, so the race under test happened.
    let http = reqwest::Client::new();
    assert_eq!(
        metric(&http, &base, "itsm_problems_opened_total").await,
        fingerprints.len() as u64
    );
    assert!(metric(&http, &base, "itsm_problem_open_races_total").await > 0);
}

/// On PostgreSQL, alerts of one fingerprint arriving at two workers at
/// the same instant, both crossing the threshold, still make one problem:
/// the database's one-open-ticket-per-subject check settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_crossing_on_two_workers_at_once_make_one_problem() {
    let cluster = crate::pg::Cluster::start();
    let url = cluster.url();
    let home_a = tempfile::tempdir().unwrap();
    set_up(home_a.path(), 3);
    let flags = ["--store", url.as_str()];
    let env = [("ITSM_SECRET_AV_HOOK", SECRET)];
    let a = start_server_with_env(home_a.path(), &flags, &env).await;
    // The second worker's home: a copy of the first, as configuration
    // management would make it (bundled plugins already compiled).
    let home_b = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", home_a.path().display()))
        .arg(home_b.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let b = start_server_with_env(home_b.path(), &flags, &env).await;
    let fingerprints: Vec<String> = (0..6).map(|i| format!("Trojan.{i}")).collect();
    for f in &fingerprints {
        alert(&a, &format!("{f}-0"), "pc-0", f).await;
        alert(&b, &format!("{f}-1"), "pc-1", f).await;
    }
    for f in &fingerprints {
        let (idx, idy) = (format!("{f}-x"), format!("{f}-y"));
        let (x, y) = tokio::join!(alert(&a, &idx, "pc-x", f), alert(&b, &idy, "pc-y", f));
        let px = x["problems"][0].as_str().unwrap_or_else(|| panic!("{x:#}"));
        assert_eq!(y["problems"][0].as_str(), Some(px), "{f}: {x:#} {y:#}");
        assert_eq!(related(&a.client(), &a.base, px).await.len(), 4, "{f}");
    }
    // The database holds one problem per fingerprint, each linked to its
    // four incidents, whichever worker took each alert.
    assert_eq!(
        cluster.sql(
            "SELECT count(*), count(DISTINCT subject) FROM itsm.tickets \
             WHERE workflow = 'malware-outbreak'"
        ),
        format!("{n}|{n}", n = fingerprints.len())
    );
    assert_eq!(
        cluster.sql("SELECT count(*) FROM itsm.tickets WHERE workflow = 'malware-incident'"),
        (4 * fingerprints.len()).to_string()
    );
}
