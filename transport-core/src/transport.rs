//! The traits every backend implements. All are object-safe: applications
//! hold an `Arc<dyn Transport>` and swap brokers by URL.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::backlog::Backlog;
use crate::capabilities::Capabilities;
use crate::dead_letter_queue::DeadLetterQueue;
use crate::error::Result;
use crate::message::Message;
use crate::options::SubscribeOptions;
use crate::subscription::Subscription;
use crate::topology::Topology;

/// Publishes messages.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publish one message; returns once the broker has confirmed it is stored
    /// (publisher confirm, `acks=all`, `PubAck` or command reply).
    ///
    /// Errors: `InvalidArgument` for a bad topic name or message,
    /// `MessageTooLarge` over [`Capabilities::max_message_size`].
    async fn publish(&self, topic: &str, message: Message) -> Result<()>;

    /// Publish several messages, keeping the order of messages with the same
    /// key. Returns once all are confirmed. On error, messages before the
    /// failing one may have been published (the error says which failed).
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()>;
}

/// Subscribes to topics.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Subscribe to `topic` in `options.group`. The group is created if it
    /// does not exist, starting at `options.start`; with `provision=false`
    /// in the URL nothing is created, and what is missing is `NotFound`
    /// naming it.
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription>;
}

/// A broker connection: publish, subscribe and manage dead-letter queues.
#[async_trait]
pub trait Transport: Publisher + Subscriber + Debug {
    /// The backend's name (`"memory"`, `"redis"`, `"nats"`, `"rabbitmq"`, ...).
    fn backend(&self) -> &'static str;

    /// What holds on this backend.
    fn capabilities(&self) -> Capabilities;

    /// The dead-letter queue of `options.group` on `topic` (the one
    /// [`SubscribeOptions::dlq_topic`] names).
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>>;

    /// What `options.group` has left to do on `topic`, read from the broker:
    /// messages waiting (consumer lag), in flight, dead-lettered, and the age
    /// of the oldest waiting one. [`Capabilities::backlog`] says how exact
    /// each figure is; those the broker cannot tell are `None`. A group that
    /// does not exist yet has nothing waiting.
    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog>;

    /// What publishing to `topic`, and consuming it as `group` when given,
    /// needs on the broker (streams, groups, queues, exchanges, bindings,
    /// dead-letter queues), with the settings this transport creates them
    /// with. Contacts nothing; `InvalidArgument` for invalid names.
    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<Topology>;

    /// Create what [`topology`](Self::topology) names and the broker lacks,
    /// whatever the URL's `provision` says; an object that exists is left
    /// as it is. For operators who create broker objects ahead of time and
    /// run services with `provision=false` (users that may not declare).
    /// Returns the topology ensured.
    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<Topology>;

    /// Close the connection. Later calls fail with `Closed`.
    async fn close(&self) -> Result<()>;
}
