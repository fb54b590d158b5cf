//! A circuit breaker: when a downstream keeps failing, stop calling it.
//!
//! While the breaker is open the consumer settles nothing and handles
//! nothing: new deliveries wait for readiness (the runtime keeps their
//! leases), and a call that failed because the downstream is down is held
//! and called again once the breaker lets calls through, instead of being
//! nacked. So an outage burns no attempts and dead-letters nothing; once a
//! probe succeeds, everything goes on.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::runtime::handler::{outcome_of, BoxError};
use crate::runtime::Context;
use crate::settle::Outcome;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures worth a retry in a row.
    pub consecutive_failures: Option<u32>,
    /// Open when at least `min_calls` calls finished within `window` and
    /// this share of them (0.0..=1.0) failed worth a retry.
    pub failure_ratio: Option<(f64, u32, Duration)>,
    /// How long it stays open before letting one probe through.
    pub open_for: Duration,
    /// Hold calls that fail while the breaker is open and call them again
    /// when it lets calls through (default), instead of returning the
    /// failure (which nacks and burns an attempt).
    pub hold_failed_calls: bool,
}

impl BreakerConfig {
    /// Open after `n` failures worth a retry in a row, for 5 s at a time.
    pub fn consecutive_failures(n: u32) -> Self {
        BreakerConfig {
            consecutive_failures: Some(n.max(1)),
            failure_ratio: None,
            open_for: Duration::from_secs(5),
            hold_failed_calls: true,
        }
    }

    /// Open when `ratio` of the calls of the last `window` failed, once at
    /// least `min_calls` finished in it; 5 s at a time.
    pub fn failure_ratio(ratio: f64, min_calls: u32, window: Duration) -> Self {
        BreakerConfig {
            consecutive_failures: None,
            failure_ratio: Some((ratio.clamp(0.0, 1.0), min_calls.max(1), window)),
            open_for: Duration::from_secs(5),
            hold_failed_calls: true,
        }
    }

    /// Stay open for `d` before probing.
    pub fn open_for(mut self, d: Duration) -> Self {
        self.open_for = d;
        self
    }

    /// Return failures that happen while open instead of holding them.
    pub fn release_failed_calls(mut self) -> Self {
        self.hold_failed_calls = false;
        self
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// No call goes through until the open period ends.
    Open,
    /// One probe call goes through; its result closes or reopens the breaker.
    HalfOpen,
}

/// One breaker per downstream: every service made by one layer (and every
/// clone of it) shares its state. Clone the layer to share it between
/// consumers.
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Breaker>,
}

impl CircuitBreakerLayer {
    /// A closed breaker with `config`.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreakerLayer {
            shared: Arc::new(Breaker {
                config,
                machine: Mutex::new(Machine {
                    state: BreakerState::Closed,
                    consecutive: 0,
                    window: VecDeque::new(),
                    open_until: Instant::now(),
                    probing: false,
                }),
                changed: Notify::new(),
                opened: AtomicU64::new(0),
            }),
        }
    }

    /// A handle to read the breaker's state.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle(self.shared.clone())
    }
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", &self.shared.config)
            .field("state", &self.shared.state())
            .finish()
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            shared: self.shared.clone(),
            permit: None,
            admission: None,
        }
    }
}

/// Reads a breaker's state.
#[derive(Clone)]
pub struct BreakerHandle(Arc<Breaker>);

impl BreakerHandle {
    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.0.state()
    }

    /// Times it has opened.
    pub fn opened(&self) -> u64 {
        self.0.opened.load(Relaxed)
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("state", &self.state())
            .field("opened", &self.opened())
            .finish()
    }
}

struct Breaker {
    config: BreakerConfig,
    machine: Mutex<Machine>,
    changed: Notify,
    opened: AtomicU64,
}

struct Machine {
    state: BreakerState,
    consecutive: u32,
    /// (finished at, failed) of recent calls, for the ratio rule.
    window: VecDeque<(Instant, bool)>,
    open_until: Instant,
    probing: bool,
}

