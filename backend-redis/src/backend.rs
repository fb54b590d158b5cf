//! The Redis Streams transport: its public type, and what describes the raw
//! backend the core wraps (its name, capabilities and close). Each concern of
//! the raw backend is the trait impl in its own file: publishing in
//! `publisher`, reading in `subscriber`, the dead-letter queue in
//! `dead_letter_queue`, the backlog in `backlog`.

use async_trait::async_trait;
use transport_core::backend::{Connector, RawTransport};
use transport_core::{BacklogAccuracy, Capabilities, KeyOrdering, Result};

use crate::config::RedisConfig;
use crate::core::Redis;
use crate::SCHEME;

/// A Redis Streams transport (see the crate docs for the mapping):
/// `RedisTransport::connect("redis://...")` or
/// `RedisTransport::with_config(config)`, each returning the [`Transport`](transport_core::Transport)
/// every backend is, wrapped by the core (validation, error context,
/// telemetry).
pub type RedisTransport = Connector<RedisConfig>;

#[async_trait]
impl RawTransport for Redis {
    fn backend(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            ordering: KeyOrdering::PerKeySingleConsumer,
            nack_delay: true,
            dead_letter_ops: true,
            first_failure_time: true,
            replay: true,
            ack_timeout_redelivery: true,
            max_message_size: Some(self.core.config.max_message_size),
            backlog: BacklogAccuracy::EXACT,
            ..Capabilities::default()
        }
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
