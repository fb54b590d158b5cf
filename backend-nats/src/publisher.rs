//! Publishing: one `PubAck` per message, `Nats-Msg-Id` set to the message
//! id so the stream's duplicate window absorbs retries.

use async_trait::async_trait;
use transport_core::{ErrorKind, Message, Publisher, Result};

use crate::backend::{tag, NatsTransport};
use crate::core::{self, err, other};

impl NatsTransport {
    /// Everything a publish checks before it reaches the broker.
    pub(crate) fn check_publish(&self, op: &'static str, topic: &str, messages: &[Message]) -> Result<()> {
        self.inner
            .lifecycle
            .check_publish(op, topic, messages, self.inner.max_message_size)?;
        for m in messages {
            core::check_headers(m).map_err(tag(op))?;
        }
        Ok(())
    }

    /// Publish and wait for the `PubAck`; (re)creates the stream when missing.
    pub(crate) async fn publish_one(&self, op: &'static str, topic: &str, m: &Message, dedup: bool) -> Result<()> {
        if !self.stream_known(topic) {
            self.ensure_stream(topic, op).await?;
        }
        for attempt in 0..2 {
            let sent = self
                .inner
                .js
                .publish_with_headers(topic.to_owned(), core::encode(m, dedup), m.payload.clone())
                .await;
            let result = match sent {
                Ok(ack) => ack.await.map(drop),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    use async_nats::jetstream::context::PublishErrorKind as K;
                    let kind = match e.kind() {
                        K::StreamNotFound if attempt == 0 => {
                            // Deleted behind our back: declare it again.
                            self.forget_stream(topic);
                            self.ensure_stream(topic, op).await?;
                            continue;
                        }
                        K::StreamNotFound => ErrorKind::NotFound,
                        K::TimedOut => ErrorKind::Timeout,
                        K::BrokenPipe => ErrorKind::ConnectionLost,
                        K::MaxPayloadExceeded => ErrorKind::MessageTooLarge,
                        _ => ErrorKind::Backend,
                    };
                    return Err(err(kind, op, e));
                }
            }
        }
        unreachable!("the loop returns")
    }
}

#[async_trait]
impl Publisher for NatsTransport {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.check_publish("publish", topic, std::slice::from_ref(&message))?;
        self.publish_one("publish", topic, &message, true).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let op = "publish_batch";
        self.check_publish(op, topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        if !self.stream_known(topic) {
            self.ensure_stream(topic, op).await?;
        }
        // Send all, then wait for every PubAck: one connection keeps the order.
        let mut acks = Vec::with_capacity(messages.len());
        for m in &messages {
            let ack = self
                .inner
                .js
                .publish_with_headers(topic.to_owned(), core::encode(m, true), m.payload.clone())
                .await
                .map_err(|e| other(op, e))?;
            acks.push((m.id.clone(), ack));
        }
        for (id, ack) in acks {
            ack.await
                .map_err(|e| other(op, format!("message {id} was not confirmed: {e}")))?;
        }
        Ok(())
    }
}
