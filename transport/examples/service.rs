//! A service's consumer with the full middleware stack, on any backend:
//!
//! ```sh
//! cargo run -p transport --example service                       # memory://
//! cargo run -p transport --features redis --example service -- redis://127.0.0.1:6379
//! ```
//!
//! It publishes a few orders, one of them twice, and handles them with a
//! downstream that fails for the first half second: the breaker opens and
//! holds the failed calls, the duplicate is acknowledged without a second
//! effect, a malformed order is dead-lettered, and follow-up events carry
//! the order's correlation id.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tower::ServiceBuilder;
use transport::runtime::{
    handler_fn, BreakerConfig, CatchPanicLayer, CircuitBreakerLayer, Consumer, Context, HandlerError,
    HandlerTimeoutLayer, IdempotencyLayer, LeaseLayer, MemoryIdempotencyStore, RetryDelayLayer, RetryPolicy,
};
use transport::{Message, SubscribeOptions};

#[tokio::main]
async fn main() -> transport::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "memory://".to_owned());
    let broker = transport::connect(&url).await?;
    let topic = format!("orders-example-{}", std::process::id());
    let options = SubscribeOptions::new("billing").max_attempts(5);
    drop(broker.subscribe(&topic, options.clone()).await?);

    let orders: Vec<Message> = (1..=5)
        .map(|i| Message::new(format!("order {i}")).with_key("customer-1"))
        .collect();
    for m in &orders {
        broker.publish(&topic, m.clone()).await?;
    }
    broker.publish(&topic, orders[2].clone()).await?; // a producer retry
    broker.publish(&topic, Message::new("")).await?; // malformed

    let up_at = Instant::now() + Duration::from_millis(500);
    let effects = Arc::new(AtomicUsize::new(0));
    let handler = {
        let effects = effects.clone();
        move |ctx: Context| {
            let effects = effects.clone();
            async move {
                if ctx.payload().is_empty() {
                    return Err(HandlerError::permanent("empty order"));
                }
                if Instant::now() < up_at {
                    return Err(HandlerError::retry("payment service unavailable"));
                }
                effects.fetch_add(1, Ordering::SeqCst);
                let follow_up = ctx.follow_up(Message::new("payment requested"));
                println!(
                    "{} charged (attempt {}); follow-up correlation {}",
                    String::from_utf8_lossy(ctx.payload()),
                    ctx.attempt(),
                    follow_up.headers.get("ce-correlationid").unwrap_or("-")
                );
                Ok(())
            }
        }
    };
    let breaker = CircuitBreakerLayer::new(BreakerConfig::consecutive_failures(2).open_for(Duration::from_millis(200)));
    let service = ServiceBuilder::new()
        .layer(RetryDelayLayer::new(RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_secs(2),
        )))
        .layer(LeaseLayer::new())
        .layer(breaker.clone())
        .layer(IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new())))
        .layer(HandlerTimeoutLayer::new(Duration::from_secs(5)))
        .layer(CatchPanicLayer)
        .service(handler_fn(handler));

    let consumer = Consumer::new(broker.clone(), &topic, options.clone()).concurrency(4);
    let stats = consumer.stats_handle();
    let watch = stats.clone();
    let done = async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let s = watch.get();
            if s.acked >= 6 && s.dead_lettered >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::spawn(consumer.run(service, done))
        .await
        .expect("the consumer task")?;
    println!(
        "{:?}\nbreaker opened {} time(s); {} effects for 5 orders",
        stats.get(),
        breaker.handle().opened(),
        effects.load(Ordering::SeqCst)
    );
    broker.dead_letters(&topic, &options).await?.purge().await?;
    broker.close().await
}
