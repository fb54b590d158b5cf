//! Settling a delivery: ack, nack with delay, dead-letter and extend, each
//! on the topic's group state under its lock; a settler dropped unsettled
//! hands the message back at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use transport_core::backend::Settler;
use transport_core::{Message, Result};

use crate::core::{Requeue, Topic};

/// What the deliveries of one subscription settle on: the group's state in
/// the topic, its dead-letter topic, and the count of its deliveries not
/// settled yet (which the read side keeps under `max_in_flight`).
pub(crate) struct GroupSlot {
    pub(crate) source: Arc<Topic>,
    pub(crate) dlq: Arc<Topic>,
    pub(crate) group: Arc<str>,
    /// Deliveries handed out (or buffered) and not settled yet.
    pub(crate) outstanding: AtomicUsize,
    pub(crate) replay_window: usize,
}

impl GroupSlot {
    fn slot_freed(&self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One delivery's settler.
pub(crate) struct MemorySettler {
    pub(crate) slot: Arc<GroupSlot>,
    pub(crate) seq: u64,
    pub(crate) token: u64,
    pub(crate) settled: bool,
}

impl MemorySettler {
    fn begin(&mut self) -> &GroupSlot {
        self.settled = true;
        self.slot.slot_freed();
        &self.slot
    }
}

#[async_trait]
impl Settler for MemorySettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (seq, token) = (self.seq, self.token);
        let c = self.begin();
        c.source.complete(&c.group, seq, token).map(drop)
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (seq, token) = (self.seq, self.token);
        let c = self.begin();
        let how = match delay {
            Some(d) if !d.is_zero() => Requeue::After(d),
            _ => Requeue::Now,
        };
        c.source.requeue(&c.group, seq, token, how)
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (seq, token) = (self.seq, self.token);
        let c = self.begin();
        c.source
            .dead_letter(&c.group, seq, token, &c.dlq, dead, c.replay_window)
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        let c = &self.slot;
        c.source.extend(&c.group, self.seq, self.token, by)
    }
}

impl Drop for MemorySettler {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped unsettled: not acked, so it goes back to the group now.
            self.slot.slot_freed();
            let c = &self.slot;
            let _ = c.source.requeue(&c.group, self.seq, self.token, Requeue::Now);
        }
    }
}
