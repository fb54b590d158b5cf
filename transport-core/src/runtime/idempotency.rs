//! Where "this message was processed" is remembered, so a redelivered or
//! republished message has its effect once: the [`IdempotencyStore`] trait
//! and the in-memory store.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::Result;

/// What a [`claim`](IdempotencyStore::claim) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not processed and not being processed: the caller may process it now
    /// and must then [`complete`](IdempotencyStore::complete) or
    /// [`release`](IdempotencyStore::release) it.
    Acquired,
    /// Another consumer is processing it right now; its claim expires in
    /// (about) the given time.
    InProgress(Duration),
    /// Already processed: acknowledge without processing.
    Done,
}

/// Remembers which messages a consumer group has processed.
///
/// Keys are (group, message id): two groups process the same message
/// independently. The protocol:
/// 1. [`claim`](Self::claim) before processing, with a lease that covers
///    the processing (a crashed consumer's claim expires after it);
/// 2. after success, [`complete`](Self::complete): the key stays `Done` for
///    `ttl` (longer than any redelivery or republish can come: days);
/// 3. after failure, [`release`](Self::release): the next delivery claims it.
///
/// Every call must be idempotent. A store that writes `Done` inside the
/// handler's own database transaction (the SQL stores) gives an exactly-once
/// effect; then `complete` finds it done and changes nothing.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claim `(group, id)` for `lease`, or report that it is done or taken.
    async fn claim(&self, group: &str, id: &str, lease: Duration) -> Result<Claim>;

    /// Mark `(group, id)` processed, remembered for `ttl`.
    async fn complete(&self, group: &str, id: &str, ttl: Duration) -> Result<()>;

    /// Give up a claim (processing failed; a redelivery may claim again).
    /// Does nothing to a key that is done.
    async fn release(&self, group: &str, id: &str) -> Result<()>;
}

/// An [`IdempotencyStore`] in this process's memory: for a single consumer
/// process and for tests. It forgets on restart; use a durable store (SQL,
/// Redis) where duplicates can arrive after one.
pub struct MemoryIdempotencyStore {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// By group, then by message id: looked up by `&str` without building
    /// a key (ids come from producers, hence a seeded hasher).
    map: foldhash::HashMap<String, foldhash::HashMap<String, Entry>>,
    ops: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    done: bool,
    expires: Instant,
}

impl MemoryIdempotencyStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryIdempotencyStore {
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Keys remembered now (claimed or done, not expired).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .map
            .values()
            .flat_map(|ids| ids.values())
            .filter(|e| e.expires > now)
            .count()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for MemoryIdempotencyStore {
    fn default() -> Self {
        MemoryIdempotencyStore::new()
    }
}

impl fmt::Debug for MemoryIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryIdempotencyStore")
            .field("len", &self.len())
            .finish()
    }
}

impl Entries {
    /// Expired entries go every 1024 operations, so memory stays bounded by
    /// what the TTLs keep.
    fn tick(&mut self, now: Instant) {
        self.ops += 1;
        if self.ops & 1023 == 0 {
            self.map.retain(|_, ids| {
                ids.retain(|_, e| e.expires > now);
                !ids.is_empty()
            });
        }
    }

    /// The entries of `group`, made when missing.
    fn group(&mut self, group: &str) -> &mut foldhash::HashMap<String, Entry> {
        if !self.map.contains_key(group) {
            self.map.insert(group.to_owned(), Default::default());
        }
        self.map.get_mut(group).expect("inserted above")
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, group: &str, id: &str, lease: Duration) -> Result<Claim> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.tick(now);
        let ids = entries.group(group);
        let claimed = Entry {
            done: false,
            expires: now + lease,
        };
        match ids.get_mut(id) {
            Some(e) if e.expires > now && e.done => Ok(Claim::Done),
            Some(e) if e.expires > now => Ok(Claim::InProgress(e.expires - now)),
            Some(expired) => {
                *expired = claimed;
                Ok(Claim::Acquired)
            }
            None => {
                ids.insert(id.to_owned(), claimed);
                Ok(Claim::Acquired)
            }
        }
    }

    async fn complete(&self, group: &str, id: &str, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.tick(now);
        let done = Entry {
            done: true,
            expires: now + ttl,
        };
        let ids = entries.group(group);
        match ids.get_mut(id) {
            Some(entry) => *entry = done,
            None => {
                ids.insert(id.to_owned(), done);
            }
        }
        Ok(())
    }

    async fn release(&self, group: &str, id: &str) -> Result<()> {
        let mut entries = self.lock();
        if let Some(ids) = entries.map.get_mut(group) {
            if ids.get(id).is_some_and(|e| !e.done) {
                ids.remove(id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claim_complete_release() {
        let s = MemoryIdempotencyStore::new();
        let lease = Duration::from_secs(60);
        assert_eq!(s.claim("g", "m1", lease).await.unwrap(), Claim::Acquired);
        assert!(matches!(s.claim("g", "m1", lease).await.unwrap(), Claim::InProgress(_)));
        // Another group processes the same message independently.
        assert_eq!(s.claim("h", "m1", lease).await.unwrap(), Claim::Acquired);
        s.release("g", "m1").await.unwrap();
        assert_eq!(s.claim("g", "m1", lease).await.unwrap(), Claim::Acquired);
        s.complete("g", "m1", Duration::from_secs(3600)).await.unwrap();
        assert_eq!(s.claim("g", "m1", lease).await.unwrap(), Claim::Done);
        s.release("g", "m1").await.unwrap();
        assert_eq!(
            s.claim("g", "m1", lease).await.unwrap(),
            Claim::Done,
            "release leaves done keys"
        );
    }

    #[tokio::test]
    async fn in_progress_tells_what_the_other_claim_has_left() {
        let s = MemoryIdempotencyStore::new();
        let theirs = Duration::from_secs(2);
        assert_eq!(s.claim("g", "m", theirs).await.unwrap(), Claim::Acquired);
        // Asked with a lease of its own, much longer: the answer is about
        // the claim that holds the key.
        match s.claim("g", "m", Duration::from_secs(600)).await.unwrap() {
            Claim::InProgress(left) => assert!(
                left <= theirs && left > theirs - Duration::from_secs(1),
                "{left:?} left of a {theirs:?} claim"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn claims_and_done_keys_expire() {
        let s = MemoryIdempotencyStore::new();
        assert_eq!(
            s.claim("g", "a", Duration::from_millis(20)).await.unwrap(),
            Claim::Acquired
        );
        s.complete("g", "b", Duration::from_millis(20)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            s.claim("g", "a", Duration::from_secs(1)).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(
            s.claim("g", "b", Duration::from_secs(1)).await.unwrap(),
            Claim::Acquired
        );
    }
}
