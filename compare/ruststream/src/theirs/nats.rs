//! RustStream on NATS JetStream (crate ruststream-nats 0.7.1, over
//! async-nats 0.50). What it does, from its source:
//!
//! - `JetStreamSubject::new(subject, stream)` reads an existing stream: the
//!   subscription looks it up (`get_stream`) and creates a pull consumer on
//!   it (`create_consumer`: durable name, filter subject, `ack_wait` 30 s,
//!   `max_ack_pending` 1024 by default, deliver policy All, explicit ack),
//!   then reads async-nats' continuous pull stream `consumer.messages()`
//!   (pulls of 200, expires 30 s, heartbeat 15 s) (src/broker.rs:589,
//!   src/subject.rs:36-40 and :560-596; async-nats 0.50
//!   src/jetstream/consumer/pull.rs:91). It creates no stream, so the bench
//!   creates one per run through `ConnectedNatsBroker::jetstream()`, the
//!   context the crate hands out "for stream and consumer administration
//!   (creating the stream a consumer reads ...)" (src/broker.rs:492);
//! - `JetStreamPublisher::publish` sends and then awaits the stream's
//!   PubAck (`send_publish(..).await?.await`, src/jetstream.rs:569, :652),
//!   with no `Nats-Msg-Id` unless `JetStreamOptions::message_id` is set;
//! - `IncomingMessage::ack` on a JetStream delivery is async-nats'
//!   `Message::ack()`, a `+ACK` not confirmed by the server
//!   (src/message.rs:253).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::TryStreamExt;
use ruststream::prelude::{subscriber, AppInfo, RustStream, SubscriberSettings};
use ruststream::{Broker, ConnectedBroker};
use ruststream_nats::{
    ConnectedNatsBroker, JetStreamOptions, JetStreamPublish, JetStreamPublisher, JetStreamSubject, NatsBroker,
};

use super::{consume, publish_all, workers, Record};
use crate::probe::Probe;
use crate::{Consume, Workload, GROUP, IN_FLIGHT};

/// Our backend's defaults for the streams it creates (backend-nats
/// src/config.rs: 1 replica, 2-minute duplicate window, no age limit), so
/// RustStream's stream stores the same way.
const REPLICAS: usize = 1;
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// RustStream's connections for the whole NATS half: one that publishes
/// (and administers the streams) and one the bare loop subscribes on; the
/// runtime workload's app connects its own, as a service does.
pub struct Setup {
    /// The server address without our URL's query options, which are ours.
    url: String,
    storage: stream::StorageType,
    /// Stream administration, on the publishing connection.
    admin: jetstream::Context,
    publishing: ConnectedNatsBroker,
    publisher: JetStreamPublisher,
    consuming: ConnectedNatsBroker,
}

