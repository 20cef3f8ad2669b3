//! The publish point of committed events. The writer never waits on a subscriber: a subscriber
//! whose bounded queue is full misses events and is flagged `lagged`; it recovers by reading the
//! log from its cursor (the log is the truth, the bus only the fast path).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::event::Event;

struct Subscriber {
    tx: Sender<Arc<Event>>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Bus {
    subscribers: Mutex<Vec<Subscriber>>,
}

/// A subscriber's end: events in commit order, until it lags.
pub struct Subscription {
    pub events: Receiver<Arc<Event>>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// True once an event could not be queued: the caller must catch up from the log.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

impl Bus {
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        self.subscribers.lock().push(Subscriber { tx, lagged: Arc::clone(&lagged) });
        Subscription { events: rx, lagged }
    }

    /// Offers every event to every subscriber without blocking; drops the ones that left.
    pub fn publish(&self, events: &[Arc<Event>]) {
        if events.is_empty() {
            return;
        }
        let mut subscribers = self.subscribers.lock();
        subscribers.retain(|sub| {
            for event in events {
                match sub.tx.try_send(Arc::clone(event)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        // It gets nothing more: it resubscribes from its cursor after the log.
                        sub.lagged.store(true, Ordering::Release);
                        return false;
                    }
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().len()
    }
}
