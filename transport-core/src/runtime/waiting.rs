//! Deliveries the consumer took that have not started: behind a running
//! delivery of the same key, or waiting for a free call slot. They wait here
//! rather than each in a task of its own, and their leases are kept all at
//! once: every half ack timeout the consumer's loop takes them
//! ([`Waiting::deliveries`]) and extends them in a task beside it
//! ([`keep_leases`]); a delivery that settles meanwhile waits for its
//! extension to end ([`unshare`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::delivery::Delivery;
use crate::message::Message;

/// A delivery's ordering key, read from its shared message rather than
/// copied.
#[derive(Clone)]
pub(super) struct OrderingKey(Arc<Message>);

impl OrderingKey {
    pub(super) fn of(delivery: &Delivery) -> Option<Self> {
        delivery.key().is_some().then(|| OrderingKey(delivery.shared_message()))
    }

    fn as_str(&self) -> &str {
        self.0.key.as_deref().unwrap_or_default()
    }
}

impl PartialEq for OrderingKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for OrderingKey {}

// Hashed as the key's text, so a map of them can be searched by `&str`.
impl std::hash::Hash for OrderingKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::borrow::Borrow<str> for OrderingKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// A delivery the consumer holds, shared with what extends its lease: the
/// consumer's beat while it waits (see [`Waiting::deliveries`]) and, once
/// it runs, its handler's [`Lease`](super::Lease).
pub(crate) struct Held {
    delivery: Delivery,
    /// Set when the delivery is about to be settled: no extension starts
    /// after it, so the wait for the ones running is bounded.
    settling: AtomicBool,
}

impl Held {
    /// The delivery, unless it is being settled.
    pub(crate) fn extendable(&self) -> Option<&Delivery> {
        (!self.settling.load(Ordering::SeqCst)).then_some(&self.delivery)
    }
}

impl std::ops::Deref for Held {
    type Target = Delivery;

    fn deref(&self) -> &Delivery {
        &self.delivery
    }
}

/// A delivery and when the consumer took it.
pub(super) struct Parked {
    pub delivery: Arc<Held>,
    pub since: Instant,
}

/// The delivery, once nothing shares it any more, to be settled: no new
/// extension starts, and the ones running (each one broker call) are
/// waited for, up to `limit`. `None` past the limit: the delivery is left
/// unsettled, as if its consumer had stopped (the broker redelivers it).
pub(super) async fn unshare(mut shared: Arc<Held>, limit: Duration) -> Option<Delivery> {
    shared.settling.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + limit;
    loop {
        match Arc::try_unwrap(shared) {
            Ok(held) => return Some(held.delivery),
            // Rare (a beat every half ack timeout, or a handler's extension
            // that outlived its call) and bounded: no signal is worth
            // keeping.
            Err(still) if Instant::now() < deadline => {
                shared = still;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(still) => {
                tracing::warn!(
                    id = still.id(),
                    "a lease extension held the delivery past its ack timeout; it is left unsettled for redelivery"
                );
                return None;
            }
        }
    }
}

/// The waiting deliveries: those that may start, in the order they came,
/// and for each key with a delivery started or about to start, the ones of
/// that key behind it.
#[derive(Default)]
pub(super) struct Waiting {
    ready: VecDeque<Parked>,
    lines: foldhash::HashMap<OrderingKey, VecDeque<Parked>>,
}

impl Waiting {
    /// A delivery the subscription handed out: ready at once unless a
    /// delivery of its key is ahead of it.
    pub(super) fn arrive(&mut self, delivery: Delivery) {
        let parked = Parked {
            delivery: Arc::new(Held {
                delivery,
                settling: AtomicBool::new(false),
            }),
            since: Instant::now(),
        };
        match OrderingKey::of(&parked.delivery) {
            Some(key) => match self.lines.get_mut(key.as_str()) {
                Some(line) => line.push_back(parked),
                None => {
                    self.lines.insert(key, VecDeque::new());
                    self.ready.push_back(parked);
                }
            },
            None => self.ready.push_back(parked),
        }
    }

    /// The next delivery that may start.
    pub(super) fn next_ready(&mut self) -> Option<Parked> {
        self.ready.pop_front()
    }

    /// The delivery of `key` that started last is settled (or given up):
    /// the next of its key may start.
    pub(super) fn finished(&mut self, key: &OrderingKey) {
        match self.lines.get_mut(key.as_str()).and_then(VecDeque::pop_front) {
            Some(next) => self.ready.push_back(next),
            None => {
                self.lines.remove(key.as_str());
            }
        }
    }

    /// Whether a delivery may start.
    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Every waiting delivery, shared: a task beside the consumer's loop
    /// extends their leases, and one that settles meanwhile waits for its
    /// extension to end ([`unshare`]).
    pub(super) fn deliveries(&self) -> Vec<Arc<Held>> {
        self.ready
            .iter()
            .chain(self.lines.values().flatten())
            .map(|p| p.delivery.clone())
            .collect()
    }
}

/// Extend every delivery by its ack timeout, all at once, each giving up
/// after `limit` (less than the time to the next beat, so a beat never
/// finds the last one's task still running); each delivery is let go as
/// soon as its own extension ends, and one that began settling meanwhile
/// is not extended.
pub(super) async fn keep_leases(deliveries: Vec<Arc<Held>>, limit: Duration) {
    let extends = deliveries.into_iter().map(|held| async move {
        let Some(d) = held.extendable() else { return };
        let kept = tokio::time::timeout(limit, d.extend(d.info().ack_timeout)).await;
        match kept {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(id = d.id(), error = %e, "keeping a waiting delivery's lease failed; it may be redelivered")
            }
            Err(_) => tracing::warn!(
                id = d.id(),
                "keeping a waiting delivery's lease took longer than its limit; it may be redelivered"
            ),
        }
    });
    futures::future::join_all(extends).await;
}
