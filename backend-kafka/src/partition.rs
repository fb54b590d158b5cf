//! Bookkeeping of one assigned partition: which fetched records wait, which
//! are in flight, what was acked out of order, how often each failed, and the
//! offset (plus commit metadata) that may be committed.
//!
//! Kafka stores one committed offset per partition and group. Acks arrive out
//! of order under concurrency, so only the contiguous acked prefix is
//! committed: the *position* is the offset of the oldest record not yet
//! acked. What lies above it (records acked out of order, failure counts) goes
//! into the commit's metadata string, so a consumer that takes the partition
//! over after a rebalance or restart skips what was acked and continues the
//! attempt counts. The offset alone never covers an unacked record.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use transport_core::Message;

/// Longest metadata string written; Kafka's default limit
/// (`offset.metadata.max.bytes`) is 4096. What does not fit is left out,
/// which can only cause a redelivery or a lower attempt count.
const MAX_METADATA: usize = 3_800;
/// Version tag of the metadata format.
const TAG: &str = "t1";

/// Failed deliveries of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub count: u32,
    pub first: SystemTime,
    /// A delayed nack holds the record until then, also for the member that
    /// takes the partition over.
    pub hold: Option<SystemTime>,
}

/// What the commit metadata carries above the committed offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Offsets acked above the position.
    pub acked: BTreeSet<i64>,
    /// Failure counts of records at or above the position.
    pub failures: BTreeMap<i64, Failure>,
}

#[derive(Debug)]
enum SlotState {
    /// Fetched, waiting to be handed out (not before the instant).
    Pending { not_before: Instant },
    /// Handed out under `token`; expires at `deadline`.
    InFlight { token: u64, deadline: Instant },
}

#[derive(Debug)]
struct Slot {
    message: Arc<Message>,
    state: SlotState,
}

/// What the partition can hand out next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The record at this offset.
    Ready(i64),
    /// The head is held back (delayed nack) until then; later records of the
    /// partition wait behind it to keep per-key order.
    Until(Instant),
    /// Nothing waits.
    Empty,
}

/// A record handed out.
pub(crate) struct Taken {
    pub message: Arc<Message>,
    pub attempt: u32,
    pub first_failure: Option<SystemTime>,
}

/// One assigned partition.
#[derive(Debug)]
pub(crate) struct Partition {
    /// Fetched and not acked, by offset.
    slots: BTreeMap<i64, Slot>,
    acked: BTreeSet<i64>,
    failures: BTreeMap<i64, Failure>,
    /// The offset after the last fetched record.
    fetched_to: i64,
    /// Last committed (offset, metadata), to skip needless commits.
    committed: Option<(i64, String)>,
    /// The fetcher is paused because enough records wait.
    pub paused: bool,
}

impl Partition {
    /// A partition whose group position is `start`, with the progress an
    /// earlier owner left in the commit metadata.
    pub fn new(start: i64, progress: Progress, committed_metadata: Option<String>) -> Self {
        let mut p = Partition {
            slots: BTreeMap::new(),
            acked: progress.acked,
            failures: progress.failures,
            fetched_to: start,
            committed: committed_metadata.map(|m| (start, m)),
            paused: false,
        };
        p.prune();
        p
    }

    /// The offset to commit: the oldest record not acked.
    pub fn position(&self) -> i64 {
        self.slots.keys().next().copied().unwrap_or(self.fetched_to)
    }

