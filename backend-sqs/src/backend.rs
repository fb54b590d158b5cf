//! The SQS + SNS transport: its public type, and the raw backend the core
//! wraps, which delegates to `provision`, `publisher`, `subscriber` (with
//! `settle` and `deletes`), `dead_letter_queue` and `backlog`.

use async_trait::async_trait;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Accuracy, Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result, SubscribeOptions,
};

use crate::config::SqsConfig;
use crate::core::{Sqs, MAX_MESSAGE, MAX_VISIBILITY};
use crate::dead_letter_queue::SqsDeadLetters;
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

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.store(topic, messages).await
    }

    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        self.read(request).await
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        Ok(Box::new(SqsDeadLetters::new(self, options.dlq_topic(topic))))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.read_backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
