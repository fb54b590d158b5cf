//! The consumer runtime on the in-memory backend: what the conformance
//! suite does not cover because it is about the runtime, not the broker.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower::ServiceBuilder;
use transport::runtime::{handler_fn, link_to_current, Consumer, ConsumerStats, Context, HandlerError, StatsHandle};
use transport::{ErrorKind, Message, Outcome, SubscribeOptions, Transport};

async fn setup(what: &str) -> (Arc<dyn Transport>, String, SubscribeOptions) {
    let broker = transport::connect("memory://").await.unwrap();
    let topic = format!("rt-{what}");
    let options = SubscribeOptions::new("g")
        .ack_timeout(Duration::from_secs(2))
        .max_attempts(3);
    drop(broker.subscribe(&topic, options.clone()).await.unwrap());
    (broker, topic, options)
}

/// A shutdown future that ends once `done` holds (or after 20 s).
async fn until(stats: StatsHandle, done: impl Fn(&ConsumerStats) -> bool + Send + 'static) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(&stats.get()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn tower_layers_stack_and_their_errors_are_transient() {
    let (broker, topic, options) = setup("tower").await;
    broker.publish(&topic, Message::new("slow")).await.unwrap();
    let consumer = Consumer::new(broker.clone(), &topic, options).concurrency(2);
    let stats = consumer.stats_handle();
    // tower's own timeout: its `Elapsed` error becomes a retry.
    let service = ServiceBuilder::new()
        .concurrency_limit(1)
        .timeout(Duration::from_millis(100))
        .service(handler_fn(|ctx: Context| async move {
            if ctx.attempt() == 1 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok::<_, HandlerError>(())
        }));
    let s = tokio::spawn(consumer.run(service, until(stats, |s| s.acked >= 1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.acked, s.retried, s.dead_lettered), (1, 1, 0), "{s:?}");
}

#[tokio::test]
async fn a_panic_no_layer_catches_is_a_transient_failure() {
    let (broker, topic, options) = setup("panic").await;
    broker.publish(&topic, Message::new("p")).await.unwrap();
    let consumer = Consumer::new(broker.clone(), &topic, options);
    let stats = consumer.stats_handle();
    // No CatchPanicLayer: the runtime's own net catches it.
    let service = handler_fn(|ctx: Context| async move {
        if ctx.attempt() < 3 {
            panic!("attempt {}", ctx.attempt());
        }
        Ok::<_, HandlerError>(())
    });
    let s = consumer.run(service, until(stats, |s| s.acked >= 1)).await.unwrap();
    assert_eq!((s.acked, s.retried, s.panicked), (1, 2, 2), "{s:?}");
}

#[tokio::test]
async fn explicit_outcomes_and_lease_limits() {
    let (broker, topic, options) = setup("outcomes").await;
    broker.publish(&topic, Message::new("x")).await.unwrap();
    let consumer = Consumer::new(broker.clone(), &topic, options.clone());
    let stats = consumer.stats_handle();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let service = handler_fn({
        let seen = seen.clone();
        move |ctx: Context| {
            let seen = seen.clone();
            async move {
                // Longer than the ack timeout is refused, the same on every backend.
                let too_long = ctx.lease().extend(ctx.ack_timeout() * 2).await.unwrap_err();
                assert_eq!(too_long.kind(), ErrorKind::InvalidArgument);
                ctx.lease().extend(Duration::from_millis(500)).await.unwrap();
                seen.lock()
                    .unwrap()
                    .push(format!("{}/{}", ctx.attempt(), ctx.max_attempts()));
                if ctx.attempt() == 1 {
                    Outcome::retry_after(Duration::from_millis(50), "again")
                } else {
                    Outcome::dead_letter("enough")
                }
            }
        }
    });
    let s = consumer
        .run(service, until(stats, |s| s.dead_lettered >= 1))
        .await
        .unwrap();
    assert_eq!((s.retried, s.dead_lettered), (1, 1), "{s:?}");
    assert_eq!(*seen.lock().unwrap(), ["1/3", "2/3"]);
    let dead = broker
        .dead_letters(&topic, &options)
        .await
        .unwrap()
        .peek(1)
        .await
        .unwrap();
    assert_eq!(dead[0].reason.as_deref(), Some("enough"));
}

#[tokio::test]
async fn run_fn_retries_with_backoff_and_links_deep_publishes() {
    let (broker, topic, options) = setup("runfn").await;
    let first = Message::new("a");
    broker.publish(&topic, first.clone()).await.unwrap();
    let consumer = Consumer::new(broker.clone(), &topic, options);
    let stats = consumer.stats_handle();
    let calls = Arc::new(AtomicU32::new(0));
    let linked: Arc<Mutex<Option<Message>>> = Arc::default();
    let handler = {
        let (calls, linked) = (calls.clone(), linked.clone());
        move |_ctx: Context| {
            let (calls, linked) = (calls.clone(), linked.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(HandlerError::retry("first call fails"));
                }
                // Code without the context at hand still links what it sends.
                *linked.lock().unwrap() = Some(link_to_current(Message::new("b")));
                Ok(())
            }
        }
    };
    let started = Instant::now();
    let s = consumer.run_fn(handler, until(stats, |s| s.acked >= 1)).await.unwrap();
    assert_eq!((s.acked, s.retried), (1, 1));
    // The default policy waits at least 200 ms after the first failure.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    let b = linked.lock().unwrap().clone().unwrap();
    assert_eq!(b.headers.get("ce-causationid"), Some(first.id.as_str()));
    assert_eq!(b.headers.get("ce-correlationid"), Some(first.id.as_str()));
}

