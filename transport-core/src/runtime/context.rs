//! What a handler gets: the message, where it came from, its attempt, a
//! lease to keep it, a shutdown signal, and publishing that keeps the chain
//! of events linked (correlation and causation ids).

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::stats::Counters;
use super::waiting::Held;
use crate::delivery_info::DeliveryInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{CE_CAUSATIONID, CE_CORRELATIONID};
use crate::message::Message;
use crate::operation::Operation;
use crate::received::Received;
use crate::transport::Transport;

/// One delivery as the handler and every layer see it. Cheap to clone.
#[derive(Clone)]
///
/// Its message and delivery facts are the [`Received`] it derefs to
/// (`ctx.payload()`, `ctx.attempt()`, ...), the same a
/// [`Delivery`](crate::Delivery) has.
pub struct Context {
    received: Received,
    lease: Lease,
    shutdown: CancellationToken,
    transport: Arc<dyn Transport>,
    pub(crate) counters: Arc<Counters>,
}

impl Context {
    pub(crate) fn new(
        message: Arc<Message>,
        info: DeliveryInfo,
        lease: Lease,
        shutdown: CancellationToken,
        transport: Arc<dyn Transport>,
        counters: Arc<Counters>,
    ) -> Self {
        Context {
            received: Received::new(message, info),
            lease,
            shutdown,
            transport,
            counters,
        }
    }

    /// The lease on this delivery: extend it while working on something long.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether the consumer is shutting down. Long handlers should check it
    /// (or await [`shutdown`](Self::shutdown)) and stop early; what they do
    /// not finish within the shutdown timeout is redelivered.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Completes when the consumer starts shutting down.
    pub fn shutdown(&self) -> WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// The transport the consumer reads from (to publish, or open a
    /// dead-letter queue).
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// `message` marked as caused by the message being handled (see [`Link`]).
    pub fn follow_up(&self, message: Message) -> Message {
        self.link().apply(message)
    }

    /// Publish `message` as a consequence of the message being handled: it
    /// keeps the correlation id of the flow and names this message as its
    /// cause.
    pub async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.transport.publish(topic, self.follow_up(message)).await
    }

    /// [`publish`](Self::publish) for several messages.
    pub async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let link = self.link();
        let messages = messages.into_iter().map(|m| link.apply(m)).collect();
        self.transport.publish_batch(topic, messages).await
    }

    /// The correlation and causation to give messages this one causes.
    pub fn link(&self) -> Link {
        Link::from_cause(self.received.message())
    }
}

impl Deref for Context {
    type Target = Received;

    fn deref(&self) -> &Received {
        &self.received
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("message", self.message())
            .field("topic", &self.topic())
            .field("group", &self.group())
            .field("attempt", &self.attempt())
            .field("max_attempts", &self.max_attempts())
            .finish_non_exhaustive()
    }
}

/// How a message is tied to the one that caused it: the flow's correlation
/// id and the cause's id, carried in the `ce-correlationid` and
/// `ce-causationid` headers (the same ones [`Event`](crate::Event) uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The id shared by every message of one flow.
    pub correlation_id: String,
    /// The id of the message being handled.
    pub causation_id: String,
}

impl Link {
    /// The link for messages caused by `cause`: its correlation id (its own
    /// id when it carries none, as the first message of a flow) and its id.
    pub fn from_cause(cause: &Message) -> Self {
        Link {
            correlation_id: cause.headers.get(CE_CORRELATIONID).unwrap_or(&cause.id).to_owned(),
            causation_id: cause.id.clone(),
        }
    }

    /// Stamp `message`. A correlation id the message already has is kept
    /// unless it is the message's own id (a message that would start its own
    /// flow, as a fresh [`Event`](crate::Event) does); a causation id it
    /// already has is kept.
    pub fn apply(&self, mut message: Message) -> Message {
        let own = message.headers.get(CE_CORRELATIONID).is_none_or(|c| c == message.id);
        if own {
            message.headers.insert(CE_CORRELATIONID, self.correlation_id.clone());
        }
        if !message.headers.contains(CE_CAUSATIONID) {
            message.headers.insert(CE_CAUSATIONID, self.causation_id.clone());
        }
        message
    }
}

