//! The broker state: per topic a log of messages, per group a cursor into it
//! plus the messages that came back (nacked, timed out, dropped), the keys in
//! flight and the in-flight table. One mutex per topic guards it all, which
//! keeps every transition atomic and is cheap enough for millions of
//! messages per second as long as nothing slow happens under it: messages
//! are wrapped before the lock is taken and freed after it is released, and
//! wake-ups are sent only when a consumer sleeps.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use transport_core::{Error, ErrorKind, Message, Result, StartFrom};

/// A message waiting in a group, with what the group knows of it.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub message: Arc<Message>,
    /// Deliveries so far.
    pub attempts: u32,
    pub first_failure: Option<SystemTime>,
    /// When it was published.
    published: SystemTime,
    /// Whether this message holds its key's lock (it was delivered before and
    /// is the oldest unsettled message of its key).
    owns_key: bool,
}

#[derive(Debug)]
struct InFlight {
    pending: Pending,
    token: u64,
    deadline: Instant,
}

/// One fetched message.
pub(crate) struct Fetched {
    pub message: Arc<Message>,
    pub seq: u64,
    pub token: u64,
    pub attempt: u32,
    pub first_failure: Option<SystemTime>,
}

#[derive(Debug, Default)]
pub(crate) struct GroupState {
    /// Next log offset this group has not seen.
    cursor: u64,
    /// Messages available again (redeliveries), oldest first.
    ready: BTreeMap<u64, Pending>,
    /// Messages waiting for their key to be released.
    blocked: foldhash::HashMap<String, BTreeMap<u64, Pending>>,
    /// Keys with a message in flight or waiting out a nack delay.
    locked: foldhash::HashSet<String>,
    /// Keyed by log offset; offsets are not attacker-chosen, so a fast
    /// non-keyed hash is safe here.
    in_flight: FxHashMap<u64, InFlight>,
    /// Nacked with a delay: (due, seq).
    delayed: BTreeMap<(Instant, u64), Pending>,
    /// No in-flight deadline is earlier than this.
    earliest_deadline: Option<Instant>,
    next_token: u64,
}

#[derive(Debug)]
pub(crate) struct TopicState {
    log: VecDeque<Arc<Message>>,
    /// When each message of `log` was published (same indices).
    published: VecDeque<SystemTime>,
    /// Offset of `log[0]`.
    base: u64,
    groups: HashMap<String, GroupState>,
    /// Dead-letter topics keep everything until redriven or purged.
    keep_all: bool,
}

#[derive(Debug)]
pub(crate) struct Topic {
    state: Mutex<TopicState>,
    /// Woken on publish, settle and requeue when a consumer sleeps.
    notify: Notify,
    /// Consumers between "about to look" and "woke up" (see [`Topic::watch`]).
    /// Publishing and settling skip the wake-up (a lock inside `Notify`)
    /// when nobody can be waiting for it.
    sleepers: AtomicUsize,
}

/// A consumer's registration for wake-ups; see [`Topic::watch`].
pub(crate) struct Watch<'a> {
    topic: &'a Topic,
}

impl Watch<'_> {
    /// The notification future; enable it before looking at the state.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.topic.notify.notified()
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.topic.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Shared state of one named or private broker.
#[derive(Debug, Default)]
pub(crate) struct Broker {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

impl Broker {
    pub fn topic(&self, name: &str) -> Arc<Topic> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before `entry`, which would copy the name on every publish.
        if let Some(topic) = topics.get(name) {
            return topic.clone();
        }
        topics
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Topic {
                    state: Mutex::new(TopicState {
                        log: VecDeque::new(),
                        published: VecDeque::new(),
                        base: 0,
                        groups: HashMap::new(),
                        keep_all: false,
                    }),
                    notify: Notify::new(),
                    sleepers: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    pub fn notify_all(&self) {
        for t in self.topics.lock().unwrap_or_else(|e| e.into_inner()).values() {
            t.notify.notify_waiters();
        }
    }

    pub fn existing_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }
}

/// How a delivery ended when it did not succeed.
pub(crate) enum Requeue {
    Now,
    After(Duration),
}

impl Topic {
    fn lock(&self) -> MutexGuard<'_, TopicState> {
        // A panic while holding the lock leaves consistent state (every
        // transition is completed before anything can panic), so poisoning
        // is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register for wake-ups. Call before looking at the state and keep
    /// the registration until the wait is over: a publish or settle that
    /// comes after the look then sees a sleeper and notifies.
    pub fn watch(&self) -> Watch<'_> {
        // SeqCst pairs with the load in `wake`: either the waker sees this
        // increment or the consumer's look (under the topic lock, after it)
        // sees what the waker changed.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        Watch { topic: self }
    }

