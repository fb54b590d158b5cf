//! What a group has left to do on a topic, read from the broker: the
//! figures an on-call engineer alerts on (consumer lag, messages stuck in
//! flight, dead-letter depth, how long the oldest message has waited).

use std::time::{Duration, SystemTime};

/// How a backend knows one figure of a [`Backlog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Accuracy {
    /// Counted by the broker when asked.
    Exact,
    /// An estimate the broker keeps, which settles within seconds (SQS's
    /// approximate counts), or an exact count that includes what another
    /// figure also counts (said per backend in its docs).
    Approximate,
    /// The broker does not tell; the figure is always `None`.
    #[default]
    Unavailable,
}

impl Accuracy {
    /// How tables show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accuracy::Exact => "exact",
            Accuracy::Approximate => "approximate",
            Accuracy::Unavailable => "unavailable",
        }
    }
}

/// How exact each figure of a [`Backlog`] is on a backend (part of
/// [`Capabilities`](crate::Capabilities)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BacklogAccuracy {
    /// [`Backlog::waiting`].
    pub waiting: Accuracy,
    /// [`Backlog::in_flight`].
    pub in_flight: Accuracy,
    /// [`Backlog::dead_letters`].
    pub dead_letters: Accuracy,
    /// [`Backlog::oldest_waiting_age`].
    pub oldest_waiting_age: Accuracy,
}

impl BacklogAccuracy {
    /// Every figure counted by the broker.
    pub const EXACT: BacklogAccuracy = BacklogAccuracy {
        waiting: Accuracy::Exact,
        in_flight: Accuracy::Exact,
        dead_letters: Accuracy::Exact,
        oldest_waiting_age: Accuracy::Exact,
    };
}

/// A group's backlog on a topic, as [`Transport::backlog`](crate::Transport::backlog)
/// reads it. A figure the backend cannot read is `None` (its
/// [`BacklogAccuracy`] says `Unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Backlog {
    /// Messages published to the topic and not yet delivered to the group:
    /// the consumer lag.
    pub waiting: Option<u64>,
    /// Messages delivered to the group's consumers (read ahead by a
    /// subscription included) and not settled yet.
    pub in_flight: Option<u64>,
    /// Messages in the group's dead-letter queue.
    pub dead_letters: Option<u64>,
    /// How long the oldest waiting message has waited since it was
    /// published; `Some(ZERO)` when nothing waits.
    pub oldest_waiting_age: Option<Duration>,
}

impl Backlog {
    /// A backlog with these figures.
    pub fn new(
        waiting: Option<u64>,
        in_flight: Option<u64>,
        dead_letters: Option<u64>,
        oldest_waiting_age: Option<Duration>,
    ) -> Self {
        Backlog {
            waiting,
            in_flight,
            dead_letters,
            oldest_waiting_age,
        }
    }

    /// How long a message published at `published` has waited: the
    /// [`oldest_waiting_age`](Self::oldest_waiting_age) of a backlog whose
    /// oldest waiting message was published then (`None`: nothing waits,
    /// zero). A clock behind the broker's gives zero, not an error.
    pub fn waited_since(published: Option<SystemTime>) -> Duration {
        published
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(Duration::ZERO)
    }
}
