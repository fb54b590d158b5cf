//! A group's dead-letter queue: depth, peek, redrive and purge.

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::headers::DLQ_GROUP;
use transport_core::{DeadLetter, DeadLetterQueue, Message, Publisher, Redrive, Result, Selection};

use crate::backend::{tag, work_queue, RabbitTransport};
use crate::core::{self, map_err};

/// A group's dead-letter queue: the queue bound to the DLQ topic (classic
/// on a single node, quorum on a cluster).
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
        conn.declare_dead_letter_queue(&publisher, &self.topic, op).await?;
        Ok(ch)
    }

    /// The queue's head, unacknowledged, with its acker.
    async fn get(&self, ch: &Channel, op: &'static str) -> Result<Option<(lapin::Acker, Message)>> {
        let Some(got) = ch
            .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
            .await
            .map_err(|e| map_err(op, e))?
        else {
            return Ok(None);
        };
        let d = got.delivery;
        Ok(Some((d.acker, core::decode(&d.properties, d.data).message)))
    }

    /// Publish a dead letter (confirmed) straight into the failing group's
    /// queue: other groups never see it.
    async fn redrive_one(&self, op: &'static str, dead: &Message) -> Result<()> {
        let (topic, message) = redrive_message(dead).map_err(tag(op))?;
        validate_topic(&topic).map_err(tag(op))?;
        match dead.headers.get(DLQ_GROUP) {
            Some(group) => {
                self.transport
                    .publish_to(op, "", &work_queue(&topic, group), &message, &[])
                    .await
            }
            None => self.transport.publish_batch(&topic, vec![message]).await,
        }
    }

    /// A queue hands out its head only, so every message is taken once: the
    /// picked ones are redriven (or dropped), the others published again to
    /// the queue's tail (confirmed) before their ack, which keeps their
    /// order and their content. A crash midway duplicates, never loses.
    async fn take_selected(&self, op: &'static str, selection: &Selection, redrive: bool) -> Result<u64> {
        let depth = self.depth().await?;
        let ch = self.channel(op).await?;
        let mut done = 0;
        for _ in 0..depth {
            let Some((acker, dead)) = self.get(&ch, op).await? else {
                break;
            };
            let picked = selection.matches(&DeadLetter::from_message(dead.clone()));
            let moved = match (picked, redrive) {
                (true, true) => self.redrive_one(op, &dead).await,
                (true, false) => Ok(()),
                (false, _) => self.transport.publish_to(op, "", &self.queue, &dead, &[]).await,
            };
            if let Err(e) = moved {
                let _ = acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                let _ = ch.close(200, "failed".into()).await;
                return Err(e);
            }
            acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| map_err(op, e))?;
            done += u64::from(picked);
        }
        let _ = ch.close(200, "done".into()).await;
        Ok(done)
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
            let Some((_, dead)) = self.get(&ch, "peek").await? else {
                break;
            };
            out.push(DeadLetter::from_message(dead));
        }
        // Closing the channel puts every fetched message back where it was.
        let _ = ch.close(200, "peeked".into()).await;
        Ok(out)
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let ch = self.channel("redrive").await?;
        let mut moved = 0;
        while moved < count.limit() {
            let Some((acker, dead)) = self.get(&ch, "redrive").await? else {
                break;
            };
            if let Err(e) = self.redrive_one("redrive", &dead).await {
                let _ = acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                return Err(e);
            }
            acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| map_err("redrive", e))?;
            moved += 1;
        }
        let _ = ch.close(200, "redriven".into()).await;
        Ok(moved)
    }

    async fn redrive_selected(&self, selection: &Selection) -> Result<u64> {
        self.take_selected("redrive", selection, true).await
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        self.take_selected("discard", selection, false).await
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
