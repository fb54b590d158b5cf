//! Publishing: persistent messages to the topic's exchange, `mandatory` so
//! that a topic without a group is `NotFound` instead of lost, each one
//! confirmed by the broker (publisher confirms). Confirms are pipelined: up
//! to `publish_window` publishes of all callers are in flight at once, and a
//! batch waits for its oldest confirm only when the window is full, so the
//! broker's fsync round trip is paid once per window, not once per batch.

use std::collections::VecDeque;

use async_trait::async_trait;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use tokio::sync::SemaphorePermit;
use transport_core::{ErrorKind, Message, Publisher, Result};

use crate::backend::RabbitTransport;
use crate::core::{self, err, map_err};

impl RabbitTransport {
    /// Everything a publish checks before it reaches the broker.
    pub(crate) fn check_publish(&self, op: &'static str, topic: &str, messages: &[Message]) -> Result<()> {
        self.inner
            .lifecycle
            .check_publish(op, topic, messages, self.inner.conn.config().max_message_size)?;
        Ok(())
    }

    /// Publish (mandatory, persistent) and wait for the confirm. An
    /// unroutable message (no group subscribed yet) is `NotFound`, not lost.
    pub(crate) async fn send(
        &self,
        op: &'static str,
        ch: &Channel,
        exchange: &str,
        routing_key: &str,
        m: &Message,
        props: BasicProperties,
    ) -> Result<lapin::PublisherConfirm> {
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &m.payload,
            props,
        )
        .await
        .map_err(|e| map_err(op, e))
    }

    pub(crate) fn confirmed(op: &'static str, target: &str, id: &str, c: Confirmation) -> Result<()> {
        match c {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(err(
                ErrorKind::NotFound,
                op,
                format!("message {id} to {target} was returned unroutable: no group has subscribed to the topic yet (RabbitMQ keeps no messages without a queue)"),
            )),
            Confirmation::Nack(_) => Err(err(ErrorKind::Backend, op, format!("RabbitMQ refused message {id} (nack)"))
                .with_retryable(true)),
        }
    }

    pub(crate) async fn publish_to(
        &self,
        op: &'static str,
        exchange: &str,
        routing_key: &str,
        m: &Message,
        extra: &[(&str, String)],
    ) -> Result<()> {
        let target = if exchange.is_empty() { routing_key } else { exchange };
        self.bounded(op, async {
            let ch = self.inner.conn.publisher().await?;
            let slot = self.slot(&mut VecDeque::new(), op, target).await?;
            let confirm = self
                .send(op, &ch, exchange, routing_key, m, core::properties(m, extra))
                .await?;
            Unconfirmed {
                id: &m.id,
                confirm,
                _slot: slot,
            }
            .settle(op, target)
            .await
        })
        .await
    }

    /// A slot in the publish window. When the window is full and `mine`
    /// holds some of it, the oldest of `mine` is awaited to free one (a
    /// batch makes room for itself); otherwise it waits for other callers'
    /// confirms.
    async fn slot<'a>(
        &'a self,
        mine: &mut VecDeque<Unconfirmed<'_>>,
        op: &'static str,
        target: &str,
    ) -> Result<SemaphorePermit<'a>> {
        let window = &self.inner.conn.window;
        loop {
            if let Ok(permit) = window.try_acquire() {
                return Ok(permit);
            }
            match mine.pop_front() {
                Some(oldest) => oldest.settle(op, target).await?,
                None => {
                    return window
                        .acquire()
                        .await
                        .map_err(|_| err(ErrorKind::Closed, op, "the transport is closed"))
                }
            }
        }
    }

    /// `work` within the request timeout; on timeout the connection is
    /// opened again next time (a broker that died may leave it looking open).
    pub(crate) async fn bounded<T>(
        &self,
        op: &'static str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = self.inner.conn.config().request_timeout;
        match tokio::time::timeout(limit, work).await {
            Ok(Err(e)) if e.kind() == ErrorKind::Backend && e.is_retryable() => {
                // Refused (nack): see `renew_publisher`. In the background,
                // like the reset below.
                let inner = self.inner.clone();
                tokio::spawn(async move { inner.conn.renew_publisher().await });
                Err(e)
            }
            Ok(result) => result,
            Err(_) => {
                // In the background: a reconnect elsewhere may hold the
                // connection lock for up to the connect timeout, and this
                // error must not wait for it.
                let inner = self.inner.clone();
                tokio::spawn(async move { inner.conn.reset().await });
                Err(err(
                    ErrorKind::Timeout,
                    op,
                    format!("no answer from RabbitMQ within {limit:?} (request_timeout_ms); the connection will be opened again"),
                ))
            }
        }
    }
}

#[async_trait]
impl Publisher for RabbitTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.publish_batch_inner("publish", topic, vec![message]).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.publish_batch_inner("publish_batch", topic, messages).await
    }
}

impl RabbitTransport {
    async fn publish_batch_inner(&self, op: &'static str, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.check_publish(op, topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        self.bounded(op, async {
            let ch = self.inner.conn.publisher().await?;
            self.inner.conn.declare_exchange(&ch, topic, op).await?;
            // Sent in order on one channel, each taking a window slot; the
            // confirms are collected as the window needs room and at the end.
            let mut unconfirmed = VecDeque::with_capacity(messages.len().min(self.inner.conn.config().publish_window));
            for m in &messages {
                let slot = self.slot(&mut unconfirmed, op, topic).await?;
                let routing_key = m.key.as_deref().unwrap_or(topic);
                let confirm = self
                    .send(op, &ch, topic, routing_key, m, core::properties(m, &[]))
                    .await?;
                unconfirmed.push_back(Unconfirmed {
                    id: &m.id,
                    confirm,
                    _slot: slot,
                });
            }
            while let Some(oldest) = unconfirmed.pop_front() {
                oldest.settle(op, topic).await?;
            }
            Ok(())
        })
        .await
    }
}

/// A publish waiting for its confirm; its window slot is freed when it is
/// settled or dropped (a failed batch drops the rest).
struct Unconfirmed<'a> {
    id: &'a str,
    confirm: PublisherConfirm,
    _slot: SemaphorePermit<'a>,
}

impl Unconfirmed<'_> {
    async fn settle(self, op: &'static str, target: &str) -> Result<()> {
        let c = self.confirm.await.map_err(|e| map_err(op, e))?;
        RabbitTransport::confirmed(op, target, self.id, c)
    }
}
