//! Which dead letters an operation picks: by id, by reason, by failure time.

use std::collections::BTreeSet;
use std::time::SystemTime;

use crate::dead_letter::DeadLetter;
use crate::message::Message;

/// The dead letters [`DeadLetterQueue::redrive`] and
/// [`DeadLetterQueue::discard`] act on: those meeting every condition given
/// (no condition: all of them), oldest first, at most
/// [`oldest`](Self::oldest) of them when given.
///
/// [`DeadLetterQueue::redrive`]: crate::DeadLetterQueue::redrive
/// [`DeadLetterQueue::discard`]: crate::DeadLetterQueue::discard
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    ids: Option<BTreeSet<String>>,
    reason_contains: Option<String>,
    failed_before: Option<SystemTime>,
    limit: Option<u64>,
}

impl Selection {
    /// Every dead letter.
    pub fn all() -> Self {
        Selection::default()
    }

    /// The dead letters with these message ids.
    pub fn ids<I, S>(ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Selection {
            ids: Some(ids.into_iter().map(Into::into).collect()),
            ..Selection::default()
        }
    }

    /// Only those whose dead-letter reason contains `text`.
    pub fn reason_contains(mut self, text: impl Into<String>) -> Self {
        self.reason_contains = Some(text.into());
        self
    }

    /// Only those that last failed before `time`.
    pub fn failed_before(mut self, time: SystemTime) -> Self {
        self.failed_before = Some(time);
        self
    }

    /// At most the `n` oldest of those meeting the other conditions.
    pub fn oldest(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// How many an operation may act on at most (`u64::MAX` without
    /// [`oldest`](Self::oldest)). A backend counts what it picked against it.
    pub fn limit(&self) -> u64 {
        self.limit.unwrap_or(u64::MAX)
    }

    /// Whether any condition besides the limit is given: without one, the
    /// oldest [`limit`](Self::limit) dead letters are picked.
    pub fn has_conditions(&self) -> bool {
        self.ids.is_some() || self.reason_contains.is_some() || self.failed_before.is_some()
    }

    /// Whether every dead letter is picked (no condition, no limit): a
    /// backend may then act on the whole queue at once.
    pub fn is_everything(&self) -> bool {
        *self == Selection::default()
    }

    /// Split `items` (oldest first) into those picked, at most
    /// [`limit`](Self::limit) of them, and those kept, both in their order.
    /// `message` gives the stored message of an item.
    pub fn partition<T>(&self, items: Vec<T>, message: impl Fn(&T) -> &Message) -> (Vec<T>, Vec<T>) {
        let mut left = self.limit();
        let (mut picked, mut kept) = (Vec::new(), Vec::new());
        for item in items {
            if left > 0 && self.matches(&DeadLetter::from_message(message(&item).clone())) {
                left -= 1;
                picked.push(item);
            } else {
                kept.push(item);
            }
        }
        (picked, kept)
    }

    /// Whether `dead` meets the conditions (the limit is the caller's to count).
    pub fn matches(&self, dead: &DeadLetter) -> bool {
        self.picks(&dead.message.id, dead.reason.as_deref(), dead.last_failure)
    }

    /// Whether a failed message with this id, failure reason and last
    /// failure time is picked (for stores of failed messages other than
    /// dead-letter queues, such as an outbox's parked rows).
    pub fn picks(&self, id: &str, reason: Option<&str>, last_failure: Option<SystemTime>) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(id))
            && self
                .reason_contains
                .as_ref()
                .is_none_or(|text| reason.is_some_and(|r| r.contains(text.as_str())))
            && self
                .failed_before
                .is_none_or(|t| last_failure.is_some_and(|last| last < t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::dead_letter_message;
    use crate::delivery_info::DeliveryInfo;
    use crate::message::Message;
    use std::sync::Arc;
    use std::time::Duration;

    fn dead(id: &str, reason: &str, at_secs: u64) -> DeadLetter {
        let info = DeliveryInfo {
            topic: Arc::from("orders"),
            group: Arc::from("billing"),
            attempt: 1,
            max_attempts: 1,
            first_failure: None,
            ack_timeout: Duration::from_secs(30),
            stable_id: true,
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at_secs);
        DeadLetter::from_message(dead_letter_message(&Message::new("p").with_id(id), &info, reason, at))
    }

    #[test]
    fn every_condition_must_hold() {
        let a = dead("a", "bad input: total", 100);
        let b = dead("b", "downstream timeout", 200);
        assert!(Selection::all().matches(&a) && Selection::all().matches(&b));
        assert!(Selection::ids(["a"]).matches(&a) && !Selection::ids(["a"]).matches(&b));
        let timeouts = Selection::all().reason_contains("timeout");
        assert!(!timeouts.matches(&a) && timeouts.matches(&b));
        let early = Selection::all().failed_before(SystemTime::UNIX_EPOCH + Duration::from_secs(150));
        assert!(early.matches(&a) && !early.matches(&b));
        assert!(!Selection::ids(["b"]).reason_contains("bad").matches(&b));
    }

    #[test]
    fn ids_are_whole_ids() {
        // Message ids of one producer often share a prefix (UUIDv7s of the
        // same millisecond, `order-1` and `order-12`): only the exact id is
        // the operator's pick.
        let one = dead("order-1", "x", 100);
        let twelve = dead("order-12", "x", 100);
        let picked = Selection::ids(["order-1"]);
        assert!(picked.matches(&one));
        assert!(!picked.matches(&twelve), "order-12 picked by id order-1");
        assert!(!Selection::ids(["order-12"]).matches(&one));
        assert!(!Selection::ids(Vec::<String>::new()).matches(&one), "no ids picks none");
    }

    #[test]
    fn reason_is_matched_as_written() {
        let upper = dead("a", "Timeout calling billing", 100);
        assert!(Selection::all().reason_contains("Timeout").matches(&upper));
        assert!(
            !Selection::all().reason_contains("timeout").matches(&upper),
            "reason matched ignoring case"
        );
        assert!(!Selection::all().reason_contains("x").picks("a", None, None));
    }

    #[test]
    fn failed_before_is_strict() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(150);
        let failed_then = dead("a", "x", 150);
        assert!(
            !Selection::all().failed_before(at).matches(&failed_then),
            "a failure at the bound picked"
        );
        assert!(Selection::all()
            .failed_before(at + Duration::from_millis(1))
            .matches(&failed_then));
        // Without a recorded failure time nobody can say it failed before.
        assert!(!Selection::all().failed_before(at).picks("a", Some("x"), None));
    }
}
