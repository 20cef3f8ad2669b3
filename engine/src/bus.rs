//! The publish point of committed events: a broadcast ring the writer never waits on.
//!
//! A subscriber that falls more than the ring's capacity behind gets `Lagged` on its next
//! receive and must catch up by reading the log from its cursor: the log is the truth, the bus
//! only the fast path.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::event::Event;

pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
}

/// Events in commit order; `recv` reports `Lagged(n)` when the subscriber fell behind.
pub type Subscription = broadcast::Receiver<Arc<Event>>;

impl Bus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Bus { tx }
    }

    pub fn subscribe(&self) -> Subscription {
        self.tx.subscribe()
    }

    /// Offers the events to every subscriber; never blocks (a full ring overwrites the oldest).
    pub fn publish(&self, events: &[Arc<Event>]) {
        for event in events {
            // An error only means nobody listens right now.
            let _ = self.tx.send(Arc::clone(event));
        }
    }
}
