//! A group's dead-letter stream: depth, peek, redrive and purge.

use async_nats::jetstream::stream;
use async_trait::async_trait;
use transport_core::backend::redrive_message;
use transport_core::backend::validate_topic;
use transport_core::{DeadLetter, DeadLetterQueue, Message, Redrive, Result, Selection};

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
                // A sequence deleted from the middle (a selected message
                // taken out) is a gap.
                Err(e) if gone(&e.to_string()) => {}
                Err(e) => return Err(other(op, e)),
            }
            seq += 1;
        }
        Ok(out)
    }

    /// Delete message `seq`, after publishing it back to its topic (confirmed)
    /// with `redrive`: never lost, at worst redriven twice.
    async fn take(&self, op: &'static str, s: &stream::Stream, seq: u64, dead: &Message, redrive: bool) -> Result<()> {
        if redrive {
            let (topic, message) = redrive_message(dead).map_err(tag(op))?;
            validate_topic(&topic).map_err(tag(op))?;
            self.transport.publish_one(op, &topic, &message, false).await?;
        }
        s.delete_message(seq).await.map_err(|e| other(op, e))?;
        Ok(())
    }

    /// Redrive or delete the messages `selection` picks, the others untouched.
    async fn take_selected(&self, op: &'static str, selection: &Selection, redrive: bool) -> Result<u64> {
        let Some(s) = self.stream(op).await? else {
            return Ok(0);
        };
        let mut done = 0;
        for (seq, dead) in self.oldest(op, u64::MAX).await? {
            if selection.matches(&DeadLetter::from_message(dead.clone())) {
                self.take(op, &s, seq, &dead, redrive).await?;
                done += 1;
            }
        }
        Ok(done)
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
            self.take("redrive", &s, seq, &dead, true).await?;
            moved += 1;
        }
        Ok(moved)
    }

    async fn redrive_selected(&self, selection: &Selection) -> Result<u64> {
        self.take_selected("redrive", selection, true).await
    }

    async fn discard(&self, selection: &Selection) -> Result<u64> {
        self.take_selected("discard", selection, false).await
    }

    async fn purge(&self) -> Result<u64> {
        match self.stream("purge").await? {
            Some(s) => Ok(s.purge().await.map_err(|e| other("purge", e))?.purged),
            None => Ok(0),
        }
    }
}
