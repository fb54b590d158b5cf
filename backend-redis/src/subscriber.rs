//! Reading a group (`XREADGROUP`, due nacks and timed-out entries claimed
//! by scripts, through the toolkit's pull loop) and settling entries: ack,
//! nack with delay, dead-letter and extend, each one script or command.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{Script, ScriptInvocation, Value};
use transport_core::backend::{on_drop, pull_subscription, Fetch, InFlightLimit, Settler};
use transport_core::{
    Delivery, DeliveryInfo, Error, ErrorKind, Message, Result, StartFrom, SubscribeOptions, Subscriber, Subscription,
};

use crate::backend::{tag, RedisTransport};
use crate::core::{self, map_err, scripts, Conn, Entry};
use crate::provision::{create_group, Keys};
use crate::SCHEME;

/// How long one `XREADGROUP` blocks. Short, so nacks without delay and
/// timed-out deliveries are picked up promptly by an idle consumer.
pub(crate) const BLOCK: Duration = Duration::from_millis(200);

/// How often nacked entries whose delay is over are claimed.
pub(crate) const DUE_INTERVAL: Duration = Duration::from_millis(100);

#[async_trait]
impl Subscriber for RedisTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        self.check_open("subscribe")?;
        options.validate(topic).map_err(tag("subscribe"))?;
        let keys = Keys::new(&self.inner.config, topic, &options);
        let mut control = self.inner.conn.clone();
        create_group(&mut control, &keys, &options.group, options.start).await?;
        // XREADGROUP BLOCK holds its connection: each subscription gets its own.
        let reader = core::connect(&self.inner.config, BLOCK + self.inner.config.command_timeout).await?;
        let in_flight = Arc::new(InFlightLimit::new(options.max_in_flight));
        let consumer = Arc::new(ConsumerShared {
            control,
            keys,
            topic: Arc::from(topic),
            group: Arc::from(options.group.as_str()),
            name: format!("c-{}", uuid::Uuid::now_v7().simple()),
            options: options.clone(),
            in_flight: in_flight.clone(),
        });
        let fetch = RedisFetch {
            shared: consumer,
            reader,
            last_due: None,
            last_reclaim: Instant::now(),
        };
        Ok(pull_subscription(
            topic,
            options.group,
            self.inner.lifecycle.clone(),
            in_flight,
            fetch,
        ))
    }
}

/// What a subscription and its deliveries share.
pub(crate) struct ConsumerShared {
    /// Connection for settlement (not the blocking reader).
    pub(crate) control: Conn,
    pub(crate) keys: Keys,
    pub(crate) topic: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) name: String,
    pub(crate) options: SubscribeOptions,
    pub(crate) in_flight: Arc<InFlightLimit>,
}

/// One read: due nacks, timed-out deliveries, then new entries.
pub(crate) struct RedisFetch {
    pub(crate) shared: Arc<ConsumerShared>,
    pub(crate) reader: Conn,
    pub(crate) last_due: Option<Instant>,
    pub(crate) last_reclaim: Instant,
}

#[async_trait]
impl Fetch for RedisFetch {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let entries = self.fill(max).await?;
        Ok(entries.into_iter().map(|e| self.delivery(e)).collect())
    }

    async fn recover(&mut self, error: &Error) -> Result<()> {
        if error.kind() == ErrorKind::NotFound {
            // The stream or group vanished (flushed, or a restart without
            // persistence): declare it again.
            let s = &self.shared;
            let mut conn = s.control.clone();
            create_group(&mut conn, &s.keys, &s.group, StartFrom::Earliest).await?;
        }
        Ok(())
    }
}

