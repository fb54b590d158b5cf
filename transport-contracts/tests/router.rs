//! The router and contracts on memory://, through the consumer runtime:
//! declarations that contradict each other are refused, the unroutable
//! policies do what they say, the failure counter counts by type and
//! failure, and what a contract writes it reads back.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_memory::MemoryTransport;
use metrics_exporter_prometheus::PrometheusBuilder;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use transport_contracts::{
    Contract, ContractError, EventType, Json, Router, Unroutable, Upcast, ValidatedJson, Version,
};
use transport_core::headers::{CE_DATAVERSION, CE_TYPE, CONTENT_TYPE};
use transport_core::runtime::{Consumer, ConsumerStats, Context, HandlerError};
use transport_core::{ErrorKind, Event, Message, SubscribeOptions, Transport};

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct ShippedV1 {
    parcel: String,
}

impl EventType for ShippedV1 {
    const TYPE: &'static str = "parcel.shipped";
    const VERSION: Version = Version::new(1, 0);
    type Codec = Json;
}

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct ShippedV2 {
    parcel: String,
    carrier: String,
}

impl EventType for ShippedV2 {
    const TYPE: &'static str = "parcel.shipped";
    const VERSION: Version = Version::new(2, 0);
    type Codec = Json;
}

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Shipped {
    parcel: String,
    carrier: String,
    #[schemars(length(min = 2))]
    country: String,
}

impl EventType for Shipped {
    const TYPE: &'static str = "parcel.shipped";
    const VERSION: Version = Version::new(3, 1);
    type Codec = ValidatedJson;
}

impl Upcast for ShippedV1 {
    type Next = ShippedV2;
    fn upcast(self) -> ShippedV2 {
        ShippedV2 {
            parcel: self.parcel,
            carrier: "post".into(),
        }
    }
}

impl Upcast for ShippedV2 {
    type Next = Shipped;
    fn upcast(self) -> Shipped {
        Shipped {
            parcel: self.parcel,
            carrier: self.carrier,
            country: "unknown".into(),
        }
    }
}

async fn ok(_: Context, _: Shipped) -> Result<(), HandlerError> {
    Ok(())
}

fn declaration(result: Result<Router, ContractError>) -> String {
    match result {
        Err(e @ ContractError::Declaration(_)) => e.to_string(),
        other => panic!("expected a declaration error, got {other:?}"),
    }
}

#[test]
fn contradicting_declarations_are_refused() {
    // An upcaster whose next version nobody reads yet.
    let e = declaration(Router::new().upcast::<ShippedV2>());
    assert!(
        e.contains("parcel.shipped v2.0 upcasts into parcel.shipped v3.1"),
        "{e}"
    );
    // The same type and major twice.
    let e = declaration(Router::new().route(ok).and_then(|r| r.route(ok)));
    assert!(e.contains("declared twice"), "{e}");
    // The chain declared newest first works, and lists what it reads.
    let r = Router::new()
        .route(ok)
        .and_then(|r| r.upcast::<ShippedV2>())
        .and_then(|r| r.upcast::<ShippedV1>())
        .unwrap();
    let routes: Vec<(String, u32)> = (1..=3).map(|m| ("parcel.shipped".to_owned(), m)).collect();
    assert_eq!(r.routes(), routes);
    // Errors of declarations are not worth a retry.
    let e: transport_core::Error = ContractError::Declaration("x".into()).into();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(!e.is_retryable());
}

#[test]
fn a_contract_writes_the_attributes_and_reads_back_its_own() {
    let contract = Contract::<Shipped>::new().unwrap();
    let data = Shipped {
        parcel: "p-1".into(),
        carrier: "dhl".into(),
        country: "DE".into(),
    };
    let m = contract.to_message(&contract.event("warehouse", data)).unwrap();
    assert_eq!(m.headers.get(CE_TYPE), Some("parcel.shipped"));
    assert_eq!(m.headers.get(CE_DATAVERSION), Some("3.1"));
    assert_eq!(m.headers.get(CONTENT_TYPE), Some("application/json"));
    let back = contract.decode(&m).unwrap();
    assert_eq!(back.data.country, "DE");
    assert_eq!(back.source, "warehouse");

    // Another major version is not this contract's to read.
    let v2 = Contract::<ShippedV2>::new().unwrap();
    assert!(matches!(v2.decode(&m), Err(ContractError::UnknownVersion { readable, .. }) if readable == ["2"]));
    // Attributes contradicting the declaration are refused before encoding.
    let mut wrong = contract.event(
        "warehouse",
        Shipped {
            parcel: "p".into(),
            carrier: "c".into(),
            country: "DE".into(),
        },
    );
    wrong.version = Some("2.0".into());
    let e = contract.to_message(&wrong).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("dataversion"), "{e}");
    // Data breaking the schema: InvalidArgument, naming field and rule.
    let short = contract.event(
        "warehouse",
        Shipped {
            parcel: "p".into(),
            carrier: "c".into(),
            country: "D".into(),
        },
    );
    let e = contract.to_message(&short).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("field /country breaks `minLength`"), "{e}");
}

