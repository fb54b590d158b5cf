//! The name of every NATS object this backend derives, in one place: a
//! topic's stream and a group's durable consumer (the subjects are the topic
//! names themselves, dead-letter topics included).

use transport_core::backend::escape_dots;

use crate::config::NatsConfig;

/// The stream holding `topic` (a topic or a dead-letter topic).
pub(crate) fn stream(config: &NatsConfig, topic: &str) -> String {
    format!("{}{}", config.stream_prefix, escape_dots(topic))
}

/// The durable consumer of `group`.
pub(crate) fn consumer(group: &str) -> String {
    escape_dots(group)
}
