//! The circuit breaker: it holds calls while open without burning
//! attempts, ignores permanent failures, and lets shutdown go.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower::ServiceBuilder;
use transport_core::runtime::{
    handler_fn, BreakerConfig, CatchPanicLayer, CircuitBreakerLayer, Context, HandlerError, LeaseLayer,
    RetryDelayLayer, RetryPolicy,
};
use transport_core::{Message, Transport};

use super::*;
use crate::support::*;
use crate::{ensure, Check};

/// With a failing downstream the breaker opens; while it is open nothing
/// is settled (no attempt is burned, nothing dead-lettered); once the
/// downstream recovers every message is processed.
pub async fn runtime_breaker_holds_while_open(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_attempts(3);
    let (topic, consumer) = consumer(t, "breaker", &options, 2).await?;
    let stats = consumer.stats_handle();
    let down = Arc::new(AtomicBool::new(true));
    let calls: Calls = Arc::default();
    let processed: Calls = Arc::default();
    let breaker = CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(2).open_for(Duration::from_millis(300)));
    let handle = breaker.handle();
    let service = ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(50),
        )))
        .layer(LeaseLayer::new())
        .layer(breaker)
        .layer(CatchPanicLayer)
        .service(handler_fn({
            let (down, calls, processed) = (down.clone(), calls.clone(), processed.clone());
            move |ctx: Context| {
                let (down, calls, processed) = (down.clone(), calls.clone(), processed.clone());
                async move {
                    record(&calls, &ctx);
                    if down.load(AtomicOrdering::SeqCst) {
                        return Err(HandlerError::retry("downstream unavailable"));
                    }
                    record(&processed, &ctx);
                    Ok(())
                }
            }
        }));
    let n = 6;
    for i in 0..n {
        t.publish(&topic, Message::new(format!("b{i}"))).await?;
    }
    let running = tokio::spawn(consumer.run(service, {
        let stats = stats.clone();
        let processed = processed.clone();
        async move {
            let deadline = Instant::now() + timing().receive * 2;
            while Instant::now() < deadline {
                if stats.get().acked >= n && processed.lock().unwrap().len() as u64 >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }));
    // Opened, then two failed probes reopened it: the downstream stayed down
    // across several open periods.
    let deadline = Instant::now() + timing().receive;
    while handle.opened() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened = handle.opened();
    let while_open = stats.get();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = stats.get();
    down.store(false, AtomicOrdering::SeqCst);
    let s = running
        .await
        .map_err(|e| CheckFailure(format!("the consumer task failed: {e}")))??;
    ensure!(
        opened >= 3,
        "the breaker opened {opened} times, expected at least 3 while down"
    );
    ensure!(
        later.retried == while_open.retried && later.dead_lettered == 0 && later.acked == 0,
        "settled while the breaker was open: {while_open:?} then {later:?}"
    );
    // Only failures before the breaker first opened may be retried: with a
    // streak of 2, at most one.
    ensure!(
        while_open.retried <= 1,
        "{} retries before the breaker opened",
        while_open.retried
    );
    ensure!(
        s.dead_lettered == 0,
        "dead-lettered while the downstream was down: {s:?}"
    );
    let processed = processed.lock().unwrap().clone();
    ensure!(
        processed.len() as u64 == n,
        "processed {} of {n} after the downstream recovered: {s:?}",
        processed.len()
    );
    let duplicates_ok = t.capabilities().duplicates_possible;
    for (id, attempts) in &processed {
        ensure!(
            attempts.len() == 1 || duplicates_ok,
            "{id} processed {} times",
            attempts.len()
        );
    }
    let calls = calls.lock().unwrap().clone();
    let highest = calls.values().flatten().max().copied().unwrap_or(0);
    ensure!(
        highest <= 2,
        "a message reached attempt {highest}: attempts were burned while the breaker was open"
    );
    if t.capabilities().dead_letter_ops {
        dlq_depth(t.as_ref(), &topic, &options, 0).await?;
    }
    Ok(())
}

/// Dead-lettered messages are not failures a breaker counts: a run of
/// poison messages leaves it closed, and the healthy message after them is
/// handled.
pub async fn runtime_breaker_ignores_permanent_failures(t: &Arc<dyn Transport>) -> CheckResult {
    let options = opts("g");
    let (topic, consumer) = consumer(t, "breaker-poison", &options, 1).await?;
    for i in 0..3 {
        t.publish(&topic, Message::new(format!("poison{i}")).with_header("kind", "poison"))
            .await?;
    }
    t.publish(&topic, Message::new("fine")).await?;
    let breaker = CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(2).open_for(Duration::from_millis(200)));
    let handle = breaker.handle();
    let service = ServiceBuilder::new()
        .layer(breaker)
        .service(handler_fn(|ctx: Context| async move {
            match ctx.headers().get("kind") {
                Some("poison") => Err(HandlerError::permanent("malformed")),
                _ => Ok(()),
            }
        }));
    let (s, reached) = run_until(consumer, service, timing().receive, |s| {
        s.acked >= 1 && s.dead_lettered >= 3
    })
    .await?;
    ensure!(reached, "not every message was settled: {s:?}");
    ensure!(
        handle.opened() == 0 && s.breaker_opened == 0,
        "the breaker opened {} times on dead-lettered messages",
        handle.opened()
    );
    ensure!(s.dead_lettered == 3 && s.acked == 1, "stats: {s:?}");
    dlq_depth(t.as_ref(), &topic, &options, 3).await?;
    t.dead_letters(&topic, &options).await?.purge().await?;
    Ok(())
}

/// A call the breaker holds (failed while open) lets shutdown go: it is
/// given back at once, not kept until the breaker would let it through or
/// the shutdown timeout cuts it off.
pub async fn runtime_breaker_held_call_lets_shutdown_go(t: &Arc<dyn Transport>) -> CheckResult {
    let options = short("g").max_attempts(5);
    let (topic, consumer) = consumer(t, "breaker-shutdown", &options, 1).await?;
    t.publish(&topic, Message::new("down")).await?;
    // Open for far longer than the check: only shutdown can end the hold.
    let breaker = CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(1).open_for(Duration::from_secs(600)));
    let service = ServiceBuilder::new()
        .layer(breaker)
        .service(handler_fn(|_ctx: Context| async move {
            Err::<(), _>(HandlerError::retry("downstream unavailable"))
        }));
    let asked_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (s, reached) = run_until(consumer, service, timing().receive, {
        let asked_at = asked_at.clone();
        move |s| {
            let open = s.breaker_opened >= 1;
            if open {
                asked_at.lock().unwrap().get_or_insert_with(Instant::now);
            }
            open
        }
    })
    .await?;
    let stopped = Instant::now();
    ensure!(reached, "the breaker did not open: {s:?}");
    let asked = asked_at.lock().unwrap().expect("set when reached");
    // The consumer's shutdown timeout is 10 s; a hold it had to cut off
    // takes all of it.
    within_bounds(
        "shutdown with a call held by the open breaker",
        stopped - asked,
        Duration::ZERO,
        Duration::from_secs(2),
    )?;
    ensure!(s.dead_lettered == 0 && s.retried <= 1, "stats: {s:?}");
    Ok(())
}

/// The checks of this file, each with what it needs of the backend.
pub(crate) fn checks() -> Vec<Check> {
    vec![
        check!(runtime_breaker_holds_while_open, |c| (!c.extend).then_some(
            "the backend cannot extend a delivery, so held calls would time out"
        )),
        check!(runtime_breaker_ignores_permanent_failures, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(runtime_breaker_held_call_lets_shutdown_go),
    ]
}
