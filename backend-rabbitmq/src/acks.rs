//! The deliveries a consuming channel handed out, and their acks sent in
//! batches. On a quorum queue every `basic.ack` is a replicated log entry,
//! so acking one by one costs the broker more than the delivery did
//! (measured here: 14k msg/s consumed with single acks, 61k with one
//! `multiple` ack per 8). An ack is recorded at once and sent as one
//! `basic.ack multiple=true` for the longest run of acked deliveries at the
//! front, when a quarter of the prefetch is waiting or within
//! [`FLUSH_AFTER`]; acked deliveries held behind an unsettled one are acked
//! singly on the timer, so a slow handler cannot hold its neighbours'
//! acks (and the prefetch they occupy) for long.
//!
//! Frame order is what keeps `multiple` safe: a delivery being nacked or
//! rejected singly stays in the table, blocking the run, until its frame
//! has been handed to the connection; flushes are serialised, so a
//! `multiple` ack never covers a tag another frame still has to settle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Acker;
use tokio::sync::Notify;
use transport_core::backend::on_drop;

/// Longest an ack waits to be sent with others.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(5);

enum Entry {
    /// With the application: the ack deadline and the way to settle it.
    Handed { deadline: Instant, acker: Acker },
    /// Being nacked or rejected singly; blocks `multiple` acks past it.
    Settling,
    /// Acked by the application, not yet sent.
    Acked(Acker),
}

#[derive(Default)]
struct Table {
    /// The consuming channel the entries belong to; a newer one replaces
    /// them all (the broker requeued everything of a closed channel).
    generation: u64,
    entries: BTreeMap<u64, Entry>,
    acked: usize,
}

/// One subscription's outstanding deliveries (see the module docs).
pub(crate) struct Outstanding {
    table: Mutex<Table>,
    /// Serialises flushes, so `multiple` acks leave in tag order.
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the flusher when an ack is waiting.
    waiting: Notify,
    /// Acked deliveries that trigger a flush at once.
    threshold: usize,
}

