//! Declaring what a topic and a group need on the broker: the topic's
//! exchange, the group's quorum work queue bound to it, the TTL retry
//! queues of delayed nacks and the dead-letter queue; each declared once
//! per connection. With `provision=false` each is checked instead with a
//! passive declaration (on a channel of its own: a missing object closes
//! the channel), which needs no configure permission; AMQP cannot show a
//! binding or a queue's arguments, so those are the operator's to get
//! right (`transport provision` does).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};
use transport_core::backend::{not_provisioned, RawProvision};
use transport_core::{async_trait, Error, ErrorKind, Result as TransportResult, SubscribeOptions, Topology};

use crate::config::RabbitConfig;
use crate::core::{map_err, Conn, Rabbit};
use crate::names;

impl Conn {
    pub(crate) fn known(&self, name: &str) -> bool {
        self.declared.lock().unwrap_or_else(|e| e.into_inner()).contains(name)
    }

    pub(crate) fn remember(&self, name: String) {
        self.declared.lock().unwrap_or_else(|e| e.into_inner()).insert(name);
    }

    /// Whether declarations create (`provision`, the default) or only check.
    fn creates(&self) -> bool {
        self.config.provision
    }

    /// A passive declaration of an exchange or queue on a channel of its
    /// own: `NotFound` naming it when missing.
    async fn check_exists(&self, kind: &'static str, name: &str) -> Result<(), Error> {
        let ch = self.connection().await?.create_channel().await.map_err(map_err)?;
        let checked = if kind == "exchange" {
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            };
            ch.exchange_declare(name.into(), ExchangeKind::Topic, passive, FieldTable::default())
                .await
                .map(drop)
        } else {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            ch.queue_declare(name.into(), passive, FieldTable::default())
                .await
                .map(drop)
        };
        if ch.status().connected() {
            let _ = ch.close(200, "checked".into()).await;
        }
        match checked.map_err(map_err) {
            Err(e) if e.kind() == ErrorKind::NotFound => Err(not_provisioned(kind, name)),
            other => other,
        }
    }

    /// The durable topic exchange of a topic.
    pub async fn declare_exchange(&self, ch: &Channel, topic: &str) -> Result<(), Error> {
        let tag = format!("x:{topic}");
        if self.known(&tag) {
            return Ok(());
        }
        if !self.creates() {
            self.check_exists("exchange", topic).await?;
            self.remember(tag);
            return Ok(());
        }
        create_exchange(ch, topic).await?;
        self.remember(tag);
        Ok(())
    }
}

async fn create_exchange(ch: &Channel, topic: &str) -> Result<(), Error> {
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
    .map_err(map_err)?;
    Ok(())
}

/// A durable queue bound to a topic's exchange with `#`.
async fn create_bound_queue(ch: &Channel, topic: &str, queue: &str, args: FieldTable) -> Result<(), Error> {
    declare_durable(ch, queue, args).await?;
    bind_all(ch, topic, queue).await
}

