//! The Redis Streams transport: its public type, and the raw backend the core
//! wraps, which delegates to `publisher`, `subscriber`, `dead_letter_queue`
//! and `backlog`.

use async_trait::async_trait;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result, SubscribeOptions,
};

use crate::config::RedisConfig;
use crate::core::Redis;
use crate::dead_letter_queue::RedisDeadLetters;
use crate::{names, SCHEME};

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

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.core.store(topic, messages).await
    }

    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        self.core.read(request).await
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        let name = options.dlq_topic(topic);
        Ok(Box::new(RedisDeadLetters {
            core: self.core.clone(),
            key: names::stream(&self.core.config, &name),
            topic: name,
        }))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.core.read_backlog(topic, options).await
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
