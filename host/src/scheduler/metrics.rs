//! Scheduler counters, rendered in the Prometheus text format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::audit::AuditKind;

/// Upper bounds of the step latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// What the scheduler has done since start.
#[derive(Default)]
pub struct Metrics {
    /// Finished plugin calls by (plugin, op, outcome).
    calls: Mutex<BTreeMap<(String, String, String), u64>>,
    /// Call latency by plugin.
    latency: Mutex<BTreeMap<String, Histogram>>,
    retries: AtomicU64,
    sla_breaches: AtomicU64,
    tickets_created: AtomicU64,
    /// Commits the store refused because this worker's lease was gone.
    fenced: AtomicU64,
    /// Tickets taken from the store: due, or left by a worker that stopped.
    leases_taken: AtomicU64,
    /// Problems opened by correlated alerts.
    problems_opened: AtomicU64,
    /// Alerts that reached a threshold to open a problem another alert
    /// had opened a moment before, and joined it.
    problem_races: AtomicU64,
}

impl Metrics {
    /// Count a finished call.
    pub fn call(&self, plugin: &str, op: &str, outcome: &str, seconds: f64) {
        *self
            .calls
            .lock()
            .expect("metrics lock")
            .entry((plugin.to_string(), op.to_string(), outcome.to_string()))
            .or_default() += 1;
        let mut latency = self.latency.lock().expect("metrics lock");
        let h = latency.entry(plugin.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Count a commit refused for a lost lease.
    pub fn fenced(&self) {
        self.fenced.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a ticket taken over from the store.
    pub fn lease_taken(&self) {
        self.leases_taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a problem opened by a correlation (`true`), or an alert that
    /// found the problem it was about to open opened by another (`false`).
    pub fn problem(&self, opened: bool) {
        let n = if opened {
            &self.problems_opened
        } else {
            &self.problem_races
        };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// Count what a committed transition recorded.
    pub fn events(&self, kinds: &[AuditKind]) {
        for kind in kinds {
            match kind {
                AuditKind::RetryScheduled => self.retries.fetch_add(1, Ordering::Relaxed),
                AuditKind::SlaBreached => self.sla_breaches.fetch_add(1, Ordering::Relaxed),
                AuditKind::Created => self.tickets_created.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
    }

    /// The Prometheus text exposition, with the gauges passed in.
    pub fn render(
        &self,
        active_tickets: usize,
        parked_tickets: usize,
        calls_running: usize,
        calls_waiting: usize,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP itsm_step_calls_total Finished plugin calls by plugin, op and outcome."
        );
        let _ = writeln!(out, "# TYPE itsm_step_calls_total counter");
        for ((plugin, op, outcome), n) in self.calls.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "itsm_step_calls_total{{plugin=\"{plugin}\",op=\"{op}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP itsm_step_duration_seconds Plugin call latency, instantiation included."
        );
        let _ = writeln!(out, "# TYPE itsm_step_duration_seconds histogram");
        for (plugin, h) in self.latency.lock().expect("metrics lock").iter() {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "itsm_step_duration_seconds_bucket{{plugin=\"{plugin}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "itsm_step_duration_seconds_bucket{{plugin=\"{plugin}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "itsm_step_duration_seconds_sum{{plugin=\"{plugin}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "itsm_step_duration_seconds_count{{plugin=\"{plugin}\"}} {}",
                h.count
            );
        }
        let counters = [
            (
                "itsm_retries_total",
                "Retries scheduled after retryable failures.",
                &self.retries,
            ),
            (
                "itsm_sla_breaches_total",
                "Tickets whose SLA deadline passed unfinished.",
                &self.sla_breaches,
            ),
            (
                "itsm_tickets_created_total",
                "Tickets created.",
                &self.tickets_created,
            ),
            (
                "itsm_fencing_refusals_total",
                "Commits refused because this worker had lost the ticket's lease to another.",
                &self.fenced,
            ),
            (
                "itsm_leases_taken_total",
                "Tickets taken from the shared store: fallen due, or left by a worker that stopped.",
                &self.leases_taken,
            ),
            (
                "itsm_problems_opened_total",
                "Problems opened by correlated alerts reaching their threshold.",
                &self.problems_opened,
            ),
            (
                "itsm_problem_open_races_total",
                "Alerts that reached a threshold as another alert opened the problem, and joined it.",
                &self.problem_races,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "itsm_tickets_active",
                "Tickets with a driver (in flight).",
                active_tickets,
            ),
            (
                "itsm_tickets_parked",
                "Open tickets waiting (for a time, a person or a plugin) with no driver.",
                parked_tickets,
            ),
            (
                "itsm_calls_running",
                "Plugin calls holding a worker.",
                calls_running,
            ),
            (
                "itsm_calls_queued",
                "Plugin calls waiting for a worker (queue depth).",
                calls_waiting,
            ),
            (
                "itsm_calls_long",
                "Plugin calls past their first 5 ms of CPU, giving way to short work.",
                crate::cpu::long_running(),
            ),
            (
                "itsm_short_work_ready",
                "Short work (ticket steps, requests, commits) ready to run now.",
                crate::cpu::short_ready(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}
