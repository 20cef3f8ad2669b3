//! The write path's last stage: answers applied work once a flush covers it.
//!
//! The applier applies a group (or a transaction) to the storage and hands the answers over;
//! the flusher thread flushes once for everything handed over meanwhile, then answers in order
//! and publishes. So the next apply overlaps this flush, and one flush covers every group
//! applied while the previous one ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::bus::Bus;
use crate::error::{EngineError, Result};
use crate::event::{Action, Event};
use crate::observe::Probe;
use crate::storage::Storage;
use crate::writer::Reply;

/// Work applied to the storage, not yet answered.
pub(crate) struct Applied {
    pub answers: Vec<(Reply, Result<Vec<Arc<Event>>>)>,
    /// The committed events, in log order.
    pub published: Vec<Arc<Event>>,
}

/// Tells callers and subscribers about committed work.
#[derive(Clone)]
pub(crate) struct Announcer {
    pub bus: Arc<Bus>,
    /// Bumped whenever a committed change touches a group (membership may have changed).
    pub memberships: Arc<AtomicU64>,
    /// A transaction fork's record of its events, handed to the real writer at commit.
    pub journal: Option<Arc<Mutex<Vec<Arc<Event>>>>>,
}

impl Announcer {
    /// Answers first, then publishes: the callers' tasks are woken ahead of the fan-out, so a
    /// crowd of subscribers does not delay the writers' responses.
    pub fn announce(&self, applied: Applied) {
        // Before any answer: a caller's next request must not see stale memberships. A delete
        // may purge principal sources below the object too.
        let touches_groups = applied.published.iter().any(|e| e.members.is_some() || e.action == Action::Delete);
        if touches_groups {
            self.memberships.fetch_add(1, Ordering::Release);
        }
        if let Some(journal) = &self.journal {
            journal.lock().extend(applied.published.iter().cloned());
        }
        for (reply, outcome) in applied.answers {
            // A caller that went away still had its write committed; nothing to undo.
            let _ = reply.send(outcome);
        }
        self.bus.publish(&applied.published);
    }
}

/// Marks the engine failed (fail-stop) and returns why, which every later write is told.
pub(crate) fn fail(failed: &Mutex<Option<String>>, err: &EngineError) -> String {
    let reason = err.to_string();
    tracing::error!(error = %reason, "write failed: refusing further writes (fail-stop)");
    *failed.lock() = Some(reason.clone());
    reason
}

pub(crate) struct Flusher {
    tx: Option<Sender<Applied>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    pub fn start(
        storage: Arc<dyn Storage>,
        failed: Arc<Mutex<Option<String>>>,
        announcer: Announcer,
        probe: Probe,
    ) -> Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new()
            .name("tidemark-flusher".into())
            .spawn(move || run(storage.as_ref(), &failed, &announcer, &probe, &rx))
            .map_err(|e| EngineError::Storage(format!("cannot start the flusher thread: {e}")))?;
        Ok(Flusher { tx: Some(tx), handle: Some(handle) })
    }

    /// Queues applied work; it is answered after the next flush.
    pub fn hand(&self, applied: Applied) {
        let Some(tx) = &self.tx else { return refuse(applied, None) };
        if let Err(crossbeam_channel::SendError(applied)) = tx.send(applied) {
            refuse(applied, None);
        }
    }

    /// Answers everything handed over, then stops.
    pub fn stop(&mut self) {
        self.tx.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Answers every caller with an error: `Unavailable(reason)` after a failure, else `Closed`.
pub(crate) fn refuse(applied: Applied, failure: Option<&str>) {
    for (reply, _) in applied.answers {
        let _ = reply.send(Err(failure.map_or(EngineError::Closed, |reason| EngineError::Unavailable(reason.into()))));
    }
}

fn run(
    storage: &dyn Storage,
    failed: &Mutex<Option<String>>,
    announcer: &Announcer,
    probe: &Probe,
    rx: &Receiver<Applied>,
) {
    while let Ok(first) = rx.recv() {
        let mut ready = vec![first];
        ready.extend(rx.try_iter());
        // Nothing is acknowledged after a failure, even work applied before it.
        let failure = failed.lock().clone();
        let flushed = match failure {
            Some(reason) => Err(reason),
            None => probe.flush(|| storage.flush()).map_err(|err| fail(failed, &err)),
        };
        for applied in ready {
            match &flushed {
                Ok(()) => announcer.announce(applied),
                Err(reason) => refuse(applied, Some(reason)),
            }
        }
    }
}