impl Outstanding {
    pub fn new(prefetch: usize) -> Self {
        Outstanding {
            table: Mutex::default(),
            flushing: tokio::sync::Mutex::new(()),
            waiting: Notify::new(),
            threshold: (prefetch / 4).clamp(1, 256),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A delivery handed to the application.
    pub fn handed(&self, (generation, tag): (u64, u64), deadline: Instant, acker: Acker) {
        let mut t = self.table();
        if generation != t.generation {
            if generation < t.generation {
                // A straggler of a closed channel: the broker has requeued it.
                return;
            }
            t.generation = generation;
            t.entries.clear();
            t.acked = 0;
        }
        t.entries.insert(tag, Entry::Handed { deadline, acker });
    }

    /// Take a handed delivery to settle it singly (nack, reject, an ack
    /// after storing a copy). `None` when it is no longer the application's
    /// (ack timeout, channel closed).
    pub fn take(self: &Arc<Self>, key: (u64, u64)) -> Option<Single> {
        let (generation, tag) = key;
        let mut t = self.table();
        if t.generation != generation {
            return None;
        }
        let entry = t.entries.get_mut(&tag)?;
        match std::mem::replace(entry, Entry::Settling) {
            Entry::Handed { acker, .. } => Some(Single {
                outstanding: self.clone(),
                key,
                acker: Some(acker),
            }),
            other => {
                *entry = other;
                None
            }
        }
    }

    fn settled(&self, (generation, tag): (u64, u64)) {
        let mut t = self.table();
        if t.generation == generation && matches!(t.entries.get(&tag), Some(Entry::Settling)) {
            t.entries.remove(&tag);
        }
    }

    /// Record an ack; `false` when the delivery is no longer the
    /// application's. Sends the batch at once when it is big enough.
    pub async fn ack(&self, (generation, tag): (u64, u64)) -> bool {
        let due = {
            let mut t = self.table();
            if t.generation != generation {
                return false;
            }
            let Some(entry) = t.entries.get_mut(&tag) else {
                return false;
            };
            match std::mem::replace(entry, Entry::Settling) {
                Entry::Handed { acker, .. } => *entry = Entry::Acked(acker),
                other => {
                    *entry = other;
                    return false;
                }
            }
            t.acked += 1;
            t.acked >= self.threshold
        };
        if due {
            self.flush(false).await;
        } else {
            self.waiting.notify_one();
        }
        true
    }

    /// Move a handed delivery's deadline; `false` when it is no longer the
    /// application's.
    pub fn extend(&self, (generation, tag): (u64, u64), until: Instant) -> bool {
        let mut t = self.table();
        if t.generation != generation {
            return false;
        }
        match t.entries.get_mut(&tag) {
            Some(Entry::Handed { deadline, .. }) => {
                *deadline = until;
                true
            }
            _ => false,
        }
    }

    /// Handed deliveries whose deadline passed, taken for requeueing.
    pub fn expired(self: &Arc<Self>, now: Instant) -> Vec<Single> {
        let mut t = self.table();
        let generation = t.generation;
        let mut out = Vec::new();
        for (tag, entry) in t.entries.iter_mut() {
            if matches!(entry, Entry::Handed { deadline, .. } if *deadline <= now) {
                if let Entry::Handed { acker, .. } = std::mem::replace(entry, Entry::Settling) {
                    out.push(Single {
                        outstanding: self.clone(),
                        key: (generation, *tag),
                        acker: Some(acker),
                    });
                }
            }
        }
        out
    }

    /// Send waiting acks: the run at the front as one `multiple` ack; the
    /// ones behind an unsettled delivery singly when `all` (the timer) or
    /// when they alone fill a batch.
    pub async fn flush(&self, all: bool) {
        let _order = self.flushing.lock().await;
        let (run, singles) = {
            let mut t = self.table();
            let mut run = None;
            while let Some(entry) = t.entries.first_entry() {
                if !matches!(entry.get(), Entry::Acked(_)) {
                    break;
                }
                if let Entry::Acked(acker) = entry.remove() {
                    run = Some(acker);
                    t.acked -= 1;
                }
            }
            let mut singles = Vec::new();
            if all || t.acked >= self.threshold {
                let tags: Vec<u64> = t
                    .entries
                    .iter()
                    .filter(|(_, e)| matches!(e, Entry::Acked(_)))
                    .map(|(tag, _)| *tag)
                    .collect();
                for tag in tags {
                    if let Some(Entry::Acked(acker)) = t.entries.remove(&tag) {
                        singles.push(acker);
                    }
                }
                t.acked = 0;
            }
            (run, singles)
        };
        // A failure means the channel closed: the broker requeues what it
        // had not been told, so the acks turn into redeliveries (at least
        // once), which is all a failed ack could ever mean.
        if let Some(acker) = run {
            let _ = acker.ack(BasicAckOptions { multiple: true }).await;
        }
        for acker in singles {
            let _ = acker.ack(BasicAckOptions::default()).await;
        }
    }

    /// Waits for an ack to be recorded, then gives the batch
    /// [`FLUSH_AFTER`] to fill before the caller flushes.
    pub async fn wait_for_acks(&self) {
        self.waiting.notified().await;
        tokio::time::sleep(FLUSH_AFTER).await;
    }

    /// Whether any acks wait to be sent.
    pub fn has_acks(&self) -> bool {
        self.table().acked > 0
    }
}

/// A delivery taken out of the batching to be settled with a frame of its
/// own. It leaves the table once that frame is sent ([`Single::done`]);
/// dropped before (a cancelled settle), it is requeued first, so a later
/// `multiple` ack cannot cover a message nobody settled.
pub(crate) struct Single {
    outstanding: Arc<Outstanding>,
    key: (u64, u64),
    acker: Option<Acker>,
}

impl Single {
    pub fn acker(&self) -> &Acker {
        self.acker.as_ref().expect("present until done")
    }

    /// Its frame was sent (or failed, the channel being gone).
    pub fn done(mut self) {
        self.acker = None;
        self.outstanding.settled(self.key);
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            let (outstanding, key) = (self.outstanding.clone(), self.key);
            on_drop(async move {
                requeue(&acker).await;
                outstanding.settled(key);
            });
        }
    }
}

/// Hand a delivery back to the queue at once.
pub(crate) async fn requeue(acker: &Acker) {
    let _ = acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}
