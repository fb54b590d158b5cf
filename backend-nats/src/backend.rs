//! The NATS JetStream transport: its public type, and what describes the raw
//! backend the core wraps (its name, capabilities and close). Each concern of
//! the raw backend is the trait impl in its own file: publishing in
//! `publisher`, reading in `subscriber`, the dead-letter queue in
//! `dead_letter_queue`, the backlog in `backlog`.

use async_trait::async_trait;
use transport_core::backend::{Connector, RawTransport};
use transport_core::{BacklogAccuracy, Capabilities, KeyOrdering, Result};

use crate::config::{NatsConfig, Storage};
use crate::core::Nats;
use crate::SCHEME;

/// A NATS JetStream transport (see the crate docs for the mapping):
/// `NatsTransport::connect("nats://...")` or
/// `NatsTransport::with_config(config)`, each returning the [`Transport`](transport_core::Transport)
/// every backend is, wrapped by the core (validation, error context,
/// telemetry).
pub type NatsTransport = Connector<NatsConfig>;

#[async_trait]
impl RawTransport for Nats {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            ordering: KeyOrdering::PerKeySingleConsumer,
            nack_delay: true,
            dead_letter_ops: true,
            replay: true,
            ack_timeout_redelivery: true,
            publish_dedup: self.inner.config.dedup,
            durable: self.inner.config.storage == Storage::File,
            max_message_size: Some(self.inner.max_message_size),
            backlog: BacklogAccuracy::EXACT,
            ..Capabilities::default()
        }
    }

    async fn close(&self) -> Result<()> {
        let _ = self.inner.client.flush().await;
        Ok(())
    }
}
