//! A group's backlog: the ready-message count of its quorum queue and of
//! its dead-letter queue (passive `queue.declare`). AMQP 0-9-1 tells neither
//! the unacknowledged count (the management API does) nor the age of a
//! message, and copies waiting out a nack delay sit in retry queues that
//! are not counted: `waiting` is exact for what is ready.

use async_trait::async_trait;
use transport_core::backend::RawBacklog;
use transport_core::{Backlog, DeadLetterQueue, ErrorKind, Result, SubscribeOptions};

use crate::core::map_err;
use crate::core::Rabbit;
use crate::dead_letter_queue::RabbitDeadLetters;
use crate::names::{dlq_queue, work_queue};
use crate::provision::ready_count;

#[async_trait]
impl RawBacklog for Rabbit {
    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        let dlq = options.dlq_topic(topic);
        let dead = RabbitDeadLetters {
            rabbit: self.clone(),
            queue: dlq_queue(&dlq),
            topic: dlq,
        }
        .depth()
        .await?;
        let queue = work_queue(topic, &options.group);
        let ready = self
            .bounded(async {
                let ch = self
                    .inner
                    .conn
                    .connection()
                    .await?
                    .create_channel()
                    .await
                    .map_err(map_err)?;
                match ready_count(&ch, &queue).await {
                    // No such queue: the group has not subscribed yet (the
                    // broker closed the channel).
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
                    other => other,
                }
            })
            .await?;
        Ok(Backlog::new(Some(ready), None, Some(dead), None))
    }
}
