//! `transport demo`: an order-processing flow on any backend (memory:// by
//! default): events published, a handler that fails some orders transiently
//! and some permanently, retries with backoff, dead letters with their
//! reasons, a redrive after a "fix", and a summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport::runtime::{Consumer, HandlerError, RetryPolicy};
use transport::{Event, Received, Redrive, SubscribeOptions};

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

async fn flow(url: &str) -> transport::Result<()> {
    let broker = transport::connect(url).await?;
    let topic = format!("orders-{}", std::process::id());
    let options = SubscribeOptions::new("billing")
        .max_attempts(4)
        .ack_timeout(Duration::from_secs(10))
        .max_in_flight(16);
    println!("backend: {} ({})", broker.backend(), transport::secret::redact_url(url));

    // Subscribing first creates the group, so it sees every order below.
    drop(broker.subscribe(&topic, options.clone()).await?);
    for order in 1..=20u32 {
        let total_cents = if order % 7 == 0 {
            -500
        } else {
            1_000 + order as i64 * 250
        };
        let event = Event::new(
            "order.placed",
            "1.0",
            "shop/checkout",
            OrderPlaced {
                order,
                customer: format!("customer-{}", order % 5),
                total_cents,
            },
        )
        .with_key(format!("customer-{}", order % 5));
        broker.publish(&topic, event.to_message()?).await?;
    }
    println!("published 20 order.placed events (orders 7 and 14 have a negative total)");

    // The payment gateway is flaky for every third order until it has been
    // retried twice; negative totals are rejected for good... until a fix.
    let accept_negative = Arc::new(AtomicBool::new(false));
    let handler = {
        let accept_negative = accept_negative.clone();
        move |msg: Received| {
            let accept_negative = accept_negative.clone();
            async move {
                let event = Event::<OrderPlaced>::decode(msg.message(), 1).map_err(HandlerError::permanent)?;
                let o = &event.data;
                if o.total_cents < 0 && !accept_negative.load(Ordering::Relaxed) {
                    return Err(HandlerError::permanent(format!(
                        "order {} has a negative total",
                        o.order
                    )));
                }
                if o.order % 3 == 0 && msg.attempt() < 3 {
                    println!(
                        "  order {:>2}: payment gateway timeout (attempt {})",
                        o.order,
                        msg.attempt()
                    );
                    return Err(HandlerError::transient("payment gateway timeout"));
                }
                println!(
                    "  order {:>2}: charged {} cents to {} (attempt {})",
                    o.order,
                    o.total_cents,
                    o.customer,
                    msg.attempt()
                );
                Ok(())
            }
        }
    };

    let run = |expected_acks: u64, expected_dead: u64| {
        let consumer = Consumer::new(&*broker, &topic, options.clone())
            .concurrency(4)
            .retry(RetryPolicy::exponential(
                Duration::from_millis(50),
                Duration::from_secs(1),
            ));
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
        (consumer, until_done)
    };

    println!("\nprocessing:");
    let (consumer, until_done) = run(18, 2);
    let first = consumer.run(handler.clone(), until_done).await?;

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
    let moved = dlq.redrive(Redrive::All).await?;
    let (consumer, until_done) = run(moved, 0);
    let second = consumer.run(handler, until_done).await?;

    println!("\nsummary:");
    println!(
        "  first run:  received {:>3}, acked {:>3}, retried {:>3}, dead-lettered {:>3}",
        first.received, first.acked, first.retried, first.dead_lettered
    );
    println!("  redrive:    moved {moved}, then acked {}", second.acked);
    println!("  dead-letter queue now holds {}", dlq.depth().await?);
    broker.close().await
}
