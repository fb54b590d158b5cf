//! Interop with producers and consumers that are not this library, against
//! the broker `TRANSPORT_URL` names: `interop/peer.py` talks to it with the
//! broker's usual Python client (redis-py, nats-py, pika, boto3,
//! confluent-kafka) and the official CloudEvents SDK, in both directions:
//!
//! - plain messages: payload bytes (binary, text, empty; a Kafka tombstone),
//!   key, headers (non-ASCII, quotes, `%`) and id;
//! - CloudEvents: every attribute (required, optional, extensions, a time
//!   with a UTC offset) through each broker's protocol binding.
//!
//! Writes `target/conformance/interop-<backend>.json` in the suite's report
//! format. Without the Python clients (`scripts/test` installs them) the
//! trials are reported as ignored, and fail under `CI=true`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use conformance_tests::{async_case, run_trials, unique, CheckFailure};
use libtest_mimic::Arguments;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use transport_core::{parse_time, Event, Message, StartFrom, SubscribeOptions, Subscription, Transport};

type CheckResult = Result<(), CheckFailure>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(CheckFailure(format!($($msg)+)));
        }
    };
}

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/peer.py");
const RECEIVE: Duration = Duration::from_secs(30);

/// The broker under test, as the peer names it.
#[derive(Clone)]
struct Peer {
    broker: String,
    url: String,
}