    /// Records waiting or in flight.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.slots.len()
    }

    /// Records fetched and not yet handed out.
    pub fn pending(&self) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s.state, SlotState::Pending { .. }))
            .count()
    }

    /// A record arrived from the fetcher. Returns whether it waits to be
    /// handed out (records acked by an earlier owner are skipped).
    pub fn push(&mut self, offset: i64, message: Arc<Message>, now: Instant) -> bool {
        if offset < self.fetched_to {
            return false;
        }
        self.fetched_to = offset + 1;
        if self.acked.contains(&offset) {
            self.prune();
            return false;
        }
        let held = self
            .failures
            .get(&offset)
            .and_then(|f| f.hold)
            .and_then(|hold| hold.duration_since(SystemTime::now()).ok());
        self.slots.insert(
            offset,
            Slot {
                message,
                state: SlotState::Pending {
                    not_before: now + held.unwrap_or_default(),
                },
            },
        );
        true
    }

    /// What can be handed out now. A held-back record blocks the later ones.
    pub fn next(&self, now: Instant) -> Next {
        for (offset, slot) in &self.slots {
            if let SlotState::Pending { not_before } = slot.state {
                return if not_before <= now {
                    Next::Ready(*offset)
                } else {
                    Next::Until(not_before)
                };
            }
        }
        Next::Empty
    }

    /// Hand out the record at `offset` under `token`.
    pub fn take(&mut self, offset: i64, token: u64, deadline: Instant) -> Option<Taken> {
        let failure = self.failures.get(&offset).copied();
        let slot = self.slots.get_mut(&offset)?;
        if !matches!(slot.state, SlotState::Pending { .. }) {
            return None;
        }
        slot.state = SlotState::InFlight { token, deadline };
        Some(Taken {
            message: slot.message.clone(),
            attempt: failure.map_or(0, |f| f.count) + 1,
            first_failure: failure.map(|f| f.first),
        })
    }

    fn in_flight_mut(&mut self, offset: i64, token: u64) -> Option<&mut Slot> {
        self.slots
            .get_mut(&offset)
            .filter(|s| matches!(s.state, SlotState::InFlight { token: t, .. } if t == token))
    }

    /// Count a failure of `offset`; the record may be retried after `hold`.
    fn fail(&mut self, offset: i64, now: SystemTime, hold: Option<SystemTime>) {
        self.failures
            .entry(offset)
            .and_modify(|f| {
                f.count += 1;
                f.hold = hold;
            })
            .or_insert(Failure {
                count: 1,
                first: now,
                hold,
            });
    }

    /// Ack the delivery `token` of `offset`; false when it is no longer in
    /// flight under that token (expired, or the partition was revoked).
    pub fn ack(&mut self, offset: i64, token: u64) -> bool {
        if self.in_flight_mut(offset, token).is_none() {
            return false;
        }
        self.slots.remove(&offset);
        self.failures.remove(&offset);
        self.acked.insert(offset);
        self.prune();
        true
    }

    /// Put the delivery back, held until `now + delay`, counting a failure.
    pub fn nack(&mut self, offset: i64, token: u64, now: Instant, wall: SystemTime, delay: Duration) -> bool {
        let Some(slot) = self.in_flight_mut(offset, token) else {
            return false;
        };
        slot.state = SlotState::Pending {
            not_before: now + delay,
        };
        self.fail(offset, wall, (!delay.is_zero()).then(|| wall + delay));
        true
    }

    /// Push the deadline of an in-flight delivery.
    pub fn extend(&mut self, offset: i64, token: u64, deadline: Instant) -> bool {
        match self.in_flight_mut(offset, token) {
            Some(slot) => {
                slot.state = SlotState::InFlight { token, deadline };
                true
            }
            None => false,
        }
    }

    /// Deliveries past their deadline go back (a failure each). Returns how many.
    pub fn expire(&mut self, now: Instant, wall: SystemTime) -> usize {
        let expired: Vec<i64> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.state, SlotState::InFlight { deadline, .. } if deadline <= now))
            .map(|(o, _)| *o)
            .collect();
        for offset in &expired {
            if let Some(slot) = self.slots.get_mut(offset) {
                slot.state = SlotState::Pending { not_before: now };
            }
            self.fail(*offset, wall, None);
        }
        expired.len()
    }

    /// The partition is taken away: deliveries in flight count as failed (a
    /// consumer that loses them never settled them). Returns how many were
    /// in flight.
    pub fn revoke(&mut self, wall: SystemTime) -> usize {
        let in_flight: Vec<i64> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.state, SlotState::InFlight { .. }))
            .map(|(o, _)| *o)
            .collect();
        for offset in &in_flight {
            self.fail(*offset, wall, None);
        }
        in_flight.len()
    }

    /// Whether a record could be handed out now (nobody is taking it).
    pub fn has_ready(&self, now: Instant) -> bool {
        matches!(self.next(now), Next::Ready(_))
    }

    fn prune(&mut self) {
        let position = self.position();
        self.acked = self.acked.split_off(&position);
        self.failures = self.failures.split_off(&position);
    }

    /// The offset and metadata to commit, or `None` when already committed.
    pub fn to_commit(&self) -> Option<(i64, String)> {
        let position = self.position();
        let metadata = encode(
            position,
            &Progress {
                acked: self.acked.clone(),
                failures: self.failures.clone(),
            },
        );
        match &self.committed {
            Some((o, m)) if *o == position && *m == metadata => None,
            _ => Some((position, metadata)),
        }
    }

    /// Record a successful commit.
    pub fn committed(&mut self, offset: i64, metadata: String) {
        self.committed = Some((offset, metadata));
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Metadata for a commit at `position`: `t1;a=<ranges>;f=<rel>:<count>:<ms>,...`
/// with offsets relative to the position.
pub(crate) fn encode(position: i64, progress: &Progress) -> String {
    let mut out = String::from(TAG);
    if !progress.acked.is_empty() {
        out.push_str(";a=");
        let mut first = true;
        let mut iter = progress.acked.iter().map(|o| o - position).peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end = iter.next().unwrap_or(end);
            }
            let mut item = String::new();
            if !first {
                item.push(',');
            }
            if start == end {
                let _ = write!(item, "{start}");
            } else {
                let _ = write!(item, "{start}-{end}");
            }
            if out.len() + item.len() > MAX_METADATA / 2 {
                break;
            }
            out.push_str(&item);
            first = false;
        }
    }
    if !progress.failures.is_empty() {
        out.push_str(";f=");
        let mut first = true;
        for (offset, f) in &progress.failures {
            let mut item = format!(
                "{}{}:{}:{}",
                if first { "" } else { "," },
                offset - position,
                f.count,
                millis(f.first)
            );
            if let Some(hold) = f.hold {
                let _ = write!(item, ":{}", millis(hold));
            }
            if out.len() + item.len() > MAX_METADATA {
                break;
            }
            out.push_str(&item);
            first = false;
        }
    }
    out
}

