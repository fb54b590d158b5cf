//! Settling a delivery: ack and dead-letter delete through the
//! subscription's batcher (`deletes`), nack and extend change its
//! visibility; dropped unsettled, it is made visible again at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use transport_core::backend::{on_drop, InFlightLimit, Settler, StaleGuard};
use transport_core::{Message, Result};

use crate::core::{map_sdk, now_ms, secs, Sqs};
use crate::deletes::Deleter;

/// What a subscription and its deliveries share.
pub(crate) struct Shared {
    pub(crate) sqs: Sqs,
    /// SQS deletes by message whatever the receipt handle's age: a handle
    /// from before a redelivery would delete the redelivery. See `StaleGuard`.
    pub(crate) stale: StaleGuard,
    pub(crate) queue_url: String,
    pub(crate) dlq_url: String,
    pub(crate) in_flight: Arc<InFlightLimit>,
    pub(crate) deleter: Deleter,
}

pub(crate) struct SqsSettler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) receipt: String,
    pub(crate) settled: bool,
}

impl SqsSettler {
    fn begin(&mut self) -> (Arc<Shared>, String) {
        self.settled = true;
        self.shared.in_flight.release();
        (self.shared.clone(), std::mem::take(&mut self.receipt))
    }
}

/// Acks and dead-letters delete through the subscription's batcher.
async fn delete(s: &Shared, receipt: String) -> Result<()> {
    s.deleter.delete(receipt).await
}

async fn set_visibility(s: &Shared, receipt: &str, d: Duration) -> Result<()> {
    s.sqs
        .inner
        .sqs
        .change_message_visibility()
        .queue_url(&s.queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(secs(d))
        .send()
        .await
        .map(drop)
        .map_err(map_sdk)
}

#[async_trait]
impl Settler for SqsSettler {
    fn abandon(mut self: Box<Self>) {
        self.begin();
    }

    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (s, r) = self.begin();
        delete(&s, r).await
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (s, r) = self.begin();
        set_visibility(&s, &r, delay.unwrap_or_default()).await
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (s, r) = self.begin();
        let dedup = format!("{}-dlq-{}", dead.id, now_ms());
        // Stored first, then deleted: a crash in between duplicates, never loses.
        s.sqs.send_to_queue(&s.dlq_url, &dead, &dedup).await?;
        delete(&s, r).await
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        set_visibility(&self.shared, &self.receipt, by).await
    }
}

impl Drop for SqsSettler {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (s, r) = self.begin();
        on_drop(async move {
            let _ = set_visibility(&s, &r, Duration::ZERO).await;
        });
    }
}