/// Run `router` on `topic` until `done` holds for the counters (20 s at most).
async fn run(
    t: &Arc<dyn Transport>,
    topic: &str,
    options: SubscribeOptions,
    router: Router,
    done: impl Fn(&ConsumerStats) -> bool + Send + 'static,
) -> ConsumerStats {
    let consumer = Consumer::new(t.clone(), topic, options);
    let stats = consumer.stats_handle();
    let stop = async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&stats.get()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    consumer.run(router, stop).await.unwrap()
}

fn raw(event_type: &str, version: &str, data: serde_json::Value) -> Message {
    Event::new(event_type, "test", data)
        .with_version(version)
        .to_message()
        .unwrap()
}

#[tokio::test]
async fn chains_upcasters_and_follows_the_policies_and_counts_failures() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    // Thread-local, and this test runs on one thread.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let t = MemoryTransport::new();
    let topic = "parcels";
    let options = SubscribeOptions::new("tracking").max_attempts(2);
    drop(t.subscribe(topic, options.clone()).await.unwrap());
    for m in [
        raw("parcel.shipped", "1", json!({"parcel": "p-1"})),
        raw("parcel.shipped", "2.0", json!({"parcel": "p-2", "carrier": "ups"})),
        raw(
            "parcel.shipped",
            "3.4",
            json!({"parcel": "p-3", "carrier": "dhl", "country": "FR", "new": 1}),
        ),
        raw(
            "parcel.shipped",
            "3.0",
            json!({"parcel": "p-4", "carrier": "dhl", "country": "F"}),
        ),
        raw("parcel.shipped", "4.0", json!({"parcel": "p-5"})),
        raw("parcel.shipped", "three", json!({})),
        raw("parcel.lost", "1.0", json!({"parcel": "p-6"})),
        raw("parcel.shipped", "3.0", json!("not an object")),
    ] {
        t.publish(topic, m).await.unwrap();
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let router = Router::new()
        .route({
            let seen = seen.clone();
            move |_: Context, s: Shipped| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .push(format!("{}/{}/{}", s.parcel, s.carrier, s.country));
                    Ok::<_, HandlerError>(())
                }
            }
        })
        .and_then(|r| r.upcast::<ShippedV2>())
        .and_then(|r| r.upcast::<ShippedV1>())
        .unwrap()
        // v4 is for the instances already upgraded: back to the queue,
        // then dead-lettered after the group's 2 attempts.
        .unknown_versions(Unroutable::Retry(Duration::from_millis(10)))
        .unknown_types(Unroutable::Skip);
    // Acked: p-1..p-3 and the skipped parcel.lost; dead-lettered: p-4
    // (country too short), v4 after 2 attempts, "three", the string.
    let s = run(&t, topic, options.clone(), router, |s| {
        s.acked >= 4 && s.dead_lettered >= 4
    })
    .await;
    assert_eq!((s.acked, s.dead_lettered, s.retried), (4, 4, 1), "{s:?}");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["p-1/post/unknown", "p-2/ups/unknown", "p-3/dhl/FR"]);

    let dlq = t.dead_letters(topic, &options).await.unwrap();
    let mut reasons: Vec<String> = dlq
        .peek(10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason.unwrap_or_default())
        .collect();
    reasons.sort();
    let want = [
        "failed 2 of 2 allowed attempts: parcel.shipped 4.0: this consumer reads v1, v2, v3 of it",
        "not a CloudEvent: event attribute ce-dataversion has invalid value",
        "parcel.shipped v3.1: field / breaks `type`",
        "parcel.shipped v3.1: field /country breaks `minLength`",
    ];
    for (reason, want) in reasons.iter().zip(want) {
        assert!(
            reason.starts_with(want),
            "reason {reason:?}, expected {want:?}; all: {reasons:#?}"
        );
    }

    let text = metrics.render();
    for (failure, event_type, count) in [
        ("invalid", "parcel.shipped", 2),
        ("unknown_version", "parcel.shipped", 2),
        ("not_an_event", "parcel.shipped", 1),
    ] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("transport_consumer_validation_failures")
                    && l.contains(&format!("transport_failure=\"{failure}\""))
                    && l.contains(&format!("transport_event_type=\"{event_type}\""))
            })
            .unwrap_or_else(|| panic!("no {failure} line for {event_type} in:\n{text}"));
        assert!(line.ends_with(&format!(" {count}")), "{line}");
        assert!(line.contains("messaging_consumer_group_name=\"tracking\""), "{line}");
    }
    // Skipping a type the consumer was told to ignore is no failure.
    assert!(!text.contains("transport_failure=\"unknown_type\""), "{text}");
}

