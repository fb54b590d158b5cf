//! A group's dead-letter queue: depth, peek, redrive and discard by selection.

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueuePurgeOptions};
use lapin::Channel;
use transport_core::backend::redrive_message;
use transport_core::backend::{RawDeadLetters, RawPublish};
use transport_core::headers::DLQ_GROUP;
use transport_core::{DeadLetter, DeadLetterQueue, Message, Result, Selection, SubscribeOptions};

use crate::core::{self, map_err, Rabbit};
use crate::names::{self, work_queue};
use crate::provision::ready_count;

#[async_trait]
impl RawDeadLetters for Rabbit {
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        let name = options.dlq_topic(topic);
        Ok(Box::new(RabbitDeadLetters {
            rabbit: self.clone(),
            queue: names::dlq_queue(&name),
            topic: name,
        }))
    }
}

/// A group's dead-letter queue: the queue bound to the DLQ topic (classic
/// on a single node, quorum on a cluster).
pub(crate) struct RabbitDeadLetters {
    pub(crate) rabbit: Rabbit,
    pub(crate) topic: String,
    pub(crate) queue: String,
}

impl RabbitDeadLetters {
    async fn channel(&self) -> Result<Channel> {
        let conn = &self.rabbit.inner.conn;
        let ch = conn.connection().await?.create_channel().await.map_err(map_err)?;
        let publisher = conn.publisher().await?;
        conn.declare_dead_letter_queue(&publisher, &self.topic).await?;
        Ok(ch)
    }

    /// The queue's head, unacknowledged, with its acker.
    async fn get(&self, ch: &Channel) -> Result<Option<(lapin::Acker, Message)>> {
        let Some(got) = ch
            .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
            .await
            .map_err(map_err)?
        else {
            return Ok(None);
        };
        let d = got.delivery;
        Ok(Some((d.acker, core::decode(&d.properties, d.data).message)))
    }

    /// Publish a dead letter (confirmed) straight into the failing group's
    /// queue: other groups never see it.
    async fn redrive_one(&self, dead: &Message) -> Result<()> {
        let (topic, message) = redrive_message(dead)?;
        match dead.headers.get(DLQ_GROUP) {
            Some(group) => {
                self.rabbit
                    .publish_to("", &work_queue(&topic, group), &message, &[])
                    .await
            }
            None => self.rabbit.publish(&topic, vec![message]).await,
        }
    }

    /// A queue hands out its head only, so every message is taken once: the
    /// picked ones are redriven (or dropped), the others published again to
    /// the queue's tail (confirmed) before their ack, which keeps their
    /// order and their content. A crash midway duplicates, never loses.
    async fn take_selected(&self, selection: &Selection, redrive: bool) -> Result<u64> {
        let depth = self.depth().await?;
        let ch = self.channel().await?;
        let mut done = 0;
        let mut left = selection.limit();
        for _ in 0..depth {
            let Some((acker, dead)) = self.get(&ch).await? else {
                break;
            };
            let picked = left > 0 && selection.matches(&DeadLetter::from_message(dead.clone()));
            left -= u64::from(picked);
            let moved = match (picked, redrive) {
                (true, true) => self.redrive_one(&dead).await,
                (true, false) => Ok(()),
                (false, _) => self.rabbit.publish_to("", &self.queue, &dead, &[]).await,
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
            acker.ack(BasicAckOptions::default()).await.map_err(map_err)?;
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
        ready_count(&self.channel().await?, &self.queue).await
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        let ch = self.channel().await?;
        let mut out = Vec::new();
        while out.len() < n {
            let Some((_, dead)) = self.get(&ch).await? else {
                break;
            };
            out.push(DeadLetter::from_message(dead));
        }
        // Closing the channel puts every fetched message back where it was.
        let _ = ch.close(200, "peeked".into()).await;
        Ok(out)
    }

    async fn redrive(&self, selection: &Selection) -> Result<u64> {
        if selection.has_conditions() {
            return self.take_selected(selection, true).await;
        }
        // The oldest ones: from the head, nothing moved aside.
        let ch = self.channel().await?;
        let mut moved = 0;
        while moved < selection.limit() {
            let Some((acker, dead)) = self.get(&ch).await? else {
                break;
            };
            if let Err(e) = self.redrive_one(&dead).await {
                let _ = acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                return Err(e);
            }
            acker.ack(BasicAckOptions::default()).await.map_err(map_err)?;
            moved += 1;
        }
        let _ = ch.close(200, "redriven".into()).await;
        Ok(moved)
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        if !selection.is_everything() {
            return self.take_selected(selection, false).await;
        }
        let ch = self.channel().await?;
        let n = ch
            .queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(map_err)?;
        let _ = ch.close(200, "purged".into()).await;
        Ok(n as u64)
    }
}
