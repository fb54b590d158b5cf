//! Backoff between attempts: a retry without a delay gets the policy's
//! delay for its attempt, which the broker's nack delay then enforces.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::FutureExt;

use super::wrap_call::{wrap_call_layer, AroundCall, CallFuture, InnerCall};

use crate::runtime::handler::outcome_of;
use crate::runtime::Context;
use crate::settle::Outcome;

/// Exponential backoff with jitter, computed from the attempt number the
/// broker reports (so it holds across consumers and restarts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub min_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// Growth per attempt.
    pub factor: f32,
    /// Add a random part (up to the delay itself) so retries of many messages spread out.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(60),
            factor: 2.0,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// Exponential from `min_delay` up to `max_delay`.
    pub fn exponential(min_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            min_delay,
            max_delay,
            ..Default::default()
        }
    }

    /// Without jitter (for predictable tests).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delay after attempt number `attempt` (1-based) failed; never
    /// more than `max_delay`, jitter included.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
        }
        // backon adds its jitter after capping at the maximum, which would
        // let a capped delay grow to twice `max_delay`.
        builder
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Gives every retry that names no delay of its own the [`RetryPolicy`]'s
/// delay for the attempt that failed (a retry that names one, e.g. from
/// [`HandlerError::retry_after`](crate::runtime::HandlerError::retry_after),
/// keeps it). Errors of inner services become retries here too. Whether the
/// attempt was the last (and the message is dead-lettered instead) is decided
/// when the outcome is settled, not here.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryDelayLayer {
    policy: RetryPolicy,
}

impl RetryDelayLayer {
    /// Backoff by `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryDelayLayer { policy }
    }
}

wrap_call_layer!(RetryDelayLayer => RetryDelay);

impl AroundCall for RetryDelayLayer {
    fn around<F: InnerCall>(&self, ctx: Context, next: impl FnOnce(Context) -> F) -> CallFuture {
        let attempt = ctx.attempt();
        let policy = self.policy;
        let call = next(ctx);
        async move {
            Ok(match outcome_of(call.await) {
                Outcome::Retry { delay: None, reason } => Outcome::Retry {
                    delay: Some(policy.delay_for(attempt)),
                    reason,
                },
                other => other,
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let p = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1)).without_jitter();
        let ms = |a: u32| p.delay_for(a).as_millis();
        assert_eq!((ms(1), ms(2), ms(3), ms(10)), (100, 200, 400, 1000));
        let j = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..20 {
            let d = j.delay_for(2).as_millis();
            assert!((200..400).contains(&d), "{d}");
        }
    }

    #[test]
    fn jitter_stays_within_the_delay_and_the_maximum() {
        let p = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_millis(300));
        for _ in 0..50 {
            let first = p.delay_for(1);
            assert!(
                first >= Duration::from_millis(100) && first < Duration::from_millis(200),
                "{first:?}"
            );
            let capped = p.delay_for(5);
            assert_eq!(capped, Duration::from_millis(300), "past the maximum, or short of it");
        }
    }

    #[test]
    fn factor_sets_the_growth() {
        let p = RetryPolicy {
            factor: 3.0,
            ..RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(10))
        }
        .without_jitter();
        let ms = |a: u32| p.delay_for(a).as_millis();
        assert_eq!((ms(1), ms(2), ms(3)), (100, 300, 900));
    }
}
