//! The consumer's workers: at most `concurrency` tasks, each taking the
//! next delivery that may start and handling it, one after another. A
//! worker that settled a delivery of a key makes the next of that key
//! ready and takes the first ready one itself, so no task is spawned per
//! delivery and no other worker is woken for it.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::Notify;
use tower::Service;

use super::context::Context;
use super::dispatch::{process, Shared};
use super::handler::BoxError;
use super::waiting::{OrderingKey, Waiting};
use crate::settle::Outcome;

/// What the consumer's loop and its workers share: the waiting deliveries,
/// and the signal that one may start.
#[derive(Default)]
pub(super) struct Pool {
    /// Held for a push or a pop, never across an await.
    waiting: Mutex<Waiting>,
    work: Notify,
}

impl Pool {
    /// A delivery may start: wake a worker that waits for one.
    pub(super) fn wake(&self) {
        self.work.notify_one();
    }

    /// The waiting deliveries, locked for a moment. A panic while they were
    /// locked leaves them usable (no change leaves a delivery in two places
    /// or in none).
    pub(super) fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Take deliveries that may start and handle them until the consumer stops.
pub(super) async fn worker<S>(pool: Arc<Pool>, shared: Arc<Shared>, pristine: S)
where
    S: Service<Context, Response = Outcome> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    // One instance for every delivery this worker handles, replaced by a
    // fresh clone once it failed or panicked (tower: discard such a one).
    let mut service = pristine.clone();
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let next = pool.waiting().next_ready();
        let parked = match next {
            Some(parked) => parked,
            None => {
                // Nothing to start: wait for a wake, registered before
                // looking once more so that a wake in between is not lost.
                let notified = pool.work.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let next = pool.waiting().next_ready();
                match next {
                    Some(parked) => parked,
                    None => {
                        tokio::select! {
                            _ = notified => continue,
                            _ = shared.shutdown.cancelled() => return,
                        }
                    }
                }
            }
        };
        let key = OrderingKey::of(&parked.delivery);
        let since = parked.since;
        let delivery = parked.take().await;
        // `process` catches the handler's panics; this catches any other,
        // so the key's line always moves on.
        let handled = AssertUnwindSafe(process(&shared, &mut service, delivery, since))
            .catch_unwind()
            .await;
        let reusable = handled.unwrap_or_else(|_| {
            tracing::error!("handling a delivery panicked outside the handler; the delivery will be redelivered");
            false
        });
        if !reusable {
            service = pristine.clone();
        }
        // The next of this key, if any, is now ready; this worker takes it
        // (or whatever is first) on its next turn: no other needs waking.
        if let Some(key) = key {
            pool.waiting().finished(&key);
        }
    }
}
