//! Behaviour specific to RabbitMQ, against the node `scripts/brokers up
//! rabbitmq` starts (`RABBITMQ_URL`, default amqp://guest:guest@127.0.0.1:5672/%2f).
//! Skipped with a message when none answers, except under CI.

use std::process::Command;
use std::time::{Duration, Instant};

use backend_rabbitmq::{RabbitConfig, RabbitTransport};
use futures::StreamExt;
use transport_core::{ErrorKind, Message, SubscribeOptions, Transport};

fn url() -> String {
    std::env::var("RABBITMQ_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn server() -> Option<std::sync::Arc<dyn Transport>> {
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

/// Acks go out as `multiple` acks for the settled run at the front: one
/// delivery held unsettled and one requeued in between must not be covered
/// by them, and `close` must send what waits. After a restart exactly the
/// held delivery comes back.
#[tokio::test]
async fn batched_acks_cover_only_settled_deliveries() {
    let Some(t) = server().await else { return };
    let topic = unique("acks");
    let options = SubscribeOptions::new("g").max_in_flight(40);
    let mut sub = t.subscribe(&topic, options.clone()).await.unwrap();
    let messages: Vec<Message> = (0..40).map(|i| Message::new(format!("m{i}"))).collect();
    t.publish_batch(&topic, messages).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..40 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("40 deliveries within 10 s")
            .unwrap()
            .unwrap();
        got.push(d);
    }
    let held = got.remove(0);
    let requeued = got.remove(9);
    let requeued_id = requeued.id().to_owned();
    for d in got {
        d.ack().await.unwrap();
    }
    requeued.nack(None).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the nacked delivery comes back")
        .unwrap()
        .unwrap();
    assert_eq!(again.id(), requeued_id);
    again.ack().await.unwrap();
    let held_id = held.id().to_owned();
    // Closing with `held` unsettled: the broker requeues it; every ack
    // recorded so far must have been sent first.
    t.close().await.unwrap();
    drop((held, sub));

    let t = RabbitTransport::connect(&url()).await.unwrap();
    let mut sub = t.subscribe(&topic, options).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the held delivery was lost: a multiple ack covered it")
        .unwrap()
        .unwrap();
    assert_eq!(back.id(), held_id);
    back.ack().await.unwrap();
    let extra = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
    assert!(extra.is_err(), "an acked delivery came back: {extra:?}");
    t.close().await.unwrap();
}

/// A delivery held by a slow handler does not hold back the acks of the
/// ones after it (they are acked singly on the flush timer), so the
/// prefetch they occupied is freed and the rest keeps flowing.
#[tokio::test]
async fn a_held_delivery_does_not_stall_the_others() {
    let Some(t) = server().await else { return };
    let topic = unique("held");
    let mut sub = t
        .subscribe(&topic, SubscribeOptions::new("g").max_in_flight(8))
        .await
        .unwrap();
    let messages: Vec<Message> = (0..32).map(|i| Message::new(format!("m{i}"))).collect();
    t.publish_batch(&topic, messages).await.unwrap();
    let first = sub.next().await.unwrap().unwrap();
    let start = Instant::now();
    for i in 1..32 {
        let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("stalled after {i} deliveries behind a held one"))
            .unwrap()
            .unwrap();
        d.ack().await.unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    first.ack().await.unwrap();
    t.close().await.unwrap();
}

/// A node list whose first node is down: the connection goes to the next
/// one, quickly; with every node down the connect fails, retryably, within
/// the connect timeout per node.
#[tokio::test]
async fn a_dead_node_in_the_list_is_skipped() {
    let Some(_t) = server().await else { return };
    let live = url();
    let rest = live.strip_prefix("amqp://guest:guest@").expect("a guest URL");
    // Port 1 on loopback refuses at once.
    let listed = format!("amqp://guest:guest@127.0.0.1:1,{rest}");
    let start = Instant::now();
    let t = RabbitTransport::connect(&listed)
        .await
        .expect("connect past the dead node");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let topic = unique("nodes");
    let mut sub = t.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap();
    t.publish(&topic, Message::new("via the second node")).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery")
        .unwrap()
        .unwrap();
    assert_eq!(d.message().payload.as_ref(), b"via the second node");
    d.ack().await.unwrap();

    let start = Instant::now();
    let err = RabbitTransport::connect("amqp://guest:guest@127.0.0.1:1,127.0.0.1:2/%2f?connect_timeout_ms=1000")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    // A wrong password is final at the first node that answers.
    let err = RabbitTransport::connect(&format!("amqp://guest:wrong@127.0.0.1:1,{}", rest))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
}

/// The work queue is declared with the broker's delivery limit lifted
/// (RabbitMQ 4.0 would otherwise delete a message after 20 deliveries);
/// the broker's own listing shows the argument.
#[tokio::test]
async fn work_queues_lift_the_broker_delivery_limit() {
    let Some(t) = server().await else { return };
    let topic = unique("limit");
    drop(t.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/brokers");
    let listed = Command::new(script)
        .args([
            "ctl",
            "rabbitmq",
            "list_queues",
            "name",
            "arguments",
            "--no-table-headers",
        ])
        .output();
    let Ok(listed) = listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()) else {
        assert!(std::env::var("CI").is_err(), "rabbitmqctl list_queues failed");
        eprintln!("skipped: cannot run rabbitmqctl");
        return;
    };
    let line = listed
        .lines()
        .find(|l| l.starts_with(&format!("{topic}/g")))
        .unwrap_or_else(|| panic!("queue {topic}/g not listed:\n{listed}"));
    assert!(
        line.contains("x-delivery-limit") && line.contains("2147483647"),
        "the work queue lacks the lifted delivery limit: {line}"
    );
}

/// A work queue an earlier version declared without the delivery limit is
/// used as it is (a declaration with other arguments would be refused), with
/// a warning naming the policy that lifts the limit.
#[tokio::test]
async fn a_work_queue_declared_without_the_limit_is_still_used() {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{Connection, ConnectionProperties, ExchangeKind};
    let Some(t) = server().await else { return };
    let topic = unique("legacy");
    let queue = format!("{topic}/g");
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        topic.as_str().into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let queue_options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), queue_options, args)
        .await
        .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        topic.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut sub = tokio::time::timeout(Duration::from_secs(10), t.subscribe(&topic, SubscribeOptions::new("g")))
        .await
        .expect("subscribe within 10 s")
        .expect("a queue from an earlier version is used");
    let m = Message::new("through the old queue");
    t.publish(&topic, m.clone()).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery")
        .unwrap()
        .unwrap();
    assert_eq!(d.id(), m.id);
    d.ack().await.unwrap();
    // Publishing still works after the refused declaration (its channel
    // was not the publishing one).
    t.publish(&topic, Message::new("after")).await.unwrap();
}

