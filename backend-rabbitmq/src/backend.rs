//! The RabbitMQ transport: its public type, and what describes the raw backend
//! the core wraps (its name, capabilities and close). Each concern of the raw
//! backend is the trait impl in its own file: publishing in `publisher`,
//! reading in `subscriber`, the dead-letter queue in `dead_letter_queue`, the
//! backlog in `backlog`. Queues and exchanges are declared in `provision`; a
//! delivery is settled in `settle`.

use std::sync::Weak;

use async_trait::async_trait;
use transport_core::backend::{Connector, RawTransport};
use transport_core::{Accuracy, BacklogAccuracy, Capabilities, KeyOrdering, Result};

use crate::config::RabbitConfig;
use crate::core::Rabbit;
use crate::SCHEME;

/// A RabbitMQ transport (see the crate docs for the mapping):
/// `RabbitTransport::connect("amqp://...")` or
/// `RabbitTransport::with_config(config)`, each returning the [`Transport`](transport_core::Transport)
/// every backend is, wrapped by the core (validation, error context,
/// telemetry).
pub type RabbitTransport = Connector<RabbitConfig>;

#[async_trait]
impl RawTransport for Rabbit {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            ordering: KeyOrdering::PerKeySingleConsumer,
            nack_delay: true,
            dead_letter_ops: true,
            ack_timeout_redelivery: true,
            durable: true,
            max_message_size: Some(self.inner.conn.config().max_message_size),
            backlog: BacklogAccuracy {
                waiting: Accuracy::Approximate,
                dead_letters: Accuracy::Exact,
                ..BacklogAccuracy::default()
            },
            ..Capabilities::default()
        }
    }

    async fn close(&self) -> Result<()> {
        let acks: Vec<_> = {
            let all = self.inner.acks.lock().unwrap_or_else(|e| e.into_inner());
            all.iter().filter_map(Weak::upgrade).collect()
        };
        // Both wait for the broker (an ack frame, the Close-Ok), so both are
        // bounded: a broker that stops answering must not hang `close`.
        // What is not flushed in time is redelivered (at least once).
        let limit = self.inner.conn.config().request_timeout;
        for outstanding in acks {
            if tokio::time::timeout(limit, outstanding.flush(true)).await.is_err() {
                tracing::warn!(
                    ?limit,
                    "closing: the outstanding acks were not sent in time; their messages will be redelivered"
                );
            }
        }
        if tokio::time::timeout(limit, self.inner.conn.close()).await.is_err() {
            tracing::warn!(
                ?limit,
                "closing: the broker did not confirm closing the connection in time; it was dropped"
            );
        }
        Ok(())
    }
}
