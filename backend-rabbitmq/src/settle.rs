//! Settling a delivery: ack (batched, see `acks`), nack now or through the
//! TTL retry queues, dead-letter (a copy stored, then the original acked),
//! extend; dropped unsettled, requeued at once.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use transport_core::backend::{on_drop, Settler, SubscribeRequest};
use transport_core::{Error, ErrorKind, Message, Result};

use crate::acks::{requeue, Outstanding, Single};
use crate::core::{err, map_err, now_ms, Rabbit, H_ATTEMPTS, H_FIRST_FAILURE};
use crate::names;

/// What a subscription, its background tasks and its deliveries share.
pub(crate) struct Shared {
    pub(crate) rabbit: Rabbit,
    pub(crate) request: SubscribeRequest,
    pub(crate) queue: String,
    pub(crate) dlq_topic: String,
    /// Deliveries handed out and not settled, by (channel generation,
    /// delivery tag), and acks waiting to be sent. The sweeper nacks expired
    /// ones.
    pub(crate) outstanding: Arc<Outstanding>,
    pub(crate) generation: AtomicU64,
    /// The consuming channel, kept open while any delivery of it may still
    /// be settled (dropping the last handle closes it, requeueing the rest).
    pub(crate) channel: Mutex<Option<Channel>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last delivery is settled: send the acks still waiting, on a
        // channel kept open until they are out.
        let (outstanding, channel) = (
            self.outstanding.clone(),
            self.channel.lock().ok().and_then(|mut c| c.take()),
        );
        if outstanding.has_acks() {
            on_drop(async move {
                outstanding.flush(true).await;
                drop(channel);
            });
        }
    }
}

pub(crate) struct RabbitSettler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: (u64, u64),
    pub(crate) message: Arc<Message>,
    pub(crate) attempt: u32,
    pub(crate) first_failure_ms: Option<u64>,
    pub(crate) settled: bool,
}

pub(crate) fn expired() -> Error {
    err(
        ErrorKind::DeliveryExpired,
        "the ack timeout passed and the message was requeued, or its channel closed",
    )
}

/// Ack the original once its copy (retry or dead letter) is stored, so a
/// crash in between duplicates and never loses; if storing failed, requeue
/// it and return why.
async fn ack_once_stored(single: Single, stored: Result<()>) -> Result<()> {
    let result = match stored {
        Ok(()) => single
            .acker()
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(map_err),
        Err(e) => {
            requeue(single.acker()).await;
            Err(e)
        }
    };
    single.done();
    result
}

impl RabbitSettler {
    /// Take the delivery to settle it with a frame of its own.
    fn single(&mut self) -> Result<Single> {
        self.settled = true;
        self.shared.outstanding.take(self.key).ok_or_else(expired)
    }
}

#[async_trait]
impl Settler for RabbitSettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.settled = true;
        match self.shared.outstanding.ack(self.key).await {
            true => Ok(()),
            false => Err(expired()),
        }
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let single = self.single()?;
        let delay = delay.filter(|d| !d.is_zero());
        let Some(delay) = delay else {
            let result = single
                .acker()
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(map_err);
            single.done();
            return result;
        };
        // No delayed-message plugin: park a copy in a TTL queue that
        // dead-letters back to the work queue, then ack the original.
        let s = &self.shared;
        let conn = &s.rabbit.inner.conn;
        let ms = s.rabbit.inner.conn.config().retry_delay_ms(delay.as_millis() as u64);
        let retry = names::retry_queue(&s.queue, ms);
        let result = async {
            let ch = conn.publisher().await?;
            conn.declare_retry_queue(&ch, &retry, &s.queue, ms).await?;
            let first = self.first_failure_ms.unwrap_or_else(now_ms);
            let extra = [
                (H_ATTEMPTS, self.attempt.to_string()),
                (H_FIRST_FAILURE, first.to_string()),
            ];
            s.rabbit.publish_to("", &retry, &self.message, &extra).await
        }
        .await;
        ack_once_stored(single, result).await
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let single = self.single()?;
        let s = &self.shared;
        let conn = &s.rabbit.inner.conn;
        let stored = async {
            let ch = conn.publisher().await?;
            conn.declare_dead_letter_queue(&ch, &s.dlq_topic).await?;
            s.rabbit.publish_to(&s.dlq_topic, &s.dlq_topic, &dead, &[]).await
        }
        .await;
        ack_once_stored(single, stored).await
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        match self.shared.outstanding.extend(self.key, Instant::now() + by) {
            true => Ok(()),
            false => Err(expired()),
        }
    }
}

impl Drop for RabbitSettler {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled: requeue now rather than after the ack timeout.
        // Without a runtime the sweeper cannot run either; the message
        // returns when the channel closes.
        // Taken and dropped unsent, a `Single` requeues it.
        drop(self.shared.outstanding.take(self.key));
    }
}
