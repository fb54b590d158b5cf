//! Behaviour specific to SQS/SNS, against the endpoint in `SQS_URL` (the
//! project's test command starts moto and sets it). Skipped when unset,
//! except under CI.

use std::time::Duration;

use backend_sqs::SqsTransport;
use futures::StreamExt;
use transport_core::{ErrorKind, Message, SubscribeOptions, Transport};

async fn server(extra: &str) -> Option<std::sync::Arc<dyn Transport>> {
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
    let Some(t) = server("&provision=false").await else {
        return;
    };
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

/// A raw SQS client for the endpoint in `SQS_URL`, to look behind the library.
async fn raw_sqs() -> aws_sdk_sqs::Client {
    let c = backend_sqs::SqsConfig::from_url(&std::env::var("SQS_URL").unwrap()).unwrap();
    aws_sdk_sqs::Client::new(&c.sdk_config().await.unwrap())
}

/// Visible plus in-flight messages of a queue.
async fn messages_in(sqs: &aws_sdk_sqs::Client, queue: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let url = sqs.get_queue_url().queue_name(queue).send().await.unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url.queue_url().unwrap())
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let a = attrs.attributes().unwrap();
    [A::ApproximateNumberOfMessages, A::ApproximateNumberOfMessagesNotVisible]
        .iter()
        .map(|k| a.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
        .sum()
}

#[tokio::test]
async fn point_to_point_publishes_straight_to_one_queue() {
    let Some(t) = server("&mode=queue").await else { return };
    assert!(t.capabilities().single_group);
    let sqs = raw_sqs().await;
    let topic = unique("p2p");
    let options = SubscribeOptions::new("workers").ack_timeout(Duration::from_secs(5));
    let mut first = t.subscribe(&topic, options.clone()).await.unwrap();
    let mut second = t.subscribe(&topic, options.clone()).await.unwrap();
    let sent: Vec<Message> = (0..15)
        .map(|i| Message::new(format!("q{i}")).with_header("n", i.to_string()))
        .collect();
    t.publish_batch(&topic, sent[..14].to_vec()).await.unwrap();
    t.publish(&topic, sent[14].clone()).await.unwrap();
    // The topic is a plain queue named after it: any SQS producer can feed it.
    assert!(sqs.get_queue_url().queue_name(&topic).send().await.is_ok());

    // Another group would split the messages: refused, and the queue keeps
    // its owner's settings.
    let e = t.subscribe(&topic, SubscribeOptions::new("audit")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");

    // The two consumers of the group compete; every message arrives once acked.
    let mut got = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got.len() < sent.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "received {} of {}",
            got.len(),
            sent.len()
        );
        let next = tokio::select! {
            d = first.next() => d,
            d = second.next() => d,
            _ = tokio::time::sleep(Duration::from_secs(2)) => None,
        };
        if let Some(d) = next {
            let d = d.unwrap();
            got.insert(d.id().to_owned(), d.message().clone());
            d.ack().await.unwrap();
        }
    }
    for m in &sent {
        assert_eq!(
            got.get(&m.id),
            Some(m),
            "message {} arrived changed or not at all",
            m.id
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while messages_in(&sqs, &topic).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "acked messages stayed in the queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Many acks at once go out as DeleteMessageBatch requests; each ack
/// returns only when its own message is deleted, and none comes back.
#[tokio::test]
async fn concurrent_acks_are_all_final() {
    let Some(t) = server("").await else { return };
    let sqs = raw_sqs().await;
    let topic = unique("acks");
    let options = SubscribeOptions::new("g")
        .max_in_flight(40)
        .ack_timeout(Duration::from_secs(2));
    let mut sub = t.subscribe(&topic, options).await.unwrap();
    let sent: Vec<Message> = (0..35).map(|i| Message::new(format!("a{i}"))).collect();
    t.publish_batch(&topic, sent.clone()).await.unwrap();
    let mut held = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while held.len() < sent.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "received {} of {}",
            held.len(),
            sent.len()
        );
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            held.push(d.unwrap());
        }
    }
    let results = futures::future::join_all(held.into_iter().map(|d| d.ack())).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    // The group's queue is `<topic>_s<group>` and empties at once.
    assert_eq!(messages_in(&sqs, &format!("{topic}_sg")).await, 0);
    // Past the visibility timeout nothing comes back.
    let again = tokio::time::timeout(Duration::from_secs(4), sub.next()).await;
    assert!(again.is_err(), "an acked message came back");
}

/// A TCP proxy in front of the endpoint that can cut every connection and
/// refuse new ones for a while: the network dropping, with the broker's
/// state intact (restarting moto would wipe it, unlike AWS).
struct Proxy {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, c) = (down.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, down, conns }
    }

    fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_connection_dropping() {
    let Ok(url) = std::env::var("SQS_URL") else {
        assert!(std::env::var("CI").is_err(), "SQS_URL is not set");
        return;
    };
    let c = backend_sqs::SqsConfig::from_url(&url).unwrap();
    let endpoint = c.endpoint.clone().expect("an endpoint (moto) in SQS_URL");
    let target = endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let proxy = Proxy::start(target).await;
    let proxied = url.replace(
        &format!("endpoint={endpoint}"),
        &format!("endpoint=http://127.0.0.1:{}", proxy.port),
    );
    assert!(
        proxied.contains(&proxy.port.to_string()),
        "could not point {url} at the proxy"
    );
    let t = SqsTransport::connect(&proxied).await.unwrap();
    let topic = unique("drop");
    let options = SubscribeOptions::new("g").ack_timeout(Duration::from_secs(2));
    let mut sub = t.subscribe(&topic, options).await.unwrap();
    t.publish(&topic, Message::new("before")).await.unwrap();
    let held = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    std::mem::forget(held); // never settled: it must come back

    proxy.cut();
    let e = t.publish(&topic, Message::new("lost?")).await.unwrap_err();
    assert!(e.is_retryable(), "a dropped connection is retryable: {e}");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    // The subscription reports the outage as a retryable error, then waits.
    match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
        Ok(Some(Err(e))) => assert!(e.is_retryable(), "{e}"),
        other => panic!(
            "expected a retryable receive error during the outage, got {:?}",
            other.map(|o| o.map(|r| r.map(|d| d.id().to_owned())))
        ),
    }
    proxy.restore();

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match t.publish(&topic, Message::new("after")).await {
            Ok(()) => break,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "publish never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let mut seen = Vec::new();
    while !(seen.contains(&"before".to_owned()) && seen.contains(&"after".to_owned())) {
        assert!(std::time::Instant::now() < deadline, "received only {seen:?}");
        match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            Ok(Some(Ok(d))) => {
                seen.push(String::from_utf8_lossy(d.payload()).into_owned());
                d.ack().await.unwrap();
            }
            Ok(Some(Err(e))) => assert!(e.is_retryable(), "{e}"),
            _ => {}
        }
    }
    assert!(
        !seen.contains(&"lost?".to_owned()),
        "a publish that failed was delivered"
    );
}