/// Bind `queue` to every message of `topic`'s exchange (`#`); binding
/// again changes nothing.
async fn bind_all(ch: &Channel, topic: &str, queue: &str) -> Result<(), Error> {
    ch.queue_bind(
        queue.into(),
        topic.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(map_err)
}

impl Conn {
    /// A durable queue bound to a topic's exchange with `#`.
    pub async fn declare_queue(&self, ch: &Channel, topic: &str, queue: &str, args: FieldTable) -> Result<(), Error> {
        self.declare_exchange(ch, topic).await?;
        let tag = format!("q:{queue}");
        if self.known(&tag) {
            return Ok(());
        }
        if self.creates() {
            create_bound_queue(ch, topic, queue, args).await?;
        } else {
            self.check_exists("queue", queue).await?;
        }
        self.remember(tag);
        Ok(())
    }

    /// A group's work queue, bound to the topic's exchange. Declared on a
    /// channel of its own: a refused declaration closes its channel, and
    /// the publishing channel must not go with it. A queue an earlier
    /// version created without the delivery limit is used as it is, with a
    /// warning: on RabbitMQ 4.0 and later the broker's default limit (20
    /// deliveries) then applies to it until a policy lifts it.
    pub async fn declare_work_queue(&self, connection: &Connection, topic: &str, queue: &str) -> Result<(), Error> {
        let declare = |args: FieldTable| async move {
            let ch = connection.create_channel().await.map_err(map_err)?;
            let declared = self.declare_queue(&ch, topic, queue, args).await;
            if ch.status().connected() {
                let _ = ch.close(200, "declared".into()).await;
            }
            declared
        };
        match declare(work_queue_args(&self.config)).await {
            Err(e) if is_legacy_work_queue(&e) => {
                tracing::warn!(
                    queue,
                    "queue {queue} was declared without x-delivery-limit by an earlier version; on RabbitMQ 4.0 \
                     and later the broker removes its messages after 20 deliveries, before max_attempts can \
                     dead-letter them. Lift the limit with a policy: rabbitmqctl set_policy --apply-to queues \
                     transport-delivery-limit '^{queue}$' '{{\"delivery-limit\":-1}}' (see the backend's docs)"
                );
                declare(legacy_work_queue_args(&self.config)).await
            }
            other => other,
        }
    }

    /// The dead-letter queue of a dead-letter topic, bound to its exchange
    /// (a quorum queue when replicated, see [`side_queue_args`]).
    pub async fn declare_dead_letter_queue(&self, ch: &Channel, dlq_topic: &str) -> Result<(), Error> {
        let queue = crate::names::dlq_queue(dlq_topic);
        self.declare_queue(ch, dlq_topic, &queue, side_queue_args(&self.config))
            .await
    }

    /// A retry queue: messages wait `ttl_ms` and then dead-letter to `target`.
    pub async fn declare_retry_queue(&self, ch: &Channel, name: &str, target: &str, ttl_ms: u64) -> Result<(), Error> {
        let tag = format!("q:{name}");
        if self.known(&tag) {
            return Ok(());
        }
        if self.creates() {
            declare_durable(ch, name, retry_queue_args(&self.config, target, ttl_ms)).await?;
        } else {
            self.check_exists("queue", name).await.map_err(|e| {
                if e.kind() != ErrorKind::NotFound {
                    return e;
                }
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "retry queue {name} (nacks delayed {ttl_ms} ms) does not exist, and this transport does \
                         not declare it (provision=false); `transport provision` does not know a service's \
                         delays: declare it durable with x-message-ttl={ttl_ms}, x-dead-letter-exchange=\"\" \
                         and x-dead-letter-routing-key={target}, or nack without a delay. The message was put \
                         back at once"
                    ),
                )
                .with_retryable(false)
            })?;
        }
        self.remember(tag);
        Ok(())
    }
}

/// A retry queue's arguments: messages wait `ttl_ms`, then dead-letter
/// through the default exchange to the work queue `target`.
fn retry_queue_args(config: &RabbitConfig, target: &str, ttl_ms: u64) -> FieldTable {
    let mut args = side_queue_args(config);
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms as i64));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(target.into()));
    args
}

async fn declare_durable(ch: &Channel, queue: &str, args: FieldTable) -> Result<(), Error> {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), options, args).await.map_err(map_err)?;
    Ok(())
}

/// The ready-message count of a queue (a passive `queue.declare`, which
/// declares nothing). A missing queue is `NotFound`, and the broker closes
/// the channel; otherwise the channel is closed here.
pub(crate) async fn ready_count(ch: &Channel, queue: &str) -> Result<u64, Error> {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map_err(map_err)?;
    let _ = ch.close(200, "done".into()).await;
    Ok(q.message_count() as u64)
}

/// The broker's own delivery limit on work queues: none that matters. The
/// library counts attempts and dead-letters at `max_attempts` into its own
/// dead-letter queue, so the broker must never remove a message first.
/// RabbitMQ 4.0 gives a quorum queue declared without `x-delivery-limit` a
/// limit of 20 and, with no dead-letter exchange, deletes a message
/// delivered more often; `-1` (unlimited on 4.0) is refused by 3.x, so the
/// largest signed 32-bit value, which both accept, stands for "unlimited".
pub(crate) const BROKER_DELIVERY_LIMIT: i32 = i32::MAX;

