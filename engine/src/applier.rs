//! The writer's second stage: applies each batch the writer built to the storage, in order,
//! while the writer builds the next one, then has it answered once durable (by the flusher
//! under `always`, at once otherwise).
//!
//! The hand-over is a rendezvous: `hand` returns once this stage has taken the batch, which is
//! after it applied every batch before. So the writer, building the next group, has at most
//! one batch that may not be in the storage yet, and reads through it (`Unapplied`).
//! A failed apply stops writes (fail-stop): that batch and every one handed after it, built on
//! top of it, are refused.

use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::durable::{fail, refuse, Announcer, Applied, Flusher};
use crate::error::{EngineError, Result};
use crate::observe::Probe;
use crate::storage::{Storage, WriteBatch};
use crate::FlushPolicy;

/// Applies batches and answers their callers.
pub(crate) struct Finisher {
    pub storage: Arc<dyn Storage>,
    pub announcer: Announcer,
    /// Flushes and answers applied work off this thread (`FlushPolicy::Always` only).
    pub flusher: Option<Flusher>,
    pub flush: FlushPolicy,
    pub failed: Arc<Mutex<Option<String>>>,
    pub probe: Probe,
}

impl Finisher {
    /// Applies `batch` (`events` events) and answers `applied` once it is durable per the policy.
    /// An empty batch (every submission refused) still waits its turn: a refusal may rest on
    /// writes before it that are not durable yet.
    fn finish(&self, batch: WriteBatch, events: usize, applied: Applied) {
        if let Some(reason) = self.failed.lock().clone() {
            return refuse(applied, Some(&reason));
        }
        if !batch.is_empty() {
            if let Err(err) = self.probe.apply(events, || self.storage.apply(batch)) {
                return refuse(applied, Some(&fail(&self.failed, &err)));
            }
        }
        if let Some(flusher) = &self.flusher {
            return flusher.hand(applied);
        }
        let flushed = match self.flush {
            FlushPolicy::Always if !applied.published.is_empty() => self.probe.flush(|| self.storage.flush()),
            _ => Ok(()),
        };
        match flushed {
            Ok(()) => self.announcer.announce(applied),
            Err(err) => refuse(applied, Some(&fail(&self.failed, &err))),
        }
    }

    fn stop(&mut self) {
        if let Some(flusher) = &mut self.flusher {
            flusher.stop();
        }
    }
}

pub(crate) struct Handed {
    batch: WriteBatch,
    events: usize,
    applied: Applied,
}

pub(crate) enum Applier {
    /// A transaction fork's: its caller applies and is answered before `hand` returns.
    Inline(Finisher),
    /// The engine's: a thread of its own.
    Thread { tx: Option<Sender<Handed>>, handle: Option<std::thread::JoinHandle<()>> },
}

impl Applier {
    pub fn start(mut finisher: Finisher, inline: bool) -> Result<Applier> {
        if inline {
            return Ok(Applier::Inline(finisher));
        }
        let (tx, rx) = crossbeam_channel::bounded::<Handed>(0);
        let handle = std::thread::Builder::new()
            .name("tidemark-applier".into())
            .spawn(move || {
                for Handed { batch, events, applied } in rx {
                    finisher.finish(batch, events, applied);
                }
                finisher.stop();
            })
            .map_err(|e| EngineError::Storage(format!("cannot start the applier thread: {e}")))?;
        Ok(Applier::Thread { tx: Some(tx), handle: Some(handle) })
    }

    /// Whether a batch may still be unapplied when `hand` returns.
    pub fn pipelined(&self) -> bool {
        matches!(self, Applier::Thread { .. })
    }

    /// Hands a batch over; returns once every batch before it is applied.
    pub fn hand(&mut self, batch: WriteBatch, events: usize, applied: Applied) {
        match self {
            Applier::Inline(finisher) => finisher.finish(batch, events, applied),
            Applier::Thread { tx: Some(tx), .. } => {
                if let Err(crossbeam_channel::SendError(handed)) = tx.send(Handed { batch, events, applied }) {
                    refuse(handed.applied, None);
                }
            }
            Applier::Thread { tx: None, .. } => refuse(applied, None),
        }
    }

    /// Applies and answers everything handed over, then stops.
    pub fn stop(&mut self) {
        match self {
            Applier::Inline(finisher) => finisher.stop(),
            Applier::Thread { tx, handle } => {
                tx.take();
                if let Some(handle) = handle.take() {
                    let _ = handle.join();
                }
            }
        }
    }
}
