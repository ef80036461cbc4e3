//! The journal task: the one writer of position-bearing entries.
//!
//! Every message and account event goes through one task that hands whatever is waiting to
//! the store as one batch (group commit: one transaction per batch, not per message), then
//! fans the committed events out in commit order, then acknowledges each submitter. Because
//! one task does all three, sessions see durable events in position order, which is what lets
//! a client resume "after position N" without gaps.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{HubError, HubResult};
use crate::model::{JournalEntry, JournalOutcome, SessionId};
use crate::store::{Store, StoreResult};

pub(crate) struct Submission {
    pub entry: JournalEntry,
    /// The session the entry came from, if any: it is not sent its own message back.
    pub origin: Option<SessionId>,
    pub reply: oneshot::Sender<HubResult<JournalOutcome>>,
}

/// Called by the journal task for each committed outcome, in commit order, before the
/// submitter is acknowledged.
pub(crate) trait Publisher: Send + Sync + 'static {
    fn publish(&self, outcome: &JournalOutcome, origin: Option<SessionId>);
    fn committed(&self, entries: usize, seconds: f64);
}

#[derive(Clone)]
pub(crate) struct Journal {
    tx: mpsc::Sender<Submission>,
}

impl Journal {
    /// Starts the journal task. It runs until `stop` says true; then it refuses new entries,
    /// commits and acknowledges every entry already queued, and ends. (Waiting for the last
    /// sender to go away would never end: the hub holds a sender and the task holds the hub.)
    pub fn start(
        store: Arc<dyn Store>,
        publisher: Arc<dyn Publisher>,
        capacity: usize,
        max_batch: usize,
        stop: watch::Receiver<bool>,
    ) -> (Journal, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(run(rx, store, publisher, max_batch, stop));
        (Journal { tx }, task)
    }

    /// Submits an entry and waits until it is committed (or refused).
    pub async fn submit(&self, entry: JournalEntry) -> HubResult<JournalOutcome> {
        self.submit_from(entry, None).await
    }

    /// Submits an entry that came from a session.
    pub async fn submit_from(
        &self,
        entry: JournalEntry,
        origin: Option<SessionId>,
    ) -> HubResult<JournalOutcome> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submission {
                entry,
                origin,
                reply,
            })
            .await
            .map_err(|_| HubError::ShuttingDown)?;
        answer.await.map_err(|_| HubError::ShuttingDown)?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Submission>,
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    max_batch: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut waiting = Vec::with_capacity(max_batch);
    let mut closing = false;
    loop {
        // recv_many waits for the first submission, then takes whatever else is already
        // queued. Once closed, it still hands out what was queued, then returns 0.
        let received = tokio::select! {
            n = rx.recv_many(&mut waiting, max_batch) => n,
            _ = stop.wait_for(|stop| *stop), if !closing => {
                closing = true;
                rx.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let (entries, replies): (Vec<_>, Vec<_>) = waiting
            .drain(..)
            .map(|s| (s.entry, (s.origin, s.reply)))
            .unzip();
        let count = entries.len();
        let started = Instant::now();
        let result: StoreResult<Vec<StoreResult<JournalOutcome>>> = store.append(entries).await;
        publisher.committed(count, started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => {
                for (outcome, (origin, reply)) in outcomes.into_iter().zip(replies) {
                    if let Ok(outcome) = &outcome {
                        publisher.publish(outcome, origin);
                    }
                    let _ = reply.send(outcome.map_err(HubError::from));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal batch failed; nothing in it was acknowledged");
                let text = e.to_string();
                for (_, reply) in replies {
                    let _ = reply.send(Err(HubError::Store(
                        crate::store::StoreError::Unavailable(text.clone()),
                    )));
                }
            }
        }
    }
}
