//! Settling a message: `+ACK`, `-NAK` with delay, dead-letter (a copy
//! published to the dead-letter stream, then `+TERM`), `+WPI` to extend;
//! dropped unsettled, `-NAK` at once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use transport_core::backend::{on_drop, InFlightLimit, Settler, StaleGuard};
use transport_core::{ErrorKind, Message, Result};

use crate::core::{err, other, Nats};

/// What a subscription and its deliveries share.
pub(crate) struct Shared {
    pub(crate) nats: Nats,
    /// JetStream settles by stream sequence: a handle from before a
    /// redelivery would settle the redelivery. See `StaleGuard`.
    pub(crate) stale: StaleGuard,
    pub(crate) dlq_topic: String,
    pub(crate) in_flight: Arc<InFlightLimit>,
}

pub(crate) struct NatsSettler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) msg: Option<jetstream::Message>,
}

impl NatsSettler {
    fn take(&mut self) -> (Arc<Shared>, jetstream::Message) {
        let s = self.shared.clone();
        s.in_flight.release();
        (s, self.msg.take().expect("settled once"))
    }
}

#[async_trait]
impl Settler for NatsSettler {
    fn abandon(mut self: Box<Self>) {
        let _ = self.take();
    }

    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (s, msg) = self.take();
        let r = if s.nats.inner.config.double_ack {
            msg.double_ack().await
        } else {
            msg.ack().await
        };
        r.map_err(other)
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (_, msg) = self.take();
        msg.ack_with(AckKind::Nak(delay.filter(|d| !d.is_zero())))
            .await
            .map_err(other)
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (s, msg) = self.take();
        // Store the copy first, then terminate the original: a crash in
        // between duplicates the message, it never loses it.
        if let Err(e) = s.nats.send_one(&s.dlq_topic, &dead, false).await {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
            return Err(e);
        }
        msg.ack_with(AckKind::Term).await.map_err(other)
    }

    async fn extend(&self, _by: Duration) -> Result<()> {
        match &self.msg {
            Some(m) => m.ack_with(AckKind::Progress).await.map_err(other),
            None => Err(err(ErrorKind::InvalidArgument, "delivery already settled")),
        }
    }
}

impl Drop for NatsSettler {
    fn drop(&mut self) {
        if self.msg.is_none() {
            return;
        }
        // Dropped unsettled: hand it back now rather than after ack_wait.
        let (_, msg) = self.take();
        on_drop(async move {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
        });
    }
}
