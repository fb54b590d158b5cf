//! What a backend knows about a delivery besides the message.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// The subscription's ack timeout: an unsettled delivery comes back
    /// after it, unless extended.
    pub ack_timeout: Duration,
    /// Whether the message id survives a redelivery, so that it can
    /// deduplicate: true wherever the id travels with the message or the
    /// broker keeps one per message. False only for a message the broker
    /// holds no id for (a foreign RabbitMQ message without `message_id`):
    /// its id is unique to this delivery, a redelivery gets another, and an
    /// [`IdempotencyLayer`](crate::runtime::IdempotencyLayer) keyed by id
    /// refuses it.
    pub stable_id: bool,
}

#[cfg(test)]
impl DeliveryInfo {
    /// Attempt `attempt` of `max_attempts` on topic `t`, group `g` (for the
    /// core's own unit tests).
    pub(crate) fn for_test(attempt: u32, max_attempts: u32) -> Self {
        DeliveryInfo {
            topic: Arc::from("t"),
            group: Arc::from("g"),
            attempt,
            max_attempts,
            first_failure: None,
            ack_timeout: Duration::from_secs(30),
            stable_id: true,
        }
    }
}
