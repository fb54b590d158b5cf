//! A received message and the one settlement it allows.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::dead_letter::dead_letter_message;
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Headers, Message};

/// How a backend settles one delivery. Implemented by each backend; users
/// settle through [`Delivery`].
///
/// Dropping a settler without calling a method means "not acked": the
/// backend redelivers the message (at once or after the ack timeout).
#[async_trait]
pub trait Settler: Send + Sync + 'static {
    /// The message was handled: never deliver it again to this group.
    async fn ack(self: Box<Self>) -> Result<()>;

    /// Deliver it again, not before `delay` when given.
    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<()>;

    /// Move it to the group's dead-letter topic as `dead` (the original
    /// content plus the dead-letter headers), then remove the original, in an
    /// order that never loses it.
    async fn dead_letter(self: Box<Self>, dead: Message) -> Result<()>;

    /// Push the ack deadline `by` further away, for a long handler.
    async fn extend(&self, by: Duration) -> Result<()> {
        let _ = by;
        Err(Error::new(ErrorKind::Unsupported, "extending an ack deadline is not supported").with_operation("extend"))
    }
}

/// What a backend knows about a delivery besides the message.
#[derive(Debug, Clone)]
pub struct DeliveryInfo {
    /// The topic it was received from.
    pub topic: Arc<str>,
    /// The consumer group it was received in.
    pub group: Arc<str>,
    /// 1 for the first delivery, +1 for each redelivery.
    pub attempt: u32,
    /// The subscription's `max_attempts`.
    pub max_attempts: u32,
    /// When an earlier attempt failed first, where the backend records it.
    pub first_failure: Option<SystemTime>,
}

/// A received message. Settle it exactly once with [`ack`](Self::ack),
/// [`nack`](Self::nack) or [`dead_letter`](Self::dead_letter); dropping it
/// unsettled counts as not acked and it comes back.
pub struct Delivery {
    message: Arc<Message>,
    info: DeliveryInfo,
    settler: Option<Box<dyn Settler>>,
}

impl Delivery {
    /// Used by backends.
    pub fn new(message: Arc<Message>, info: DeliveryInfo, settler: Box<dyn Settler>) -> Self {
        Delivery {
            message,
            info,
            settler: Some(settler),
        }
    }

    /// The message id.
    pub fn id(&self) -> &str {
        &self.message.id
    }

    /// The ordering key.
    pub fn key(&self) -> Option<&str> {
        self.message.key.as_deref()
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.message.headers
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.message.payload
    }

    /// The whole message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The topic it came from.
    pub fn topic(&self) -> &str {
        &self.info.topic
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.info.group
    }

    /// 1 for the first delivery, +1 for each redelivery.
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }

    /// Whether a failure now sends the message to the dead-letter queue.
    pub fn is_last_attempt(&self) -> bool {
        self.info.attempt >= self.info.max_attempts
    }

    /// Backend facts about the delivery.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }

    /// A cheap, cloneable view of the message for handlers.
    pub fn received(&self) -> Received {
        Received {
            message: self.message.clone(),
            topic: self.info.topic.clone(),
            attempt: self.info.attempt,
        }
    }

    fn take_settler(&mut self, op: &'static str) -> Result<Box<dyn Settler>> {
        self.settler
            .take()
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "delivery already settled").with_operation(op))
    }

    /// Acknowledge: the group never receives this message again.
    pub async fn ack(mut self) -> Result<()> {
        self.take_settler("ack")?.ack().await
    }

    /// Redeliver, after `delay` when given. When this was the last allowed
    /// attempt, the message goes to the dead-letter queue instead.
    pub async fn nack(mut self, delay: Option<Duration>) -> Result<()> {
        if self.is_last_attempt() {
            let reason = format!(
                "failed {} of {} allowed attempts",
                self.info.attempt, self.info.max_attempts
            );
            return self.dead_letter(reason).await;
        }
        self.take_settler("nack")?.nack(delay).await
    }

    /// Send to the dead-letter queue now, with `reason`.
    pub async fn dead_letter(mut self, reason: impl Into<String>) -> Result<()> {
        let settler = self.take_settler("dead_letter")?;
        let dead = dead_letter_message(&self.message, &self.info, &reason.into(), SystemTime::now());
        settler.dead_letter(dead).await
    }

    /// Push the ack deadline further away for a long-running handler.
    pub async fn extend(&self, by: Duration) -> Result<()> {
        match &self.settler {
            Some(s) => s.extend(by).await,
            None => Err(Error::new(ErrorKind::InvalidArgument, "delivery already settled").with_operation("extend")),
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("topic", &self.info.topic)
            .field("group", &self.info.group)
            .field("attempt", &self.info.attempt)
            .field("settled", &self.settler.is_none())
            .finish()
    }
}

/// A received message without its settlement: what a handler sees.
#[derive(Debug, Clone)]
pub struct Received {
    message: Arc<Message>,
    topic: Arc<str>,
    attempt: u32,
}

impl Received {
    /// The message id.
    pub fn id(&self) -> &str {
        &self.message.id
    }
    /// The ordering key.
    pub fn key(&self) -> Option<&str> {
        self.message.key.as_deref()
    }
    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.message.headers
    }
    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.message.payload
    }
    /// The whole message.
    pub fn message(&self) -> &Message {
        &self.message
    }
    /// The topic it came from.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// 1 for the first delivery, +1 for each redelivery.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}
