//! Publishing: one `PubAck` per message, `Nats-Msg-Id` set to the message
//! id (unless `dedup` is off) so the stream's duplicate window absorbs
//! retries.

use transport_core::backend::RawPublish;
use transport_core::{ErrorKind, Message, Result};

use crate::core::{self, err, other, Nats};

impl Nats {
    /// What NATS refuses beyond the core's checks: header names and values
    /// it cannot carry.
    fn check_headers(messages: &[Message]) -> Result<()> {
        messages.iter().try_for_each(core::check_headers)
    }

    /// Publish and wait for the `PubAck`; (re)creates the stream when missing.
    pub(crate) async fn send_one(&self, topic: &str, m: &Message, dedup: bool) -> Result<()> {
        if !self.stream_known(topic) {
            self.ensure_stream(topic).await?;
        }
        for attempt in 0..2 {
            let send = async {
                let sent = self
                    .inner
                    .js
                    .publish_with_headers(topic.to_owned(), core::encode(m, dedup), m.payload.clone())
                    .await;
                Ok(match sent {
                    Ok(ack) => ack.await.map(drop),
                    Err(e) => Err(e),
                })
            };
            let result = self.refusable(|s| s == topic, send).await?;
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    use async_nats::jetstream::context::PublishErrorKind as K;
                    let kind = match e.kind() {
                        K::StreamNotFound if attempt == 0 => {
                            // Deleted behind our back: declare it again.
                            self.forget_stream(topic);
                            self.ensure_stream(topic).await?;
                            continue;
                        }
                        K::StreamNotFound => ErrorKind::NotFound,
                        K::TimedOut => ErrorKind::Timeout,
                        K::BrokenPipe => ErrorKind::ConnectionLost,
                        K::MaxPayloadExceeded => ErrorKind::MessageTooLarge,
                        _ => ErrorKind::Backend,
                    };
                    return Err(err(kind, e));
                }
            }
        }
        unreachable!("the loop returns")
    }
}

impl RawPublish for Nats {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        Self::check_headers(&messages)?;
        let dedup = self.inner.config.dedup;
        if let [message] = messages.as_slice() {
            return self.send_one(topic, message, dedup).await;
        }
        if !self.stream_known(topic) {
            self.ensure_stream(topic).await?;
        }
        self.refusable(|s| s == topic, self.send_batch(topic, &messages, dedup))
            .await
    }

    async fn publish_one(&self, topic: &str, message: Message) -> Result<()> {
        core::check_headers(&message)?;
        self.send_one(topic, &message, self.inner.config.dedup).await
    }
}

impl Nats {
    /// Send all, then wait for every `PubAck`: one connection keeps the order.
    async fn send_batch(&self, topic: &str, messages: &[Message], dedup: bool) -> Result<()> {
        let mut acks = Vec::with_capacity(messages.len());
        for m in messages {
            let ack = self
                .inner
                .js
                .publish_with_headers(topic.to_owned(), core::encode(m, dedup), m.payload.clone())
                .await
                .map_err(other)?;
            acks.push((m.id.clone(), ack));
        }
        for (id, ack) in acks {
            ack.await
                .map_err(|e| other(format!("message {id} was not confirmed: {e}")))?;
        }
        Ok(())
    }
}
