//! Plugin installs running off the request path.
//!
//! Compiling a component takes seconds, minutes for a large one (a Python
//! or JS runtime inside). `POST /v1/plugins` with `Prefer: respond-async`
//! checks what it can at once (manifest, signature), answers 202 with a
//! job, and compiles in the background; `GET /v1/plugins/installs/{id}`
//! follows it. Jobs live in memory: after a restart an unfinished install
//! is simply not installed, and the client installs again.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::admin::Installed;

/// Finished jobs kept for their clients to read, oldest dropped first.
const KEPT: usize = 100;

/// Where an install stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstallState {
    /// Compiling (or waiting for another install to finish).
    Compiling,
    /// Installed: `installed` says what it did.
    Installed,
    /// Refused or failed: `error` says why; nothing changed.
    Failed,
}

/// One install running in the background.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstallJob {
    /// The job's id, for `GET /v1/plugins/installs/{id}`.
    pub id: String,
    /// The plugin being installed.
    pub plugin: String,
    /// Its version.
    pub version: String,
    pub state: InstallState,
    /// Who asked.
    pub by: String,
    /// When it was asked for (ms since the epoch).
    pub started_ms: u64,
    /// When it ended, once it has.
    pub finished_ms: Option<u64>,
    /// What the install did, once installed.
    pub installed: Option<Installed>,
    /// Why it failed, once failed.
    pub error: Option<String>,
}

/// The jobs of this process.
#[derive(Default)]
pub struct Installs(Mutex<VecDeque<InstallJob>>);

impl Installs {
    /// Record a new job, compiling.
    pub fn start(&self, plugin: &str, version: &str, by: &str) -> InstallJob {
        let job = InstallJob {
            id: format!("I-{:016x}", rand::random::<u64>()),
            plugin: plugin.to_string(),
            version: version.to_string(),
            state: InstallState::Compiling,
            by: by.to_string(),
            started_ms: crate::ticket::now_ms(),
            finished_ms: None,
            installed: None,
            error: None,
        };
        let mut jobs = self.0.lock().expect("installs lock");
        // Drop the oldest finished jobs beyond the cap; running ones stay.
        while jobs.len() >= KEPT {
            match jobs.iter().position(|j| j.state != InstallState::Compiling) {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
        jobs.push_back(job.clone());
        job
    }

    /// Record how job `id` ended.
    pub fn finish(&self, id: &str, result: crate::Result<Installed>) {
        let mut jobs = self.0.lock().expect("installs lock");
        if let Some(job) = jobs.iter_mut().find(|j| j.id == id) {
            job.finished_ms = Some(crate::ticket::now_ms());
            match result {
                Ok(installed) => {
                    job.state = InstallState::Installed;
                    job.installed = Some(installed);
                }
                Err(e) => {
                    job.state = InstallState::Failed;
                    job.error = Some(e.to_string());
                }
            }
        }
    }

    /// Job `id`, if this process has it.
    pub fn get(&self, id: &str) -> Option<InstallJob> {
        let jobs = self.0.lock().expect("installs lock");
        jobs.iter().find(|j| j.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_compiling_then_says_how_it_ended_and_old_finished_jobs_go_first() {
        let installs = Installs::default();
        let running = installs.start("noop", "0.1.0", "admin");
        assert_eq!(
            installs.get(&running.id).unwrap().state,
            InstallState::Compiling
        );
        let failed = installs.start("bad", "0.1.0", "admin");
        installs.finish(
            &failed.id,
            Err(crate::Error::Usage("not a component".into())),
        );
        let got = installs.get(&failed.id).unwrap();
        assert_eq!(got.state, InstallState::Failed);
        assert_eq!(got.error.as_deref(), Some("not a component"));
        assert!(got.finished_ms.is_some());
        for i in 0..KEPT {
            let j = installs.start(&format!("p{i}"), "1", "admin");
            installs.finish(&j.id, Err(crate::Error::Usage("x".into())));
        }
        assert!(
            installs.get(&failed.id).is_none(),
            "the oldest finished job went"
        );
        assert!(installs.get(&running.id).is_some(), "a running job stays");
    }
}
