//! The consumer's workers: at most `concurrency` tasks, each taking the
//! next delivery that may start and handling it, one after another. A
//! worker that settled a delivery of a key takes the next of that key
//! itself when it is next in line, so a line of one key runs without a
//! hand-off between tasks, and no task is spawned per delivery.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use std::sync::Mutex;

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
    /// locked leaves them whole (every change is one push or pop).
    pub(super) fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Take deliveries that may start and handle them until the consumer stops.
pub(super) async fn worker<S>(pool: Arc<Pool>, shared: Arc<Shared>, mut service: S)
where
    S: Service<Context, Response = Outcome> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
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
        if handled.is_err() {
            tracing::error!("handling a delivery panicked; the delivery will be redelivered");
        }
        if let Some(key) = key {
            let next_of_key = pool.waiting().finished(&key);
            if next_of_key {
                pool.wake();
            }
        }
    }
}
