//! Keeping a stale handle from settling a redelivery, for brokers that
//! settle by message (a stream sequence, a queue message) rather than by
//! delivery: a handle whose lease ran out while the message was handed out
//! again must not ack, requeue or dead-letter the live redelivery.
//!
//! The broker cannot tell the two handles apart, so the subscription does:
//! it remembers the newest attempt of each message it handed out, and a
//! settler from an older attempt fails with `DeliveryExpired` without
//! touching the broker. This covers the redelivery coming back to the same
//! subscription (one replica, or a handler that overran its lease). A
//! redelivery to another process is out of its sight; backends using this
//! say so in their docs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::delivery::Settler;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;

/// The newest attempt handed out per message id, for one subscription.
#[derive(Debug, Clone, Default)]
pub struct StaleGuard {
    newest: Arc<Mutex<HashMap<String, u32>>>,
}

impl StaleGuard {
    /// An empty guard; one per subscription.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wrap the settler of attempt `attempt` of message `id`: it settles
    /// only while no newer attempt of the message was handed out here.
    pub fn guard(&self, id: &str, attempt: u32, settler: Box<dyn Settler>) -> Box<dyn Settler> {
        {
            let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
            let entry = newest.entry(id.to_owned()).or_insert(attempt);
            *entry = (*entry).max(attempt);
        }
        Box::new(Guarded {
            guard: self.clone(),
            id: id.to_owned(),
            attempt,
            inner: Some(settler),
        })
    }

    fn is_current(&self, id: &str, attempt: u32) -> bool {
        let newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        newest.get(id).is_none_or(|n| *n == attempt)
    }

    /// The handle of `attempt` is done: forget the message if it was the newest.
    fn release(&self, id: &str, attempt: u32) {
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        if newest.get(id) == Some(&attempt) {
            newest.remove(id);
        }
    }

    /// How many messages are tracked (for tests).
    pub fn len(&self) -> usize {
        self.newest.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Guarded {
    guard: StaleGuard,
    id: String,
    attempt: u32,
    /// `None` once settled (or refused): dropping then does nothing.
    inner: Option<Box<dyn Settler>>,
}

impl Guarded {
    /// The inner settler if this handle is still the newest; else it is
    /// dropped without settling (the broker would settle the redelivery).
    fn take(&mut self) -> Result<Box<dyn Settler>> {
        let current = self.guard.is_current(&self.id, self.attempt);
        let inner = self.inner.take().expect("a settler settles once");
        self.guard.release(&self.id, self.attempt);
        if current {
            Ok(inner)
        } else {
            // Not dropped: its drop would hand the live redelivery back.
            inner.abandon();
            Err(stale())
        }
    }
}

fn stale() -> Error {
    Error::new(
        ErrorKind::DeliveryExpired,
        "this delivery was handed out again after its ack timeout; the newer delivery settles it",
    )
}

#[async_trait]
impl Settler for Guarded {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.take()?.ack().await
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        self.take()?.nack(delay).await
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        self.take()?.dead_letter(dead).await
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        if !self.guard.is_current(&self.id, self.attempt) {
            return Err(stale());
        }
        match &self.inner {
            Some(inner) => inner.extend(by).await,
            None => Err(stale()),
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else { return };
        let current = self.guard.is_current(&self.id, self.attempt);
        self.guard.release(&self.id, self.attempt);
        if current {
            drop(inner);
        } else {
            inner.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting(Arc<AtomicUsize>);

    #[async_trait]
    impl Settler for Counting {
        async fn ack(self: Box<Self>) -> Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn nack(self: Box<Self>, _: Option<Duration>) -> Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn dead_letter(self: Box<Self>, _: Message) -> Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn only_the_newest_attempt_settles_and_nothing_leaks() {
        let guard = StaleGuard::new();
        let settled = Arc::new(AtomicUsize::new(0));
        let first = guard.guard("m", 1, Box::new(Counting(settled.clone())));
        let second = guard.guard("m", 2, Box::new(Counting(settled.clone())));
        let err = first.ack().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeliveryExpired);
        assert_eq!(settled.load(Ordering::SeqCst), 0);
        second.ack().await.unwrap();
        assert_eq!(settled.load(Ordering::SeqCst), 1);
        assert!(guard.is_empty());
        drop(guard.guard("n", 1, Box::new(Counting::default())));
        assert!(guard.is_empty());
    }
}
