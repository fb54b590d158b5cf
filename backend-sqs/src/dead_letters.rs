//! A group's dead-letter queue: depth, peek, redrive and purge.

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::headers::{DLQ_GROUP, REDRIVE_COUNT};
use transport_core::{DeadLetter, DeadLetterQueue, Error, Message, Publisher, Redrive, Result, Selection};

use crate::backend::{tag, SqsTransport, DLQ_SCAN};
use crate::core::{self, map_sdk};
use crate::deletes::{self};
use crate::subscriber::{attributes_of, system};

/// A group's dead-letter queue.
pub(crate) struct SqsDeadLetters {
    pub(crate) transport: SqsTransport,
    pub(crate) topic: String,
    pub(crate) queue_name: String,
}

impl SqsDeadLetters {
    async fn url(&self, op: &'static str) -> Result<String> {
        Ok(self
            .transport
            .queue(&self.queue_name, &self.transport.fifo_attrs(), op)
            .await?
            .0)
    }

    /// Receive (and hide) up to `DLQ_SCAN` messages, oldest first by
    /// `SentTimestamp`, since a standard queue hands them out in any order.
    async fn scan(&self, url: &str, op: &'static str) -> Result<Vec<aws_sdk_sqs::types::Message>> {
        let sqs = &self.transport.inner.sqs;
        let mut all = Vec::new();
        while all.len() < DLQ_SCAN {
            let out = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .wait_time_seconds(if all.is_empty() { 1 } else { 0 })
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| map_sdk(op, e))?;
            let got = out.messages.unwrap_or_default();
            if got.is_empty() {
                break;
            }
            all.extend(got);
        }
        all.sort_by_key(|m| system(m, MessageSystemAttributeName::SentTimestamp).unwrap_or(u64::MAX));
        Ok(all)
    }

    /// Redrive (or with `redrive` false, drop) each of `picked`, oldest
    /// first, then delete it; make `rest`, and whatever was not taken after
    /// an error, visible again.
    async fn take_all(
        &self,
        op: &'static str,
        url: &str,
        picked: &[aws_sdk_sqs::types::Message],
        rest: &[aws_sdk_sqs::types::Message],
        redrive: bool,
    ) -> Result<u64> {
        self.release(url, rest).await;
        let mut done = 0;
        let result = async {
            for m in picked {
                if redrive {
                    let dead = core::decode(m.body().unwrap_or(""), &attributes_of(m), m.message_id().unwrap_or(""));
                    self.redrive_one(op, dead).await?;
                }
                self.transport
                    .inner
                    .sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| map_sdk(op, e))?;
                done += 1;
            }
            Ok::<_, Error>(())
        }
        .await;
        self.release(url, &picked[done..]).await;
        result.map(|()| done as u64)
    }

    /// Send a dead letter back for the group that failed it.
    async fn redrive_one(&self, op: &'static str, dead: Message) -> Result<()> {
        let (topic, message) = redrive_message(&dead).map_err(tag(op))?;
        validate_topic(&topic).map_err(tag(op))?;
        let dedup = format!("{}-r{}", message.id, message.headers.get(REDRIVE_COUNT).unwrap_or("1"));
        match dead.headers.get(DLQ_GROUP) {
            // Straight into the failing group's queue: other groups never see it.
            Some(group) => {
                let c = &self.transport.inner.config;
                let name = match c.point_to_point {
                    true => core::topic_queue_name(c, &topic),
                    false => core::group_queue_name(c, &topic, group),
                };
                let (target, _) = self.transport.queue(&name, &self.transport.fifo_attrs(), op).await?;
                self.transport.send_to_queue(&target, &message, &dedup, op).await
            }
            None => self.transport.publish(&topic, message).await,
        }
    }

    /// Redrive or delete what `selection` picks among the scanned messages.
    async fn take_selected(&self, op: &'static str, selection: &Selection, redrive: bool) -> Result<u64> {
        let url = self.url(op).await?;
        let all = self.scan(&url, op).await?;
        let (picked, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|m| {
            let dead = core::decode(m.body().unwrap_or(""), &attributes_of(m), m.message_id().unwrap_or(""));
            selection.matches(&DeadLetter::from_message(dead))
        });
        self.take_all(op, &url, &picked, &rest, redrive).await
    }

    async fn release(&self, url: &str, messages: &[aws_sdk_sqs::types::Message]) {
        for m in messages {
            let _ = self
                .transport
                .inner
                .sqs
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .visibility_timeout(0)
                .send()
                .await;
        }
    }
}

#[async_trait]
impl DeadLetterQueue for SqsDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        let url = self.url("depth").await?;
        let out = self
            .transport
            .inner
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| map_sdk("depth", e))?;
        let a = out.attributes();
        let get = |k: QueueAttributeName| {
            a.and_then(|a| a.get(&k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(get(QueueAttributeName::ApproximateNumberOfMessages)
            + get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let url = self.url("peek").await?;
        let all = self.scan(&url, "peek").await?;
        let out = all
            .iter()
            .take(n)
            .map(|m| {
                DeadLetter::from_message(core::decode(
                    m.body().unwrap_or(""),
                    &attributes_of(m),
                    m.message_id().unwrap_or(""),
                ))
            })
            .collect();
        self.release(&url, &all).await;
        Ok(out)
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let op = "redrive";
        let url = self.url(op).await?;
        let all = self.scan(&url, op).await?;
        let take = usize::try_from(count.limit()).unwrap_or(usize::MAX).min(all.len());
        let (picked, rest) = all.split_at(take);
        self.take_all(op, &url, picked, rest, true).await
    }

    async fn redrive_selected(&self, selection: &Selection) -> Result<u64> {
        self.take_selected("redrive", selection, true).await
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        self.take_selected("discard", selection, false).await
    }

    async fn purge(&self) -> Result<u64> {
        // Receive-and-delete rather than PurgeQueue: it reports how many,
        // and has no once-a-minute limit.
        let url = self.url("purge").await?;
        let all = self.scan(&url, "purge").await?;
        let receipts: Vec<&str> = all.iter().map(|m| m.receipt_handle().unwrap_or_default()).collect();
        deletes::delete_all(&self.transport.inner.sqs, &url, &receipts, "purge").await?;
        Ok(all.len() as u64)
    }
}