/// A foreign message without `message_id` has an id unique to its delivery
/// (marked not stable), so an idempotency layer keyed by id refuses it with
/// a reason naming `message_id` instead of processing each redelivery as a
/// new message; keyed by a business header, the same layer handles it.
#[tokio::test]
async fn idempotency_refuses_ids_that_do_not_survive_a_redelivery() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    use transport_core::runtime::{handler_fn, Consumer, Context, IdempotencyLayer, MemoryIdempotencyStore};

    let Some(t) = server().await else { return };
    let t: Arc<dyn Transport> = t;
    let topic = unique("noid");
    let options = SubscribeOptions::new("g");
    drop(t.subscribe(&topic, options.clone()).await.unwrap());
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("order".into(), AMQPValue::LongString("o-1".into()));
    ch.basic_publish(
        topic.as_str().into(),
        topic.as_str().into(),
        BasicPublishOptions::default(),
        b"no id",
        BasicProperties::default().with_headers(headers),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let calls = Arc::new(AtomicU32::new(0));
    let handler = {
        let calls = calls.clone();
        handler_fn(move |_ctx: Context| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<(), transport_core::runtime::HandlerError>(())
            }
        })
    };
    let by_id = tower::ServiceBuilder::new()
        .layer(IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new())))
        .service(handler.clone());
    let consumer = Consumer::new(t.clone(), &topic, options.clone());
    let stats = consumer.stats_handle();
    let running = tokio::spawn(consumer.run(by_id, async {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }));
    let dlq = t.dead_letters(&topic, &options).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dlq.depth().await.unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "not dead-lettered within 20 s: {:?}",
            stats.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.abort();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler ran for an id that cannot deduplicate"
    );
    let dead = dlq.peek(1).await.unwrap().pop().unwrap();
    let reason = dead.reason.unwrap_or_default();
    assert!(reason.contains("message_id"), "reason: {reason}");
    assert!(dead.message.id.starts_with("amqp-unidentified-"), "{}", dead.message.id);
}
