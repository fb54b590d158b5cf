//! The SQS + SNS transport: its public type, and what describes the raw backend
//! the core wraps (its name, capabilities and close). Each concern of the raw
//! backend is the trait impl in its own file: publishing in `publisher`,
//! reading in `subscriber`, the dead-letter queue in `dead_letter_queue`, the
//! backlog in `backlog`. Queues, topics and subscriptions are created in
//! `provision`; a delivery is settled in `settle` (deletes batched in
//! `deletes`).

use async_trait::async_trait;
use transport_core::backend::{Connector, RawTransport};
use transport_core::{Accuracy, BacklogAccuracy, Capabilities, KeyOrdering, Result};

use crate::config::SqsConfig;
use crate::core::{Sqs, MAX_MESSAGE, MAX_VISIBILITY};
use crate::SCHEME;

/// An SQS + SNS transport (see the crate docs for the mapping):
/// `SqsTransport::connect("sqs://...")` or
/// `SqsTransport::with_config(config)`, each returning the [`Transport`](transport_core::Transport)
/// every backend is, wrapped by the core (validation, error context,
/// telemetry).
pub type SqsTransport = Connector<SqsConfig>;

#[async_trait]
impl RawTransport for Sqs {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        let fifo = self.fifo();
        Capabilities {
            extend: true,
            ordering: if fifo { KeyOrdering::PerKey } else { KeyOrdering::None },
            // A receive hands out several messages of a group at once, so
            // later ones are in hand before a nacked one comes back.
            ordering_across_nack: false,
            nack_delay: true,
            max_nack_delay: Some(MAX_VISIBILITY),
            native_dead_letter: true,
            dead_letter_ops: true,
            ack_timeout_redelivery: true,
            publish_dedup: fifo,
            duplicates_possible: !fifo,
            durable: true,
            max_message_size: Some(MAX_MESSAGE),
            backlog: BacklogAccuracy {
                waiting: Accuracy::Approximate,
                in_flight: Accuracy::Approximate,
                dead_letters: Accuracy::Approximate,
                oldest_waiting_age: Accuracy::Unavailable,
            },
            max_batch_size: Some(10),
            single_group: self.point_to_point(),
            ..Capabilities::default()
        }
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
