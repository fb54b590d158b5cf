//! Publishing: the idempotent producer (`acks=all`), every delivery report
//! awaited; batches enqueued in order, then all reports awaited.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use transport_core::backend::RawPublish;
use transport_core::{Error, ErrorKind, Message, Result};

use crate::core::Kafka;
use crate::core::{self, err, kafka};

impl Kafka {
    pub(crate) fn record<'a>(topic: &'a str, m: &'a Message) -> FutureRecord<'a, str, [u8]> {
        let mut r = FutureRecord::to(topic).headers(core::encode_headers(m));
        if !core::is_tombstone(m) {
            r = r.payload(m.payload.as_ref());
        }
        if let Some(k) = &m.key {
            r = r.key(k.as_str());
        }
        r
    }

    pub(crate) fn delivery_error(&self, e: KafkaError) -> Error {
        if let Some(why) = self.inner.context.auth_failure() {
            return err(ErrorKind::Unauthorized, why);
        }
        kafka(e)
    }

    /// Publish one message and wait for its delivery report (no checks:
    /// callers validated it; dead-letter copies may carry more headers).
    pub(crate) async fn produce(&self, topic: &str, m: &Message) -> Result<()> {
        self.ensure_topic(topic, self.inner.config.partitions).await?;
        self.inner
            .producer
            .send(
                Self::record(topic, m),
                Timeout::After(self.inner.config.publish_timeout),
            )
            .await
            .map(drop)
            .map_err(|(e, _)| self.delivery_error(e))
    }
}

impl RawPublish for Kafka {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        if let [message] = messages.as_slice() {
            return self.produce(topic, message).await;
        }
        self.ensure_topic(topic, self.inner.config.partitions).await?;
        // Enqueue in order (librdkafka keeps the order per partition, and
        // idempotence keeps it across retries), then await every report.
        let mut reports = Vec::with_capacity(messages.len());
        for m in &messages {
            let mut record = Self::record(topic, m);
            loop {
                match self.inner.producer.send_result(record) {
                    Ok(report) => {
                        reports.push(report);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.inner.producer.poll(Duration::from_millis(1));
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        reports.truncate(0);
                        return Err(self.delivery_error(e));
                    }
                }
            }
        }
        let mut failed = Vec::new();
        let mut first_kind = None;
        for (m, report) in messages.iter().zip(reports) {
            let outcome = match report.await {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => Some(self.delivery_error(e)),
                Err(_) => Some(err(ErrorKind::ConnectionLost, "the producer went away")),
            };
            if let Some(e) = outcome {
                first_kind.get_or_insert(e.kind());
                failed.push(format!("{} ({e})", m.id));
            }
        }
        match (failed.len(), first_kind) {
            (0, _) => Ok(()),
            (n, Some(kind)) if n == messages.len() => {
                Err(err(kind, format!("no message was published: {}", failed.join(", "))))
            }
            _ => Err(err(
                ErrorKind::PartialFailure,
                format!("not published: {}", failed.join(", ")),
            )),
        }
    }
}
