//! Leases: a long handler's delivery is extended while it runs, deliveries
//! waiting for their key keep theirs, and a lease gives up after its total.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower::ServiceBuilder;
use transport_core::runtime::{handler_fn, Context, HandlerError, LeaseLayer};
use transport_core::{Message, SubscribeOptions, Transport};

use super::*;
use crate::support::*;
use crate::{ensure, Check};

/// A handler running three ack timeouts is not redelivered meanwhile when
/// the lease layer extends it.
pub async fn runtime_lease_extends_long_handler(t: &Arc<dyn Transport>) -> CheckResult {
    let ack_timeout = Duration::from_millis(1_000);
    let options = SubscribeOptions::new("g").ack_timeout(ack_timeout);
    // Room for more than the two long calls: a redelivery would be fetched
    // and handled at once, and show up as a second call.
    let (topic, consumer) = consumer(t, "lease", &options, 4).await?;
    for i in 0..2 {
        t.publish(&topic, Message::new(format!("long{i}"))).await?;
    }
    let calls: Calls = Arc::default();
    let service = ServiceBuilder::new()
        .layer(LeaseLayer::new())
        .service(recording(&calls, ack_timeout * 3));
    // Keep consuming for a while after the acks: a late redelivery shows too.
    let settled_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (s, reached) = run_until(consumer, service, timing().receive + ack_timeout * 3, {
        let settled_at = settled_at.clone();
        move |s| {
            if s.acked < 2 {
                return false;
            }
            let mut at = settled_at.lock().unwrap();
            at.get_or_insert_with(Instant::now).elapsed() >= ack_timeout * 2
        }
    })
    .await?;
    ensure!(reached, "the long handlers were not acked in time: {s:?}");
    let calls = calls.lock().unwrap().clone();
    ensure!(calls.len() == 2, "handled {} messages, published 2", calls.len());
    for (id, attempts) in &calls {
        ensure!(
            attempts == &[1],
            "{id} was handled at attempts {attempts:?}: redelivered while its handler ran"
        );
    }
    ensure!(s.acked == 2 && s.retried == 0, "stats: {s:?}");
    Ok(())
}

/// A delivery waiting for its turn keeps its lease: with one call at a
/// time, the first call runs two and a half ack timeouts (the lease layer
/// keeps it), and the other delivery, held and waiting all that time, is not
/// redelivered. (Unkeyed: brokers that lock a key hand out one of it at a
/// time, so only the call limit makes a delivery wait on every backend.)
pub async fn runtime_waiting_deliveries_keep_their_lease(t: &Arc<dyn Transport>) -> CheckResult {
    let ack_timeout = timing().short_ack;
    let options = short("g");
    let (topic, consumer) = consumer(t, "waiting-lease", &options, 1).await?;
    for text in ["one", "two"] {
        t.publish(&topic, Message::new(text)).await?;
    }
    let calls: Calls = Arc::default();
    let first = Arc::new(AtomicBool::new(true));
    let service = ServiceBuilder::new().layer(LeaseLayer::new()).service(handler_fn({
        let (calls, first) = (calls.clone(), first.clone());
        move |ctx: Context| {
            let (calls, first) = (calls.clone(), first.clone());
            async move {
                record(&calls, &ctx);
                if first.swap(false, AtomicOrdering::SeqCst) {
                    tokio::time::sleep(ack_timeout * 5 / 2).await;
                }
                Ok::<_, HandlerError>(())
            }
        }
    }));
    // Keep consuming an ack timeout after both acks: a late redelivery shows too.
    two_acked_once_each(
        consumer,
        service,
        &calls,
        ack_timeout * 3,
        ack_timeout,
        "its lease ran out while it waited",
    )
    .await
}

