//! Settling an entry, the whole life of a delivery after it was handed out:
//! ack, nack with delay, dead-letter and extend, each one script (or, across
//! cluster slots, a copy then an ack), guarded by the delivery count the
//! handle was handed out with; a handle dropped unsettled is nacked at once.
//! Also the state a subscription and its deliveries share.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, ScriptInvocation};
use transport_core::backend::{on_drop, InFlightLimit, Settler};
use transport_core::{Error, ErrorKind, Message, Result};

use crate::core::{self, map_err, scripts, Conn};
use crate::names::Keys;

/// What a subscription and its deliveries share.
pub(crate) struct ConsumerShared {
    /// Connection for settlement (not the blocking reader).
    pub(crate) control: Conn,
    pub(crate) keys: Keys,
    pub(crate) group: Arc<str>,
    /// This consumer's name in the group.
    pub(crate) name: String,
    pub(crate) ack_timeout: Duration,
    pub(crate) in_flight: Arc<InFlightLimit>,
    /// Whether a vanished stream or group is created again (`provision`).
    pub(crate) provision: bool,
}

pub(crate) struct RedisSettler {
    pub(crate) shared: Arc<ConsumerShared>,
    pub(crate) entry_id: String,
    /// The entry's delivery count when it was handed out: settling checks
    /// it, so this handle cannot settle a later redelivery.
    pub(crate) count: u32,
    pub(crate) settled: bool,
}

impl RedisSettler {
    fn begin(&mut self) -> (Arc<ConsumerShared>, String, u32) {
        self.settled = true;
        let s = self.shared.clone();
        s.in_flight.release();
        (s, std::mem::take(&mut self.entry_id), self.count)
    }
}

fn expired() -> Error {
    Error::new(
        ErrorKind::DeliveryExpired,
        "the entry is no longer pending for the group (settled elsewhere or trimmed)",
    )
}

/// A settling script on an entry: KEYS stream, delayed, failures; ARGV
/// group, entry id and the handle's delivery count (each script settles
/// nothing when the count grew: a stale handle), then what the caller adds.
fn settling<'a>(script: &'a Script, s: &ConsumerShared, entry_id: &str, count: u32) -> ScriptInvocation<'a> {
    let k = &s.keys;
    let mut invocation = script.prepare_invoke();
    invocation
        .key(&k.stream)
        .key(&k.delayed)
        .key(&k.failures)
        .arg(&*s.group)
        .arg(entry_id)
        .arg(count);
    invocation
}

/// Run a settling script; its 0 (stale handle, or the entry no longer
/// pending) is `DeliveryExpired`.
async fn settle(invocation: ScriptInvocation<'_>, s: &ConsumerShared) -> Result<()> {
    let done: i64 = invocation.invoke_async(&mut s.control.clone()).await.map_err(map_err)?;
    if done == 0 {
        return Err(expired());
    }
    Ok(())
}

pub(crate) async fn nack_entry(s: &ConsumerShared, entry_id: &str, count: u32, delay: Duration) -> Result<()> {
    let now = core::now_ms();
    let mut invocation = settling(&scripts().nack, s, entry_id, count);
    invocation.arg(now + delay.as_millis() as u64).arg(now);
    settle(invocation, s).await
}

/// Ack the entry if the handle is current, clearing its delay and first
/// failure.
async fn ack_entry(s: &ConsumerShared, entry_id: &str, count: u32) -> Result<()> {
    settle(settling(&scripts().ack, s, entry_id, count), s).await
}

#[async_trait]
impl Settler for RedisSettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (s, id, count) = self.begin();
        ack_entry(&s, &id, count).await
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (s, id, count) = self.begin();
        nack_entry(&s, &id, count, delay.unwrap_or_default()).await
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (s, id, count) = self.begin();
        let k = &s.keys;
        if k.dlq_apart {
            return dead_letter_apart(&s, &id, count, &dead).await;
        }
        let mut invocation = settling(&scripts().dead_letter, &s, &id, count);
        invocation.key(&k.dlq);
        for (f, v) in core::encode(&dead) {
            invocation.arg(f).arg(v);
        }
        settle(invocation, &s).await
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        // The ack timeout is "idle longer than ack_timeout" (XPENDING IDLE):
        // setting the entry's idle time to ack_timeout - by makes it due
        // exactly `by` from now. JUSTID leaves the delivery count alone.
        let s = &self.shared;
        let idle = s.ack_timeout.saturating_sub(by);
        // 0: no longer pending (acked, dead-lettered or trimmed meanwhile),
        // or redelivered since this handle was handed out.
        let mut invocation = settling(&scripts().extend, s, &self.entry_id, self.count);
        invocation.arg(&s.name).arg(idle.as_millis() as u64);
        settle(invocation, s).await
    }
}

/// Dead-lettering when the dead-letter stream is in another slot (a
/// cluster): no script can move the entry in one step, so it is copied to
/// the dead-letter stream first and acked after. A crash in between, or a
/// redelivery that overtakes the copy, leaves it in both places (a
/// duplicate in the dead-letter stream), never in neither.
async fn dead_letter_apart(s: &ConsumerShared, id: &str, count: u32, dead: &Message) -> Result<()> {
    settle(settling(&scripts().current, s, id, count), s).await?;
    core::xadd(&s.keys.dlq, None, false, dead)
        .query_async::<()>(&mut s.control.clone())
        .await
        .map_err(map_err)?;
    ack_entry(s, id, count).await
}

impl Drop for RedisSettler {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled: hand it back now rather than after the ack
        // timeout, when a runtime is there to do it.
        let (s, id, count) = self.begin();
        on_drop(async move {
            if let Err(e) = nack_entry(&s, &id, count, Duration::ZERO).await {
                tracing::debug!(error = %e, "returning a dropped delivery failed; the ack timeout will");
            }
        });
    }
}
