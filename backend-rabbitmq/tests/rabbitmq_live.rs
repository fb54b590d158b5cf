//! Behaviour specific to RabbitMQ, against the node `scripts/brokers up
//! rabbitmq` starts (`RABBITMQ_URL`, default amqp://guest:guest@127.0.0.1:5672/%2f).
//! Skipped with a message when none answers, except under CI.

use std::process::Command;
use std::time::{Duration, Instant};

use backend_rabbitmq::{RabbitConfig, RabbitTransport};
use futures::StreamExt;
use transport_core::{ErrorKind, Message, Publisher, SubscribeOptions, Subscriber};

fn url() -> String {
    std::env::var("RABBITMQ_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn server() -> Option<RabbitTransport> {
    match RabbitTransport::connect(&url()).await {
        Ok(t) => Some(t),
        Err(e) if std::env::var("CI").is_ok() => panic!("no RabbitMQ at 127.0.0.1:5672: {e}"),
        Err(e) => {
            eprintln!("skipped: no RabbitMQ: {e}");
            None
        }
    }
}

fn unique(what: &str) -> String {
    format!("it-{what}-{}", uuid::Uuid::now_v7().simple())
}

fn ctl(args: &[&str]) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/brokers");
    Command::new(script)
        .args(["ctl", "rabbitmq"])
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_quickly() {
    let Some(_t) = server().await else { return };
    let start = Instant::now();
    let err = RabbitTransport::connect("amqp://guest:not-the-password@127.0.0.1:5672/%2f")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    let c = RabbitConfig::from_url("amqp://guest:not-the-password@127.0.0.1:5672/%2f").unwrap();
    assert!(!format!("{c:?}").contains("not-the-password"));
}

#[tokio::test]
async fn an_unknown_vhost_is_a_final_configuration_error() {
    let Some(_t) = server().await else { return };
    let start = Instant::now();
    let base = url();
    let (root, _) = base.rsplit_once('/').expect("the URL has a vhost path");
    let err = RabbitTransport::connect(&format!("{root}/no-such-vhost"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("vhost"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[tokio::test]
async fn publishing_without_any_group_is_not_found_not_lost() {
    let Some(t) = server().await else { return };
    let err = t.publish(&unique("nogroup"), Message::new("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn survives_closed_connections() {
    let Some(t) = server().await else { return };
    let topic = unique("drop");
    let mut sub = t
        .subscribe(&topic, SubscribeOptions::new("g").ack_timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    t.publish(&topic, Message::new("before")).await.unwrap();
    let held = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    std::mem::forget(held);
    if !ctl(&["close_all_connections", "test"]) {
        assert!(std::env::var("CI").is_err(), "rabbitmqctl close_all_connections failed");
        eprintln!("skipped: cannot run rabbitmqctl");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match t.publish(&topic, Message::new("after")).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "publish never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // The unacked delivery came back when its channel closed (well before the
    // 30 s ack timeout), and the subscription consumes again.
    let mut seen = Vec::new();
    while seen.len() < 2 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            Ok(Some(Ok(d))) => {
                seen.push(String::from_utf8_lossy(d.payload()).into_owned());
                d.ack().await.unwrap();
            }
            Ok(Some(Err(e))) => assert!(e.is_retryable(), "{e}"),
            _ => {}
        }
    }
    seen.sort();
    assert_eq!(seen, ["after", "before"]);
}

/// A producer that is not this library (no `transport-key` header) keys by
/// routing key: the delivery's key is that routing key, and a message
/// routed by the topic's own name has no key.
#[tokio::test]
async fn a_foreign_routing_key_is_the_key() {
    use lapin::options::BasicPublishOptions;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let Some(t) = server().await else { return };
    let topic = unique("foreign");
    let mut sub = t.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap();
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for (routing_key, body) in [("customer-7", "keyed"), (topic.as_str(), "unkeyed")] {
        ch.basic_publish(
            topic.as_str().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a delivery")
            .unwrap()
            .unwrap();
        got.push((
            String::from_utf8_lossy(d.payload()).into_owned(),
            d.key().map(str::to_owned),
        ));
        d.ack().await.unwrap();
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("keyed".to_owned(), Some("customer-7".to_owned())),
            ("unkeyed".to_owned(), None)
        ]
    );
}
