//! What a subscriber asks for: group, flow control, ack timeout, start
//! position and dead-letter policy.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::names::{validate_group, validate_topic};

/// Where a new group starts reading. A group that already exists continues
/// where it left off, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// Only messages published after the group was created.
    #[default]
    Latest,
    /// Every message the broker still retains
    /// (needs [`Capabilities::replay`](crate::Capabilities::replay)).
    Earliest,
}

/// When a message goes to the dead-letter queue, and which one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterPolicy {
    /// Deliveries a message gets at most: after the failure of delivery
    /// number `max_attempts` it is dead-lettered. At least 1.
    pub max_attempts: u32,
    /// The dead-letter topic; `<topic>.<group>.dlq` when `None`.
    pub topic: Option<String>,
}

impl Default for DeadLetterPolicy {
    fn default() -> Self {
        DeadLetterPolicy {
            max_attempts: 5,
            topic: None,
        }
    }
}

/// Options of [`Subscriber::subscribe`](crate::Subscriber::subscribe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Consumer group: subscriptions in one group compete for messages,
    /// different groups each receive every message.
    pub group: String,
    /// Deliveries handed out and not yet settled, at most (prefetch).
    pub max_in_flight: usize,
    /// A delivery neither acked nor nacked within this time is redelivered.
    pub ack_timeout: Duration,
    /// Start position of a new group.
    pub start: StartFrom,
    /// Dead-letter policy.
    pub dead_letter: DeadLetterPolicy,
}

impl SubscribeOptions {
    /// Options for this group with the defaults: 64 in flight, 30 s ack
    /// timeout, start at latest, 5 attempts, `<topic>.<group>.dlq`.
    pub fn new(group: impl Into<String>) -> Self {
        SubscribeOptions {
            group: group.into(),
            max_in_flight: 64,
            ack_timeout: Duration::from_secs(30),
            start: StartFrom::Latest,
            dead_letter: DeadLetterPolicy::default(),
        }
    }

    /// Set `max_in_flight`.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Set `ack_timeout`.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Set where a new group starts.
    pub fn start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Set `dead_letter.max_attempts`.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.dead_letter.max_attempts = n;
        self
    }

    /// Set the dead-letter topic.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter.topic = Some(topic.into());
        self
    }

    /// The dead-letter topic for `topic`: the configured one or `<topic>.<group>.dlq`.
    pub fn dlq_topic(&self, topic: &str) -> String {
        match &self.dead_letter.topic {
            Some(t) => t.clone(),
            None => format!("{topic}.{}.dlq", self.group),
        }
    }

    /// Check names and numbers; every backend calls this before subscribing.
    pub fn validate(&self, topic: &str) -> Result<()> {
        validate_topic(topic)?;
        validate_group(&self.group)?;
        let dlq = self.dlq_topic(topic);
        validate_topic(&dlq)?;
        if dlq == topic {
            return Err(Error::invalid("the dead-letter topic must differ from the topic"));
        }
        if self.max_in_flight == 0 {
            return Err(Error::invalid("max_in_flight must be at least 1"));
        }
        if self.dead_letter.max_attempts == 0 {
            return Err(Error::invalid("dead_letter.max_attempts must be at least 1"));
        }
        if self.ack_timeout < Duration::from_millis(10) {
            return Err(Error::invalid("ack_timeout must be at least 10ms"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dlq_name_and_validation() {
        let o = SubscribeOptions::new("billing");
        assert_eq!(o.dlq_topic("orders"), "orders.billing.dlq");
        assert_eq!(o.clone().dead_letter_topic("x").dlq_topic("orders"), "x");
        assert!(o.validate("orders").is_ok());
        assert!(o.clone().max_in_flight(0).validate("orders").is_err());
        assert!(o.clone().max_attempts(0).validate("orders").is_err());
        assert!(SubscribeOptions::new("bad group").validate("orders").is_err());
    }
}