#[tokio::test]
async fn a_panicking_upcaster_does_not_stop_the_consumer() {
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Old {
        n: i32,
    }
    impl EventType for Old {
        const TYPE: &'static str = "counter.moved";
        const VERSION: Version = Version::new(1, 0);
        type Codec = Json;
    }
    #[derive(Serialize, Deserialize, JsonSchema)]
    struct New {
        n: i64,
    }
    impl EventType for New {
        const TYPE: &'static str = "counter.moved";
        const VERSION: Version = Version::new(2, 0);
        type Codec = Json;
    }
    impl Upcast for Old {
        type Next = New;
        fn upcast(self) -> New {
            assert!(self.n >= 0, "negative counters were never written by v1");
            New { n: self.n.into() }
        }
    }
    let t = MemoryTransport::new();
    let options = SubscribeOptions::new("g").max_attempts(1);
    drop(t.subscribe("counters", options.clone()).await.unwrap());
    t.publish("counters", raw("counter.moved", "1", json!({"n": -1})))
        .await
        .unwrap();
    t.publish("counters", raw("counter.moved", "1", json!({"n": 3})))
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let router = Router::new()
        .route({
            let calls = calls.clone();
            move |_: Context, _: New| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, HandlerError>(()) }
            }
        })
        .and_then(|r| r.upcast::<Old>())
        .unwrap();
    let s = run(&t, "counters", options, router, |s| s.acked + s.dead_lettered >= 2).await;
    assert_eq!((s.acked, s.dead_lettered), (1, 1), "{s:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Avro data is read only with exactly its writer's schema: another minor
/// of the same major is refused by name (never misread), when written and
/// when read.
#[cfg(feature = "avro")]
#[tokio::test]
async fn avro_reads_only_its_exact_minor() {
    use transport_contracts::apache_avro::{self, AvroSchema};
    use transport_contracts::Avro;

    #[derive(Debug, PartialEq, Serialize, Deserialize, AvroSchema)]
    struct Ping {
        n: i64,
    }
    impl EventType for Ping {
        const TYPE: &'static str = "test.ping";
        const VERSION: Version = Version::new(1, 2);
        type Codec = Avro;
    }
    let _ = apache_avro::util::max_allocation_bytes(1 << 20);
    let contract = Contract::<Ping>::new().unwrap();
    let mut relabelled = contract.event("t", Ping { n: 7 });
    relabelled.version = Some("1.3".into());
    assert_eq!(
        contract.to_message(&relabelled).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    let t = MemoryTransport::new();
    let options = SubscribeOptions::new("g").max_attempts(1);
    drop(t.subscribe("pings", options.clone()).await.unwrap());
    let good = contract.to_message(&contract.event("t", Ping { n: 1 })).unwrap();
    let mut other_minor = good.clone();
    other_minor.id = "other".into();
    other_minor.headers.insert(CE_DATAVERSION, "1.3");
    t.publish("pings", good).await.unwrap();
    t.publish("pings", other_minor).await.unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let router = Router::new()
        .route({
            let seen = seen.clone();
            move |_: Context, p: Ping| {
                assert_eq!(p.n, 1);
                seen.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, HandlerError>(()) }
            }
        })
        .unwrap();
    let s = run(&t, "pings", options.clone(), router, |s| s.acked + s.dead_lettered >= 2).await;
    assert_eq!(
        (s.acked, s.dead_lettered, seen.load(Ordering::SeqCst)),
        (1, 1, 1),
        "{s:?}"
    );
    let reason = t.dead_letters("pings", &options).await.unwrap().peek(1).await.unwrap()[0]
        .reason
        .clone()
        .unwrap_or_default();
    assert_eq!(reason, "test.ping 1.3: this consumer reads v1.2 only of it");
}
