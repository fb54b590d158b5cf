//! A group's dead-letter stream: depth, peek, redrive and purge.

use async_nats::jetstream::stream;
use async_trait::async_trait;
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::{DeadLetter, DeadLetterQueue, Message, Redrive, Result};

use crate::backend::{tag, NatsTransport};
use crate::core::{self, other};

/// A group's dead-letter stream.
pub(crate) struct NatsDeadLetters {
    pub(crate) transport: NatsTransport,
    pub(crate) topic: String,
}

impl NatsDeadLetters {
    async fn stream(&self, op: &'static str) -> Result<Option<stream::Stream>> {
        match self
            .transport
            .inner
            .js
            .get_stream(self.transport.stream_name(&self.topic))
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => Ok(None),
            Err(e) => Err(other(op, e)),
        }
    }

    /// The oldest `n` messages with their sequence numbers.
    async fn oldest(&self, op: &'static str, n: u64) -> Result<Vec<(u64, Message)>> {
        let Some(mut s) = self.stream(op).await? else {
            return Ok(Vec::new());
        };
        let state = s.info().await.map_err(|e| other(op, e))?.state.clone();
        let mut out = Vec::new();
        let mut seq = state.first_sequence;
        while (out.len() as u64) < n && seq <= state.last_sequence && state.messages > 0 {
            match s.get_raw_message(seq).await {
                Ok(raw) => {
                    let fallback = raw.sequence.to_string();
                    out.push((seq, core::decode(Some(&raw.headers), raw.payload, || fallback)));
                }
                Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => {}
                Err(e) => return Err(other(op, e)),
            }
            seq += 1;
        }
        Ok(out)
    }
}

#[async_trait]
impl DeadLetterQueue for NatsDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        match self.stream("depth").await? {
            Some(mut s) => Ok(s.info().await.map_err(|e| other("depth", e))?.state.messages),
            None => Ok(0),
        }
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .oldest("peek", n as u64)
            .await?
            .into_iter()
            .map(|(_, m)| DeadLetter::from_message(m))
            .collect())
    }

    async fn redrive(&self, count: Redrive) -> Result<u64> {
        let Some(s) = self.stream("redrive").await? else {
            return Ok(0);
        };
        let mut moved = 0;
        for (seq, dead) in self.oldest("redrive", count.limit()).await? {
            let (topic, message) = redrive_message(&dead).map_err(tag("redrive"))?;
            validate_topic(&topic).map_err(tag("redrive"))?;
            // Publish (confirmed) first, then delete: never lost, at worst twice.
            self.transport.publish_one("redrive", &topic, &message, false).await?;
            s.delete_message(seq).await.map_err(|e| other("redrive", e))?;
            moved += 1;
        }
        Ok(moved)
    }

    async fn purge(&self) -> Result<u64> {
        match self.stream("purge").await? {
            Some(s) => Ok(s.purge().await.map_err(|e| other("purge", e))?.purged),
            None => Ok(0),
        }
    }
}