/// Read metadata written by [`encode`] for a commit at `position`. Anything
/// else (another client's metadata) reads as no progress.
pub(crate) fn decode(position: i64, metadata: &str) -> Progress {
    let mut progress = Progress::default();
    let mut parts = metadata.split(';');
    if parts.next() != Some(TAG) {
        return progress;
    }
    for part in parts {
        if let Some(list) = part.strip_prefix("a=") {
            for item in list.split(',').filter(|s| !s.is_empty()) {
                let (a, b) = item.split_once('-').unwrap_or((item, item));
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    if a >= 0 && b >= a && b - a < 1_000_000 {
                        progress.acked.extend((a..=b).map(|r| position + r));
                    }
                }
            }
        } else if let Some(list) = part.strip_prefix("f=") {
            for item in list.split(',') {
                let mut fields = item.split(':');
                let (Some(rel), Some(count), Some(ms)) = (fields.next(), fields.next(), fields.next()) else {
                    continue;
                };
                let hold = fields
                    .next()
                    .and_then(|h| h.parse::<u64>().ok())
                    .map(|h| UNIX_EPOCH + Duration::from_millis(h));
                if let (Ok(rel), Ok(count), Ok(ms)) = (rel.parse::<i64>(), count.parse::<u32>(), ms.parse::<u64>()) {
                    progress.failures.insert(
                        position + rel,
                        Failure {
                            count,
                            first: UNIX_EPOCH + Duration::from_millis(ms),
                            hold,
                        },
                    );
                }
            }
        }
    }
    progress
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: i64) -> Arc<Message> {
        Arc::new(Message::new(format!("m{i}")))
    }

    fn filled(start: i64, n: i64, now: Instant) -> Partition {
        let mut p = Partition::new(start, Progress::default(), None);
        for o in start..start + n {
            assert!(p.push(o, msg(o), now));
        }
        p
    }

    #[test]
    fn only_the_contiguous_acked_prefix_is_committed() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut p = filled(10, 4, now);
        for (token, o) in (10..14).enumerate() {
            assert_eq!(p.next(now), Next::Ready(o));
            p.take(o, token as u64, later).unwrap();
        }
        assert!(p.ack(12, 2));
        assert!(p.ack(13, 3));
        let (offset, meta) = p.to_commit().unwrap();
        assert_eq!(offset, 10, "10 and 11 are not acked");
        assert_eq!(decode(offset, &meta).acked, BTreeSet::from([12, 13]));
        assert!(p.ack(10, 0));
        assert_eq!(p.position(), 11);
        assert!(p.ack(11, 1));
        assert_eq!(p.position(), 14);
        let (offset, meta) = p.to_commit().unwrap();
        assert_eq!((offset, meta.as_str()), (14, "t1"));
        p.committed(offset, meta);
        assert_eq!(p.to_commit(), None);
        assert!(!p.ack(11, 1), "a second ack of one delivery is refused");
    }

    #[test]
    fn a_new_owner_skips_what_was_acked_and_continues_attempts() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut old = filled(0, 3, now);
        for o in 0..3 {
            old.take(o, o as u64, later).unwrap();
        }
        assert!(old.nack(0, 0, now, SystemTime::now(), Duration::ZERO));
        assert!(old.ack(1, 1));
        assert_eq!(old.revoke(SystemTime::now()), 1, "record 2 was in flight");
        let (offset, meta) = old.to_commit().unwrap();
        assert_eq!(offset, 0);

        let mut new = Partition::new(offset, decode(offset, &meta), Some(meta));
        for o in 0..3 {
            new.push(o, msg(o), now);
        }
        assert_eq!(new.outstanding(), 2, "record 1 was acked by the old owner");
        let t0 = new.take(0, 10, later).unwrap();
        assert_eq!(t0.attempt, 2);
        assert!(t0.first_failure.is_some());
        assert_eq!(new.next(now), Next::Ready(2));
        assert_eq!(new.take(2, 11, later).unwrap().attempt, 2);
    }

    #[test]
    fn a_delayed_nack_holds_back_later_records() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut p = filled(0, 3, now);
        p.take(0, 1, later).unwrap();
        assert!(p.nack(0, 1, now, SystemTime::now(), Duration::from_secs(5)));
        assert_eq!(p.next(now), Next::Until(now + Duration::from_secs(5)));
        assert!(!p.has_ready(now));
        let then = now + Duration::from_secs(5);
        assert_eq!(p.next(then), Next::Ready(0));
        assert_eq!(p.take(0, 2, later).unwrap().attempt, 2);
        assert!(!p.ack(0, 1), "the old token is stale");
        assert!(p.ack(0, 2));
    }

    #[test]
    fn a_delayed_nack_holds_for_the_next_owner_too() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut old = filled(0, 2, now);
        old.take(0, 1, later).unwrap();
        assert!(old.nack(0, 1, now, SystemTime::now(), Duration::from_secs(30)));
        let (offset, meta) = old.to_commit().unwrap();
        let mut new = Partition::new(offset, decode(offset, &meta), Some(meta));
        new.push(0, msg(0), now);
        new.push(1, msg(1), now);
        assert!(
            matches!(new.next(now), Next::Until(t) if t > now + Duration::from_secs(25)),
            "the rest of the delay carries over, and record 1 waits behind record 0"
        );
    }

    #[test]
    fn expiry_puts_deliveries_back_with_a_failure() {
        let now = Instant::now();
        let mut p = filled(0, 2, now);
        p.take(0, 1, now + Duration::from_millis(10)).unwrap();
        p.take(1, 2, now + Duration::from_secs(60)).unwrap();
        assert_eq!(p.expire(now + Duration::from_millis(20), SystemTime::now()), 1);
        assert!(!p.ack(0, 1), "expired");
        assert_eq!(p.next(now + Duration::from_millis(20)), Next::Ready(0));
        assert_eq!(p.take(0, 3, now + Duration::from_secs(60)).unwrap().attempt, 2);
        assert!(p.extend(1, 2, now + Duration::from_secs(120)));
        assert_eq!(p.expire(now + Duration::from_secs(90), SystemTime::now()), 1);
    }

    #[test]
    fn metadata_round_trips_and_stays_bounded() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let progress = Progress {
            acked: BTreeSet::from([102, 103, 104, 107]),
            failures: BTreeMap::from([
                (
                    100,
                    Failure {
                        count: 3,
                        first: t,
                        hold: None,
                    },
                ),
                (
                    101,
                    Failure {
                        count: 1,
                        first: t,
                        hold: Some(t + Duration::from_secs(2)),
                    },
                ),
            ]),
        };
        let m = encode(100, &progress);
        assert_eq!(m, "t1;a=2-4,7;f=0:3:1700000000123,1:1:1700000000123:1700000002123");
        assert_eq!(decode(100, &m), progress);
        assert_eq!(decode(0, "something else"), Progress::default());
        let many = Progress {
            acked: (0..100_000).step_by(2).collect(),
            failures: BTreeMap::new(),
        };
        assert!(encode(0, &many).len() <= MAX_METADATA);
    }
}
