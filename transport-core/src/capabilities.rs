//! What a backend can do, declared once per backend and read by users and
//! by the conformance suite to decide which checks apply.

use std::time::Duration;

use crate::backlog::BacklogAccuracy;

/// Which order deliveries keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyOrdering {
    /// No order is promised.
    #[default]
    None,
    /// Messages with the same key are delivered in publish order, also to
    /// competing consumers of one group (a key is never in flight twice).
    PerKey,
    /// Messages with the same key are delivered in publish order only while
    /// a group has a single consumer.
    PerKeySingleConsumer,
}

/// What holds on a backend. Every field defaults to "no" so a backend
/// claims only what it fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Per-key order promise.
    pub ordering: KeyOrdering,
    /// A nacked message is redelivered before later messages of its key.
    pub ordering_across_nack: bool,
    /// `nack(Some(delay))` holds the message back for at least the delay.
    pub nack_delay: bool,
    /// Longest nack delay the backend honours.
    pub max_nack_delay: Option<Duration>,
    /// The broker itself moves messages to the dead-letter queue after
    /// `max_attempts` (without the consumer settling them).
    pub native_dead_letter: bool,
    /// Depth, peek, redrive and purge of a dead-letter queue.
    pub dead_letter_ops: bool,
    /// The backend records when a message first failed, so a dead letter
    /// after several attempts carries that time. Where it does not (the
    /// broker keeps no per-message state the library can write), the
    /// first-failure time of such a dead letter is absent, never invented.
    pub first_failure_time: bool,
    /// A new group can start at the earliest retained message.
    pub replay: bool,
    /// An unsettled delivery comes back after `ack_timeout`.
    pub ack_timeout_redelivery: bool,
    /// [`Delivery::extend`](crate::Delivery::extend) holds a delivery back
    /// from redelivery (a lease); the runtime's lease layer relies on it.
    pub extend: bool,
    /// Publishing the same message id twice (within a window) stores it once.
    pub publish_dedup: bool,
    /// A message may be delivered twice even when nothing failed (standard
    /// SQS: at-least-once on the happy path too). Handlers must be idempotent.
    pub duplicates_possible: bool,
    /// Point-to-point: a topic is one queue read by one group of competing
    /// consumers, so a second group cannot subscribe (SQS without SNS).
    /// Every other backend fans a topic out to every group.
    pub single_group: bool,
    /// Data survives a broker restart.
    pub durable: bool,
    /// Largest message (payload, headers, id and key) in bytes.
    pub max_message_size: Option<usize>,
    /// Most messages one `publish_batch` round trip carries; larger batches
    /// are split by the backend.
    pub max_batch_size: Option<usize>,
    /// How exact each figure of [`Transport::backlog`](crate::Transport::backlog) is.
    pub backlog: BacklogAccuracy,
}

impl Capabilities {
    /// Whether messages with one key keep their order with several consumers.
    pub fn ordered_per_key(&self) -> bool {
        self.ordering == KeyOrdering::PerKey
    }

    /// Whether messages with one key keep their order with a single consumer.
    pub fn ordered_per_key_single_consumer(&self) -> bool {
        matches!(self.ordering, KeyOrdering::PerKey | KeyOrdering::PerKeySingleConsumer)
    }
}
