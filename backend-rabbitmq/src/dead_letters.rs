//! A group's dead-letter queue: depth, peek, redrive and purge.

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::headers::DLQ_GROUP;
use transport_core::{DeadLetter, DeadLetterQueue, Publisher, Redrive, Result};

use crate::backend::{tag, work_queue, RabbitTransport};
use crate::core::{self, map_err};

/// A group's dead-letter queue: the classic queue bound to the DLQ topic.
pub(crate) struct RabbitDeadLetters {
    pub(crate) transport: RabbitTransport,
    pub(crate) topic: String,
    pub(crate) queue: String,
}

impl RabbitDeadLetters {
    async fn channel(&self, op: &'static str) -> Result<Channel> {
        let conn = &self.transport.inner.conn;
        let ch = conn
            .connection()
            .await?
            .create_channel()
            .await
            .map_err(|e| map_err(op, e))?;
        let publisher = conn.publisher().await?;
        conn.declare_queue(&publisher, &self.topic, &self.queue, FieldTable::default(), op)
            .await?;
        Ok(ch)
    }
}

#[async_trait]
impl DeadLetterQueue for RabbitDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        let ch = self.channel("depth").await?;
        let q = ch
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| map_err("depth", e))?;
        let _ = ch.close(200, "done".into()).await;
        Ok(q.message_count() as u64)
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let ch = self.channel("peek").await?;
        let mut out = Vec::new();
        while out.len() < n {
            let Some(got) = ch
                .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
                .await
                .map_err(|e| map_err("peek", e))?
            else {
                break;
            };
            let d = got.delivery;
            let tag = d.delivery_tag.to_string();
            out.push(DeadLetter::from_message(
                core::decode(&d.properties, d.data, || tag).message,
            ));
        }
        // Closing the channel puts every fetched message back where it was.
        let _ = ch.close(200, "peeked".into()).await;
        Ok(out)
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let ch = self.channel("redrive").await?;
        let mut moved = 0;
        while moved < count.limit() {
            let Some(got) = ch
                .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
                .await
                .map_err(|e| map_err("redrive", e))?
            else {
                break;
            };
            let d = got.delivery;
            let fallback_id = d.delivery_tag.to_string();
            let dead = core::decode(&d.properties, d.data, || fallback_id).message;
            let (topic, message) = redrive_message(&dead).map_err(tag("redrive"))?;
            validate_topic(&topic).map_err(tag("redrive"))?;
            // Straight into the failing group's queue: other groups never see it.
            let published = match dead.headers.get(DLQ_GROUP) {
                Some(group) => {
                    self.transport
                        .publish_to("redrive", "", &work_queue(&topic, group), &message, &[])
                        .await
                }
                None => self.transport.publish_batch(&topic, vec![message]).await,
            };
            if let Err(e) = published {
                let _ = d
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                return Err(e);
            }
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| map_err("redrive", e))?;
            moved += 1;
        }
        let _ = ch.close(200, "redriven".into()).await;
        Ok(moved)
    }

    async fn purge(&self) -> Result<u64> {
        let ch = self.channel("purge").await?;
        let n = ch
            .queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(|e| map_err("purge", e))?;
        let _ = ch.close(200, "purged".into()).await;
        Ok(n as u64)
    }
}
