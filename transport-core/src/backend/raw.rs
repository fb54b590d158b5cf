//! What a backend implements: the broker calls and nothing around them.
//!
//! A backend implements [`RawTransport`] and the narrow traits it is made
//! of, one per concern ([`RawPublish`], [`RawSubscribe`],
//! [`RawDeadLetters`], [`RawBacklog`]), and, for what it hands out,
//! [`Settler`](crate::backend::Settler) and
//! [`DeadLetterQueue`](crate::DeadLetterQueue); [`transport`](crate::backend::transport)
//! wraps it into the [`Transport`](crate::Transport) applications use. The
//! wrapper does, once for every backend, what would otherwise be written in
//! each: the closed guard, name, size and header validation, capability
//! enforcement, error context (backend and [`Operation`](crate::Operation)),
//! the rules every subscription shares, and telemetry. So a raw method is
//! only called with valid input on an open transport, and its errors need no
//! tagging.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::lifecycle::Lifecycle;
use crate::backlog::Backlog;
use crate::capabilities::Capabilities;
use crate::dead_letter_queue::DeadLetterQueue;
use crate::delivery::Delivery;
use crate::delivery_info::DeliveryInfo;
use crate::error::Result;
use crate::message::Message;
use crate::options::SubscribeOptions;
use crate::topology::Topology;

/// The deliveries a backend's subscription reads, before the rules every
/// backend shares are applied.
pub type Deliveries = BoxStream<'static, Result<Delivery>>;

/// Storing messages: a backend's `publisher.rs`.
///
/// Not an `async_trait`: the wrapper calls it through its generic type, so
/// the call's future needs no box of its own (one allocation less on every
/// publish). Implement it as `async fn publish(...)`.
pub trait RawPublish: Send + Sync {
    /// Store `messages` on `topic` in their order and return once the broker
    /// confirmed all of them. The topic name is valid, the batch is not
    /// empty and every message is valid and within the size limit.
    fn publish(&self, topic: &str, messages: Vec<Message>) -> impl Future<Output = Result<()>> + Send;

    /// Store one message, as [`publish`](Self::publish) of a batch of one.
    /// The default builds that batch; a backend whose broker takes single
    /// messages as cheaply overrides it and saves the allocation.
    fn publish_one(&self, topic: &str, message: Message) -> impl Future<Output = Result<()>> + Send {
        self.publish(topic, vec![message])
    }
}

/// Reading a group: a backend's `subscriber.rs`.
#[async_trait]
pub trait RawSubscribe: Send + Sync {
    /// Read `request.topic()` in `request.group()`, creating what the broker
    /// needs (provisioning). Names and options are valid; the stream ends
    /// once [`SubscribeRequest::is_closed`] says so.
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries>;
}

/// Opening a group's dead-letter queue: a backend's `dead_letter_queue.rs`.
#[async_trait]
pub trait RawDeadLetters: Send + Sync {
    /// The dead-letter queue of `options.group` on `topic` (named
    /// [`SubscribeOptions::dlq_topic`]). Names are valid.
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>>;
}

/// Reading what a group has left: a backend's `backlog.rs`.
#[async_trait]
pub trait RawBacklog: Send + Sync {
    /// What `options.group` has left to do on `topic` (see
    /// [`Transport::backlog`](crate::Transport::backlog)). Names are valid.
    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog>;
}

/// The broker objects of a topic and a group: a backend's `provision.rs`.
#[async_trait]
pub trait RawProvision: Send + Sync {
    /// What `topic` (and `group`'s subscription, when given) needs on the
    /// broker, named as the backend names it. Names are valid.
    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Topology;

    /// Create what [`topology`](Self::topology) names and is missing,
    /// whether or not this transport provisions on its own. Names are valid.
    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<Topology>;
}

/// A broker, as a backend implements it: one narrow trait per concern, each
/// implemented in the file of that concern, and this one (in `backend.rs`)
/// for what describes the whole. Applications never see it: they get a
/// [`Transport`](crate::Transport) from [`transport`](crate::backend::transport).
#[async_trait]
pub trait RawTransport:
    RawPublish + RawSubscribe + RawDeadLetters + RawBacklog + RawProvision + Debug + 'static
{
    /// The backend's name (`"memory"`, `"redis"`, ...): errors, spans and
    /// metrics carry it.
    fn backend(&self) -> &'static str;

    /// What holds on this backend. The wrapper enforces what it can: a
    /// message over `max_message_size` never reaches
    /// [`publish`](RawPublish::publish), a backend without `replay` never
    /// sees `StartFrom::Earliest`, one without `dead_letter_ops` is never
    /// asked for a dead-letter queue.
    fn capabilities(&self) -> Capabilities;

    /// Release the connection. Called once; the wrapper has already marked
    /// the transport closed, so open subscriptions end and later calls fail.
    async fn close(&self) -> Result<()>;
}

/// What the wrapper hands a backend's [`RawSubscribe::subscribe`]: the
/// validated topic and options, whether the transport was closed, and the
/// one way to describe a delivery.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    topic: Arc<str>,
    group: Arc<str>,
    options: SubscribeOptions,
    lifecycle: Arc<Lifecycle>,
}

impl SubscribeRequest {
    pub(crate) fn new(topic: &str, options: SubscribeOptions, lifecycle: Arc<Lifecycle>) -> Self {
        SubscribeRequest {
            topic: Arc::from(topic),
            group: Arc::from(options.group.as_str()),
            options,
            lifecycle,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The subscription's options.
    pub fn options(&self) -> &SubscribeOptions {
        &self.options
    }

    /// The dead-letter topic of this group ([`SubscribeOptions::dlq_topic`]).
    pub fn dlq_topic(&self) -> String {
        self.options.dlq_topic(&self.topic)
    }

    /// Whether the transport was closed: a read loop ends then.
    pub fn is_closed(&self) -> bool {
        self.lifecycle.is_closed()
    }

    /// The transport's closed flag, for read loops that outlive the request.
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        self.lifecycle.clone()
    }

    /// What a delivery of this subscription at `attempt` says about itself
    /// (`first_failure` where the backend records it). Its id is stable; a
    /// backend that hands out a message without one sets
    /// [`DeliveryInfo::stable_id`] to false.
    pub fn info(&self, attempt: u32, first_failure: Option<SystemTime>) -> DeliveryInfo {
        DeliveryInfo {
            topic: self.topic.clone(),
            group: self.group.clone(),
            attempt,
            max_attempts: self.options.dead_letter.max_attempts,
            first_failure,
            ack_timeout: self.options.ack_timeout,
            stable_id: true,
        }
    }
}
