//! Ticket changes announced to every worker, so a client long-polling one
//! worker (`GET /v1/tickets/ID?wait=`) wakes when another worker changes
//! the ticket.
//!
//! Each commit that writes tickets sends, inside its transaction (so only
//! once it lands), `NOTIFY itsm_tickets` with each ticket's id and trail
//! length; each worker listens on a connection of its own. A listener that
//! loses its connection wakes every waiter (it may have missed changes;
//! each reads its ticket again) and connects again.

use std::time::Duration;

use deadpool_postgres::Transaction;
use tokio_postgres::AsyncMessage;

use super::pg;
use crate::error::Result;
use crate::store::Changed;

/// The channel.
const CHANNEL: &str = "itsm_tickets";

/// A payload's size at most (the server allows under 8000 bytes).
const MAX_PAYLOAD: usize = 7000;

/// `id:events,id:events,...` in payloads under [`MAX_PAYLOAD`].
fn payloads(changes: &[(&str, i64)]) -> Vec<String> {
    let mut out = vec![String::new()];
    for (id, events) in changes {
        let item = format!("{id}:{events}");
        let last = out.last_mut().expect("one payload at least");
        if !last.is_empty() && last.len() + 1 + item.len() > MAX_PAYLOAD {
            out.push(item);
        } else {
            if !last.is_empty() {
                last.push(',');
            }
            last.push_str(&item);
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// Announce `changes` (ticket id, trail length) when `tx` commits.
pub(super) async fn announce(tx: &Transaction<'_>, changes: &[(&str, i64)]) -> Result<()> {
    let payloads = payloads(changes);
    if payloads.is_empty() {
        return Ok(());
    }
    tx.query(
        "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
        &[&CHANNEL, &payloads],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// The TLS connector every connection of the store uses.
pub(super) type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// Listen for changes on `runtime` for as long as it runs: `changed` gets
/// each ticket's (id, trail length), and `None` whenever changes may have
/// been missed (at the start of each connection, and after losing one).
pub(super) fn listen(
    runtime: &tokio::runtime::Runtime,
    config: tokio_postgres::Config,
    tls: Tls,
    changed: Changed,
) {
    runtime.spawn(async move {
        loop {
            if let Err(e) = listen_once(&config, &tls, &changed).await {
                tracing::warn!(error = %e, "lost the PostgreSQL change listener; connecting again");
            }
            changed(None);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

async fn listen_once(config: &tokio_postgres::Config, tls: &Tls, changed: &Changed) -> Result<()> {
    let (client, mut connection) = config.connect(tls.clone()).await.map_err(pg)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL change listener");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(pg)?;
    // Listening from here on: what changed before is unknown.
    changed(None);
    while let Some(payload) = rx.recv().await {
        for item in payload.split(',') {
            if let Some((id, events)) = item.rsplit_once(':')
                && let Ok(events) = events.parse::<u64>()
            {
                changed(Some((id, events)));
            }
        }
    }
    driver.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_split_into_payloads_under_the_limit() {
        let ids: Vec<String> = (0..1000).map(|i| format!("T-{i:026}")).collect();
        let changes: Vec<(&str, i64)> = ids.iter().map(|id| (id.as_str(), 7)).collect();
        let out = payloads(&changes);
        assert!(out.len() > 1);
        assert!(out.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let items: Vec<&str> = out.iter().flat_map(|p| p.split(',')).collect();
        assert_eq!(items.len(), 1000);
        assert_eq!(items[0], format!("{}:7", ids[0]));
        assert!(payloads(&[]).is_empty());
    }
}