tokio::task_local! {
    /// The message the current task handles. Its link is made when asked
    /// for: most handlers publish nothing, and a link costs two strings.
    static CAUSE: Arc<Message>;
}

/// The link of the message being handled by the current task, when called
/// from inside a handler (code deep in a call stack that publishes without a
/// [`Context`] at hand).
pub fn current_link() -> Option<Link> {
    CAUSE.try_with(|cause| Link::from_cause(cause)).ok()
}

/// `message` linked to the message the current task handles; unchanged
/// outside a handler.
pub fn link_to_current(message: Message) -> Message {
    match current_link() {
        Some(link) => link.apply(message),
        None => message,
    }
}

/// Run `f` as the handling of `cause`: what it publishes through
/// [`link_to_current`] is linked to `cause`.
pub(crate) async fn with_cause<F: std::future::Future>(cause: Arc<Message>, f: F) -> F::Output {
    CAUSE.scope(cause, f).await
}

/// A handle on a delivery's lease, valid while the consumer holds the
/// delivery (until it is settled). Cheap to clone; it does not keep the
/// delivery alive.
#[derive(Clone)]
pub struct Lease {
    delivery: Weak<Held>,
    ack_timeout: Duration,
}

impl Lease {
    /// The lease of a delivery the consumer holds, shared until it settles.
    pub(crate) fn of(delivery: &Arc<Held>) -> Lease {
        Lease {
            delivery: Arc::downgrade(delivery),
            ack_timeout: delivery.info().ack_timeout,
        }
    }

    /// Keep the delivery from being redelivered for `by` from now; see
    /// [`Delivery::extend`](crate::Delivery::extend) for what it means on
    /// every backend. `by` is at most the ack timeout.
    pub async fn extend(&self, by: Duration) -> Result<()> {
        let gone = || {
            Error::new(ErrorKind::DeliveryExpired, "the delivery is no longer held").with_operation(Operation::Extend)
        };
        // Settled (or being settled) since: nothing to keep.
        let held = self.delivery.upgrade().ok_or_else(gone)?;
        held.extendable().ok_or_else(gone)?.extend(by).await
    }

    /// Extend by a full ack timeout.
    pub async fn renew(&self) -> Result<()> {
        self.extend(self.ack_timeout).await
    }

    /// The ack timeout the lease runs on.
    pub fn ack_timeout(&self) -> Duration {
        self.ack_timeout
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("ack_timeout", &self.ack_timeout).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_flow_and_name_the_cause() {
        let first = Message::new("a").with_id("m1");
        let link = Link::from_cause(&first);
        assert_eq!(link.correlation_id, "m1");
        let second = link.apply(Message::new("b").with_id("m2"));
        assert_eq!(second.headers.get(CE_CORRELATIONID), Some("m1"));
        assert_eq!(second.headers.get(CE_CAUSATIONID), Some("m1"));
        let third = Link::from_cause(&second).apply(Message::new("c").with_id("m3"));
        assert_eq!(third.headers.get(CE_CORRELATIONID), Some("m1"));
        assert_eq!(third.headers.get(CE_CAUSATIONID), Some("m2"));
        // A correlation id of another flow, set on purpose, is kept.
        let other = link.apply(Message::new("d").with_header(CE_CORRELATIONID, "flow-9"));
        assert_eq!(other.headers.get(CE_CORRELATIONID), Some("flow-9"));
        // So is a causation id set on purpose (relaying another message's effect).
        let relayed = link.apply(Message::new("e").with_header(CE_CAUSATIONID, "m0"));
        assert_eq!(relayed.headers.get(CE_CAUSATIONID), Some("m0"));
        assert_eq!(relayed.headers.get(CE_CORRELATIONID), Some("m1"));
    }

    #[tokio::test]
    async fn current_link_is_scoped_to_the_handler() {
        assert!(current_link().is_none());
        let cause = Arc::new(Message::new("a").with_id("m").with_header(CE_CORRELATIONID, "c"));
        let m = with_cause(cause, async { link_to_current(Message::new("x")) }).await;
        assert_eq!(m.headers.get(CE_CAUSATIONID), Some("m"));
        assert_eq!(m.headers.get(CE_CORRELATIONID), Some("c"));
        assert!(link_to_current(Message::new("y")).headers.is_empty());
    }
}