/// Leave to call: an ordinary one, or the one probe of a half-open breaker
/// (given back if dropped before its result is recorded).
struct Permit {
    probe: Option<Arc<Breaker>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(breaker) = self.probe.take() {
            let mut m = breaker.lock();
            if m.state == BreakerState::HalfOpen {
                m.probing = false;
            }
            drop(m);
            breaker.changed.notify_waiters();
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> BreakerState {
        let m = self.lock();
        match m.state {
            BreakerState::Open if Instant::now() >= m.open_until => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Wait until a call may go through.
    async fn admit(self: Arc<Self>) -> Permit {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wake = {
                let mut m = self.lock();
                if m.state == BreakerState::Open && Instant::now() >= m.open_until {
                    m.state = BreakerState::HalfOpen;
                    m.probing = false;
                    tracing::info!("circuit breaker half-open: letting one call through");
                }
                match m.state {
                    BreakerState::Closed => return Permit { probe: None },
                    BreakerState::HalfOpen if !m.probing => {
                        m.probing = true;
                        return Permit {
                            probe: Some(self.clone()),
                        };
                    }
                    BreakerState::HalfOpen => None,
                    BreakerState::Open => Some(m.open_until),
                }
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Record a call's result: whether the breaker is now not closed, and
    /// why it opened if this result opened it.
    fn record(&self, mut permit: Permit, failed: bool) -> (bool, Option<&'static str>) {
        let now = Instant::now();
        let mut m = self.lock();
        let mut notify = false;
        let mut opened = None;
        if permit.probe.take().is_some() {
            m.probing = false;
            if m.state == BreakerState::HalfOpen {
                if failed {
                    self.open(&mut m, now);
                    opened = Some("the probe call failed");
                } else {
                    m.state = BreakerState::Closed;
                    m.consecutive = 0;
                    m.window.clear();
                    tracing::info!("circuit breaker closed: the probe call succeeded");
                }
            }
            notify = true;
        } else if m.state == BreakerState::Closed {
            m.consecutive = if failed { m.consecutive + 1 } else { 0 };
            if let Some((_, _, window)) = self.config.failure_ratio {
                m.window.push_back((now, failed));
                while m.window.front().is_some_and(|(t, _)| now.duration_since(*t) > window) {
                    m.window.pop_front();
                }
            }
            if failed && self.trips(&m) {
                self.open(&mut m, now);
                opened = Some("too many failures");
                notify = true;
            }
        }
        let open = m.state != BreakerState::Closed;
        drop(m);
        if notify {
            self.changed.notify_waiters();
        }
        (open, opened)
    }

    fn trips(&self, m: &Machine) -> bool {
        let by_streak = self.config.consecutive_failures.is_some_and(|n| m.consecutive >= n);
        let by_ratio = self.config.failure_ratio.is_some_and(|(ratio, min_calls, _)| {
            let calls = m.window.len();
            let failed = m.window.iter().filter(|(_, f)| *f).count();
            calls >= min_calls as usize && failed as f64 >= ratio * calls as f64
        });
        by_streak || by_ratio
    }

    fn open(&self, m: &mut Machine, now: Instant) {
        m.state = BreakerState::Open;
        m.open_until = now + self.config.open_for;
        m.probing = false;
        self.opened.fetch_add(1, Relaxed);
    }
}

/// The service of [`CircuitBreakerLayer`].
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Breaker>,
    permit: Option<Permit>,
    admission: Option<BoxFuture<'static, Permit>>,
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        // Readiness is not cloned: the clone asks the breaker itself.
        CircuitBreaker {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            permit: None,
            admission: None,
        }
    }
}

impl<S> fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}

impl<S> Service<Context> for CircuitBreaker<S>
where
    S: Service<Context, Response = Outcome> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Outcome;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Outcome, BoxError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        if self.permit.is_none() {
            let shared = &self.shared;
            let admission = self.admission.get_or_insert_with(|| shared.clone().admit().boxed());
            let permit = ready!(Pin::new(admission).poll(cx));
            self.admission = None;
            self.permit = Some(permit);
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, ctx: Context) -> Self::Future {
        let permit = self.permit.take().unwrap_or(Permit { probe: None });
        // Take the service that was made ready; leave a fresh clone behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let shared = self.shared.clone();
        let hold = shared.config.hold_failed_calls;
        async move {
            let mut permit = permit;
            loop {
                let outcome = outcome_of(inner.call(ctx.clone()).await);
                let failed = outcome.is_retry();
                let (open, opened) = shared.record(permit, failed);
                ctx.counters.breaker_state(match shared.state() {
                    BreakerState::Closed => 0.0,
                    BreakerState::Open => 1.0,
                    BreakerState::HalfOpen => 2.0,
                });
                if let Some(why) = opened {
                    ctx.counters.breaker_opened();
                    tracing::warn!(
                        topic = ctx.topic(),
                        group = ctx.group(),
                        open_for = ?shared.config.open_for,
                        "circuit breaker open: {why}"
                    );
                }
                if !(failed && open && hold) {
                    return Ok(outcome);
                }
                tracing::debug!(
                    id = ctx.id(),
                    "holding a failed call until the circuit breaker lets calls through"
                );
                permit = tokio::select! {
                    permit = shared.clone().admit() => permit,
                    _ = ctx.shutdown() => return Ok(outcome),
                };
                ServiceExt::<Context>::ready(&mut inner).await.map_err(Into::into)?;
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> CircuitBreakerLayer {
        CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(2).open_for(Duration::from_secs(10)))
    }

    /// Two failures open the breaker; past its open time the next
    /// admission is the probe.
    async fn opened_until_probe(b: &Arc<Breaker>) -> Permit {
        for _ in 0..2 {
            let p = b.clone().admit().await;
            b.record(p, true);
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
        b.clone().admit().await
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_streak_probes_once_and_closes_on_success() {
        let layer = machine();
        let b = layer.shared.clone();
        let p = b.clone().admit().await;
        assert!(!b.record(p, true).0);
        let p = b.clone().admit().await;
        assert!(b.record(p, true).0, "second failure opens");
        assert_eq!(layer.handle().state(), BreakerState::Open);
        assert_eq!(layer.handle().opened(), 1);

        // Nobody is admitted while open.
        let waiting = tokio::spawn(b.clone().admit());
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!waiting.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let probe = waiting.await.unwrap();
        assert!(probe.probe.is_some(), "the first one after the open period probes");
        // A second caller waits for the probe's result.
        let second = tokio::spawn(b.clone().admit());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!second.is_finished());
        assert!(!b.record(probe, false).0, "a successful probe closes");
        assert!(second.await.unwrap().probe.is_none());
        assert_eq!(layer.handle().state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_dropped_probe_is_given_back() {
        let layer = machine();
        let b = layer.shared.clone();
        let probe = opened_until_probe(&b).await;
        assert!(b.record(probe, true).0);
        assert_eq!(layer.handle().opened(), 2);
        tokio::time::sleep(Duration::from_secs(11)).await;
        let probe = b.clone().admit().await;
        drop(probe);
        let again = tokio::time::timeout(Duration::from_millis(10), b.clone().admit()).await;
        assert!(again.expect("given back").probe.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_ends_the_streak() {
        let layer = machine();
        let b = layer.shared.clone();
        // Three failures in all, never two in a row: "in a row" is what counts.
        for failed in [true, false, true, false, true] {
            let p = b.clone().admit().await;
            assert!(!b.record(p, failed).0, "opened without two failures in a row");
        }
        let p = b.clone().admit().await;
        assert!(b.record(p, true).0, "two in a row open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_closed_by_its_probe_needs_a_new_streak() {
        let layer = machine();
        let b = layer.shared.clone();
        let probe = opened_until_probe(&b).await;
        assert!(!b.record(probe, false).0, "the probe closes it");
        // The streak that opened it is over: one failure is not two in a row.
        let p = b.clone().admit().await;
        assert!(!b.record(p, true).0, "reopened by the old streak");
        let p = b.clone().admit().await;
        assert!(b.record(p, true).0);
        assert_eq!(layer.handle().opened(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_rule_trips_at_exactly_the_share() {
        let layer = CircuitBreakerLayer::new(BreakerConfig::failure_ratio(0.5, 4, Duration::from_secs(60)));
        let b = layer.shared.clone();
        for failed in [false, true, false] {
            let p = b.clone().admit().await;
            assert!(!b.record(p, failed).0);
        }
        let p = b.clone().admit().await;
        assert!(b.record(p, true).0, "2 of 4 failed: the share is reached");
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_rule_needs_min_calls() {
        let layer = CircuitBreakerLayer::new(BreakerConfig::failure_ratio(0.5, 4, Duration::from_secs(60)));
        let b = layer.shared.clone();
        for failed in [true, false, true] {
            let p = b.clone().admit().await;
            assert!(!b.record(p, failed).0);
        }
        let p = b.clone().admit().await;
        assert!(b.record(p, true).0, "3 of 4 failed");
    }
}
