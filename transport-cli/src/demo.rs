//! `transport demo`: an order-processing flow on any backend (memory:// by
//! default): events published (one of them twice, as a producer retry
//! would), a consumer with the full middleware stack, a payment gateway that
//! is down for a while (the circuit breaker opens, holds the failed calls and
//! burns no attempts), a duplicate acknowledged without charging twice,
//! permanent failures dead-lettered with their reasons, a redrive after a
//! "fix", and a summary. Then a transactional outbox in SQLite feeding an
//! exactly-once consumer (`demo_outbox.rs`), and typed events with a
//! version upcast on arrival and an invalid one dead-lettered with the field
//! named (`demo_contracts.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use transport::runtime::{
    handler_fn, BreakerConfig, BreakerState, CatchPanicLayer, CircuitBreakerLayer, Consumer, ConsumerStats, Context,
    HandlerError, HandlerTimeoutLayer, IdempotencyLayer, LeaseLayer, MemoryIdempotencyStore, RetryDelayLayer,
    RetryPolicy,
};
use transport::{Event, SubscribeOptions};

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order: u32,
    customer: String,
    total_cents: i64,
}

pub async fn run(args: crate::cli::DemoArgs) -> crate::target::CliResult {
    let url = args.url;
    flow(&url)
        .await
        .map_err(|e| crate::target::failed("the demo", &url, &e))
}

/// The payment gateway: unreachable until `up_at`.
struct Gateway {
    up_at: Instant,
    charged: Mutex<HashMap<u32, u32>>,
}

impl Gateway {
    fn charge(&self, order: u32) -> Result<(), HandlerError> {
        if Instant::now() < self.up_at {
            return Err(HandlerError::retry("payment gateway unavailable"));
        }
        *self.charged.lock().unwrap().entry(order).or_default() += 1;
        Ok(())
    }
}

