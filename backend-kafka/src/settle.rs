//! Settling a delivery in the subscription's bookkeeping: ack, nack with
//! delay and extend never wait for the broker (the group's thread commits);
//! a dead letter is produced to the dead-letter topic first.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use transport_core::backend::Settler;
use transport_core::{Error, ErrorKind, Message, Result};

use crate::core::err;
use crate::group::Shared;
use crate::partition::Partition;

/// Settles one delivery in the subscription's bookkeeping.
pub(crate) struct KafkaSettler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) token: u64,
    pub(crate) settled: bool,
}

fn expired() -> Error {
    err(
        ErrorKind::DeliveryExpired,
        "the delivery passed its ack timeout or its partition moved to another consumer; it is delivered again",
    )
}

impl KafkaSettler {
    /// Apply `f` to the delivery's partition; false when the delivery is stale.
    fn with_partition(&mut self, f: impl FnOnce(&mut Partition, i64, u64) -> bool) -> bool {
        self.settled = true;
        let s = &self.shared;
        let ok = s
            .lock()
            .partitions
            .get_mut(&self.partition)
            .is_some_and(|p| f(p, self.offset, self.token));
        if ok {
            s.in_flight.release();
            s.wake.notify_one();
        }
        ok
    }

    fn nack_now(&mut self, delay: Duration) -> bool {
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.with_partition(|p, o, t| p.nack(o, t, now, wall, delay))
    }
}

#[async_trait]
impl Settler for KafkaSettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        if self.with_partition(|p, o, t| p.ack(o, t)) {
            Ok(())
        } else {
            Err(expired())
        }
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        if self.nack_now(delay.unwrap_or_default()) {
            Ok(())
        } else {
            Err(expired())
        }
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        // Store the copy (delivery report awaited), then count the record as
        // acked: a crash in between duplicates it in the queue, never loses it.
        let s = self.shared.clone();
        if let Err(e) = s.kafka.produce(&s.dlq_topic, &dead).await {
            self.nack_now(Duration::ZERO);
            return Err(e);
        }
        if !self.with_partition(|p, o, t| p.ack(o, t)) {
            tracing::warn!(
                id = %dead.id,
                "dead-lettered a delivery that had already expired; it may be delivered again"
            );
        }
        Ok(())
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        let deadline = Instant::now() + by;
        let ok = self
            .shared
            .lock()
            .partitions
            .get_mut(&self.partition)
            .is_some_and(|p| p.extend(self.offset, self.token, deadline));
        if ok {
            Ok(())
        } else {
            Err(expired())
        }
    }
}

impl Drop for KafkaSettler {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped unsettled: it comes back at once.
            self.nack_now(Duration::ZERO);
        }
    }
}
