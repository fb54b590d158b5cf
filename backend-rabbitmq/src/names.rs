//! The name of every RabbitMQ object this backend declares or uses, in one
//! place: a group's work queue, its retry queues, the dead-letter queue and
//! the consumer tags. (A topic's exchange is named as the topic.)

/// The work queue of `group` on `topic`.
pub(crate) fn work_queue(topic: &str, group: &str) -> String {
    // '/' is not allowed in topic or group names: no collision with anything else.
    format!("{topic}/{group}")
}

/// The queue of a dead-letter topic.
pub(crate) fn dlq_queue(dlq_topic: &str) -> String {
    format!("{dlq_topic}/#dlq")
}

/// The TTL queue a nack delayed by `ms` parks a message in, dead-lettering
/// back to the work queue `queue`.
pub(crate) fn retry_queue(queue: &str, ms: u64) -> String {
    format!("{queue}/retry-{ms}")
}

/// A fresh consumer tag for one `basic.consume`.
pub(crate) fn consumer_tag() -> String {
    format!("transport-{}", uuid::Uuid::now_v7().simple())
}
