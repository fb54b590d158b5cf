//! What an operator sees of an outbox: counts, the oldest pending row's
//! age, and the parked rows with their errors.

use std::time::{Duration, SystemTime};

/// The state of an outbox table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Rows not yet published (including those waiting for a retry).
    pub pending: u64,
    /// Of those, rows whose publish failed at least once.
    pub retrying: u64,
    /// Rows the relay gave up on: they wait for `retry` or `discard`.
    pub parked: u64,
    /// How long the oldest pending row has waited (the relay's lag).
    pub oldest_pending_age: Option<Duration>,
}

/// A row the relay gave up on, with the error that made it give up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// The message id (the row's id).
    pub id: String,
    /// Destination topic.
    pub topic: String,
    /// Ordering key.
    pub key: Option<String>,
    /// Publish attempts made.
    pub attempts: u32,
    /// The last error's kind (`message too large`, `timeout`, ...).
    pub error_kind: Option<String>,
    /// The last error's text.
    pub error: Option<String>,
    /// When the row was enqueued.
    pub enqueued_at: SystemTime,
    /// When it was parked.
    pub parked_at: SystemTime,
}
