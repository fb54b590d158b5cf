//! Helpers the checks share: unique names, receiving with deadlines,
//! asserting silence, and the failure type.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use transport_core::{Delivery, SubscribeOptions, Subscription, Transport};

/// What the receiving helpers read from: a [`Subscription`], or several
/// merged into one ([`Merged`]).
pub trait DeliveryStream: Stream<Item = transport_core::Result<Delivery>> + Unpin + Send {
    /// The topic read, for failure messages.
    fn topic(&self) -> &str;
}

impl DeliveryStream for Subscription {
    fn topic(&self) -> &str {
        Subscription::topic(self)
    }
}

/// Several subscriptions of one topic read as one stream.
pub struct Merged {
    topic: String,
    inner: futures::stream::SelectAll<Subscription>,
}

impl Merged {
    /// The deliveries of all of `subs` (subscriptions to `topic`).
    pub fn new(topic: &str, subs: Vec<Subscription>) -> Self {
        Merged {
            topic: topic.to_owned(),
            inner: futures::stream::select_all(subs),
        }
    }
}

impl Stream for Merged {
    type Item = transport_core::Result<Delivery>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl DeliveryStream for Merged {
    fn topic(&self) -> &str {
        &self.topic
    }
}

/// Why a check failed.
#[derive(Debug)]
pub struct CheckFailure(pub String);

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<transport_core::Error> for CheckFailure {
    fn from(e: transport_core::Error) -> Self {
        CheckFailure(format!("unexpected error: {e}"))
    }
}

impl From<transport_contracts::ContractError> for CheckFailure {
    fn from(e: transport_contracts::ContractError) -> Self {
        CheckFailure(format!("unexpected contract error: {e}"))
    }
}

/// Result of a check.
pub type CheckResult = Result<(), CheckFailure>;

/// Fail the check with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::CheckFailure(format!($($msg)+)));
        }
    };
}

/// Timings the checks use. Waits for something to happen use `receive`
/// (generous); assertions that something does *not* happen watch for `quiet`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Longest wait for an expected delivery.
    pub receive: Duration,
    /// How long "nothing arrives" is watched.
    pub quiet: Duration,
    /// The ack timeout of checks that exercise it.
    pub short_ack: Duration,
}

/// The timings, from `CONFORMANCE_SHORT_ACK_MS` / `CONFORMANCE_QUIET_MS` when set.
pub fn timing() -> Timing {
    static T: OnceLock<Timing> = OnceLock::new();
    *T.get_or_init(|| {
        let ms = |var: &str, default: u64| {
            Duration::from_millis(std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
        };
        Timing {
            receive: ms("CONFORMANCE_RECEIVE_MS", 30_000),
            quiet: ms("CONFORMANCE_QUIET_MS", 1_500),
            short_ack: ms("CONFORMANCE_SHORT_ACK_MS", 2_000),
        }
    })
}

/// A topic or group name no other run or check uses.
/// The value of `var`, which names a server a test needs: `None` (the
/// test returns, reported on stderr as skipped) when it is not set, and a
/// panic under `CI=true`, where a test that cannot run must fail.
pub fn live_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) => Some(value),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{var} is not set"),
        Err(_) => {
            eprintln!("skipped: {var} is not set");
            None
        }
    }
}

