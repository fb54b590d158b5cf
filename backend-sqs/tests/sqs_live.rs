//! Behaviour specific to SQS/SNS, against the endpoint in `SQS_URL` (the
//! project's test command starts moto and sets it). Skipped when unset,
//! except under CI.

use std::time::Duration;

use backend_sqs::SqsTransport;
use futures::StreamExt;
use transport_core::{ErrorKind, Message, Publisher, SubscribeOptions, Subscriber};

async fn server(extra: &str) -> Option<SqsTransport> {
    let url = match std::env::var("SQS_URL") {
        Ok(u) => u,
        Err(_) if std::env::var("CI").is_ok() => panic!("SQS_URL is not set"),
        Err(_) => {
            eprintln!("skipped: SQS_URL is not set");
            return None;
        }
    };
    Some(SqsTransport::connect(&format!("{url}{extra}")).await.unwrap())
}

fn unique(what: &str) -> String {
    format!(
        "it-{what}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn batches_over_ten_and_many_headers_arrive_whole() {
    let Some(t) = server("").await else { return };
    let topic = unique("batch");
    let mut sub = t.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..23 {
        let mut m = Message::new(format!("m{i}")).with_key(format!("k{i}"));
        for h in 0..25 {
            m.headers.insert(format!("h{h}"), format!("ü{h}"));
        }
        sent.push(m);
    }
    t.publish_batch(&topic, sent.clone()).await.unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(d.message().clone());
        d.ack().await.unwrap();
    }
    got.sort_by(|a, b| a.id.cmp(&b.id));
    sent.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, sent);
}

#[tokio::test]
async fn missing_resources_are_not_found_without_create() {
    let Some(t) = server("&create=false").await else { return };
    let err = t.publish(&unique("missing"), Message::new("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = t
        .subscribe(&unique("missing"), SubscribeOptions::new("g"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn fifo_mode_keeps_key_order_and_deduplicates() {
    let Some(t) = server("&fifo=true").await else { return };
    let topic = unique("fifo");
    let mut sub = t.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap();
    let first = Message::new("a:0").with_key("a");
    t.publish(&topic, first.clone()).await.unwrap();
    t.publish(&topic, first.clone()).await.unwrap(); // same id: stored once
    for i in 1..5 {
        t.publish(&topic, Message::new(format!("a:{i}")).with_key("a"))
            .await
            .unwrap();
    }
    let mut order = Vec::new();
    while order.len() < 5 {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        order.push(String::from_utf8_lossy(d.payload()).into_owned());
        d.ack().await.unwrap();
    }
    assert_eq!(order, ["a:0", "a:1", "a:2", "a:3", "a:4"]);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), sub.next()).await.is_err(),
        "duplicate delivered"
    );
}
