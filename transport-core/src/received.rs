//! A received message with what the backend knows about its delivery: the
//! one read-only view that [`Delivery`](crate::Delivery) and the runtime's
//! [`Context`](crate::runtime::Context) both are (each derefs to it), so the
//! two have the same accessors by construction.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::delivery_info::DeliveryInfo;
use crate::message::{Headers, Message};

/// A received message and the facts of its delivery. Cheap to clone.
#[derive(Clone)]
pub struct Received {
    message: Arc<Message>,
    info: DeliveryInfo,
}

impl Received {
    pub(crate) fn new(message: Arc<Message>, info: DeliveryInfo) -> Self {
        Received { message, info }
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

    /// The message, shared (for work that outlives the delivery).
    pub fn shared_message(&self) -> Arc<Message> {
        self.message.clone()
    }

    /// The topic it came from.
    pub fn topic(&self) -> &str {
        &self.info.topic
    }

    /// The consumer group it was received in.
    pub fn group(&self) -> &str {
        &self.info.group
    }

    /// 1 for the first delivery, +1 for each redelivery.
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }

    /// Deliveries the message gets at most before it is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        self.info.max_attempts
    }

    /// Whether a failure now sends the message to the dead-letter queue.
    pub fn is_last_attempt(&self) -> bool {
        self.info.attempt >= self.info.max_attempts
    }

    /// When an earlier attempt first failed, where the backend records it.
    pub fn first_failure(&self) -> Option<SystemTime> {
        self.info.first_failure
    }

    /// The subscription's ack timeout: an unsettled delivery comes back
    /// after it, unless extended.
    pub fn ack_timeout(&self) -> Duration {
        self.info.ack_timeout
    }

    /// Everything the backend knows about the delivery.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("message", &self.message)
            .field("topic", &self.info.topic)
            .field("group", &self.info.group)
            .field("attempt", &self.info.attempt)
            .finish()
    }
}
