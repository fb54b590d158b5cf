//! The one decision point: what an [`Outcome`] does to a delivery.
//!
//! Every path that settles a delivery goes through one function (`decide`,
//! called by [`Delivery::settle`](crate::Delivery::settle)): the consumer
//! runtime, [`Delivery::nack`](crate::Delivery::nack) and the subscription's
//! screening of exhausted redeliveries. So "the last attempt failed, dead-letter
//! it" is written once and means the same on every backend.

use std::fmt;
use std::time::Duration;

use crate::delivery_info::DeliveryInfo;

/// What should happen to a delivery once it has been handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: never deliver it again to this group.
    Ack,
    /// Failed for now: deliver it again, not before `delay` when given. On
    /// the last allowed attempt this dead-letters instead.
    Retry {
        /// Earliest redelivery, from now.
        delay: Option<Duration>,
        /// Why it failed (the dead-letter reason if this was the last attempt).
        reason: String,
    },
    /// Retrying cannot help: move it to the dead-letter queue with `reason`.
    DeadLetter {
        /// Why (stored in the dead-letter headers).
        reason: String,
    },
}

impl Outcome {
    /// A retry as soon as possible.
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry {
            delay: None,
            reason: reason.into(),
        }
    }

    /// A retry not before `delay`.
    pub fn retry_after(delay: Duration, reason: impl Into<String>) -> Self {
        Outcome::Retry {
            delay: Some(delay),
            reason: reason.into(),
        }
    }

    /// Dead-letter with `reason`.
    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Outcome::DeadLetter { reason: reason.into() }
    }

    /// Whether this is a failure worth retrying (what a circuit breaker counts).
    pub fn is_retry(&self) -> bool {
        matches!(self, Outcome::Retry { .. })
    }

    /// The failure reason, if this is a failure.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Ack => None,
            Outcome::Retry { reason, .. } | Outcome::DeadLetter { reason } => Some(reason),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ack => f.write_str("ack"),
            Outcome::Retry { delay: None, reason } => write!(f, "retry ({reason})"),
            Outcome::Retry { delay: Some(d), reason } => write!(f, "retry after {d:?} ({reason})"),
            Outcome::DeadLetter { reason } => write!(f, "dead-letter ({reason})"),
        }
    }
}

/// What a settlement did, as reported by [`Delivery::settle`](crate::Delivery::settle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Acknowledged.
    Acked,
    /// Handed back for redelivery.
    Retried,
    /// Moved to the dead-letter queue.
    DeadLettered,
}

/// The broker operation an outcome turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Ack,
    Nack(Option<Duration>),
    DeadLetter(String),
}

/// Turn `outcome` into the operation for a delivery described by `info`.
/// A retry on the last allowed attempt dead-letters, naming the attempts.
pub(crate) fn decide(outcome: Outcome, info: &DeliveryInfo) -> Action {
    match outcome {
        Outcome::Ack => Action::Ack,
        Outcome::DeadLetter { reason } => Action::DeadLetter(reason),
        Outcome::Retry { reason, .. } if info.attempt >= info.max_attempts => {
            let mut text = format!("failed {} of {} allowed attempts", info.attempt, info.max_attempts);
            if !reason.is_empty() {
                text.push_str(": ");
                text.push_str(&reason);
            }
            Action::DeadLetter(text)
        }
        Outcome::Retry { delay, .. } => Action::Nack(delay),
    }
}

/// For a delivery that arrives already past `max_attempts` (its earlier
/// attempts were never settled: a consumer crashed or let it time out), the
/// dead-letter reason; `None` when it may be handed out.
pub(crate) fn exhausted_on_arrival(info: &DeliveryInfo) -> Option<String> {
    (info.attempt > info.max_attempts).then(|| {
        format!(
            "delivered {} times without being settled, {} attempts allowed",
            info.attempt - 1,
            info.max_attempts
        )
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    fn info(attempt: u32, max_attempts: u32) -> DeliveryInfo {
        DeliveryInfo::for_test(attempt, max_attempts)
    }

    #[test]
    fn retry_before_the_last_attempt_nacks_with_its_delay() {
        let d = Some(Duration::from_millis(250));
        assert_eq!(
            decide(
                Outcome::Retry {
                    delay: d,
                    reason: "x".into()
                },
                &info(2, 3)
            ),
            Action::Nack(d)
        );
        assert_eq!(decide(Outcome::retry("x"), &info(1, 3)), Action::Nack(None));
    }

    #[test]
    fn retry_on_the_last_attempt_dead_letters_with_the_reason() {
        assert_eq!(
            decide(Outcome::retry("db down"), &info(3, 3)),
            Action::DeadLetter("failed 3 of 3 allowed attempts: db down".into())
        );
        assert_eq!(
            decide(Outcome::retry(""), &info(1, 1)),
            Action::DeadLetter("failed 1 of 1 allowed attempts".into())
        );
    }

    #[test]
    fn ack_and_dead_letter_pass_through() {
        assert_eq!(decide(Outcome::Ack, &info(5, 3)), Action::Ack);
        assert_eq!(
            decide(Outcome::dead_letter("bad"), &info(1, 3)),
            Action::DeadLetter("bad".into())
        );
    }

    #[test]
    fn exhausted_only_past_max_attempts() {
        assert_eq!(exhausted_on_arrival(&info(3, 3)), None);
        assert_eq!(
            exhausted_on_arrival(&info(4, 3)).as_deref(),
            Some("delivered 3 times without being settled, 3 attempts allowed")
        );
    }
}
