//! Group commit: many tickets' transitions, one flush.
//!
//! Ticket drivers hand their batch to a single committer thread and wait.
//! The committer takes everything queued, commits it in one
//! [`Store::commit`] (one fsync), and wakes every waiter. Nothing is
//! acknowledged, and no effect runs, before its batch is durable.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::checkpoint::Checkpoint;
use super::{Batch, Refusal, Store};
use crate::error::{Error, Result};

/// A batch, and where to send back the result with the batch.
type Job = (Batch, oneshot::Sender<(Answer, Option<Batch>)>);

/// What the committer answers a batch: durable, refused by a shared store
/// (an expected outcome for a create: another worker's create stands
/// against it), or failed.
type Answer = Result<Result<(), Refusal>>;

/// Handle to the committer thread. Cheap to clone.
#[derive(Clone)]
pub struct CommitQueue {
    tx: mpsc::Sender<Job>,
}

/// Batches merged into one commit at most.
const MAX_GROUP: usize = 1024;

impl CommitQueue {
    /// Start the committer for `store`; with a `checkpoint`, each group's
    /// heads are logged there (synced) before anyone is told it is durable.
    pub fn start(store: Arc<dyn Store>, checkpoint: Option<Arc<Checkpoint>>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("itsm-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let (batches, waiters): (Vec<Batch>, Vec<_>) = jobs.into_iter().unzip();
                    let result = store.commit_fenced(&batches).and_then(|refused| {
                        if let Some(c) = &checkpoint {
                            // Only what landed is acknowledged, so only that is witnessed.
                            if refused.is_empty() {
                                c.record(&batches)?;
                            } else {
                                let landed: Vec<Batch> = batches
                                    .iter()
                                    .enumerate()
                                    .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i))
                                    .map(|(_, b)| b.clone())
                                    .collect();
                                c.record(&landed)?;
                            }
                        }
                        Ok(refused)
                    });
                    for (i, (w, batch)) in waiters.into_iter().zip(batches).enumerate() {
                        let refusal = result
                            .as_ref()
                            .ok()
                            .and_then(|r| r.iter().find(|(r, _)| *r == i).map(|(_, why)| why));
                        let answer = match (&result, refusal) {
                            (_, Some(Refusal::Fenced)) => Err(Error::Fenced(format!(
                                "ticket {} is no longer this worker's: another worker took it \
                                 over when this one's lease ran out, so this write was refused",
                                batch.tickets.first().map_or("?", |t| t.id())
                            ))),
                            (_, Some(other)) => Ok(Err(other.clone())),
                            (Ok(_), None) => Ok(Ok(())),
                            (Err(e), None) => Err(e.copy()),
                        };
                        // Freed by its driver, not on the committer's thread.
                        let _ = w.send((answer, Some(batch)));
                    }
                }
            })
            .expect("spawn committer");
        Self { tx }
    }

    /// Commit `batch` with whatever else is queued; returns once durable.
    pub async fn commit(&self, batch: Batch) -> Result<()> {
        self.commit_returning(batch).await.0
    }

    /// [`CommitQueue::commit`], handing the batch back (to try it again
    /// after a full disk, say, without a copy kept meanwhile).
    pub async fn commit_returning(&self, batch: Batch) -> (Result<()>, Option<Batch>) {
        let (answer, batch) = self.commit_refusable(batch).await;
        let answer = answer.and_then(|r| {
            r.map_err(|refusal| Error::Conflict(format!("the store refused the write: {refusal}")))
        });
        (answer, batch)
    }

    /// [`CommitQueue::commit_returning`] for a create, which a shared store
    /// may refuse ([`Refusal::KeyTaken`], [`Refusal::SubjectOpen`]): the
    /// refusal is the creating side's to answer, not an error.
    pub async fn commit_refusable(&self, batch: Batch) -> (Answer, Option<Batch>) {
        if batch.is_empty() {
            return (Ok(Ok(())), Some(batch));
        }
        // The committer thread needs a core, and the waiter runs on as soon
        // as it is durable: long plugin calls give way meanwhile.
        let _held = crate::cpu::hold();
        let stopped = || Error::Store("the committer has stopped".into());
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::SendError((batch, _))) = self.tx.send((batch, tx)) {
            return (Err(stopped()), Some(batch));
        }
        rx.await.unwrap_or_else(|_| (Err(stopped()), None))
    }
}