async fn flow(url: &str) -> transport::Result<()> {
    let broker = transport::connect(url).await?;
    let topic = format!("orders-{}", std::process::id());
    let options = SubscribeOptions::new("billing")
        .max_attempts(4)
        .ack_timeout(Duration::from_secs(10))
        .max_in_flight(16);
    println!("backend: {} ({})", broker.backend(), transport::redact_url(url));

    // Subscribing first creates the group, so it sees every order below.
    drop(broker.subscribe(&topic, options.clone()).await?);
    let mut published = Vec::new();
    for order in 1..=20u32 {
        let total_cents = if order % 7 == 0 {
            -500
        } else {
            1_000 + order as i64 * 250
        };
        let event = Event::new(
            "order.placed",
            "shop/checkout",
            OrderPlaced {
                order,
                customer: format!("customer-{}", order % 5),
                total_cents,
            },
        )
        .with_version("1.0")
        .with_key(format!("customer-{}", order % 5));
        let message = event.to_message()?;
        broker.publish(&topic, message.clone()).await?;
        published.push(message);
    }
    // The checkout service timed out waiting for a confirm and sent order 5 again.
    broker.publish(&topic, published[4].clone()).await?;
    println!("published 20 order.placed events, order 5 twice (orders 7 and 14 have a negative total)");
    println!("the payment gateway is down for the first second");

    let gateway = Arc::new(Gateway {
        up_at: Instant::now() + Duration::from_secs(1),
        charged: Mutex::default(),
    });
    let accept_negative = Arc::new(AtomicBool::new(false));
    let handler = {
        let (gateway, accept_negative) = (gateway.clone(), accept_negative.clone());
        move |ctx: Context| {
            let (gateway, accept_negative) = (gateway.clone(), accept_negative.clone());
            async move {
                let event = Event::<OrderPlaced>::decode_version(ctx.message(), 1).map_err(HandlerError::permanent)?;
                let o = &event.data;
                if o.total_cents < 0 && !accept_negative.load(Ordering::Relaxed) {
                    return Err(HandlerError::permanent(format!(
                        "order {} has a negative total",
                        o.order
                    )));
                }
                if let Err(e) = gateway.charge(o.order) {
                    println!("  order {:>2}: {} (attempt {})", o.order, e.reason(), ctx.attempt());
                    return Err(e);
                }
                println!(
                    "  order {:>2}: charged {} cents to {} (attempt {})",
                    o.order,
                    o.total_cents,
                    o.customer,
                    ctx.attempt()
                );
                Ok(())
            }
        }
    };
    // One breaker and one idempotency store for both runs, as in a service.
    let breaker = CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(3).open_for(Duration::from_millis(400)));
    let store = Arc::new(MemoryIdempotencyStore::new());
    let service = ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_secs(1),
        )))
        .layer(LeaseLayer::new())
        .layer(breaker.clone())
        .layer(IdempotencyLayer::new(store))
        .layer(HandlerTimeoutLayer::new(Duration::from_secs(5)))
        .layer(CatchPanicLayer)
        .service(handler_fn(handler));
    let run = |expected_acks: u64, expected_dead: u64| {
        let consumer = Consumer::new(broker.clone(), &topic, options.clone()).concurrency(4);
        let stats = consumer.stats_handle();
        let until_done = async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while tokio::time::Instant::now() < deadline {
                let s = stats.get();
                if s.acked >= expected_acks && s.dead_lettered >= expected_dead {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        consumer.run(service.clone(), until_done)
    };

    println!("\nprocessing:");
    // Show the breaker's state changes as they happen.
    let watch = {
        let handle = breaker.handle();
        // Read before the consumer starts, not when the task first runs: on
        // a loaded machine that can be after the breaker already opened.
        let mut last = handle.state();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let now = handle.state();
                if now != last {
                    let state = match now {
                        BreakerState::Open => "open",
                        BreakerState::HalfOpen => "half-open",
                        BreakerState::Closed => "closed",
                    };
                    println!("  [circuit breaker {state}]");
                    last = now;
                }
            }
        })
    };
    // 18 charged, the duplicate of order 5 acked without charging, 2 dead
    // letters. A broker that deduplicates publishes by id (NATS JetStream)
    // drops the copy of order 5 before any consumer sees it.
    let dedup = broker.capabilities().publish_dedup;
    let first = run(if dedup { 18 } else { 19 }, 2).await;
    watch.abort();
    let first = first?;

    let dlq = broker.dead_letters(&topic, &options).await?;
    println!("\ndead-letter queue {} holds {}:", dlq.topic(), dlq.depth().await?);
    for dead in dlq.peek(10).await? {
        println!(
            "  {} after {} attempt(s): {}",
            dead.message.id,
            dead.attempts.unwrap_or(0),
            dead.reason.as_deref().unwrap_or("?")
        );
    }

    println!("\nfix deployed (negative totals are refunds); redriving the dead letters:");
    accept_negative.store(true, Ordering::Relaxed);
    let moved = dlq.redrive_all().await?;
    let second = run(moved, 0).await?;

    println!("\nsummary:");
    summary("first run", &first);
    println!(
        "  circuit breaker opened {} time(s) while the gateway was down; no order was dead-lettered for it",
        breaker.handle().opened()
    );
    let charged = gateway.charged.lock().unwrap().clone();
    if dedup && first.duplicates == 0 {
        println!(
            "  order 5 published twice, the copy dropped by the broker (publish deduplication), charged {} time(s)",
            charged.get(&5).copied().unwrap_or(0)
        );
    } else {
        println!(
            "  order 5 delivered twice, charged {} time(s); {} duplicate(s) acknowledged without charging",
            charged.get(&5).copied().unwrap_or(0),
            first.duplicates
        );
    }
    println!("  redrive:    moved {moved}, then acked {}", second.acked);
    println!("  dead-letter queue now holds {}", dlq.depth().await?);
    crate::demo_outbox::run(broker.clone()).await?;
    crate::demo_contracts::run(broker.clone()).await?;
    broker.close().await
}

fn summary(name: &str, s: &ConsumerStats) {
    println!(
        "  {name}:  received {:>3}, acked {:>3}, retried {:>3}, dead-lettered {:>3}",
        s.received, s.acked, s.retried, s.dead_lettered
    );
}
