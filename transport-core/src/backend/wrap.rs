//! The one wrapper every transport is: what happens around each broker call
//! of a [`RawTransport`], written once.
//!
//! Every constructor of every backend (builders and `transport::connect`
//! alike) returns [`transport`]`(raw)`, so no transport can be had without
//! it. Around each call it applies, in this order: the closed guard; name,
//! option, message and size validation (a whole batch before any of it is
//! sent); capability enforcement (no `StartFrom::Earliest` without replay,
//! no dead-letter queue without `dead_letter_ops`); telemetry of publishes
//! (span, metrics, trace context); and error context (the backend and the
//! [`Operation`] on every error). Subscriptions get the rules every backend
//! shares ([`Subscription`]), and each delivery the backend's name for its
//! settlement errors and the capabilities its settlement is held to (no
//! nack delay or extend the backend declared away, no delay over
//! `max_nack_delay`).

use std::borrow::BorrowMut;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use super::lifecycle::Lifecycle;
use super::raw::{RawTransport, SubscribeRequest};
use crate::backlog::Backlog;
use crate::capabilities::Capabilities;
use crate::dead_letter::DeadLetter;
use crate::dead_letter_queue::DeadLetterQueue;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::names::validate_topic;
use crate::operation::Operation;
use crate::options::{StartFrom, SubscribeOptions};
use crate::selection::Selection;
use crate::subscription::Subscription;
use crate::telemetry;
use crate::topology::Topology;
use crate::transport::{Publisher, Subscriber, Transport};

/// The [`Transport`] applications use, over a backend's `raw` calls.
pub fn transport<R: RawTransport>(raw: R) -> Arc<dyn Transport> {
    Arc::new(Wrapped {
        backend: raw.backend(),
        // Read once: what a backend declares is fixed by its configuration,
        // and every publish consults it.
        capabilities: raw.capabilities(),
        raw: Arc::new(raw),
        lifecycle: Arc::new(Lifecycle::new()),
        publish_metrics: telemetry::PublishMetrics::default(),
    })
}

struct Wrapped<R> {
    raw: Arc<R>,
    backend: &'static str,
    capabilities: Capabilities,
    lifecycle: Arc<Lifecycle>,
    publish_metrics: telemetry::PublishMetrics,
}

impl<R: RawTransport> fmt::Debug for Wrapped<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The backend's own Debug, which redacts its secrets.
        self.raw.fmt(f)
    }
}

impl<R: RawTransport> Wrapped<R> {
    fn open(&self, op: Operation) -> Result<()> {
        ensure_open(&self.lifecycle, self.backend, op)
    }

    /// Everything a publish checks before anything reaches the broker.
    fn check_publish(&self, op: Operation, topic: &str, messages: &[Message]) -> Result<()> {
        self.open(op)?;
        validate_topic(topic)?;
        let limit = self.capabilities.max_message_size.unwrap_or(usize::MAX);
        for m in messages {
            m.validate()?;
            m.check_size(limit)?;
        }
        Ok(())
    }

    /// Publish `messages` (a `Vec` or a one-message array) with `raw_send`,
    /// checked and traced.
    async fn send<M, F, Fut>(&self, op: Operation, topic: &str, messages: M, raw_send: F) -> Result<()>
    where
        M: BorrowMut<[Message]>,
        F: FnOnce(M) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        telemetry::traced(
            &self.publish_metrics,
            self.backend,
            op,
            topic,
            messages,
            |messages| async move {
                self.check_publish(op, topic, messages.borrow())?;
                if messages.borrow().is_empty() {
                    return Ok(());
                }
                raw_send(messages).await
            },
        )
        .await
        .map_err(|e| e.in_context(self.backend, op))
    }

    fn check_group(&self, op: Operation, topic: &str, options: &SubscribeOptions) -> Result<()> {
        self.open(op)?;
        options.validate(topic).map_err(|e| e.in_context(self.backend, op))
    }
}

#[async_trait]
impl<R: RawTransport> Publisher for Wrapped<R> {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.send(Operation::Publish, topic, [message], |[message]| {
            self.raw.publish_one(topic, message)
        })
        .await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.send(Operation::PublishBatch, topic, messages, |messages| {
            self.raw.publish(topic, messages)
        })
        .await
    }
}