pub fn unique(what: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let run = RUN.get_or_init(|| uuid::Uuid::now_v7().simple().to_string()[20..].to_owned());
    format!("ct-{what}-{run}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The next delivery, failing after `timing().receive`.
pub async fn next(sub: &mut impl DeliveryStream) -> Result<Delivery, CheckFailure> {
    next_within(sub, timing().receive).await
}

/// The next delivery, failing after `within`.
pub async fn next_within(sub: &mut impl DeliveryStream, within: Duration) -> Result<Delivery, CheckFailure> {
    match tokio::time::timeout(within, sub.next()).await {
        Err(_) => Err(CheckFailure(format!(
            "no delivery on {} within {within:?}",
            sub.topic()
        ))),
        Ok(None) => Err(CheckFailure(format!("subscription to {} ended", sub.topic()))),
        Ok(Some(Err(e))) => Err(CheckFailure(format!("receive on {} failed: {e}", sub.topic()))),
        Ok(Some(Ok(d))) => Ok(d),
    }
}

/// Fail if anything arrives within `timing().quiet` (acking what does, so
/// the failure message can name it).
pub async fn expect_quiet(sub: &mut impl DeliveryStream, context: &str) -> CheckResult {
    expect_quiet_for(sub, timing().quiet, context).await
}

/// Fail if anything arrives within `period`, or if the subscription ends
/// (a stream that stopped is not a quiet one: it would hide redeliveries).
pub async fn expect_quiet_for(sub: &mut impl DeliveryStream, period: Duration, context: &str) -> CheckResult {
    match tokio::time::timeout(period, sub.next()).await {
        Err(_) => Ok(()),
        Ok(None) => Err(CheckFailure(format!(
            "{context}: the subscription to {} ended while it was watched for silence",
            sub.topic()
        ))),
        Ok(Some(Err(e))) => Err(CheckFailure(format!("{context}: receive failed: {e}"))),
        Ok(Some(Ok(d))) => Err(CheckFailure(format!(
            "{context}: unexpected delivery of {} (attempt {}, payload {:?})",
            d.id(),
            d.attempt(),
            String::from_utf8_lossy(&d.payload()[..d.payload().len().min(64)])
        ))),
    }
}

/// Fail unless `actual` lies in `[low, high]`: every timing a check asserts
/// has both bounds, so "far too early" and "far too late" both fail.
pub fn within_bounds(what: &str, actual: Duration, low: Duration, high: Duration) -> CheckResult {
    if actual < low || actual > high {
        return Err(CheckFailure(format!(
            "{what} after {actual:?}, expected between {low:?} and {high:?}"
        )));
    }
    Ok(())
}

/// The next delivery must be `message`; it is acked.
pub async fn receive_exactly(
    sub: &mut impl DeliveryStream,
    message: &transport_core::Message,
    context: &str,
) -> CheckResult {
    let d = next(sub).await?;
    if d.id() != message.id {
        return Err(CheckFailure(format!(
            "{context}: received {} instead of {}",
            d.id(),
            message.id
        )));
    }
    d.ack().await?;
    Ok(())
}

/// Receive (and ack) as many messages as `want` names and fail unless their
/// payloads, as text, are `want` in that order.
#[cfg(feature = "stores")]
pub async fn receive_texts(sub: &mut impl DeliveryStream, want: &[&str], context: &str) -> CheckResult {
    let got = receive_and_ack(sub, want.len()).await?;
    let names: Vec<&str> = got.iter().map(|r| r.text.as_str()).collect();
    if names != want {
        return Err(CheckFailure(format!(
            "{context}: received {names:?}, expected {want:?}"
        )));
    }
    Ok(())
}

/// Receive `n` deliveries, acking each, returning them in arrival order as
/// (id, key, payload as text, attempt).
pub async fn receive_and_ack(sub: &mut impl DeliveryStream, n: usize) -> Result<Vec<Received>, CheckFailure> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = next(sub)
            .await
            .map_err(|e| CheckFailure(format!("after {} of {n} deliveries: {e}", out.len())))?;
        out.push(Received::of(&d));
        d.ack().await?;
    }
    Ok(out)
}

/// What a check remembers of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Message id.
    pub id: String,
    /// Key.
    pub key: Option<String>,
    /// Payload as (lossy) text.
    pub text: String,
    /// Attempt number.
    pub attempt: u32,
}

impl Received {
    /// Remember `d`.
    pub fn of(d: &Delivery) -> Self {
        Received {
            id: d.id().to_owned(),
            key: d.key().map(str::to_owned),
            text: String::from_utf8_lossy(d.payload()).into_owned(),
            attempt: d.attempt(),
        }
    }
}

/// Options for checks that count attempts and settlements: the ack timeout
/// is long enough that a slow settle on a loaded machine (a dead-letter
/// copy stored on a three-node cluster while four checks run) never turns
/// into a redelivery that inflates the counts. Checks about ack timeouts
/// use [`short`].
pub(crate) fn opts(group: &str) -> SubscribeOptions {
    SubscribeOptions::new(group).ack_timeout(Duration::from_secs(30))
}

pub(crate) fn short(group: &str) -> SubscribeOptions {
    SubscribeOptions::new(group).ack_timeout(timing().short_ack)
}

pub(crate) async fn fresh(
    t: &dyn Transport,
    what: &str,
    options: SubscribeOptions,
) -> Result<(String, Subscription), CheckFailure> {
    let topic = unique(what);
    let sub = t.subscribe(&topic, options).await?;
    Ok((topic, sub))
}

pub(crate) async fn dlq_depth(t: &dyn Transport, topic: &str, options: &SubscribeOptions, want: u64) -> CheckResult {
    let dlq = t.dead_letters(topic, options).await?;
    let deadline = Instant::now() + timing().receive;
    loop {
        let depth = dlq.depth().await?;
        if depth == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "dead-letter depth is {depth}, expected {want} within {:?}",
            timing().receive
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Why a check needing dead-letter operations is skipped.
pub(crate) const NO_DLQ: &str = "the backend has no dead-letter operations (dead_letters_unsupported proves it)";
/// Why a check needing ack-timeout redelivery is skipped.
pub(crate) const NO_TIMEOUT: &str = "the backend does not redeliver on ack timeout";
