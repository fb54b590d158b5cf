//! Minimal reproductions, with the raw `rdkafka` client, of two ways Tansu
//! 0.6 (SQLite engine) differs from Apache Kafka that matter to this backend:
//!
//! 1. `metadata`: OffsetFetch returns the committed offset but never the
//!    metadata string committed with it (Kafka returns it). Out-of-order
//!    acks and attempt counts therefore do not carry over to the next owner
//!    of a partition on Tansu.
//! 2. `delete-records`: DeleteRecords is not implemented; the request panics
//!    Tansu's storage task and every later request fails until a restart.
//! 3. `freeze PID`: an idempotent producer whose publishes timed out while
//!    the broker was frozen (`SIGSTOP` of Tansu's pid, then `SIGCONT`)
//!    publishes again; Tansu's storage task panics ("more or less than one
//!    row", lite.rs:503) and every later request fails until a restart
//!    (Apache Kafka accepts the producer's epoch bump, KIP-360).
//!
//! ```sh
//! cargo run -p backend-kafka --example tansu_repro -- metadata [host:port]
//! cargo run -p backend-kafka --example tansu_repro -- delete-records [host:port]   # breaks the broker
//! cargo run -p backend-kafka --example tansu_repro -- freeze $(cat .brokers/kafka/tansu.pid) [host:port]   # breaks the broker
//! ```

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "metadata".into());
    let pid = if what == "freeze" {
        args.next().expect("freeze needs the broker's pid")
    } else {
        String::new()
    };
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = format!("repro-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin client");
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(1));
    let created = runtime.block_on(admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(TIMEOUT))));
    println!("create topic {topic}: {created:?}");
    match what.as_str() {
        "metadata" => {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("{topic}-group"))
                .set("enable.auto.commit", "false")
                .create()
                .expect("consumer");
            let mut tpl = TopicPartitionList::new();
            let mut elem = tpl.add_partition(&topic, 0);
            elem.set_offset(Offset::Offset(0)).expect("offset");
            elem.set_metadata("written with the commit");
            consumer.commit(&tpl, CommitMode::Sync).expect("commit");
            let mut query = TopicPartitionList::new();
            query.add_partition(&topic, 0);
            let committed = consumer.committed_offsets(query, TIMEOUT).expect("offset fetch");
            for e in committed.elements() {
                println!("committed: offset {:?}, metadata {:?}", e.offset(), e.metadata());
                if e.metadata().is_empty() {
                    println!("=> the broker dropped the commit metadata (Apache Kafka returns it)");
                }
            }
        }
        "delete-records" => {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(0)).expect("offset");
            let deleted =
                runtime.block_on(admin.delete_records(&tpl, &AdminOptions::new().operation_timeout(Some(TIMEOUT))));
            println!("delete records: {deleted:?}");
            let metadata = admin.inner().fetch_metadata(None, TIMEOUT);
            println!("metadata afterwards: {:?}", metadata.map(|m| m.topics().len()));
        }
        "freeze" => {
            use rdkafka::producer::{FutureProducer, FutureRecord};
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("enable.idempotence", "true")
                .set("message.timeout.ms", "1500")
                .create()
                .expect("producer");
            let send = |what: &'static str| {
                let record = FutureRecord::to(&topic).payload(what).key("k");
                let outcome = runtime.block_on(producer.send(record, Duration::from_secs(5)));
                println!("publish {what}: {:?}", outcome.map_err(|(e, _)| e));
            };
            let signal = |sig: &str| {
                std::process::Command::new("kill")
                    .args([sig, &pid])
                    .status()
                    .expect("kill");
            };
            send("before");
            signal("-STOP");
            send("while frozen");
            signal("-CONT");
            for _ in 0..3 {
                send("after");
                std::thread::sleep(Duration::from_secs(1));
            }
            println!("=> on Tansu 0.6 the publishes after the thaw fail and its log shows the storage panic");
        }
        other => eprintln!("unknown reproduction {other:?}: metadata | delete-records | freeze PID"),
    }
}
