//! Publishing: one message (SNS `Publish` or SQS `SendMessage`) and batches
//! of up to 10 (`PublishBatch` / `SendMessageBatch`), with the lossless
//! attribute mapping of `core::Wire`.

use std::collections::HashMap;

use transport_core::backend::RawPublish;
use transport_core::{ErrorKind, Message, Result};

use crate::core::{self, err, map_sdk, Sqs, Wire};

pub(crate) fn sqs_attrs(w: &Wire) -> HashMap<String, aws_sdk_sqs::types::MessageAttributeValue> {
    w.attributes
        .iter()
        .filter_map(|(k, v)| {
            let value = aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .ok()?;
            Some((k.clone(), value))
        })
        .collect()
}

pub(crate) fn sns_attrs(w: &Wire) -> HashMap<String, aws_sdk_sns::types::MessageAttributeValue> {
    w.attributes
        .iter()
        .filter_map(|(k, v)| {
            let value = aws_sdk_sns::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .ok()?;
            Some((k.clone(), value))
        })
        .collect()
}

impl Sqs {
    /// A message encoded for the wire, within SQS's 256 KiB. The message
    /// itself was checked by the core's wrapper when it was published (dead
    /// letters and redrives carry one that was).
    pub(crate) fn wire(&self, m: &Message, extra: &[(&str, String)]) -> Result<Wire> {
        let w = core::encode(m, extra);
        if w.size() > core::WIRE_LIMIT {
            return Err(err(
                ErrorKind::MessageTooLarge,
                format!("message {} is {} bytes on the wire, SQS takes 256 KiB", m.id, w.size()),
            ));
        }
        Ok(w)
    }

    /// Send straight to a queue (dead letters, redrives).
    pub(crate) async fn send_to_queue(&self, url: &str, m: &Message, dedup: &str) -> Result<()> {
        let w = self.wire(m, &[])?;
        let mut req = self
            .inner
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(w.body.clone())
            .set_message_attributes(Some(sqs_attrs(&w)));
        if self.fifo() {
            req = req.message_group_id(core::group_id(m)).message_deduplication_id(dedup);
        }
        req.send().await.map_err(map_sdk)?;
        Ok(())
    }
}

impl RawPublish for Sqs {
    async fn publish(&self, topic: &str, mut messages: Vec<Message>) -> Result<()> {
        if messages.len() == 1 {
            let message = messages.pop().expect("one message");
            return self.publish_one(topic, message).await;
        }
        self.publish_many(topic, messages).await
    }
}

impl Sqs {
    async fn publish_one(&self, topic: &str, message: Message) -> Result<()> {
        if self.point_to_point() {
            let url = self.topic_queue(topic).await?;
            return self.send_to_queue(&url, &message, &message.id).await;
        }
        let w = self.wire(&message, &[])?;
        let arn = self.topic_arn(topic).await?;
        let mut req = self
            .inner
            .sns
            .publish()
            .topic_arn(arn)
            .message(w.body.clone())
            .set_message_attributes(Some(sns_attrs(&w)));
        if self.fifo() {
            req = req
                .message_group_id(core::group_id(&message))
                .message_deduplication_id(&message.id);
        }
        req.send().await.map_err(map_sdk)?;
        Ok(())
    }

    async fn publish_many(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let wires = messages.iter().map(|m| self.wire(m, &[])).collect::<Result<Vec<_>>>()?;
        let target = match self.point_to_point() {
            true => Target::Queue(self.topic_queue(topic).await?),
            false => Target::Topic(self.topic_arn(topic).await?),
        };
        // Chunks of 10 (the SNS and SQS limit), in order; failed entries are
        // retried once, and what still fails is reported by id, never
        // dropped silently.
        for (chunk_m, chunk_w) in messages.chunks(10).zip(wires.chunks(10)) {
            let mut pending: Vec<usize> = (0..chunk_m.len()).collect();
            for round in 0..2 {
                let failed = match &target {
                    Target::Topic(arn) => self.sns_batch(arn, chunk_m, chunk_w, &pending).await?,
                    Target::Queue(url) => self.sqs_batch(url, chunk_m, chunk_w, &pending).await?,
                };
                if failed.is_empty() {
                    break;
                }
                if round == 1 {
                    let list: Vec<String> = failed
                        .iter()
                        .map(|(i, why)| format!("{} ({why})", chunk_m[*i].id))
                        .collect();
                    return Err(err(
                        ErrorKind::PartialFailure,
                        format!("not published: {}", list.join(", ")),
                    ));
                }
                pending = failed.into_iter().map(|(i, _)| i).collect();
            }
        }
        Ok(())
    }
}

/// Where a batch goes.
pub(crate) enum Target {
    /// An SNS topic ARN (fan-out mode).
    Topic(String),
    /// An SQS queue URL (point-to-point mode).
    Queue(String),
}

impl Sqs {
    /// One `PublishBatch` of the `pending` entries of a chunk; the entries
    /// that failed, with why.
    pub(crate) async fn sns_batch(
        &self,
        arn: &str,
        messages: &[Message],
        wires: &[Wire],
        pending: &[usize],
    ) -> Result<Vec<(usize, String)>> {
        let entries = pending
            .iter()
            .map(|&i| {
                let (m, w) = (&messages[i], &wires[i]);
                let mut e = aws_sdk_sns::types::PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(w.body.clone())
                    .set_message_attributes(Some(sns_attrs(w)));
                if self.fifo() {
                    e = e.message_group_id(core::group_id(m)).message_deduplication_id(&m.id);
                }
                e.build().map_err(|e| err(ErrorKind::InvalidArgument, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .inner
            .sns
            .publish_batch()
            .topic_arn(arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await
            .map_err(map_sdk)?;
        Ok(failed_entries(out.failed()))
    }

    /// One `SendMessageBatch` of the `pending` entries of a chunk; the
    /// entries that failed, with why.
    pub(crate) async fn sqs_batch(
        &self,
        url: &str,
        messages: &[Message],
        wires: &[Wire],
        pending: &[usize],
    ) -> Result<Vec<(usize, String)>> {
        let entries = pending
            .iter()
            .map(|&i| {
                let (m, w) = (&messages[i], &wires[i]);
                let mut e = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(w.body.clone())
                    .set_message_attributes(Some(sqs_attrs(w)));
                if self.fifo() {
                    e = e.message_group_id(core::group_id(m)).message_deduplication_id(&m.id);
                }
                e.build().map_err(|e| err(ErrorKind::InvalidArgument, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .inner
            .sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(map_sdk)?;
        Ok(failed_entries(out.failed()))
    }
}

/// A failed entry of either batch API (each SDK has its own type): its
/// position in the chunk, and why.
trait FailedEntry {
    fn position(&self) -> Option<usize>;
    fn why(&self) -> String;
}

impl FailedEntry for aws_sdk_sns::types::BatchResultErrorEntry {
    fn position(&self) -> Option<usize> {
        self.id().parse().ok()
    }
    fn why(&self) -> String {
        format!("{}: {}", self.code(), self.message().unwrap_or(""))
    }
}

impl FailedEntry for aws_sdk_sqs::types::BatchResultErrorEntry {
    fn position(&self) -> Option<usize> {
        self.id().parse().ok()
    }
    fn why(&self) -> String {
        format!("{}: {}", self.code(), self.message().unwrap_or(""))
    }
}

/// The entries of a batch that failed, by position in the chunk.
fn failed_entries(failed: &[impl FailedEntry]) -> Vec<(usize, String)> {
    failed.iter().filter_map(|f| Some((f.position()?, f.why()))).collect()
}
