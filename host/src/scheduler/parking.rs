//! Tickets at rest between events: waiting for a timer (a step's
//! `not_before`, a retry, the SLA), for a person, or for a plugin.
//!
//! A ticket with nothing in flight gives up its driver task and its place
//! in memory: it is already durable in the store, so only its id and when
//! it next wants a tick are kept here. One timer task for the whole
//! scheduler sleeps until the earliest wake; waking takes the due entries
//! off the front of an ordered index (no scan of the others), and a driver
//! is started for each from the store. A decision, a cancel or a run-now for
//! a parked ticket starts its driver the same way.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::Notify;

/// The parked tickets and their wakes.
#[derive(Default)]
pub struct Parking {
    state: Mutex<State>,
    /// Told when a wake earlier than the earliest is parked.
    earlier: Notify,
}

#[derive(Default)]
struct State {
    /// `(wake at ms, ticket id)`, earliest first.
    timers: BTreeSet<(u64, String)>,
    /// Every parked ticket and its wake, if it has one.
    wakes: HashMap<String, Option<u64>>,
    /// Parked tickets with a step waiting for a plugin that is not loaded.
    want_plugin: HashSet<String>,
}

impl Parking {
    /// Park `id`, to be woken at `wake` (if any). `wants_plugin`: it has a
    /// step waiting for a plugin to be installed.
    pub fn park(&self, id: &str, wake: Option<u64>, wants_plugin: bool) {
        let mut s = self.state.lock().expect("parking lock");
        s.remove(id);
        let earliest = s.timers.first().map(|(at, _)| *at);
        if let Some(at) = wake {
            s.timers.insert((at, id.to_string()));
        }
        s.wakes.insert(id.to_string(), wake);
        if wants_plugin {
            s.want_plugin.insert(id.to_string());
        }
        drop(s);
        if wake.is_some_and(|at| earliest.is_none_or(|e| at < e)) {
            self.earlier.notify_one();
        }
    }

    /// Take `id` out (its driver is starting). Whether it was parked.
    pub fn unpark(&self, id: &str) -> bool {
        self.state.lock().expect("parking lock").remove(id)
    }

    /// Take out every ticket due at `now_ms`, earliest first.
    pub fn take_due(&self, now_ms: u64) -> Vec<String> {
        let mut s = self.state.lock().expect("parking lock");
        let mut due = Vec::new();
        while let Some((at, _)) = s.timers.first()
            && *at <= now_ms
        {
            let (_, id) = s.timers.pop_first().expect("checked above");
            s.wakes.remove(&id);
            s.want_plugin.remove(&id);
            due.push(id);
        }
        due
    }

    /// Take out the parked tickets waiting for a plugin.
    pub fn take_wanting_plugin(&self) -> Vec<String> {
        let mut s = self.state.lock().expect("parking lock");
        let ids: Vec<String> = s.want_plugin.iter().cloned().collect();
        for id in &ids {
            s.remove(id);
        }
        ids
    }

    /// The earliest wake, in ms since the epoch.
    pub fn next_wake(&self) -> Option<u64> {
        let s = self.state.lock().expect("parking lock");
        s.timers.first().map(|(at, _)| *at)
    }

    /// Resolves once a wake earlier than [`Parking::next_wake`] said has
    /// been parked (or at once, if one was parked since the last call).
    pub async fn earlier(&self) {
        self.earlier.notified().await;
    }

    /// How many tickets are parked.
    pub fn len(&self) -> usize {
        self.state.lock().expect("parking lock").wakes.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn remove(&mut self, id: &str) -> bool {
        let Some(wake) = self.wakes.remove(id) else {
            return false;
        };
        if let Some(at) = wake {
            self.timers.remove(&(at, id.to_string()));
        }
        self.want_plugin.remove(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_tickets_come_off_the_front_in_order_and_the_rest_stay() {
        let p = Parking::default();
        p.park("c", Some(300), false);
        p.park("a", Some(100), false);
        p.park("b", Some(200), false);
        p.park("person", None, false);
        assert_eq!(p.next_wake(), Some(100));
        assert_eq!(p.take_due(99), Vec::<String>::new());
        assert_eq!(p.take_due(200), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(p.len(), 2);
        assert_eq!(p.next_wake(), Some(300));
        // Parking again moves the wake; unparking takes it out whole.
        p.park("c", Some(50), false);
        assert_eq!(p.next_wake(), Some(50));
        assert!(p.unpark("c"));
        assert!(!p.unpark("c"));
        assert_eq!(p.next_wake(), None);
        assert_eq!(p.len(), 1, "the ticket waiting for a person stays");
    }

    #[test]
    fn tickets_waiting_for_a_plugin_are_taken_out_together() {
        let p = Parking::default();
        p.park("x", None, true);
        p.park("y", Some(10), true);
        p.park("z", Some(10), false);
        let mut ids = p.take_wanting_plugin();
        ids.sort();
        assert_eq!(ids, vec!["x".to_string(), "y".to_string()]);
        assert_eq!(p.take_due(10), vec!["z".to_string()]);
        assert!(p.is_empty());
    }
}
