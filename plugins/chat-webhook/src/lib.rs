//! Notifications to a chat incoming webhook: the host calls `run` with the
//! event (`inputs.event`, `inputs.text`, `inputs.step`, `inputs.data`) of a
//! ticket it is told to announce, and this plugin posts it.
//!
//! - `format = "slack"` (default): `{"text": "..."}`, what a Slack incoming
//!   webhook takes (and answers `ok`).
//! - `format = "teams"`: a `MessageCard`, what a Microsoft Teams webhook
//!   takes.
//!
//! 429 and 5xx are retried by the host; other answers are fatal and named.
//! `verify` and `compensate` have nothing to prove or undo: a message sent
//! cannot be unsent.

use itsm_sdk::{Context, Evidence, Outcome, Step, StepError, http};
use serde_json::json;

struct ChatWebhook;

impl Step for ChatWebhook {
    fn run(ctx: &Context) -> Result<Outcome, StepError> {
        let url = ctx.config("url")?;
        let text: String = ctx.input("text")?;
        let event: String = ctx.input("event")?;
        let body = match ctx
            .config
            .get("format")
            .map(String::as_str)
            .unwrap_or("slack")
        {
            "slack" => json!({ "text": text }),
            "teams" => json!({
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": format!("{event}: {}", ctx.subject),
                "text": text,
            }),
            other => {
                return Err(StepError::fatal(format!(
                    "config `format` is {other:?}: use \"slack\" or \"teams\""
                )));
            }
        };
        let resp = http::post(url).json(&body)?.send()?.error_for_status()?;
        Ok(Outcome::new(
            json!({ "status": resp.status }),
            Evidence::new(
                format!("{event} posted: {text}"),
                "the chat webhook".to_string(),
            ),
        ))
    }

    fn verify(_ctx: &Context) -> Result<Evidence, StepError> {
        Ok(Evidence::new(
            "a chat message has nothing to read back",
            "the chat webhook".to_string(),
        ))
    }

    fn compensate(_ctx: &Context) -> Result<Evidence, StepError> {
        Ok(Evidence::new(
            "a chat message cannot be unsent; nothing to undo",
            "the chat webhook".to_string(),
        ))
    }
}

itsm_sdk::export!(ChatWebhook);
