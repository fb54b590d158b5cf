//! A group's dead-letter stream: depth, peek, redrive and discard by selection.

use async_nats::jetstream::stream;
use async_trait::async_trait;
use transport_core::backend::{redrive_message, RawDeadLetters};
use transport_core::{DeadLetter, DeadLetterQueue, Message, Result, Selection, SubscribeOptions};

use crate::core::{self, other, Nats};

#[async_trait]
impl RawDeadLetters for Nats {
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        Ok(Box::new(NatsDeadLetters {
            nats: self.clone(),
            topic: options.dlq_topic(topic),
        }))
    }
}

/// A group's dead-letter stream.
pub(crate) struct NatsDeadLetters {
    pub(crate) nats: Nats,
    pub(crate) topic: String,
}

impl NatsDeadLetters {
    async fn stream(&self) -> Result<Option<stream::Stream>> {
        match self.nats.inner.js.get_stream(self.nats.stream_name(&self.topic)).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    /// The oldest `n` messages with their sequence numbers.
    async fn oldest(&self, n: u64) -> Result<Vec<(u64, Message)>> {
        let Some(mut s) = self.stream().await? else {
            return Ok(Vec::new());
        };
        let state = s.info().await.map_err(other)?.state.clone();
        let mut out = Vec::new();
        let mut seq = state.first_sequence;
        while (out.len() as u64) < n && seq <= state.last_sequence && state.messages > 0 {
            match s.get_raw_message(seq).await {
                Ok(raw) => {
                    let fallback = raw.sequence.to_string();
                    out.push((seq, core::decode(Some(&raw.headers), raw.payload, || fallback)));
                }
                // A sequence deleted from the middle (a selected message
                // taken out) is a gap.
                Err(e) if gone(&e.to_string()) => {}
                Err(e) => return Err(other(e)),
            }
            seq += 1;
        }
        Ok(out)
    }

    /// Delete message `seq`, after publishing it back to its topic (confirmed)
    /// with `redrive`: never lost, at worst redriven twice.
    async fn take(&self, s: &stream::Stream, seq: u64, dead: &Message, redrive: bool) -> Result<()> {
        if redrive {
            let (topic, message) = redrive_message(dead)?;
            self.nats.send_one(&topic, &message, false).await?;
        }
        s.delete_message(seq).await.map_err(other)?;
        Ok(())
    }

    /// Redrive or delete the messages `selection` picks, the others untouched.
    async fn take_selected(&self, selection: &Selection, redrive: bool) -> Result<u64> {
        let Some(s) = self.stream().await? else {
            return Ok(0);
        };
        let limit = selection.limit();
        let picked = if !selection.has_conditions() {
            // No condition: the oldest `limit`, without reading the rest.
            self.oldest(limit).await?
        } else {
            selection.partition(self.oldest(u64::MAX).await?, |(_, m)| m).0
        };
        for (seq, dead) in &picked {
            self.take(&s, *seq, dead, redrive).await?;
        }
        Ok(picked.len() as u64)
    }
}

/// Whether a JetStream error says the message is not there.
fn gone(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("not found") || e.contains("no message found")
}

#[async_trait]
impl DeadLetterQueue for NatsDeadLetters {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn depth(&self) -> Result<u64> {
        match self.stream().await? {
            Some(mut s) => Ok(s.info().await.map_err(other)?.state.messages),
            None => Ok(0),
        }
    }

    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .oldest(n as u64)
            .await?
            .into_iter()
            .map(|(_, m)| DeadLetter::from_message(m))
            .collect())
    }

    async fn redrive(&self, selection: &Selection) -> Result<u64> {
        self.take_selected(selection, true).await
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        if !selection.is_everything() {
            return self.take_selected(selection, false).await;
        }
        match self.stream().await? {
            Some(s) => Ok(s.purge().await.map_err(other)?.purged),
            None => Ok(0),
        }
    }
}
