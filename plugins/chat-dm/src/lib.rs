//! Tell the person a notification is about in a direct message: the host
//! calls `run` with a ticket's event (`inputs.event`, `inputs.text`,
//! `inputs.data`); when the event names a person (`data.assignee`: a
//! task's assignee, by e-mail), this plugin finds them in the chat by that
//! e-mail (Slack: `users.lookupByEmail`) and writes to them
//! (`chat.postMessage` to their user id, which Slack delivers as a DM).
//!
//! The e-mail -> user id answer is kept in the plugin's key-value store, so
//! a manager told about fifty leavers is looked up once. A user id the chat
//! no longer knows is forgotten and looked up again on the host's retry.
//! The bot token never reaches the plugin: the host attaches it.
//!
//! Slack answers most errors 200 with `{"ok": false, "error": ...}`:
//! `users_not_found` (no chat account with that e-mail) and a refused token
//! are fatal and named; 429 is retried by the host after `Retry-After`.
//! An event without a person (a group's task) is a success with nothing
//! sent. `verify` and `compensate` have nothing to prove or undo.

use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http, kv};
use serde_json::{Value, json};

struct ChatDm;

/// What the chat answered over HTTP 200: `ok`, or the error it named.
enum Answer {
    Ok(Value),
    Refused(String),
}

/// The chat's answer; a 429 or 5xx is the host's to retry.
fn slack(resp: http::Response) -> Result<Answer, StepError> {
    let body: Value = resp.error_for_status()?.json()?;
    if body["ok"] == true {
        return Ok(Answer::Ok(body));
    }
    Ok(Answer::Refused(
        body["error"]
            .as_str()
            .unwrap_or("unknown_error")
            .to_string(),
    ))
}

/// A refusal as a step error: a refused token is named as such.
fn refused(what: &str, error: &str) -> StepError {
    match error {
        "ratelimited" => StepError::retryable(format!("{what}: the chat is rate limiting")),
        "not_authed" | "invalid_auth" | "token_revoked" | "account_inactive" => {
            StepError::fatal(format!("{what}: the chat refused the bot token ({error})"))
        }
        _ => StepError::fatal(format!("{what}: the chat answered {error}")),
    }
}

fn cache_key(email: &str) -> String {
    format!("user/{email}")
}

/// The chat's user id for `email`, from the cache or the chat.
fn user_id(base: &str, email: &str) -> Result<String, StepError> {
    if let Some(id) = kv::get(&cache_key(email))? {
        return String::from_utf8(id)
            .map_err(|_| StepError::fatal("a cached user id is not UTF-8"));
    }
    let url = format!("{base}/users.lookupByEmail?email={}", encode(email));
    let body = match slack(http::get(&url).send()?)? {
        Answer::Ok(body) => body,
        Answer::Refused(e) if e == "users_not_found" => {
            return Err(StepError::fatal(format!(
                "nobody in the chat has the e-mail {email}: they cannot be told there"
            )));
        }
        Answer::Refused(e) => return Err(refused("users.lookupByEmail", &e)),
    };
    let id = body["user"]["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| StepError::fatal("users.lookupByEmail answered no user id"))?
        .to_string();
    kv::set(&cache_key(email), id.as_bytes())?;
    Ok(id)
}

/// Percent-encode an e-mail for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Step for ChatDm {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let base = ctx.config("base_url")?.trim_end_matches('/').to_string();
        let event: String = ctx.input("event")?;
        let text: String = ctx.input("text")?;
        let data: Value = ctx.input("data").unwrap_or(Value::Null);
        let Some(person) = data["assignee"]
            .as_str()
            .map(|a| a.trim().to_lowercase())
            .filter(|a| a.contains('@'))
        else {
            return Ok(Outcome::new(
                json!({ "sent": false }),
                Evidence::new(
                    format!("{event}: no one person to tell (a group's task)"),
                    "the chat".to_string(),
                ),
            ));
        };
        let user = user_id(&base, &person)?;
        let sent = http::post(&format!("{base}/chat.postMessage"))
            .json(&json!({ "channel": user, "text": text }))?
            .send()?;
        match slack(sent)? {
            Answer::Ok(_) => {}
            Answer::Refused(e) if e == "channel_not_found" => {
                // The person left the chat or was re-created: ask again.
                kv::delete(&cache_key(&person))?;
                return Err(StepError::retryable(format!(
                    "the chat no longer knows {person}'s user id {user}; it is looked up again"
                )));
            }
            Answer::Refused(e) => return Err(refused("chat.postMessage", &e)),
        }
        Ok(Outcome::new(
            json!({ "sent": true, "user": user }),
            Evidence::new(
                format!("{event}: told {person} in a direct message"),
                format!("the chat user {user}"),
            ),
        ))
    }

    fn verify(_ctx: &Context) -> Result<Evidence, StepError> {
        Ok(Evidence::new(
            "a chat message has nothing to read back",
            "the chat".to_string(),
        ))
    }

    fn compensate(_ctx: &Context) -> Result<Evidence, StepError> {
        Ok(Evidence::new(
            "a chat message cannot be unsent; nothing to undo",
            "the chat".to_string(),
        ))
    }
}

itsm_sdk::export!(ChatDm);
