//! RustStream's in-memory broker (`ruststream::memory`, crate
//! ruststream-memory 0.7.7). What it is, from its source:
//!
//! - a broadcast bus: `MemoryBroker::subscribe` / `Subscribe::subscribe`
//!   register an unbounded tokio mpsc sender per subscription
//!   (src/broker.rs:250, :638), and a publish fans a copy out to every
//!   subscription of the name under the bus mutex (src/lib.rs:347 `fanout`);
//!   no groups, no competing consumers, no prefetch limit, and a name
//!   nobody subscribes to drops what is published to it (`MemoryBroker::new`
//!   is the `Discarding` broker, which keeps no log, src/broker.rs:142);
//! - a publish is the fanout itself, a ready future (src/broker.rs:775);
//! - `ack` drops the delivery handle (a ready future, src/subscriber.rs:417);
//!   `nack(true)`, a delayed nack and a handle dropped unsettled put it back
//!   on the same subscription's queue (src/subscriber.rs:313); there is no
//!   ack timeout and no redelivery otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ruststream::memory::MemoryBroker;
use ruststream::prelude::{subscriber, AppInfo, RustStream, SubscriberSettings};
use ruststream::{Broker, ConnectedBroker, Subscribe};

use super::{consume, publish_all, workers, Record};
use crate::probe::Probe;
use crate::{Consume, Workload};

/// One run on a fresh broker; the time from the first publish to the last
/// message handled.
pub async fn run(topic: &str, w: Workload, probe: &Arc<Probe>, concurrency: usize) -> Duration {
    let broker = MemoryBroker::new();
    match w.consume {
        Consume::Loop => {
            // `Broker::connect` (src/broker.rs:300) and the `Subscribe`
            // capability of the connected form (src/broker.rs:638), the
            // path the runtime itself opens a subscription by.
            let connected = broker.connect().await.expect("the in-process bus connects");
            let mut subscription = Subscribe::subscribe(&connected, topic).await.expect("subscribed");
            let begin = Instant::now();
            let publisher = tokio::spawn(publish_all(
                connected.publisher(),
                topic.to_owned(),
                probe.clone(),
                w.batch,
                |_| None,
            ));
            consume(&mut subscription, probe).await;
            let elapsed = begin.elapsed();
            publisher.await.expect("the publisher finished");
            drop(subscription);
            connected.shutdown().await.expect("the bus shuts down");
            elapsed
        }
        Consume::Runtime => {
            // The app a service writes, started in process: `RustStream::new`
            // + `with_broker` (ruststream-runtime 0.7.7 src/app/service.rs:647),
            // `subscriber(source, body)...build()` (src/handle/value.rs:124),
            // `start` / `RunningApp::shutdown` (src/app/run.rs:101, :328).
            // Publishing beside it through the broker's own publisher is how
            // RustStream's benches drive it (ruststream 0.7.7
            // benches/common/mod.rs:413 `fill`, :454 `pending_on`) and its
            // manual examples too (examples/manual/app_running.rs).
            let publisher = broker.publisher();
            let record = Record(probe.clone());
            let name = topic.to_owned();
            let app = RustStream::new(AppInfo::new("vs-ruststream", "0.0.0")).with_broker(broker, move |b| {
                let definition = subscriber(name, record);
                match workers(concurrency) {
                    Some(n) => {
                        b.include(definition.workers(n).build());
                    }
                    None => {
                        b.include(definition.build());
                    }
                }
            });
            // Resolves once the subscription is open (src/app/run.rs:101):
            // a publish before it would reach nobody on this broker.
            let running = app.start().await.expect("the service starts");
            let begin = Instant::now();
            let publisher = tokio::spawn(publish_all(publisher, topic.to_owned(), probe.clone(), w.batch, |_| {
                None
            }));
            probe.finished().await;
            let elapsed = begin.elapsed();
            publisher.await.expect("the publisher finished");
            running.shutdown().await.expect("the service stops");
            elapsed
        }
    }
}
