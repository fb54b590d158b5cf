//! Declaring what a topic and a group need on the broker: the topic's
//! exchange, the group's quorum work queue bound to it, the TTL retry
//! queues of delayed nacks and the dead-letter queue; each declared once
//! per connection.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use transport_core::Error;

use crate::config::RabbitConfig;
use crate::core::{map_err, Conn};

impl Conn {
    pub(crate) fn known(&self, name: &str) -> bool {
        self.declared.lock().unwrap_or_else(|e| e.into_inner()).contains(name)
    }

    pub(crate) fn remember(&self, name: String) {
        self.declared.lock().unwrap_or_else(|e| e.into_inner()).insert(name);
    }

    /// The durable topic exchange of a topic.
    pub async fn declare_exchange(&self, ch: &Channel, topic: &str, op: &'static str) -> Result<(), Error> {
        let tag = format!("x:{topic}");
        if self.known(&tag) {
            return Ok(());
        }
        ch.exchange_declare(
            topic.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| map_err(op, e))?;
        self.remember(tag);
        Ok(())
    }

    /// A durable queue bound to a topic's exchange with `#`.
    pub async fn declare_queue(
        &self,
        ch: &Channel,
        topic: &str,
        queue: &str,
        args: FieldTable,
        op: &'static str,
    ) -> Result<(), Error> {
        self.declare_exchange(ch, topic, op).await?;
        let tag = format!("q:{queue}");
        if self.known(&tag) {
            return Ok(());
        }
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map_err(|e| map_err(op, e))?;
        ch.queue_bind(
            queue.into(),
            topic.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| map_err(op, e))?;
        self.remember(tag);
        Ok(())
    }

    /// The dead-letter queue of a dead-letter topic, bound to its exchange
    /// (a quorum queue when replicated, see [`side_queue_args`]).
    pub async fn declare_dead_letter_queue(
        &self,
        ch: &Channel,
        dlq_topic: &str,
        op: &'static str,
    ) -> Result<(), Error> {
        let queue = crate::backend::dlq_queue(dlq_topic);
        self.declare_queue(ch, dlq_topic, &queue, side_queue_args(&self.config), op)
            .await
    }

    /// A retry queue: messages wait `ttl_ms` and then dead-letter to `target`.
    pub async fn declare_retry_queue(&self, ch: &Channel, name: &str, target: &str, ttl_ms: u64) -> Result<(), Error> {
        let tag = format!("q:{name}");
        if self.known(&tag) {
            return Ok(());
        }
        let mut args = side_queue_args(&self.config);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms as i64));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(target.into()));
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map_err(|e| map_err("nack", e))?;
        self.remember(tag);
        Ok(())
    }
}

/// Arguments of a group's work queue: a quorum queue (delivery counts,
/// replicated), optionally with a single active consumer.
pub(crate) fn work_queue_args(config: &RabbitConfig) -> FieldTable {
    let mut args = FieldTable::default();
    quorum(config, &mut args);
    if config.single_active_consumer {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    args
}

/// Arguments of a dead-letter or delay queue: on a cluster quorum queues
/// too, so losing the node a classic queue lives on cannot strand dead
/// letters or delayed retries; on a single node classic queues, as they
/// always were (a queue's type cannot change once declared).
pub(crate) fn side_queue_args(config: &RabbitConfig) -> FieldTable {
    let mut args = FieldTable::default();
    if config.replicated() {
        quorum(config, &mut args);
    }
    args
}

fn quorum(config: &RabbitConfig, args: &mut FieldTable) {
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    if let Some(n) = config.quorum_group_size {
        args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongUInt(n));
    }
}
