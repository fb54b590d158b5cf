//! The dead-letter model: the headers a dead-lettered message carries, how it
//! is built and how it goes back (redrive).

use std::fmt;
use std::time::SystemTime;

use crate::delivery_info::DeliveryInfo;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::names::validate_topic;
use crate::rfc3339::{format_time, parse_time};

/// Original topic of a dead-lettered message.
pub const DLQ_TOPIC: &str = "transport-dlq-topic";
/// Consumer group that gave up on it.
pub const DLQ_GROUP: &str = "transport-dlq-group";
/// Deliveries it had.
pub const DLQ_ATTEMPTS: &str = "transport-dlq-attempts";
/// Why it was dead-lettered.
pub const DLQ_REASON: &str = "transport-dlq-reason";
/// First failure (RFC 3339, UTC).
pub const DLQ_FIRST_FAILURE: &str = "transport-dlq-first-failure";
/// Last failure (RFC 3339, UTC).
pub const DLQ_LAST_FAILURE: &str = "transport-dlq-last-failure";
/// Prefix of all dead-letter headers; stripped on redrive.
pub const DLQ_PREFIX: &str = "transport-dlq-";
/// On a redriven message: the only group that should process it. Other groups
/// of the topic acknowledge it without handing it out, so a redrive does not
/// repeat work for groups that succeeded.
pub const REDRIVE_GROUP: &str = "transport-redrive-group";
/// On a redriven message: how many times it has been redriven.
pub const REDRIVE_COUNT: &str = "transport-redrive-count";

/// Build the dead-letter copy of `message`: same id, key, payload and
/// headers, plus the dead-letter headers.
pub fn dead_letter_message(message: &Message, info: &DeliveryInfo, reason: &str, now: SystemTime) -> Message {
    let mut dead = message.clone();
    // Unknown after a redelivery where the backend keeps no record: absent
    // rather than "now", which would pass for a real time.
    let first = info.first_failure.or((info.attempt <= 1).then_some(now));
    dead.headers.insert(DLQ_TOPIC, info.topic.as_ref());
    dead.headers.insert(DLQ_GROUP, info.group.as_ref());
    dead.headers.insert(DLQ_ATTEMPTS, info.attempt.to_string());
    dead.headers.insert(DLQ_REASON, reason);
    match first {
        Some(first) => dead.headers.insert(DLQ_FIRST_FAILURE, format_time(first)),
        None => dead.headers.remove(DLQ_FIRST_FAILURE),
    };
    dead.headers.insert(DLQ_LAST_FAILURE, format_time(now));
    dead.headers.remove(REDRIVE_GROUP);
    dead
}

/// The message to publish when redriving `dead`, and the topic it goes to:
/// dead-letter headers removed, the group it returns to recorded, everything
/// else kept. Delivery attempts start again at 1. A topic name that is not
/// valid (a foreign message in the queue) is `InvalidArgument`.
pub fn redrive_message(dead: &Message) -> Result<(String, Message)> {
    let topic = dead
        .headers
        .get(DLQ_TOPIC)
        .ok_or_else(|| {
            Error::invalid(format!(
                "message {} has no {DLQ_TOPIC} header, cannot redrive it",
                dead.id
            ))
        })?
        .to_owned();
    validate_topic(&topic)?;
    let group = dead.headers.get(DLQ_GROUP).map(str::to_owned);
    let count: u32 = dead
        .headers
        .get(REDRIVE_COUNT)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut message = dead.clone();
    message.headers.remove_prefixed(DLQ_PREFIX);
    if let Some(group) = group {
        message.headers.insert(REDRIVE_GROUP, group);
    }
    message.headers.insert(REDRIVE_COUNT, (count + 1).to_string());
    Ok((topic, message))
}

/// A message in a dead-letter queue, with its dead-letter headers decoded.
#[derive(Clone)]
pub struct DeadLetter {
    /// The message as stored (dead-letter headers included).
    pub message: Message,
    /// The topic it failed on.
    pub original_topic: Option<String>,
    /// The group that gave up on it.
    pub group: Option<String>,
    /// Deliveries it had.
    pub attempts: Option<u32>,
    /// Why it was dead-lettered.
    pub reason: Option<String>,
    /// First failure.
    pub first_failure: Option<SystemTime>,
    /// Last failure.
    pub last_failure: Option<SystemTime>,
}