impl Peer {
    /// Run `peer.py <command>` with `spec` (plus broker and URL) on stdin;
    /// its JSON answer.
    async fn run(&self, command: &str, spec: Value) -> Result<Value, CheckFailure> {
        let child = self.start(command, spec, Stdio::piped()).await?;
        let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
            .await
            .map_err(|_| CheckFailure(format!("peer {command} did not finish within 90 s")))?
            .map_err(|e| CheckFailure(format!("peer {command}: {e}")))?;
        ensure!(
            out.status.success(),
            "peer {command} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).map_err(|e| {
            CheckFailure(format!(
                "peer {command} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            ))
        })
    }
}

impl Peer {
    /// Start `peer.py <command>` with `spec` (plus broker and URL) written
    /// to its stdin, its stdout piped; killed when dropped.
    async fn start(
        &self,
        command: &str,
        mut spec: Value,
        stderr: Stdio,
    ) -> Result<tokio::process::Child, CheckFailure> {
        spec["broker"] = json!(self.broker);
        spec["url"] = json!(self.url);
        let mut child = tokio::process::Command::new("python3")
            .arg(PEER)
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CheckFailure(format!("cannot start python3: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(spec.to_string().as_bytes())
            .await
            .map_err(|e| CheckFailure(format!("peer stdin: {e}")))?;
        drop(stdin);
        Ok(child)
    }

    /// Start `peer.py hold_group`: a foreign member of `group` on `topic`
    /// offering `strategy`, in the group for `hold` once it reports its
    /// assignment (returned with the running process, killed on drop).
    async fn hold_group(
        &self,
        topic: &str,
        group: &str,
        strategy: &str,
        hold: Duration,
    ) -> Result<(tokio::process::Child, Value), CheckFailure> {
        use tokio::io::AsyncBufReadExt;
        let spec = json!({"topic": topic, "group": group, "strategy": strategy, "hold_s": hold.as_secs()});
        let mut child = self.start("hold_group", spec, Stdio::inherit()).await?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
            .await
            .map_err(|_| CheckFailure("the foreign member did not report within 90 s".into()))?
            .map_err(|e| CheckFailure(format!("peer stdout: {e}")))?
            .ok_or_else(|| CheckFailure("the foreign member exited without reporting".into()))?;
        let joined: Value =
            serde_json::from_str(&line).map_err(|e| CheckFailure(format!("peer said {line:?}: {e}")))?;
        Ok((child, joined))
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .unwrap_or_default()
}

/// Header values that every binding must carry unchanged.
const AWKWARD: &str = "ünï € \"quoted\" 100% a+b";

/// One plain message of the exchange, by case name.
struct Plain {
    case: &'static str,
    id: Option<String>,
    key: Option<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
    payload: Vec<u8>,
    tombstone: bool,
}

impl Plain {
    fn all(broker: &str) -> Vec<Plain> {
        let binary: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
        let mut cases = vec![
            Plain {
                case: "binary",
                id: Some(unique("id")),
                key: Some("k-1"),
                headers: vec![("x-unicode", AWKWARD), ("x-trace", "00-4bf92f35-01")],
                payload: binary,
                tombstone: false,
            },
            Plain {
                case: "text",
                id: Some(unique("id")),
                key: None,
                headers: vec![],
                payload: "plain text, ünï €".as_bytes().to_vec(),
                tombstone: false,
            },
        ];
        // SNS refuses an empty message body, so a foreign SQS producer cannot
        // send one (the library marks its own as `transport-encoding=empty`).
        if broker != "sqs" {
            cases.push(Plain {
                case: "empty",
                id: Some(unique("id")),
                key: Some("k-1"),
                headers: vec![],
                payload: vec![],
                tombstone: false,
            });
        }
        if broker == "kafka" {
            cases.push(Plain {
                case: "tombstone",
                id: Some(unique("id")),
                key: Some("k-t"),
                headers: vec![],
                payload: vec![],
                tombstone: true,
            });
        }
        cases
    }

    fn headers(&self) -> BTreeMap<String, String> {
        let mut h: BTreeMap<String, String> = self
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        h.insert("x-case".into(), self.case.into());
        h
    }

    fn spec(&self) -> Value {
        json!({
            "case": self.case,
            "id": self.id,
            "key": self.key,
            "headers": self.headers(),
            "payload": b64(&self.payload),
            "tombstone": self.tombstone,
        })
    }

    fn message(&self) -> Message {
        let mut m = Message::new(self.payload.clone());
        if let Some(id) = &self.id {
            m = m.with_id(id.clone());
        }
        m.key = self.key.map(str::to_owned);
        for (k, v) in self.headers() {
            m.headers.insert(k, v);
        }
        if self.tombstone {
            m.headers.insert("transport-tombstone", "true");
        }
        m
    }

    /// `got` (payload, key, headers, id) is what was sent; headers added on
    /// the way (such as a broker's own) are allowed.
    fn compare(
        &self,
        payload: &[u8],
        key: Option<&str>,
        headers: &BTreeMap<String, String>,
        id: Option<&str>,
    ) -> CheckResult {
        let case = self.case;
        ensure!(
            payload == self.payload.as_slice(),
            "{case}: payload changed: {} bytes instead of {}",
            payload.len(),
            self.payload.len()
        );
        ensure!(key == self.key, "{case}: key {key:?} instead of {:?}", self.key);
        for (k, v) in self.headers() {
            ensure!(
                headers.get(&k) == Some(&v),
                "{case}: header {k} is {:?}, sent {v:?} (all: {headers:?})",
                headers.get(&k)
            );
        }
        if let Some(want) = &self.id {
            ensure!(id == Some(want.as_str()), "{case}: id {id:?} instead of {want}");
        }
        Ok(())
    }
}

/// Subscribe `group`, from the earliest message where the backend can (a
/// foreign producer may publish before the subscription is in place).
async fn subscribe(t: &dyn Transport, topic: &str, group: &str) -> Result<Subscription, CheckFailure> {
    let mut options = SubscribeOptions::new(group).ack_timeout(Duration::from_secs(30));
    if t.capabilities().replay {
        options = options.start(StartFrom::Earliest);
    }
    Ok(t.subscribe(topic, options).await?)
}

/// Receive `n` messages (acked), keyed by their `x-case` header or `ce-id`.
async fn receive(sub: &mut Subscription, n: usize, by: &str) -> Result<BTreeMap<String, Message>, CheckFailure> {
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + RECEIVE;
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = match tokio::time::timeout(left, futures::StreamExt::next(sub)).await {
            Ok(Some(d)) => d?,
            Ok(None) => return Err(CheckFailure("subscription ended".into())),
            Err(_) => {
                return Err(CheckFailure(format!(
                    "{} of {n} messages within {RECEIVE:?}: {:?}",
                    got.len(),
                    got.keys()
                )))
            }
        };
        let message = d.message().clone();
        d.ack().await?;
        let name = message.headers.get(by).unwrap_or("?").to_owned();
        got.insert(name, message);
    }
    Ok(got)
}

async fn plain_from_foreign(t: &dyn Transport, peer: &Peer) -> CheckResult {
    let topic = unique("interop");
    let mut sub = subscribe(t, &topic, "g").await?;
    let cases = Plain::all(&peer.broker);
    let items: Vec<Value> = cases.iter().map(Plain::spec).collect();
    peer.run("produce", json!({"topic": topic, "group": "g", "items": items}))
        .await?;
    let got = receive(&mut sub, cases.len(), "x-case").await?;
    for case in &cases {
        let m = got
            .get(case.case)
            .ok_or_else(|| CheckFailure(format!("{} not received", case.case)))?;
        let headers: BTreeMap<String, String> = m.headers.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        if case.tombstone {
            ensure!(
                m.headers.get("transport-tombstone") == Some("true"),
                "a tombstone arrived unmarked: {m:?}"
            );
        } else {
            ensure!(
                m.headers.get("transport-tombstone").is_none(),
                "{} arrived marked as a tombstone",
                case.case
            );
        }
        case.compare(&m.payload, m.key.as_deref(), &headers, Some(&m.id))?;
    }
    Ok(())
}

/// Subscribe once so that the group's queue exists (RabbitMQ, SQS keep no
/// message without one), then leave it to the peer.
async fn provision(t: &dyn Transport, topic: &str) -> CheckResult {
    let sub = t.subscribe(topic, SubscribeOptions::new("g")).await?;
    drop(sub);
    Ok(())
}

async fn plain_to_foreign(t: &dyn Transport, peer: &Peer) -> CheckResult {
    let topic = unique("interop");
    provision(t, &topic).await?;
    let mut cases = Plain::all(&peer.broker);
    if peer.broker == "sqs" {
        // The library sends an empty payload over SQS; foreign consumers see
        // `transport-encoding=empty`.
        cases.push(Plain {
            case: "empty",
            id: Some(unique("id")),
            key: Some("k-1"),
            headers: vec![],
            payload: vec![],
            tombstone: false,
        });
    }
    for case in &cases {
        t.publish(&topic, case.message()).await?;
    }
    let got = peer
        .run(
            "consume",
            json!({"topic": topic, "group": "g", "count": cases.len(), "timeout_s": RECEIVE.as_secs()}),
        )
        .await?;
    let got = got.as_array().cloned().unwrap_or_default();
    ensure!(
        got.len() == cases.len(),
        "the peer received {} of {}: {got:?}",
        got.len(),
        cases.len()
    );
    for case in &cases {
        let item = got
            .iter()
            .find(|i| i["headers"]["x-case"] == case.case)
            .ok_or_else(|| CheckFailure(format!("{} not received by the peer: {got:?}", case.case)))?;
        let headers: BTreeMap<String, String> = serde_json::from_value(item["headers"].clone()).unwrap_or_default();
        ensure!(
            item["tombstone"].as_bool().unwrap_or(false) == case.tombstone,
            "{}: the peer saw tombstone={} (a tombstone has a null value, an empty payload does not)",
            case.case,
            item["tombstone"]
        );
        case.compare(
            &unb64(&item["payload"]),
            item["key"].as_str(),
            &headers,
            item["id"].as_str(),
        )?;
    }
    Ok(())
}

/// The CloudEvents attributes of the exchanged event: every kind there is.
fn event_attributes(broker: &str, id: &str) -> Value {
    let mut a = json!({
        "specversion": "1.0",
        "id": id,
        "source": "/peer/ünï €1 \"x\" 100%",
        "type": "com.example.order.placed",
        "subject": "orders/42 ü",
        "time": "2026-11-24T22:00:00.250+02:00",
        "dataschema": "https://example.com/schemas/placed.json",
        "datacontenttype": "application/json",
        "dataversion": "1.2",
        "partitionkey": "k-9",
    });
    // SNS carries at most 10 message attributes, the ten above.
    if broker != "sqs" {
        a["correlationid"] = json!("corr-1");
        a["tenantid"] = json!("acme");
        a["region"] = json!("eu west %41");
    }
    a
}

fn event_data() -> Value {
    json!({"order": 42, "note": "ünï"})
}

async fn events_from_sdk(t: &dyn Transport, peer: &Peer) -> CheckResult {
    let topic = unique("interop");
    let mut sub = subscribe(t, &topic, "g").await?;
    let id = unique("ce");
    let attributes = event_attributes(&peer.broker, &id);
    let item = json!({"case": "event", "event": {"attributes": attributes, "data": event_data()}});
    peer.run("produce", json!({"topic": topic, "group": "g", "items": [item]}))
        .await?;
    let got = receive(&mut sub, 1, "ce-id").await?;
    let m = got
        .get(&id)
        .ok_or_else(|| CheckFailure(format!("the event arrived without its ce-id: {got:?}")))?;
    let e: Event<Value> = Event::decode(m).map_err(|e| CheckFailure(format!("decode: {e} ({m:?})")))?;
    let text = |name: &str| attributes[name].as_str().map(str::to_owned);
    ensure!(e.data == event_data(), "data {:?}", e.data);
    ensure!(
        e.source == attributes["source"] && e.event_type == attributes["type"],
        "{e:?}"
    );
    ensure!(
        e.subject == text("subject") && e.data_schema == text("dataschema"),
        "{e:?}"
    );
    ensure!(
        e.data_content_type == text("datacontenttype"),
        "content type {:?}",
        e.data_content_type
    );
    ensure!(
        e.version == text("dataversion") && e.key == text("partitionkey"),
        "{e:?}"
    );
    ensure!(
        e.time == parse_time("2026-11-24T20:00:00.250Z"),
        "time {:?}: the +02:00 offset was not applied",
        e.time
    );
    ensure!(
        e.correlation_id == text("correlationid") && e.tenant == text("tenantid"),
        "{e:?}"
    );
    let want_extensions: BTreeMap<String, String> =
        text("region").map(|r| ("region".to_owned(), r)).into_iter().collect();
    ensure!(e.extensions == want_extensions, "extensions {:?}", e.extensions);
    Ok(())
}

async fn events_to_sdk(t: &dyn Transport, peer: &Peer) -> CheckResult {
    let topic = unique("interop");
    provision(t, &topic).await?;
    let mut event = Event::new("com.example.order.placed", "/lib/ünï €1 \"x\" 100%", event_data())
        .with_version("1.2")
        .with_key("k-9")
        .with_subject("orders/42 ü")
        .with_tenant("acme")
        .with_extension("region", "eu west %41");
    event.data_schema = Some("https://example.com/schemas/placed.json".into());
    t.publish(&topic, event.to_message()?).await?;
    let got = peer
        .run(
            "consume",
            json!({"topic": topic, "group": "g", "count": 1, "timeout_s": RECEIVE.as_secs()}),
        )
        .await?;
    let item = &got[0];
    let a = &item["event"]["attributes"];
    ensure!(a.is_object(), "the SDK did not read an event: {item}");
    let want = json!({
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.event_type,
        "subject": event.subject,
        "dataschema": event.data_schema,
        "datacontenttype": "application/json",
        "dataversion": "1.2",
        "partitionkey": "k-9",
        "correlationid": event.id,
        "tenantid": "acme",
        "region": "eu west %41",
    });
    for (name, value) in want.as_object().unwrap() {
        ensure!(
            &a[name] == value,
            "attribute {name} is {} on the other side, sent {value}",
            a[name]
        );
    }
    let time = a["time"].as_str().and_then(parse_time);
    let skew = time
        .zip(event.time)
        .map(|(a, b)| a.duration_since(b).unwrap_or_else(|e| e.duration()));
    ensure!(
        skew.is_some_and(|s| s < Duration::from_millis(2)),
        "time {} for {:?}",
        a["time"],
        event.time
    );
    ensure!(item["event"]["data"] == event_data(), "data {}", item["event"]["data"]);
    Ok(())
}

/// What each broker's foreign clients send that this library never writes
/// (`peer.py produce_awkward`): typed AMQP header values and no
/// `message_id`, header bytes that are not UTF-8, a Kafka header repeated,
/// SQS Binary and Number attributes. Each arrives in the one text form the
/// backend's docs.md states, nothing replaced or dropped.
async fn awkward_from_foreign(t: &dyn Transport, peer: &Peer) -> CheckResult {
    let expected: Vec<(&str, Vec<(&str, &str)>)> = match peer.broker.as_str() {
        "rabbitmq" => ["typed-1", "typed-2"]
            .into_iter()
            .map(|case| {
                (
                    case,
                    vec![
                        ("x-float", "1.5"),
                        ("x-int", "7"),
                        ("x-bool", "true"),
                        ("x-bytes", "base64:/wA="),
                        ("x-decimal", "123.45"),
                        ("x-array", r#"[1,"a"]"#),
                        ("x-table", r#"{"n":2}"#),
                    ],
                )
            })
            .collect(),
        "redis" => vec![("binary", vec![("x-bin", "base64:/wA=")])],
        "kafka" => vec![("binary", vec![("x-bin", "base64:/wA="), ("x-rep", r#"["a","b,c"]"#)])],
        "sqs" => vec![("binary", vec![("x-bin", "base64:/wA="), ("x-num", "12.5")])],
        other => return Err(CheckFailure(format!("no awkward case for {other}"))),
    };
    let topic = unique("interop");
    let mut sub = subscribe(t, &topic, "g").await?;
    peer.run("produce_awkward", json!({"topic": topic, "group": "g"}))
        .await?;
    let got = receive(&mut sub, expected.len(), "x-case").await?;
    for (case, headers) in &expected {
        let m = got
            .get(*case)
            .ok_or_else(|| CheckFailure(format!("{case} not received: {got:?}")))?;
        for (name, want) in headers {
            ensure!(
                m.headers.get(name) == Some(*want),
                "{case}: header {name} arrived as {:?}, the documented form is {want:?}",
                m.headers.get(name)
            );
        }
        if matches!(peer.broker.as_str(), "redis" | "kafka") {
            ensure!(
                m.key.as_deref() == Some("base64:/g=="),
                "{case}: a key that is not UTF-8 arrived as {:?}",
                m.key
            );
        }
    }
    if peer.broker == "rabbitmq" {
        // Without message_id: ids unique to the delivery, never the
        // channel's delivery tag (1, 2, ... again on every channel).
        let ids: Vec<&str> = got.values().map(|m| m.id.as_str()).collect();
        ensure!(
            ids.iter().all(|id| id.starts_with("amqp-unidentified-")) && ids[0] != ids[1],
            "messages without message_id got the ids {ids:?}"
        );
    }
    Ok(())
}

/// A consumer group shared with a member that is not this library: one
/// offering an assignment strategy the library does not (kafkajs's default
/// is such a member) makes subscribe fail quickly with a final
/// `InvalidArgument` that says what to set, never a wait for an assignment
/// that cannot come; one offering `roundrobin` shares the group, and the
/// library receives what is published to the partitions it was given.
async fn foreign_group_member(t: &dyn Transport, peer: &Peer) -> CheckResult {
    let topic = unique("interop");
    provision(t, &topic).await?;
    let group = "shared";
    // Cooperative rebalancing has another protocol name than the eager
    // strategies the library offers: the broker cannot pick one for both.
    let (foreign, joined) = peer
        .hold_group(&topic, group, "cooperative-sticky", Duration::from_secs(60))
        .await?;
    ensure!(
        joined["joined"].as_array().is_some_and(|p| !p.is_empty()),
        "the foreign member got no partitions: {joined}"
    );
    let start = Instant::now();
    let refused = t.subscribe(&topic, SubscribeOptions::new(group)).await;
    let took = start.elapsed();
    match refused {
        Err(e) => {
            ensure!(
                e.kind() == transport_core::ErrorKind::InvalidArgument && !e.is_retryable(),
                "a member with no strategy in common failed with {:?}: {e}",
                e.kind()
            );
            ensure!(
                e.to_string().contains("assignment"),
                "the error does not say what to set: {e}"
            );
            ensure!(took < Duration::from_secs(30), "refused only after {took:?}");
        }
        Ok(_) => {
            return Err(CheckFailure(
                "the library joined a group whose member offers no strategy in common".into(),
            ))
        }
    }
    drop(foreign);

    // A member offering roundrobin shares the group with the library.
    let topic = unique("interop");
    provision(t, &topic).await?;
    let (foreign, joined) = peer
        .hold_group(&topic, group, "roundrobin", Duration::from_secs(60))
        .await?;
    ensure!(
        joined["joined"].as_array().is_some_and(|p| !p.is_empty()),
        "the foreign member got no partitions: {joined}"
    );
    let mut sub = t.subscribe(&topic, SubscribeOptions::new(group)).await?;
    // Keyed messages spread over every partition: those the rebalance gave
    // the library arrive (the foreign member only polls, it handles none).
    for i in 0..32 {
        t.publish(&topic, Message::new(format!("m{i}")).with_key(format!("k{i}")))
            .await?;
    }
    let d = tokio::time::timeout(RECEIVE, futures::StreamExt::next(&mut sub))
        .await
        .map_err(|_| CheckFailure("the library, sharing the group, received nothing".into()))?
        .ok_or_else(|| CheckFailure("subscription ended".into()))??;
    d.ack().await?;
    drop(foreign);
    Ok(())
}

type Case = for<'a> fn(&'a dyn Transport, &'a Peer) -> futures::future::BoxFuture<'a, CheckResult>;

fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("plain_from_foreign_producer", |t, p| Box::pin(plain_from_foreign(t, p))),
        ("plain_to_foreign_consumer", |t, p| Box::pin(plain_to_foreign(t, p))),
        ("cloudevents_from_sdk", |t, p| Box::pin(events_from_sdk(t, p))),
        ("cloudevents_to_sdk", |t, p| Box::pin(events_to_sdk(t, p))),
        ("awkward_from_foreign_producer", |t, p| {
            Box::pin(awkward_from_foreign(t, p))
        }),
        ("foreign_group_member", |t, p| Box::pin(foreign_group_member(t, p))),
    ]
}

/// Why the peer cannot run here, if it cannot.
fn peer_missing() -> Option<String> {
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "import redis, nats, pika, boto3, confluent_kafka, cloudevents.core.bindings",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "the Python clients are not installed (scripts/test installs them): {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or_default()
        )),
        Err(e) => Some(format!("python3 is not available: {e}")),
    }
}

fn main() {
    let args = Arguments::from_args();
    // Interop is between a broker's foreign clients and this library: with
    // no broker named (or the in-process one) there is nothing to exchange.
    // scripts/test runs this once per broker with TRANSPORT_URL set.
    let url = match std::env::var("TRANSPORT_URL") {
        Ok(url) if !url.starts_with("memory:") => url,
        _ => {
            eprintln!("interop: TRANSPORT_URL names no broker, so no trials (scripts/test runs one per broker)");
            libtest_mimic::run(&args, vec![]).exit();
        }
    };
    let runtime = conformance_tests::test_runtime();
    let transport = match runtime.block_on(transport::connect(&url)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot connect the transport under test: {e}");
            std::process::exit(2);
        }
    };
    let backend = transport.backend().to_owned();
    let peer = Peer {
        broker: backend.clone(),
        url: url.clone(),
    };
    let missing = peer_missing();
    if let Some(why) = &missing {
        eprintln!("interop: {why}");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("CI=true: a test that cannot run fails");
            std::process::exit(2);
        }
    }
    let trials: Vec<conformance_tests::Case> = cases()
        .into_iter()
        .map(|(name, case)| {
            let (transport, peer) = (transport.clone(), peer.clone());
            // NATS headers are text on the wire: nothing awkward to send.
            let skip = match (name, backend.as_str()) {
                ("awkward_from_foreign_producer", "nats") => Some(
                    "NATS headers are text on the wire, so foreign clients cannot send typed or binary values"
                        .to_owned(),
                ),
                ("foreign_group_member", b) if b != "kafka" => {
                    Some("only Kafka consumer groups are joined by the members themselves".to_owned())
                }
                _ => missing.clone(),
            };
            async_case(name, runtime.clone(), Duration::from_secs(180), skip, move || {
                Box::pin(async move { case(transport.as_ref(), &peer).await })
            })
        })
        .collect();
    let conclusion = run_trials(&args, &backend, &format!("interop-{backend}"), trials);
    let _ = runtime.block_on(transport.close());
    conclusion.exit();
}