/// A delivery that waited most of an ack timeout for its turn starts its
/// handler with a fresh lease: a handler shorter than one ack timeout (and
/// no lease layer) finishes before the delivery could expire, however old
/// the waiting heartbeat's last renewal was.
pub async fn runtime_waited_delivery_starts_with_a_fresh_lease(t: &Arc<dyn Transport>) -> CheckResult {
    // The heartbeat renews at half a timeout; the first handler ends just
    // before the second renewal would. The second then runs 0.8 timeouts:
    // from the old renewal that is past its lease, from a fresh one well
    // within it (0.15 and 0.2 timeouts either side).
    let ack_timeout = timing().short_ack * 2;
    let options = SubscribeOptions::new("g").ack_timeout(ack_timeout);
    let (topic, consumer) = consumer(t, "fresh-lease", &options, 1).await?;
    for text in ["one", "two"] {
        t.publish(&topic, Message::new(text)).await?;
    }
    let calls: Calls = Arc::default();
    let first = Arc::new(AtomicBool::new(true));
    let service = handler_fn({
        let (calls, first) = (calls.clone(), first.clone());
        move |ctx: Context| {
            let (calls, first) = (calls.clone(), first.clone());
            async move {
                record(&calls, &ctx);
                if first.swap(false, AtomicOrdering::SeqCst) {
                    // Renewed by hand halfway, so the first is not at risk itself.
                    tokio::time::sleep(ack_timeout * 2 / 5).await;
                    ctx.lease().renew().await?;
                    tokio::time::sleep(ack_timeout * 9 / 20).await;
                } else {
                    tokio::time::sleep(ack_timeout * 4 / 5).await;
                }
                Ok::<_, HandlerError>(())
            }
        }
    });
    two_acked_once_each(
        consumer,
        service,
        &calls,
        ack_timeout * 2,
        ack_timeout / 2,
        "it expired while its handler ran",
    )
    .await
}

/// The lease layer stops extending after its `max_total`: a call hung
/// beyond it is left to expire and the broker redelivers the message (not
/// before `max_total`, and about an ack timeout after it at most).
pub async fn runtime_lease_gives_up_after_max_total(t: &Arc<dyn Transport>) -> CheckResult {
    let ack_timeout = timing().short_ack;
    let options = short("g");
    let (topic, consumer) = consumer(t, "lease-max", &options, 2).await?;
    t.publish(&topic, Message::new("hangs")).await?;
    let starts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let service = ServiceBuilder::new()
        .layer(LeaseLayer::new().max_total(ack_timeout))
        .service(handler_fn({
            let starts = starts.clone();
            move |ctx: Context| {
                let starts = starts.clone();
                async move {
                    starts.lock().unwrap().push((ctx.attempt(), Instant::now()));
                    if ctx.attempt() == 1 {
                        // Hung, until the consumer stops.
                        tokio::select! {
                            _ = ctx.shutdown() => {}
                            _ = tokio::time::sleep(ack_timeout * 20) => {}
                        }
                    }
                    Ok::<_, HandlerError>(())
                }
            }
        }));
    let (s, reached) = run_until(consumer, service, timing().receive, |s| s.acked >= 1).await?;
    ensure!(
        reached,
        "the hung call's message was not redelivered after max_total: {s:?}"
    );
    let starts = starts.lock().unwrap().clone();
    ensure!(
        starts.len() == 2 && starts[0].0 == 1 && starts[1].0 == 2,
        "calls at attempts {:?}",
        starts.iter().map(|(a, _)| a).collect::<Vec<_>>()
    );
    // Extended at half a timeout for a whole one more, then left: back
    // after one and a half timeouts, on a backend's polling besides.
    within_bounds(
        "redelivery after the lease layer's max_total",
        starts[1].1 - starts[0].1,
        ack_timeout,
        ack_timeout * 3,
    )
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(runtime_lease_extends_long_handler, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_waiting_deliveries_keep_their_lease, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_waited_delivery_starts_with_a_fresh_lease, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_lease_gives_up_after_max_total, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
    ]
}