impl DeadLetter {
    /// Decode the dead-letter headers of `message`.
    pub fn from_message(message: Message) -> Self {
        let h = &message.headers;
        DeadLetter {
            original_topic: h.get(DLQ_TOPIC).map(str::to_owned),
            group: h.get(DLQ_GROUP).map(str::to_owned),
            attempts: h.get(DLQ_ATTEMPTS).and_then(|a| a.parse().ok()),
            reason: h.get(DLQ_REASON).map(str::to_owned),
            first_failure: h.get(DLQ_FIRST_FAILURE).and_then(parse_time),
            last_failure: h.get(DLQ_LAST_FAILURE).and_then(parse_time),
            message,
        }
    }
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.message.id)
            .field("original_topic", &self.original_topic)
            .field("group", &self.group)
            .field("attempts", &self.attempts)
            .field("reason", &self.reason)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn dead_letter_and_redrive_round_trip() {
        let original = Message::new("p").with_key("k").with_header("h", "v");
        let info = DeliveryInfo {
            topic: Arc::from("orders"),
            group: Arc::from("billing"),
            attempt: 3,
            max_attempts: 3,
            first_failure: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ack_timeout: Duration::from_secs(30),
            stable_id: true,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let dead = dead_letter_message(&original, &info, "boom", now);
        let parsed = DeadLetter::from_message(dead.clone());
        assert_eq!(parsed.original_topic.as_deref(), Some("orders"));
        assert_eq!(parsed.group.as_deref(), Some("billing"));
        assert_eq!(parsed.attempts, Some(3));
        assert_eq!(parsed.reason.as_deref(), Some("boom"));
        assert_eq!(parsed.first_failure, info.first_failure);
        assert_eq!(parsed.last_failure, Some(now));

        let (topic, back) = redrive_message(&dead).unwrap();
        assert_eq!(topic, "orders");
        assert_eq!(back.id, original.id);
        assert_eq!(back.key, original.key);
        assert_eq!(back.payload, original.payload);
        assert_eq!(back.headers.get("h"), Some("v"));
        assert_eq!(back.headers.get(REDRIVE_GROUP), Some("billing"));
        assert_eq!(back.headers.get(REDRIVE_COUNT), Some("1"));
        assert!(back.headers.iter().all(|(k, _)| !k.starts_with(DLQ_PREFIX)));
        assert!(redrive_message(&original).is_err());
    }

    #[test]
    fn unknown_first_failure_is_absent() {
        // A redelivery the backend kept no record of: the first failure
        // happened, but not now.
        let info = DeliveryInfo {
            topic: Arc::from("orders"),
            group: Arc::from("billing"),
            attempt: 3,
            max_attempts: 5,
            first_failure: None,
            ack_timeout: Duration::from_secs(30),
            stable_id: true,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let stale = Message::new("p").with_header(DLQ_FIRST_FAILURE, "2001-01-01T00:00:00Z");
        let dead = DeadLetter::from_message(dead_letter_message(&stale, &info, "boom", now));
        assert_eq!(dead.first_failure, None);
        assert_eq!((dead.attempts, dead.last_failure), (Some(3), Some(now)));
        let first = DeliveryInfo { attempt: 1, ..info };
        let dead = DeadLetter::from_message(dead_letter_message(&stale, &first, "boom", now));
        assert_eq!(dead.first_failure, Some(now), "a first delivery fails first now");
    }

    #[test]
    fn redrives_are_counted() {
        let info = DeliveryInfo {
            topic: Arc::from("orders"),
            group: Arc::from("billing"),
            attempt: 2,
            max_attempts: 2,
            first_failure: None,
            ack_timeout: Duration::from_secs(30),
            stable_id: true,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let mut message = Message::new("p");
        for n in 1..=3 {
            let dead = dead_letter_message(&message, &info, "again", now);
            // A consumer of the dead-letter topic itself (an alerting group)
            // would skip a copy still addressed to the group it came back for.
            assert_eq!(dead.headers.get(REDRIVE_GROUP), None, "redrive {n}");
            let (_, back) = redrive_message(&dead).unwrap();
            assert_eq!(back.headers.get(REDRIVE_COUNT), Some(n.to_string().as_str()));
            message = back;
        }
    }
}
