//! The RabbitMQ transport: its public type, and the raw backend the core wraps,
//! which delegates to `publisher`, `subscriber` (with `settle`),
//! `dead_letter_queue` and `backlog` (queues and exchanges are declared in
//! `provision`).

use std::sync::Weak;

use async_trait::async_trait;
use transport_core::backend::{Connector, Deliveries, RawTransport, SubscribeRequest};
use transport_core::{
    Accuracy, Backlog, BacklogAccuracy, Capabilities, DeadLetterQueue, KeyOrdering, Message, Result, SubscribeOptions,
};

use crate::config::RabbitConfig;
use crate::core::Rabbit;
use crate::dead_letter_queue::RabbitDeadLetters;
use crate::{names, SCHEME};

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

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.store(topic, messages).await
    }

    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        self.read(request).await
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        let name = options.dlq_topic(topic);
        Ok(Box::new(RabbitDeadLetters {
            rabbit: self.clone(),
            queue: names::dlq_queue(&name),
            topic: name,
        }))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.read_backlog(topic, options).await
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
