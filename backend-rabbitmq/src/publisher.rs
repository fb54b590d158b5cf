//! Publishing: persistent messages to the topic's exchange, `mandatory` so
//! that a topic without a group is `NotFound` instead of lost, each one
//! confirmed by the broker (publisher confirms). Confirms are pipelined: up
//! to `publish_window` publishes of all callers are in flight at once, and a
//! batch waits for its oldest confirm only when the window is full, so the
//! broker's fsync round trip is paid once per window, not once per batch.

use std::collections::VecDeque;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use tokio::sync::SemaphorePermit;
use transport_core::backend::RawPublish;
use transport_core::{ErrorKind, Message, Result};

use crate::core::{self, err, map_err, Rabbit};

impl Rabbit {
    /// Publish (mandatory, persistent) and wait for the confirm. An
    /// unroutable message (no group subscribed yet) is `NotFound`, not lost.
    pub(crate) async fn send(
        &self,
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
        .map_err(map_err)
    }

    pub(crate) fn confirmed(target: &str, id: &str, c: Confirmation) -> Result<()> {
        match c {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(err(ErrorKind::NotFound, format!("message {id} to {target} was returned unroutable: no group has subscribed to the topic yet (RabbitMQ keeps no messages without a queue)"),
            )),
            Confirmation::Nack(_) => Err(err(ErrorKind::Backend, format!("RabbitMQ refused message {id} (nack)"))
                .with_retryable(true)),
        }
    }

    pub(crate) async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        m: &Message,
        extra: &[(&str, String)],
    ) -> Result<()> {
        let target = if exchange.is_empty() { routing_key } else { exchange };
        self.bounded(async {
            let ch = self.inner.conn.publisher().await?;
            let slot = self.slot(&mut VecDeque::new(), target).await?;
            let confirm = self
                .send(&ch, exchange, routing_key, m, core::properties(m, extra))
                .await?;
            Unconfirmed {
                id: &m.id,
                confirm,
                _slot: slot,
            }
            .settle(target)
            .await
        })
        .await
    }

    /// A slot in the publish window. When the window is full and `mine`
    /// holds some of it, the oldest of `mine` is awaited to free one (a
    /// batch makes room for itself); otherwise it waits for other callers'
    /// confirms.
    async fn slot<'a>(&'a self, mine: &mut VecDeque<Unconfirmed<'_>>, target: &str) -> Result<SemaphorePermit<'a>> {
        let window = &self.inner.conn.window;
        loop {
            if let Ok(permit) = window.try_acquire() {
                return Ok(permit);
            }
            match mine.pop_front() {
                Some(oldest) => oldest.settle(target).await?,
                None => {
                    return window
                        .acquire()
                        .await
                        .map_err(|_| err(ErrorKind::Closed, "the transport is closed"))
                }
            }
        }
    }

    /// `work` within the request timeout; on timeout the connection is
    /// opened again next time (a broker that died may leave it looking open).
    pub(crate) async fn bounded<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
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
                Err(err(ErrorKind::Timeout, format!("no answer from RabbitMQ within {limit:?} (request_timeout_ms); the connection will be opened again"),
                ))
            }
        }
    }
}

impl RawPublish for Rabbit {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.bounded(async {
            let ch = self.inner.conn.publisher().await?;
            self.inner.conn.declare_exchange(&ch, topic).await?;
            // Sent in order on one channel, each taking a window slot; the
            // confirms are collected as the window needs room and at the end.
            let mut unconfirmed = VecDeque::with_capacity(messages.len().min(self.inner.conn.config().publish_window));
            for m in &messages {
                let slot = self.slot(&mut unconfirmed, topic).await?;
                let routing_key = m.key.as_deref().unwrap_or(topic);
                let confirm = self.send(&ch, topic, routing_key, m, core::properties(m, &[])).await?;
                unconfirmed.push_back(Unconfirmed {
                    id: &m.id,
                    confirm,
                    _slot: slot,
                });
            }
            while let Some(oldest) = unconfirmed.pop_front() {
                oldest.settle(topic).await?;
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
    async fn settle(self, target: &str) -> Result<()> {
        let c = self.confirm.await.map_err(map_err)?;
        Rabbit::confirmed(target, self.id, c)
    }
}