impl Setup {
    /// Connects to the server of `url` (`nats://host:port[?our options]`).
    /// `storage=memory` among our options is mirrored on RustStream's
    /// streams, so both sides store alike; the rest applies to ours only.
    pub async fn connect(url: &str) -> Result<Setup, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let storage = if query.split('&').any(|kv| kv == "storage=memory") {
            stream::StorageType::Memory
        } else {
            stream::StorageType::File
        };
        // `NatsBroker::new` records the address, `Broker::connect` dials it
        // (src/broker.rs:256, :314); `publisher(JetStreamPublish::default())`
        // is the JetStream publisher of that connection (src/broker.rs:434).
        let publishing = NatsBroker::new(base).connect().await.map_err(|e| e.to_string())?;
        let publisher = publishing.publisher(JetStreamPublish::default());
        let admin = publishing.jetstream();
        let consuming = NatsBroker::new(base).connect().await.map_err(|e| e.to_string())?;
        Ok(Setup {
            url: base.to_owned(),
            storage,
            admin,
            publishing,
            publisher,
            consuming,
        })
    }

    /// One run on a fresh stream; the time from the first publish to the
    /// last message handled.
    pub async fn run(&self, tag: &str, w: Workload, probe: &Arc<Probe>, concurrency: usize) -> Duration {
        let subject = format!("vsrs-theirs-{tag}");
        let stream_name = format!("VSRS_{tag}");
        self.admin
            .create_stream(stream::Config {
                name: stream_name.clone(),
                subjects: vec![subject.clone()],
                storage: self.storage,
                num_replicas: REPLICAS,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .expect("the stream is created");
        // A durable consumer like ours (its name is our group's), with the
        // unacked limit set to our `max_in_flight` (it is 1024 by default
        // too, src/subject.rs:38).
        let source = JetStreamSubject::new(subject.clone(), stream_name)
            .durable(GROUP)
            .max_ack_pending(IN_FLIGHT as i64);
        match w.consume {
            Consume::Loop => {
                // `subscribe_with` opens the pull consumer (src/broker.rs:509).
                let mut subscription = self.consuming.subscribe_with(source).await.expect("subscribed");
                let begin = Instant::now();
                let publisher = tokio::spawn(publish_all(
                    self.publisher.clone(),
                    subject,
                    probe.clone(),
                    w.batch,
                    dedup_id(),
                ));
                consume(&mut subscription, probe).await;
                let elapsed = begin.elapsed();
                publisher.await.expect("the publisher finished");
                elapsed
            }
            Consume::Runtime => {
                // As the crate's manual examples mount a JetStream handler
                // (examples/manual/nats_subscriptions_jetstream.rs:
                // `subscriber(JetStreamSubject::new(..), Ship).build()`).
                let record = Record(probe.clone());
                let app = RustStream::new(AppInfo::new("vs-ruststream", "0.0.0")).with_broker(
                    NatsBroker::new(self.url.clone()),
                    move |b| {
                        let definition = subscriber(source, record);
                        match workers(concurrency) {
                            Some(n) => {
                                b.include(definition.workers(n).build());
                            }
                            None => {
                                b.include(definition.build());
                            }
                        }
                    },
                );
                // Connects, creates the consumer, starts the dispatch loop.
                let running = app.start().await.expect("the service starts");
                let begin = Instant::now();
                let publisher = tokio::spawn(publish_all(
                    self.publisher.clone(),
                    subject,
                    probe.clone(),
                    w.batch,
                    dedup_id(),
                ));
                probe.finished().await;
                let elapsed = begin.elapsed();
                publisher.await.expect("the publisher finished");
                running.shutdown().await.expect("the service stops");
                elapsed
            }
        }
    }

    /// Deletes every stream whose name holds `tag` (a run's streams, ours
    /// and RustStream's), so runs do not pile up on the server's disk.
    pub async fn delete_streams(&self, tag: &str) {
        let names: Vec<String> = match self.admin.stream_names().try_collect().await {
            Ok(names) => names,
            Err(e) => {
                eprintln!("listing streams failed: {e}");
                return;
            }
        };
        for name in names.into_iter().filter(|n| n.contains(tag)) {
            if let Err(e) = self.admin.delete_stream(&name).await {
                eprintln!("deleting stream {name} failed: {e}");
            }
        }
    }

    pub async fn close(self) {
        let _ = self.publishing.shutdown().await;
        let _ = self.consuming.shutdown().await;
    }
}

/// Each publish's `Nats-Msg-Id`, as ours sends one (its message id, a
/// UUIDv7) on every publish so that a retried publish is stored once:
/// the same work on both sides. `RUSTSTREAM_MSG_ID=0` leaves it out, which
/// shows what the header costs (ruststream-nats 0.7.1
/// src/jetstream.rs:147, `JetStreamOptions::message_id`).
fn dedup_id() -> impl Fn(u64) -> Option<JetStreamOptions> {
    let on = std::env::var("RUSTSTREAM_MSG_ID").map_or(true, |v| v != "0");
    let run = std::process::id();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    move |seq| {
        on.then(|| JetStreamOptions {
            message_id: Some(format!("{run:08x}-{started:032x}-{seq:012x}")),
            ..JetStreamOptions::default()
        })
    }
}