    /// Wake every consumer waiting on this topic, if any.
    pub fn wake(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    pub fn mark_dead_letter_topic(&self) {
        self.lock().keep_all = true;
    }

    pub fn append(&self, messages: impl IntoIterator<Item = Message>, replay_window: usize) {
        let messages: Vec<Arc<Message>> = messages.into_iter().map(Arc::new).collect();
        self.append_shared(messages.into_iter(), replay_window);
    }

    /// Append one message (no batch built around it).
    pub fn append_one(&self, message: Message, replay_window: usize) {
        self.append_shared(std::iter::once(Arc::new(message)), replay_window);
    }

    /// Append already shared messages: the allocations happen before the
    /// lock, and the messages the window lets go are freed after it.
    fn append_shared(&self, messages: impl ExactSizeIterator<Item = Arc<Message>>, replay_window: usize) {
        let dropped = {
            let mut st = self.lock();
            let now = SystemTime::now();
            st.published.extend(std::iter::repeat_n(now, messages.len()));
            st.log.extend(messages);
            st.trim(replay_window)
        };
        self.wake();
        drop(dropped);
    }

    /// Create the group if needed.
    pub fn join(&self, group: &str, start: StartFrom) {
        let mut st = self.lock();
        if !st.groups.contains_key(group) {
            let cursor = match start {
                StartFrom::Earliest => st.base,
                StartFrom::Latest => st.base + st.log.len() as u64,
            };
            st.groups.insert(
                group.to_owned(),
                GroupState {
                    cursor,
                    ..GroupState::default()
                },
            );
        }
    }

    /// Take up to `max` messages for `group` into `out`. When nothing is
    /// available, returns the instant something may become available without
    /// a notification (a nack delay or ack deadline ending).
    pub fn fetch(&self, group: &str, max: usize, ack_timeout: Duration, out: &mut Vec<Fetched>) -> Option<Instant> {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let g = st.groups.get_mut(group)?;
        g.expire(now);
        let deadline = now + ack_timeout;
        while out.len() < max {
            // Redeliveries first: they are older than anything left in the log.
            let next = if let Some((seq, pending)) = g.ready.pop_first() {
                Some((seq, pending))
            } else if g.cursor < st.base + st.log.len() as u64 {
                let idx = (g.cursor.max(st.base) - st.base) as usize;
                let seq = st.base + idx as u64;
                g.cursor = seq + 1;
                Some((
                    seq,
                    Pending {
                        message: st.log[idx].clone(),
                        attempts: 0,
                        first_failure: None,
                        published: st.published[idx],
                        owns_key: false,
                    },
                ))
            } else {
                None
            };
            let Some((seq, mut pending)) = next else { break };
            if let Some(key) = &pending.message.key {
                if !pending.owns_key {
                    if g.locked.contains(key) {
                        g.blocked.entry(key.clone()).or_default().insert(seq, pending);
                        continue;
                    }
                    g.locked.insert(key.clone());
                    pending.owns_key = true;
                }
            }
            pending.attempts += 1;
            g.next_token += 1;
            let token = g.next_token;
            out.push(Fetched {
                message: pending.message.clone(),
                seq,
                token,
                attempt: pending.attempts,
                first_failure: pending.first_failure,
            });
            g.in_flight.insert(
                seq,
                InFlight {
                    pending,
                    token,
                    deadline,
                },
            );
            g.earliest_deadline = Some(g.earliest_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        if !out.is_empty() {
            return None;
        }
        // Nothing now: wake up at the next deadline or nack-delay end.
        let next_delay = g.delayed.keys().next().map(|(t, _)| *t);
        match (next_delay, g.earliest_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Settle a delivery successfully (ack or dead-lettered).
    pub fn complete(&self, group: &str, seq: u64, token: u64) -> Result<Arc<Message>> {
        let message = {
            let mut st = self.lock();
            let g = st.groups.get_mut(group).ok_or_else(expired)?;
            let flight = g.take(seq, token)?;
            g.release(&flight.pending);
            flight.pending.message
        };
        self.wake();
        Ok(message)
    }

    /// Move a delivery to `dlq` as `dead`. Both happen under this topic's
    /// lock, so the message is never in both places or in neither.
    pub fn dead_letter(
        &self,
        group: &str,
        seq: u64,
        token: u64,
        dlq: &Topic,
        dead: Message,
        window: usize,
    ) -> Result<()> {
        {
            let mut st = self.lock();
            let g = st.groups.get_mut(group).ok_or_else(expired)?;
            let flight = g.take(seq, token)?;
            dlq.append_one(dead, window);
            g.release(&flight.pending);
        }
        self.wake();
        Ok(())
    }

    /// Put a delivery back, now or after a delay; its key stays locked so
    /// later messages of the key wait.
    pub fn requeue(&self, group: &str, seq: u64, token: u64, how: Requeue) -> Result<()> {
        {
            let mut st = self.lock();
            let g = st.groups.get_mut(group).ok_or_else(expired)?;
            let mut flight = g.take(seq, token)?;
            flight.pending.first_failure.get_or_insert_with(SystemTime::now);
            match how {
                Requeue::Now => {
                    g.ready.insert(seq, flight.pending);
                }
                Requeue::After(d) => {
                    g.delayed.insert((Instant::now() + d, seq), flight.pending);
                }
            }
        }
        self.wake();
        Ok(())
    }

    pub fn extend(&self, group: &str, seq: u64, token: u64, by: Duration) -> Result<()> {
        let mut st = self.lock();
        let g = st.groups.get_mut(group).ok_or_else(expired)?;
        match g.in_flight.get_mut(&seq) {
            Some(f) if f.token == token => {
                f.deadline = Instant::now() + by;
                Ok(())
            }
            _ => Err(expired()),
        }
    }

    /// Messages retained (for dead-letter topics: the queue depth).
    pub fn retained(&self) -> Vec<Arc<Message>> {
        self.lock().log.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().log.len()
    }

    /// Remove the oldest `n` retained messages, returning them.
    pub fn remove_front(&self, n: usize) -> Vec<Arc<Message>> {
        let mut st = self.lock();
        let n = n.min(st.log.len());
        let removed: Vec<_> = st.log.drain(..n).collect();
        st.published.drain(..n);
        st.base += n as u64;
        removed
    }

    /// Put messages back at the front (undoing `remove_front` after a failure).
    pub fn restore_front(&self, messages: Vec<Arc<Message>>) {
        let mut st = self.lock();
        let now = SystemTime::now();
        for m in messages.into_iter().rev() {
            st.log.push_front(m);
            st.published.push_front(now);
            st.base -= 1;
        }
    }

    /// `group`'s (waiting, in flight, when the oldest waiting message was
    /// published). A group that does not exist has nothing waiting.
    pub fn backlog(&self, group: &str) -> (u64, u64, Option<SystemTime>) {
        let st = self.lock();
        let Some(g) = st.groups.get(group) else {
            return (0, 0, None);
        };
        let end = st.base + st.log.len() as u64;
        let unread = end.saturating_sub(g.cursor.max(st.base));
        let again = g
            .ready
            .values()
            .chain(g.delayed.values())
            .chain(g.blocked.values().flat_map(|b| b.values()));
        let mut waiting = unread;
        let mut oldest = (unread > 0).then(|| st.published[(g.cursor.max(st.base) - st.base) as usize]);
        for p in again {
            waiting += 1;
            oldest = Some(oldest.map_or(p.published, |o| o.min(p.published)));
        }
        (waiting, g.in_flight.len() as u64, oldest)
    }
}

fn expired() -> Error {
    Error::new(
        ErrorKind::DeliveryExpired,
        "the delivery is no longer in flight (its ack timeout passed or it was settled)",
    )
}

impl TopicState {
    /// Drop what the replay window no longer keeps, returning it so that
    /// the caller frees it outside the lock. Trimming waits until a sixteenth
    /// of the window (at least one message) can go, so that a publish does
    /// not pay for it every time: up to `window + window / 16` are kept.
    fn trim(&mut self, replay_window: usize) -> Vec<Arc<Message>> {
        let slack = (replay_window / 16).max(1);
        if self.keep_all || self.log.len() < replay_window + slack {
            return Vec::new();
        }
        // A topic nobody subscribed to yet keeps everything (up to the window
        // a group starting at Earliest could ask for), others drop only what
        // every group has passed.
        let excess = self.log.len() - replay_window;
        let excess = match self.groups.values().map(|g| g.cursor).min() {
            None => excess,
            Some(min_cursor) => excess.min(min_cursor.saturating_sub(self.base) as usize),
        };
        self.published.drain(..excess);
        self.base += excess as u64;
        self.log.drain(..excess).collect()
    }
}

impl GroupState {
    fn take(&mut self, seq: u64, token: u64) -> Result<InFlight> {
        match self.in_flight.get(&seq) {
            Some(f) if f.token == token => Ok(self.in_flight.remove(&seq).expect("present")),
            _ => Err(expired()),
        }
    }

    /// The message is gone from the group: free its key for the next one.
    fn release(&mut self, pending: &Pending) {
        let Some(key) = &pending.message.key else { return };
        self.locked.remove(key);
        if let Some(waiting) = self.blocked.get_mut(key) {
            if let Some((seq, next)) = waiting.pop_first() {
                self.ready.insert(seq, next);
            }
            if waiting.is_empty() {
                self.blocked.remove(key);
            }
        }
    }

    /// Move due nack delays and timed-out deliveries back to `ready`.
    fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, seq), pending) = entry.remove_entry();
            self.ready.insert(seq, pending);
        }
        if self.earliest_deadline.is_some_and(|d| d <= now) {
            let timed_out: Vec<u64> = self
                .in_flight
                .iter()
                .filter(|(_, f)| f.deadline <= now)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in timed_out {
                let mut f = self.in_flight.remove(&seq).expect("present");
                f.pending.first_failure.get_or_insert_with(SystemTime::now);
                self.ready.insert(seq, f.pending);
            }
            self.earliest_deadline = self.in_flight.values().map(|f| f.deadline).min();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(topic: &Topic) -> Vec<String> {
        topic
            .retained()
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect()
    }

    fn publish(topic: &Topic, range: std::ops::Range<u32>, window: usize) {
        topic.append(range.map(|i| Message::new(i.to_string())), window);
    }

    /// How much a new group can replay: without groups the last `window`
    /// messages; with a group, nothing it has not consumed; dead-letter
    /// topics everything.
    #[test]
    fn retention_follows_the_replay_window() {
        let broker = Broker::default();
        let alone = broker.topic("alone");
        publish(&alone, 0..5, 3);
        assert_eq!(texts(&alone), ["2", "3", "4"]);
        alone.join("late", StartFrom::Earliest);
        let mut out = Vec::new();
        alone.fetch("late", 10, Duration::from_secs(30), &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|f| (f.seq, String::from_utf8_lossy(&f.message.payload).into_owned()))
            .collect();
        assert_eq!(got, [(2, "2".into()), (3, "3".into()), (4, "4".into())]);

        let watched = broker.topic("watched");
        watched.join("slow", StartFrom::Latest);
        publish(&watched, 0..6, 2);
        assert_eq!(texts(&watched).len(), 6, "unconsumed messages were dropped");
        let mut out = Vec::new();
        watched.fetch("slow", 4, Duration::from_secs(30), &mut out);
        for f in &out {
            watched.complete("slow", f.seq, f.token).unwrap();
        }
        publish(&watched, 6..7, 2);
        assert_eq!(
            texts(&watched),
            ["4", "5", "6"],
            "consumed messages beyond the window are dropped"
        );

        let dlq = broker.topic("dlq");
        dlq.mark_dead_letter_topic();
        publish(&dlq, 0..5, 2);
        assert_eq!(texts(&dlq).len(), 5);
        let taken = dlq.remove_front(2);
        assert_eq!(texts(&dlq), ["2", "3", "4"]);
        dlq.restore_front(taken);
        assert_eq!(texts(&dlq), ["0", "1", "2", "3", "4"]);
        dlq.join("reader", StartFrom::Earliest);
        let mut out = Vec::new();
        dlq.fetch("reader", 1, Duration::from_secs(30), &mut out);
        assert_eq!(out[0].seq, 0, "offsets survive a remove and restore");

        // A larger window is trimmed a sixteenth at a time: between the
        // window and window + window / 16 consumed messages stay.
        let big = broker.topic("big");
        big.join("g", StartFrom::Latest);
        for n in 0..200u32 {
            publish(&big, n..n + 1, 64);
            let mut out = Vec::new();
            big.fetch("g", 1, Duration::from_secs(30), &mut out);
            big.complete("g", out[0].seq, out[0].token).unwrap();
            let kept = big.len();
            assert!(kept <= 64 + 4, "{kept} kept after {} published", n + 1);
            assert!(
                kept >= (n as usize + 1).min(64),
                "{kept} kept after {} published",
                n + 1
            );
        }
    }
}