impl RedisFetch {
    /// Up to `capacity` entries: due nacks first, then timed-out
    /// deliveries, then new entries.
    async fn fill(&mut self, capacity: usize) -> Result<Vec<Entry>> {
        let mut buf = Vec::new();
        let s = self.shared.clone();
        let k = &s.keys;
        let now = Instant::now();
        if self.last_due.is_none_or(|t| now.duration_since(t) >= DUE_INTERVAL) {
            self.last_due = Some(now);
            let reply: Value = scripts()
                .claim_due
                .key(&k.stream)
                .key(&k.delayed)
                .key(&k.failures)
                .arg(&*s.group)
                .arg(&s.name)
                .arg(core::now_ms())
                .arg(capacity)
                .invoke_async(&mut self.reader)
                .await
                .map_err(|e| map_err("receive", e))?;
            buf.extend(core::parse_claimed(reply));
        }
        let reclaim_every = (s.options.ack_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        if buf.len() < capacity && now.duration_since(self.last_reclaim) >= reclaim_every {
            self.last_reclaim = now;
            let reply: Value = scripts()
                .reclaim
                .key(&k.stream)
                .key(&k.delayed)
                .key(&k.failures)
                .arg(&*s.group)
                .arg(&s.name)
                .arg(s.options.ack_timeout.as_millis() as u64)
                .arg(capacity - buf.len())
                .arg(core::now_ms())
                .invoke_async(&mut self.reader)
                .await
                .map_err(|e| map_err("receive", e))?;
            buf.extend(core::parse_claimed(reply));
        }
        if buf.is_empty() {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&*s.group)
                .arg(&s.name)
                .arg("COUNT")
                .arg(capacity)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&k.stream)
                .arg(">")
                .query_async(&mut self.reader)
                .await
                .map_err(|e| map_err("receive", e))?;
            buf.extend(core::parse_read(reply));
        }
        Ok(buf)
    }

    fn delivery(&self, entry: Entry) -> Delivery {
        let s = &self.shared;
        let info = DeliveryInfo {
            topic: s.topic.clone(),
            group: s.group.clone(),
            attempt: entry.attempt,
            max_attempts: s.options.dead_letter.max_attempts,
            ack_timeout: s.options.ack_timeout,
            first_failure: entry.first_failure,
            stable_id: true,
        };
        let settler = RedisSettler {
            shared: s.clone(),
            entry_id: entry.entry_id,
            count: entry.attempt,
            settled: false,
        };
        transport_core::backend::delivery(Arc::new(entry.message), info, Box::new(settler))
    }
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

pub(crate) fn expired(op: &'static str) -> Error {
    Error::new(
        ErrorKind::DeliveryExpired,
        "the entry is no longer pending for the group (settled elsewhere or trimmed)",
    )
    .with_backend(SCHEME)
    .with_operation(op)
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
async fn settle(invocation: ScriptInvocation<'_>, s: &ConsumerShared, op: &'static str) -> Result<()> {
    let done: i64 = invocation
        .invoke_async(&mut s.control.clone())
        .await
        .map_err(|e| map_err(op, e))?;
    if done == 0 {
        return Err(expired(op));
    }
    Ok(())
}

pub(crate) async fn nack_entry(s: &ConsumerShared, entry_id: &str, count: u32, delay: Duration) -> Result<()> {
    let now = core::now_ms();
    let mut invocation = settling(&scripts().nack, s, entry_id, count);
    invocation.arg(now + delay.as_millis() as u64).arg(now);
    settle(invocation, s, "nack").await
}

/// Ack the entry if the handle is current, clearing its delay and first
/// failure.
async fn ack_entry(s: &ConsumerShared, op: &'static str, entry_id: &str, count: u32) -> Result<()> {
    settle(settling(&scripts().ack, s, entry_id, count), s, op).await
}

#[async_trait]
impl Settler for RedisSettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (s, id, count) = self.begin();
        ack_entry(&s, "ack", &id, count).await
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
        settle(invocation, &s, "dead_letter").await
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        // The ack timeout is "idle longer than ack_timeout" (XPENDING IDLE):
        // setting the entry's idle time to ack_timeout - by makes it due
        // exactly `by` from now. JUSTID leaves the delivery count alone.
        let s = &self.shared;
        let idle = s.options.ack_timeout.saturating_sub(by);
        // 0: no longer pending (acked, dead-lettered or trimmed meanwhile),
        // or redelivered since this handle was handed out.
        let mut invocation = settling(&scripts().extend, s, &self.entry_id, self.count);
        invocation.arg(&s.name).arg(idle.as_millis() as u64);
        settle(invocation, s, "extend").await
    }
}

/// Dead-lettering when the dead-letter stream is in another slot (a
/// cluster): no script can move the entry in one step, so it is copied to
/// the dead-letter stream first and acked after. A crash in between, or a
/// redelivery that overtakes the copy, leaves it in both places (a
/// duplicate in the dead-letter stream), never in neither.
async fn dead_letter_apart(s: &ConsumerShared, id: &str, count: u32, dead: &Message) -> Result<()> {
    settle(settling(&scripts().current, s, id, count), s, "dead_letter").await?;
    core::xadd(&s.keys.dlq, None, dead)
        .query_async::<()>(&mut s.control.clone())
        .await
        .map_err(|e| map_err("dead_letter", e))?;
    ack_entry(s, "dead_letter", id, count).await
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