/// Arguments of a group's work queue: a quorum queue (delivery counts,
/// replicated) with the broker's delivery limit out of the way, optionally
/// with a single active consumer.
pub(crate) fn work_queue_args(config: &RabbitConfig) -> FieldTable {
    let mut args = legacy_work_queue_args(config);
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(BROKER_DELIVERY_LIMIT));
    args
}

/// The work queue's arguments before the delivery limit was declared: what
/// a queue created by an earlier version of this library was declared with.
fn legacy_work_queue_args(config: &RabbitConfig) -> FieldTable {
    let mut args = FieldTable::default();
    quorum(config, &mut args);
    if config.single_active_consumer {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    args
}

/// Whether `e` is the broker refusing a declaration because the queue
/// already exists without the delivery limit (created by an earlier
/// version of this library).
fn is_legacy_work_queue(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("PRECONDITION_FAILED") && text.contains("x-delivery-limit")
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

/// The arguments as the broker's tools print them, for `topology`.
fn describe(args: &FieldTable) -> String {
    args.inner()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                AMQPValue::LongString(s) => s.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongUInt(n) => n.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::Boolean(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl RawProvision for Rabbit {
    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Topology {
        let config = self.inner.conn.config();
        let t = Topology::new().with("exchange", topic, "durable, type topic");
        let Some(options) = group else {
            return t;
        };
        let queue = names::work_queue(topic, &options.group);
        let dlq_topic = options.dlq_topic(topic);
        let dlq = names::dlq_queue(&dlq_topic);
        let durable = |args: &FieldTable| match describe(args) {
            d if d.is_empty() => "durable".to_owned(),
            d => format!("durable, {d}"),
        };
        let t = t
            .with("queue", queue.clone(), durable(&work_queue_args(config)))
            .with("binding", format!("{topic} -> {queue}"), "routing key #")
            .with("exchange", dlq_topic.clone(), "durable, type topic")
            .with("queue", dlq.clone(), durable(&side_queue_args(config)))
            .with("binding", format!("{dlq_topic} -> {dlq}"), "routing key #");
        config.retry_delays.iter().fold(t, |t, delay| {
            let ms = delay.as_millis() as u64;
            t.with(
                "queue",
                names::retry_queue(&queue, ms),
                durable(&retry_queue_args(config, &queue, ms)),
            )
        })
    }

    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> TransportResult<Topology> {
        let conn = &self.inner.conn;
        let ch = conn.connection().await?.create_channel().await.map_err(map_err)?;
        let made = async {
            create_exchange(&ch, topic).await?;
            if let Some(options) = group {
                let queue = names::work_queue(topic, &options.group);
                self.create_missing_queue(&ch, topic, &queue, work_queue_args(conn.config()))
                    .await?;
                let dlq_topic = options.dlq_topic(topic);
                create_exchange(&ch, &dlq_topic).await?;
                let dlq = names::dlq_queue(&dlq_topic);
                self.create_missing_queue(&ch, &dlq_topic, &dlq, side_queue_args(conn.config()))
                    .await?;
                for delay in &conn.config().retry_delays {
                    let ms = delay.as_millis() as u64;
                    let retry = names::retry_queue(&queue, ms);
                    match conn.check_exists("queue", &retry).await {
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            declare_durable(&ch, &retry, retry_queue_args(conn.config(), &queue, ms)).await?
                        }
                        other => other?,
                    }
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        if ch.status().connected() {
            let _ = ch.close(200, "provisioned".into()).await;
        }
        made?;
        Ok(self.topology(topic, group))
    }
}

impl Rabbit {
    /// A queue declared with `args` and bound to `topic` unless it exists;
    /// one that exists keeps its arguments (an earlier version's work queue
    /// without `x-delivery-limit` too) and is only bound, which changes
    /// nothing when it already is.
    async fn create_missing_queue(
        &self,
        ch: &Channel,
        topic: &str,
        queue: &str,
        args: FieldTable,
    ) -> Result<(), Error> {
        match self.inner.conn.check_exists("queue", queue).await {
            Ok(()) => bind_all(ch, topic, queue).await,
            Err(e) if e.kind() == ErrorKind::NotFound => create_bound_queue(ch, topic, queue, args).await,
            Err(e) => Err(e),
        }
    }
}
