//! Behaviour specific to Kafka. Two kinds of broker:
//! - the shared one `scripts/brokers up kafka` starts (`KAFKA_URL`, default
//!   `kafka://127.0.0.1:9092?session_timeout_ms=6000&delete_records=false`);
//! - Tansu processes started here (with SASL, restarted mid-test), which
//!   need `tansu` on PATH (`scripts/brokers up kafka` installs it).
//!
//! Skipped with a message when neither is there, except under CI where a
//! missing broker fails the test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_kafka::{KafkaConfig, KafkaTransport};
use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use transport_core::{Delivery, ErrorKind, Message, StartFrom, SubscribeOptions, Subscription, Transport};

fn url() -> String {
    std::env::var("KAFKA_URL")
        .unwrap_or_else(|_| "kafka://127.0.0.1:9092?session_timeout_ms=6000&delete_records=false".into())
}

/// `url()` with more query options.
fn url_with(options: &str) -> String {
    format!("{}&{options}", url())
}

/// Raw rdkafka settings for the shared broker.
fn raw_config() -> ClientConfig {
    KafkaConfig::from_url(&url()).unwrap().client_config()
}

async fn shared(options: &str) -> Option<std::sync::Arc<dyn Transport>> {
    match KafkaTransport::connect(&url_with(options)).await {
        Ok(t) => Some(t),
        Err(e) if std::env::var("CI").is_ok() => panic!("no Kafka broker at {}: {e}", url()),
        Err(e) => {
            eprintln!("skipped: no Kafka broker at {}: {e}", url());
            None
        }
    }
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

async fn next(sub: &mut Subscription, within: Duration) -> Delivery {
    tokio::time::timeout(within, sub.next())
        .await
        .expect("no delivery in time")
        .expect("stream ended")
        .expect("delivery error")
}

/// The committed offset of `group_id` on partition 0 of `topic`, read with
/// the raw client.
fn committed(group_id: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = raw_config().set("group.id", group_id).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let offset = got.find_partition(topic, 0)?.offset();
    match offset {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

async fn wait_committed(group_id: &str, topic: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (g, t) = (group_id.to_owned(), topic.to_owned());
        let got = tokio::task::spawn_blocking(move || committed(&g, &t)).await.unwrap();
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed offset is {got:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn only_the_contiguous_acked_prefix_is_committed() {
    let Some(t) = shared("partitions=1").await else { return };
    let topic = unique("prefix");
    let options = SubscribeOptions::new("g").max_in_flight(10);
    let mut sub = t.subscribe(&topic, options).await.unwrap();
    let sent: Vec<Message> = (0..3).map(|i| Message::new(format!("m{i}"))).collect();
    t.publish_batch(&topic, sent.clone()).await.unwrap();
    let d0 = next(&mut sub, Duration::from_secs(30)).await;
    let d1 = next(&mut sub, Duration::from_secs(30)).await;
    let d2 = next(&mut sub, Duration::from_secs(30)).await;
    assert_eq!([d0.id(), d1.id(), d2.id()], [&sent[0].id, &sent[1].id, &sent[2].id]);
    let group_id = format!("{topic}.g");
    d2.ack().await.unwrap();
    d1.ack().await.unwrap();
    // Records 1 and 2 are acked, 0 is not: nothing past 0 may be committed.
    // (The start of a new group is pinned at 0 when it joins.)
    wait_committed(&group_id, &topic, 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = tokio::task::spawn_blocking({
        let (g, t) = (group_id.clone(), topic.clone());
        move || committed(&g, &t)
    })
    .await
    .unwrap();
    assert_eq!(still, Some(0), "an unacked record was committed");
    d0.ack().await.unwrap();
    wait_committed(&group_id, &topic, 3).await;
}

#[tokio::test]
async fn missing_topics_are_not_found_when_creating_is_off() {
    let Some(t) = shared("provision=false").await else {
        return;
    };
    let topic = unique("missing");
    let e = t.publish(&topic, Message::new("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = t.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[tokio::test]
async fn records_from_other_producers_are_delivered() {
    let Some(t) = shared("partitions=1").await else { return };
    let topic = unique("foreign");
    let mut sub = t
        .subscribe(&topic, SubscribeOptions::new("g").start(StartFrom::Earliest))
        .await
        .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = raw_config().create().unwrap();
    producer
        .send(BaseRecord::to(&topic).key("k1").payload("plain record"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let d = next(&mut sub, Duration::from_secs(30)).await;
    assert_eq!(d.payload().as_ref(), b"plain record");
    assert_eq!(d.key(), Some("k1"));
    assert_eq!(
        d.id(),
        format!("{topic}-0-0"),
        "an id made of topic, partition and offset"
    );
    d.ack().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_broker_is_connection_lost_quickly() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = Instant::now();
    let e = KafkaTransport::connect(&format!("kafka://127.0.0.1:{port}?request_timeout_ms=2000"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(e.is_retryable());
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}

/// A member that goes away without settling loses nothing: every record it
/// did not ack reaches the next member (the suite's
/// `crashed_consumer_loses_nothing`, which the project's test command skips
/// on Tansu because Tansu drops commit metadata; records acked out of order
/// may therefore come again here).
#[tokio::test]
async fn a_member_that_goes_away_loses_nothing() {
    let Some(t) = shared("").await else { return };
    if let Err(e) = conformance_tests::crash_recovery(t.as_ref(), true).await {
        panic!("{}", e.0);
    }
}

/// A Tansu process of this test's own (SQLite storage in a temp dir).
struct Tansu {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Tansu {
    fn installed() -> bool {
        let ok = Command::new("tansu").arg("--version").output().is_ok();
        if !ok {
            assert!(std::env::var("CI").is_err(), "tansu is not installed");
            eprintln!("skipped: tansu is not installed (scripts/brokers up kafka)");
        }
        ok
    }

    fn start() -> Option<Tansu> {
        if !Self::installed() {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(unique("tansu"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Self::spawn(&dir, port, false);
        let t = Tansu { child, port, dir };
        t.wait_ready();
        Some(t)
    }

    fn spawn(dir: &PathBuf, port: u16, authentication: bool) -> Child {
        let listener = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new("tansu");
        // Tansu reads the sqlite path relative to its working directory.
        cmd.current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if authentication {
            cmd.arg("--authentication");
        }
        cmd.spawn().expect("start tansu")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn restart(&mut self, authentication: bool) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.dir, self.port, authentication);
        self.wait_ready();
    }

    fn url(&self, auth: &str, options: &str) -> String {
        format!(
            "kafka://{auth}127.0.0.1:{}?session_timeout_ms=6000&delete_records=false{options}",
            self.port
        )
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_quickly() {
    let Some(mut broker) = Tansu::start() else { return };
    let created = Command::new("tansu")
        .args(["user", "create", "app", "right-password", "--broker"])
        .arg(format!("tcp://127.0.0.1:{}", broker.port))
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    broker.restart(true);

    // A user and password without `sasl=` mean SCRAM-SHA-512 (Tansu's).
    let start = Instant::now();
    let e = KafkaTransport::connect(&broker.url("app:wrong-password@", "&request_timeout_ms=5000"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
    assert!(!e.to_string().contains("wrong-password"), "{e}");

    let t = KafkaTransport::connect(&broker.url("app:right-password@", ""))
        .await
        .unwrap();
    assert!(!format!("{t:?}").contains("right-password"));
    let topic = unique("auth");
    let mut sub = t.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap();
    t.publish(&topic, Message::new("authenticated")).await.unwrap();
    next(&mut sub, Duration::from_secs(30)).await.ack().await.unwrap();
}

#[tokio::test]
async fn survives_a_broker_restart() {
    let Some(mut broker) = Tansu::start() else { return };
    let t = KafkaTransport::connect(&broker.url("", "&partitions=1")).await.unwrap();
    let topic = unique("restart");
    let options = SubscribeOptions::new("g").ack_timeout(Duration::from_secs(2));
    let mut sub = t.subscribe(&topic, options).await.unwrap();
    t.publish(&topic, Message::new("before")).await.unwrap();
    let held = next(&mut sub, Duration::from_secs(30)).await;
    std::mem::forget(held);

    broker.restart(false);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match t.publish(&topic, Message::new("after")).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "publish never recovered: {e}");
                assert!(e.is_retryable(), "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "received only {seen:?}");
        match tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            Ok(Some(Ok(d))) => {
                let body = String::from_utf8_lossy(d.payload()).into_owned();
                if !seen.contains(&body) {
                    seen.push(body);
                }
                d.ack().await.unwrap();
            }
            Ok(Some(Err(e))) => assert!(e.is_retryable(), "{e}"),
            _ => {}
        }
    }
    seen.sort();
    assert_eq!(seen, ["after", "before"]);
}
