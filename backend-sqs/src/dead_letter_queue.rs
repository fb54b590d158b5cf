//! A group's dead-letter queue: depth, peek, redrive and discard by selection.

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use transport_core::backend::redrive_message;
use transport_core::backend::{RawDeadLetters, RawPublish};
use transport_core::headers::{DLQ_GROUP, REDRIVE_COUNT};
use transport_core::{DeadLetter, DeadLetterQueue, Error, Message, Result, Selection, SubscribeOptions};

use crate::core::{self, map_sdk, system, Sqs, DLQ_SCAN};
use crate::deletes;
use crate::names;

#[async_trait]
impl RawDeadLetters for Sqs {
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        Ok(Box::new(SqsDeadLetters::new(self, options.dlq_topic(topic))))
    }
}

/// A group's dead-letter queue.
pub(crate) struct SqsDeadLetters {
    sqs: Sqs,
    topic: String,
    queue_name: String,
}

impl SqsDeadLetters {
    /// The queue of the dead-letter topic `dlq_topic`.
    pub(crate) fn new(sqs: &Sqs, dlq_topic: String) -> Self {
        SqsDeadLetters {
            sqs: sqs.clone(),
            queue_name: names::dlq_queue_name(&sqs.inner.config, &dlq_topic),
            topic: dlq_topic,
        }
    }

    async fn url(&self) -> Result<String> {
        Ok(self
            .sqs
            .queue(&self.queue_name, &self.sqs.fifo_attrs(), self.sqs.mode())
            .await?
            .0)
    }

    /// Receive (and hide) up to `DLQ_SCAN` messages, oldest first by
    /// `SentTimestamp`, since a standard queue hands them out in any order.
    async fn scan(&self, url: &str) -> Result<Vec<aws_sdk_sqs::types::Message>> {
        let sqs = &self.sqs.inner.sqs;
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
                .map_err(map_sdk)?;
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
                    self.redrive_one(core::decode_received(m)).await?;
                }
                self.sqs
                    .inner
                    .sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(map_sdk)?;
                done += 1;
            }
            Ok::<_, Error>(())
        }
        .await;
        self.release(url, &picked[done..]).await;
        result.map(|()| done as u64)
    }

    /// Send a dead letter back for the group that failed it.
    async fn redrive_one(&self, dead: Message) -> Result<()> {
        let (topic, message) = redrive_message(&dead)?;
        let dedup = format!("{}-r{}", message.id, message.headers.get(REDRIVE_COUNT).unwrap_or("1"));
        match dead.headers.get(DLQ_GROUP) {
            // Straight into the failing group's queue: other groups never see it.
            Some(group) => {
                let c = &self.sqs.inner.config;
                let name = match c.point_to_point {
                    true => names::topic_queue_name(c, &topic),
                    false => names::group_queue_name(c, &topic, group),
                };
                let (target, _) = self.sqs.queue(&name, &self.sqs.fifo_attrs(), self.sqs.mode()).await?;
                self.sqs.send_to_queue(&target, &message, &dedup).await
            }
            None => self.sqs.publish(&topic, vec![message]).await,
        }
    }

    /// Redrive or delete what `selection` picks among the scanned messages.
    async fn take_selected(&self, selection: &Selection, redrive: bool) -> Result<u64> {
        let url = self.url().await?;
        let all = self.scan(&url).await?;
        let mut left = selection.limit();
        let (picked, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|m| {
            let pick = left > 0 && selection.matches(&DeadLetter::from_message(core::decode_received(m)));
            left -= u64::from(pick);
            pick
        });
        self.take_all(&url, &picked, &rest, redrive).await
    }

    async fn release(&self, url: &str, messages: &[aws_sdk_sqs::types::Message]) {
        for m in messages {
            let _ = self
                .sqs
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
        let url = self.url().await?;
        let out = self
            .sqs
            .inner
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(map_sdk)?;
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
        let url = self.url().await?;
        let all = self.scan(&url).await?;
        let out = all
            .iter()
            .take(n)
            .map(|m| DeadLetter::from_message(core::decode_received(m)))
            .collect();
        self.release(&url, &all).await;
        Ok(out)
    }

    async fn redrive(&self, selection: &Selection) -> Result<u64> {
        if selection.has_conditions() {
            return self.take_selected(selection, true).await;
        }
        let url = self.url().await?;
        let all = self.scan(&url).await?;
        let take = usize::try_from(selection.limit()).unwrap_or(usize::MAX).min(all.len());
        let (picked, rest) = all.split_at(take);
        self.take_all(&url, picked, rest, true).await
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        if !selection.is_everything() {
            return self.take_selected(selection, false).await;
        }
        // Receive-and-delete rather than PurgeQueue: it reports how many,
        // and has no once-a-minute limit.
        let url = self.url().await?;
        let all = self.scan(&url).await?;
        let receipts: Vec<&str> = all.iter().map(|m| m.receipt_handle().unwrap_or_default()).collect();
        deletes::delete_all(&self.sqs.inner.sqs, &url, &receipts).await?;
        Ok(all.len() as u64)
    }
}
