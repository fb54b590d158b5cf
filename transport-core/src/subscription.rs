//! The stream of deliveries a subscriber receives, with the rules every
//! backend shares applied in one place.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream};

use crate::capabilities::Capabilities;
use crate::dead_letter::REDRIVE_GROUP;
use crate::delivery::Delivery;
use crate::error::Result;
use crate::operation::Operation;
use crate::settle::{exhausted_on_arrival, Outcome};

/// A subscription: a [`Stream`] of deliveries for one topic and group.
///
/// Two rules are applied here for every backend, so they mean the same
/// everywhere:
/// - a delivery whose attempt is already past `max_attempts` (its earlier
///   attempts were never settled: the consumer crashed or timed out) goes to
///   the dead-letter queue instead of to the caller;
/// - a redriven message meant for another group is acknowledged without
///   being handed out.
///
/// Dropping the subscription stops fetching; deliveries already handed out
/// can still be settled.
pub struct Subscription {
    backend: &'static str,
    capabilities: Capabilities,
    topic: String,
    group: String,
    inner: BoxStream<'static, Result<Delivery>>,
}

impl Subscription {
    /// Built by the core's wrapper over a backend's raw deliveries.
    pub(crate) fn new(
        backend: &'static str,
        capabilities: Capabilities,
        topic: impl Into<String>,
        group: impl Into<String>,
        inner: BoxStream<'static, Result<Delivery>>,
    ) -> Self {
        Subscription {
            backend,
            capabilities,
            topic: topic.into(),
            group: group.into(),
            inner,
        }
    }

    /// The subscribed topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Stop fetching. Deliveries already handed out can still be settled;
    /// unsettled ones come back to the group.
    pub fn close(self) {}

    /// Returns the delivery when it is for the caller, or settles it in the
    /// background and returns `None`.
    fn screen(&self, mut delivery: Delivery) -> Option<Delivery> {
        delivery.bind(self.backend, &self.capabilities);
        if let Some(reason) = exhausted_on_arrival(delivery.info()) {
            tracing::warn!(topic = %self.topic, group = %self.group, id = delivery.id(), "{reason}; dead-lettering");
            tokio::spawn(async move {
                if let Err(e) = delivery.settle(Outcome::DeadLetter { reason }).await {
                    tracing::error!(error = %e, "dead-lettering an exhausted delivery failed; it will come back");
                }
            });
            return None;
        }
        if let Some(target) = delivery.headers().get(REDRIVE_GROUP) {
            if target != self.group {
                tokio::spawn(async move {
                    if let Err(e) = delivery.ack().await {
                        tracing::warn!(error = %e, "acknowledging a redrive for another group failed");
                    }
                });
                return None;
            }
        }
        Some(delivery)
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(delivery))) => {
                    if let Some(delivery) = self.screen(delivery) {
                        return Poll::Ready(Some(Ok(delivery)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(e.in_context(self.backend, Operation::Receive))))
                }
                other => return other,
            }
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("backend", &self.backend)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}
