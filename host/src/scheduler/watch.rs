//! Wake-ups for clients waiting for a ticket to change (long-poll), so a
//! client learns a workflow finished without polling, and the server reads
//! a ticket once per change rather than once per poll.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Tickets someone is waiting on: each has a channel of its trail length,
/// sent after every commit that changed it.
#[derive(Debug, Default)]
pub struct Watchers(Mutex<HashMap<String, watch::Sender<u64>>>);

impl Watchers {
    /// Tell anyone waiting on `id` that it changed (its trail now holds
    /// `events` events). Costs a map look-up when no one waits.
    pub fn changed(&self, id: &str, events: u64) {
        if let Some(tx) = self.0.lock().expect("watchers lock").get(id) {
            tx.send_replace(events);
        }
    }

    /// Wake everyone waiting, on any ticket (changes may have been
    /// missed; each waiter reads its ticket again).
    pub fn wake_all(&self) {
        for tx in self.0.lock().expect("watchers lock").values() {
            tx.send_modify(|_| ());
        }
    }

    /// Start waiting on `id`. Subscribe first, then read the ticket: a
    /// change committed after the subscription wakes [`Subscription::next`],
    /// so none is missed between the read and the wait.
    pub fn subscribe(&self, id: &str) -> Subscription<'_> {
        let rx = self
            .0
            .lock()
            .expect("watchers lock")
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription {
            rx,
            id: id.to_string(),
            watchers: self,
        }
    }
}

/// One waiter on one ticket; the last one dropped removes the entry.
pub struct Subscription<'a> {
    rx: watch::Receiver<u64>,
    id: String,
    watchers: &'a Watchers,
}

impl Subscription<'_> {
    /// Wait for the next change, until `deadline`: true if one came.
    pub async fn next(&mut self, deadline: tokio::time::Instant) -> bool {
        matches!(
            tokio::time::timeout_at(deadline, self.rx.changed()).await,
            Ok(Ok(()))
        )
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut map = self.watchers.0.lock().expect("watchers lock");
        // This receiver is still alive here: 1 means no one else waits.
        if map.get(&self.id).is_some_and(|tx| tx.receiver_count() <= 1) {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiter_wakes_on_a_change_after_it_subscribed_and_times_out_without_one() {
        let w = Watchers::default();
        let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
        let mut quiet = w.subscribe("T-1");
        w.changed("T-2", 3);
        assert!(!quiet.next(soon()).await, "another ticket's change");
        // A change between subscribing and waiting is not lost.
        w.changed("T-1", 4);
        assert!(quiet.next(soon()).await);
        drop(quiet);
        assert!(w.0.lock().unwrap().is_empty(), "the entry is removed");
    }
}