#[tokio::test]
async fn a_duplicate_arriving_while_its_original_runs_waits_and_is_acked() {
    use transport::runtime::{IdempotencyLayer, MemoryIdempotencyStore};

    let (broker, topic, options) = setup("dup-concurrent").await;
    let m = Message::new("once");
    broker.publish(&topic, m.clone()).await.unwrap();
    broker.publish(&topic, m.clone()).await.unwrap();
    let consumer = Consumer::new(broker.clone(), &topic, options).concurrency(4);
    let stats = consumer.stats_handle();
    let effects = Arc::new(AtomicU32::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new())))
        .service(handler_fn({
            let effects = effects.clone();
            move |_ctx: Context| {
                let effects = effects.clone();
                async move {
                    // Long enough for the duplicate to arrive meanwhile.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    effects.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, HandlerError>(())
                }
            }
        }));
    let s = consumer.run(service, until(stats, |s| s.acked >= 2)).await.unwrap();
    assert_eq!(effects.load(Ordering::SeqCst), 1);
    assert_eq!((s.acked, s.duplicates, s.retried), (2, 1, 0), "{s:?}");
}

#[tokio::test]
async fn a_done_key_outlives_the_claim_lease_and_is_the_derived_key() {
    use transport::runtime::{IdempotencyLayer, MemoryIdempotencyStore};

    let (broker, topic, options) = setup("dup-ttl").await;
    let lease = Duration::from_millis(100);
    let consumer = Consumer::new(broker.clone(), &topic, options).concurrency(2);
    let stats = consumer.stats_handle();
    let effects = Arc::new(AtomicU32::new(0));
    let service = ServiceBuilder::new()
        .layer(
            IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new()))
                .claim_lease(lease)
                .key_with(|ctx| ctx.headers().get("order").unwrap_or_default().to_owned()),
        )
        .service(handler_fn({
            let effects = effects.clone();
            move |_ctx: Context| {
                let effects = effects.clone();
                async move {
                    effects.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, HandlerError>(())
                }
            }
        }));
    let running = tokio::spawn(consumer.run(service, until(stats.clone(), |s| s.acked >= 2)));
    broker
        .publish(&topic, Message::new("placed").with_header("order", "o-1"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.get().acked < 1 {
        assert!(Instant::now() < deadline, "the first was not acked: {:?}", stats.get());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same order again under another id, once the claim lease is long
    // over: what marks it done is the TTL (days), not the lease.
    tokio::time::sleep_until((Instant::now() + lease * 3).into()).await;
    broker
        .publish(&topic, Message::new("placed again").with_header("order", "o-1"))
        .await
        .unwrap();
    let s = running.await.unwrap().unwrap();
    assert_eq!(effects.load(Ordering::SeqCst), 1, "{s:?}");
    assert_eq!((s.acked, s.duplicates), (2, 1), "{s:?}");
}

/// A service whose `poll_ready` panics the first time it is asked.
#[derive(Clone)]
struct PanicsWhenFirstReady {
    asked: Arc<AtomicU32>,
}

impl tower::Service<Context> for PanicsWhenFirstReady {
    type Response = Outcome;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Outcome, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        if self.asked.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("not ready, loudly");
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Context) -> Self::Future {
        std::future::ready(Ok(Outcome::Ack))
    }
}

#[tokio::test]
async fn a_panic_in_poll_ready_is_a_failure_worth_a_retry_not_the_end_of_the_consumer() {
    let (broker, topic, options) = setup("ready-panic").await;
    broker.publish(&topic, Message::new("r")).await.unwrap();
    let consumer = Consumer::new(broker.clone(), &topic, options);
    let stats = consumer.stats_handle();
    let asked = Arc::new(AtomicU32::new(0));
    let service = PanicsWhenFirstReady { asked: asked.clone() };
    let s = consumer.run(service, until(stats, |s| s.acked >= 1)).await.unwrap();
    assert_eq!((s.acked, s.retried), (1, 1), "{s:?}");
    assert!(asked.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_lease_kept_past_its_call_neither_extends_nor_holds_up_the_settlement() {
    let (broker, topic, options) = setup("lease-after").await;
    broker.publish(&topic, Message::new("l")).await.unwrap();
    let consumer = Consumer::new(broker.clone(), &topic, options);
    let stats = consumer.stats_handle();
    // The handler leaves a task behind that renews the lease without a
    // pause: the settlement must not wait for it, and once the delivery is
    // settled (or being settled) the task's renewals are refused.
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel();
    let refused_tx = Arc::new(Mutex::new(Some(refused_tx)));
    let service = handler_fn(move |ctx: Context| {
        let refused_tx = refused_tx.clone();
        async move {
            let lease = ctx.lease().clone();
            tokio::spawn(async move {
                let error = loop {
                    if let Err(e) = lease.renew().await {
                        break e;
                    }
                    tokio::task::yield_now().await;
                };
                if let Some(tx) = refused_tx.lock().unwrap().take() {
                    let _ = tx.send(error);
                }
            });
            Ok::<_, HandlerError>(())
        }
    });
    let began = Instant::now();
    let s = consumer.run(service, until(stats, |s| s.acked >= 1)).await.unwrap();
    assert_eq!(s.acked, 1, "{s:?}");
    // Well within the 2 s ack timeout (the most settling may wait for an
    // extension): nothing held it up.
    assert!(began.elapsed() < Duration::from_secs(1), "{:?}", began.elapsed());
    let refused = tokio::time::timeout(Duration::from_secs(5), refused_rx)
        .await
        .expect("renewals were refused once the delivery settled")
        .unwrap();
    assert_eq!(refused.kind(), ErrorKind::DeliveryExpired, "{refused}");
}
