//! A subscription over a fetch function: flow control by `max_in_flight`,
//! reconnect backoff, and one error policy for every pull-based backend.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::stream::{self, StreamExt};

use super::lifecycle::Lifecycle;
use super::raw::{Deliveries, SubscribeRequest};
use crate::delivery::Delivery;
use crate::error::{Error, ErrorKind, Result};
use crate::flow::InFlightLimit;

/// One read from the broker.
#[async_trait]
pub trait Fetch: Send + 'static {
    /// Up to `max` deliveries; may wait a short poll interval and return
    /// none. Each returned delivery counts against `max_in_flight` until it
    /// is settled (the settler calls [`InFlightLimit::release`]).
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>>;

    /// After a failed fetch and its backoff pause: repair what the error
    /// says is broken (a group that vanished with a broker restart) before
    /// the next fetch. An error here ends the subscription.
    async fn recover(&mut self, error: &Error) -> Result<()> {
        let _ = error;
        Ok(())
    }
}

/// Pauses between failed fetches: exponential with jitter from 100 ms to
/// 5 s, starting over after a success.
#[derive(Debug)]
pub struct ReconnectBackoff {
    builder: ExponentialBuilder,
    current: Option<backon::ExponentialBackoff>,
    failures: u32,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        ReconnectBackoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl ReconnectBackoff {
    /// From `min` up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        ReconnectBackoff {
            builder: ExponentialBuilder::new()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_jitter()
                .without_max_times(),
            current: None,
            failures: 0,
        }
    }

    /// The pause after one more failure.
    pub fn next_pause(&mut self) -> Duration {
        self.failures += 1;
        let builder = self.builder;
        self.current
            .get_or_insert_with(|| builder.build())
            .next()
            .unwrap_or(Duration::from_secs(5))
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts from the shortest pause.
    pub fn reset(&mut self) {
        self.current = None;
        self.failures = 0;
    }
}

/// Errors that retrying cannot fix: surfaced once, not retryable, and the
/// subscription ends (a consumer runtime then stops with the error).
fn is_permanent(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Unauthorized
            | ErrorKind::Forbidden
            | ErrorKind::Tls
            | ErrorKind::InvalidArgument
            | ErrorKind::Unsupported
            | ErrorKind::Closed
    )
}

struct PullState<F> {
    fetcher: F,
    lifecycle: Arc<Lifecycle>,
    in_flight: Arc<InFlightLimit>,
    buffer: VecDeque<Delivery>,
    backoff: ReconnectBackoff,
    topic: String,
    done: bool,
}

/// The deliveries of `request`, read with `fetcher` until the transport is
/// closed.
///
/// The one error policy: a failed fetch pauses (exponential backoff with
/// jitter), calls [`Fetch::recover`], and the first failure of a streak is
/// handed to the caller as a retryable error (later ones of the same streak
/// only log), so a consumer sees that the broker is away without being
/// flooded; the loop keeps trying. An error retrying cannot fix
/// (unauthorized, invalid, unsupported) is handed out as not retryable and
/// ends the stream. Deliveries are fetched only while `in_flight` has room.
pub fn pull_deliveries<F: Fetch>(request: &SubscribeRequest, in_flight: Arc<InFlightLimit>, fetcher: F) -> Deliveries {
    let state = PullState {
        fetcher,
        lifecycle: request.lifecycle(),
        in_flight,
        buffer: VecDeque::new(),
        backoff: ReconnectBackoff::default(),
        topic: request.topic().to_owned(),
        done: false,
    };
    stream::unfold(state, |mut st| async move {
        let item = st.next().await?;
        Some((item, st))
    })
    .boxed()
}

impl<F: Fetch> PullState<F> {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.done || self.lifecycle.is_closed() {
                return None;
            }
            if let Some(delivery) = self.buffer.pop_front() {
                return Some(Ok(delivery));
            }
            let room = self.in_flight.free();
            if room == 0 {
                self.in_flight.wait_for_slot(Duration::from_millis(200)).await;
                continue;
            }
            match self.fetcher.fetch(room).await {
                Ok(batch) => {
                    self.backoff.reset();
                    self.in_flight.taken(batch.len());
                    self.buffer.extend(batch);
                }
                Err(e) => {
                    if is_permanent(&e) {
                        tracing::error!(error = %e, topic = %self.topic, "receive failed for good");
                        self.done = true;
                        return Some(Err(e.with_retryable(false)));
                    }
                    let pause = self.backoff.next_pause();
                    tracing::warn!(error = %e, ?pause, topic = %self.topic, "receive failed; retrying");
                    tokio::time::sleep(pause).await;
                    if let Err(fatal) = self.fetcher.recover(&e).await {
                        self.done = true;
                        return Some(Err(fatal.with_retryable(false)));
                    }
                    if self.backoff.failures() == 1 {
                        return Some(Err(e.with_retryable(true)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut b = ReconnectBackoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_pause();
        assert!((100..=200).contains(&first.as_millis()), "{first:?}");
        for _ in 0..10 {
            assert!(b.next_pause() <= Duration::from_secs(2));
        }
        assert_eq!(b.failures(), 11);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_pause() <= Duration::from_millis(200));
    }
}