#[async_trait]
impl<R: RawTransport> Subscriber for Wrapped<R> {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        let op = Operation::Subscribe;
        self.check_group(op, topic, &options)?;
        if options.start == StartFrom::Earliest && !self.capabilities.replay {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "StartFrom::Earliest: this backend keeps no history to replay to a new group; \
                 use StartFrom::Latest (a group receives what is published after it first subscribes)",
            )
            .with_retryable(false)
            .in_context(self.backend, op));
        }
        let group = options.group.clone();
        let request = SubscribeRequest::new(topic, options, self.lifecycle.clone());
        let deliveries = self
            .raw
            .subscribe(request)
            .await
            .map_err(|e| e.in_context(self.backend, op))?;
        Ok(Subscription::new(
            self.backend,
            self.capabilities,
            topic,
            group,
            deliveries,
        ))
    }
}

#[async_trait]
impl<R: RawTransport> Transport for Wrapped<R> {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        let op = Operation::DeadLetters;
        self.check_group(op, topic, options)?;
        if !self.capabilities.dead_letter_ops {
            return Err(Error::unsupported(
                self.backend,
                op,
                "this backend cannot read or move its dead letters",
            ));
        }
        let queue = self
            .raw
            .dead_letters(topic, options)
            .await
            .map_err(|e| e.in_context(self.backend, op))?;
        Ok(Box::new(WrappedDeadLetters {
            queue,
            backend: self.backend,
            lifecycle: self.lifecycle.clone(),
        }))
    }

    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        let op = Operation::Backlog;
        self.check_group(op, topic, options)?;
        self.raw
            .backlog(topic, options)
            .await
            .map_err(|e| e.in_context(self.backend, op))
    }

    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<Topology> {
        let op = Operation::Provision;
        match group {
            Some(options) => options.validate(topic),
            None => validate_topic(topic),
        }
        .map_err(|e| e.in_context(self.backend, op))?;
        Ok(self.raw.topology(topic, group))
    }

    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<Topology> {
        let op = Operation::Provision;
        match group {
            Some(options) => self.check_group(op, topic, options)?,
            None => {
                self.open(op)?;
                validate_topic(topic).map_err(|e| e.in_context(self.backend, op))?;
            }
        }
        self.raw
            .provision(topic, group)
            .await
            .map_err(|e| e.in_context(self.backend, op))
    }

    async fn close(&self) -> Result<()> {
        if !self.lifecycle.close() {
            return Ok(());
        }
        self.raw
            .close()
            .await
            .map_err(|e| e.in_context(self.backend, Operation::Close))
    }
}

/// A backend's dead-letter queue with the closed guard and error context.
struct WrappedDeadLetters {
    queue: Box<dyn DeadLetterQueue>,
    backend: &'static str,
    lifecycle: Arc<Lifecycle>,
}

impl WrappedDeadLetters {
    fn context(&self, op: Operation) -> impl Fn(Error) -> Error {
        let backend = self.backend;
        move |e| e.in_context(backend, op)
    }

    fn open(&self, op: Operation) -> Result<()> {
        ensure_open(&self.lifecycle, self.backend, op)
    }
}

/// `Closed` once the transport was closed: every call after `close` fails.
fn ensure_open(lifecycle: &Lifecycle, backend: &'static str, op: Operation) -> Result<()> {
    if lifecycle.is_closed() {
        return Err(Error::new(ErrorKind::Closed, "the transport was closed").in_context(backend, op));
    }
    Ok(())
}

#[async_trait]
impl DeadLetterQueue for WrappedDeadLetters {
    fn topic(&self) -> &str {
        self.queue.topic()
    }

    async fn depth(&self) -> Result<u64> {
        let op = Operation::Depth;
        self.open(op)?;
        self.queue.depth().await.map_err(self.context(op))
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let op = Operation::Peek;
        self.open(op)?;
        self.queue.peek(n).await.map_err(self.context(op))
    }

    async fn redrive(&self, selection: &Selection) -> Result<u64> {
        let op = Operation::Redrive;
        self.open(op)?;
        self.queue.redrive(selection).await.map_err(self.context(op))
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        let op = Operation::Discard;
        self.open(op)?;
        self.queue.discard(selection).await.map_err(self.context(op))
    }
}
