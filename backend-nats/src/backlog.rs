//! A group's backlog from its durable consumer's info: `num_pending`
//! (matching messages not yet delivered) and `num_ack_pending` (delivered,
//! not acked; messages nacked with a delay count here until redelivered),
//! the dead-letter stream's message count, and the age of the next
//! undelivered message from its stored timestamp.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use transport_core::backend::RawBacklog;
use transport_core::{Backlog, DeadLetterQueue, Result, SubscribeOptions};

use crate::core::{other, Nats};
use crate::dead_letter_queue::NatsDeadLetters;
use crate::names;

#[async_trait]
impl RawBacklog for Nats {
    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        let dead = NatsDeadLetters {
            nats: self.clone(),
            topic: options.dlq_topic(topic),
        }
        .depth()
        .await?;
        let nothing = Backlog::new(Some(0), Some(0), Some(dead), Some(Duration::ZERO));
        let stream = match self.inner.js.get_stream(self.stream_name(topic)).await {
            Ok(s) => s,
            Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => return Ok(nothing),
            Err(e) => return Err(other(e)),
        };
        let info = match stream.consumer_info(names::consumer(&options.group)).await {
            Ok(info) => info,
            Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => return Ok(nothing),
            Err(e) => return Err(other(e)),
        };
        let mut age = Duration::ZERO;
        if info.num_pending > 0 {
            // The stream holds only this topic's subject, so the next
            // undelivered message follows the last delivered sequence.
            let next = info.delivered.stream_sequence + 1;
            if let Ok(m) = stream.get_raw_message(next).await {
                age = Backlog::waited_since(Some(SystemTime::from(m.time)));
            }
        }
        Ok(Backlog::new(
            Some(info.num_pending),
            Some(info.num_ack_pending as u64),
            Some(dead),
            Some(age),
        ))
    }
}
