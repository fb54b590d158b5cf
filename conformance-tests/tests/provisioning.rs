//! Running without provisioning (`provision=false`), against the real
//! brokers: a service that may not create broker objects gets `NotFound`
//! naming what is missing, fast, and creates nothing by trying; once an
//! operator ran `provision` (what `transport provision` calls) with the
//! service's options, the same service publishes, consumes and
//! dead-letters; `topology` names what `provision` creates; a second
//! `provision` changes nothing.
//!
//! Needs `REDIS_URL`, `NATS_URL`, `RABBITMQ_URL`, `SQS_URL`, `KAFKA_URL`
//! (scripts/test sets them); each test is skipped without its URL, and
//! fails under `CI=true`.

#![cfg(any(
    feature = "redis",
    feature = "nats",
    feature = "rabbitmq",
    feature = "sqs",
    feature = "kafka"
))]

use std::time::{Duration, Instant};

use conformance_tests::unique;
use futures::StreamExt;
use transport_core::{Error, ErrorKind, Message, StartFrom, SubscribeOptions};

/// A refusal for a missing object comes within this (no retry loop).
const REFUSED_WITHIN: Duration = Duration::from_secs(15);
/// A delivery or a dead-letter count arrives within this.
const ARRIVES_WITHIN: Duration = Duration::from_secs(60);

fn with_option(url: &str, option: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{option}")
}

fn not_provisioned(e: &Error, names: &str, took: Duration) {
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!e.is_retryable(), "a missing object is not retried: {e}");
    let text = e.to_string();
    assert!(text.contains(names), "the error does not name {names:?}: {e}");
    assert!(text.contains("provision=false"), "the error does not say why: {e}");
    assert!(took < REFUSED_WITHIN, "refused after {took:?}: {e}");
}

async fn without_provisioning(var: &str) {
    let Some(url) = conformance_tests::live_env(var) else {
        return;
    };
    let operator = transport::connect(&url).await.expect("connect");
    let service = transport::connect(&with_option(&url, "provision=false"))
        .await
        .expect("connect with provision=false");
    let topic = unique("prov");
    let start = if service.capabilities().replay {
        StartFrom::Earliest
    } else {
        StartFrom::Latest
    };
    let options = SubscribeOptions::new("billing")
        .ack_timeout(Duration::from_secs(30))
        .max_attempts(3)
        .start(start);

    // Nothing exists: refused, and trying creates nothing (the second
    // round is refused the same way).
    for _ in 0..2 {
        let asked = Instant::now();
        let e = service.publish(&topic, Message::new("early")).await.unwrap_err();
        not_provisioned(&e, &topic, asked.elapsed());
        let asked = Instant::now();
        let e = service.subscribe(&topic, options.clone()).await.unwrap_err();
        not_provisioned(&e, &topic, asked.elapsed());
    }

    // What provision creates is what topology says, and a second run is
    // the same.
    let plan = operator.topology(&topic, Some(&options)).expect("topology");
    assert!(!plan.is_empty(), "{var}: no objects planned");
    assert!(
        plan.objects().iter().any(|o| o.name.contains(&topic)),
        "{var}: the plan does not name the topic:\n{plan}"
    );
    assert_eq!(
        operator.provision(&topic, Some(&options)).await.expect("provision"),
        plan
    );
    assert_eq!(
        operator
            .provision(&topic, Some(&options))
            .await
            .expect("provision again"),
        plan
    );
    eprintln!("{var}: provisioned\n{plan}");
    let publisher_only = operator.topology(&topic, None).expect("topology of the topic");
    assert!(
        publisher_only.objects().len() < plan.objects().len(),
        "{var}:\n{publisher_only}"
    );

    // The service works on what was provisioned.
    let mut sub = service.subscribe(&topic, options.clone()).await.expect("subscribe");
    for payload in ["kept", "poison"] {
        let m = Message::new(payload).with_key("k");
        // A new group may take a moment to be assigned its partitions.
        service.publish(&topic, m).await.expect("publish");
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + ARRIVES_WITHIN;
    while seen.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, sub.next())
            .await
            .unwrap_or_else(|_| panic!("{var}: only {seen:?} arrived within {ARRIVES_WITHIN:?}"))
            .expect("the subscription ended")
            .expect("a delivery");
        let payload = String::from_utf8_lossy(&d.message().payload).into_owned();
        if payload == "poison" {
            d.dead_letter("refused by the test").await.expect("dead-letter");
        } else {
            d.ack().await.expect("ack");
        }
        if !seen.contains(&payload) {
            seen.push(payload);
        }
    }
    let dlq = service.dead_letters(&topic, &options).await.expect("dead-letter queue");
    let deadline = Instant::now() + ARRIVES_WITHIN;
    loop {
        let depth = dlq.depth().await.expect("depth");
        if depth >= 1 {
            assert_eq!(depth, 1, "{var}: one message was dead-lettered");
            break;
        }
        assert!(Instant::now() < deadline, "{var}: the dead letter never showed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sub);

    // SQS: a queue whose redrive policy would dead-letter before the
    // subscription's own limit is refused, not used as it is.
    if var == "SQS_URL" {
        let e = service
            .subscribe(&topic, options.clone().max_attempts(10))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("redrive policy"), "{e}");
    }

    // Another group was not provisioned: its subscription is refused.
    let asked = Instant::now();
    let e = service
        .subscribe(&topic, SubscribeOptions::new("audit").start(start))
        .await
        .unwrap_err();
    not_provisioned(&e, &topic, asked.elapsed());
    let _ = service.close().await;
    let _ = operator.close().await;
    eprintln!("{var}: done");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_provisioning() {
    without_provisioning("REDIS_URL").await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_without_provisioning() {
    without_provisioning("NATS_URL").await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_without_provisioning() {
    without_provisioning("RABBITMQ_URL").await;
}

#[cfg(feature = "sqs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_without_provisioning() {
    without_provisioning("SQS_URL").await;
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_without_provisioning() {
    without_provisioning("KAFKA_URL").await;
}
