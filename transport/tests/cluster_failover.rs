//! Losing the node that leads a topic: against the three-node clusters
//! `scripts/brokers up <broker>-cluster` starts, one task publishes and
//! another consumes while the node leading the topic's stream is killed
//! with `kill -9`. Afterwards every publish that returned `Ok` must have
//! been consumed (duplicates are counted, not failed), and both sides must
//! have carried on by themselves: the longest pause between two successful
//! publishes, and between two deliveries, stays under the bound the
//! backend's docs state ("Running on a cluster"). The killed node is then
//! started again on its data and rejoins.
//!
//! Skipped with a message when the cluster is not running; a failure under
//! `CI`.

#![cfg(any(feature = "redis", feature = "nats", feature = "rabbitmq"))]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{brokers, node_pid};
use futures::StreamExt;
use tokio::sync::watch;
use transport::{Message, SubscribeOptions, Transport};

/// What one side saw, in time order.
#[derive(Default)]
struct Log {
    /// When each successful publish (or delivery) happened.
    times: Vec<Instant>,
    /// Acknowledged publishes (or deliveries) by message id.
    ids: HashMap<String, usize>,
    /// Failed publishes (or stream errors).
    errors: usize,
    last_error: String,
}

impl Log {
    fn record(&mut self, id: String) {
        self.times.push(Instant::now());
        *self.ids.entry(id).or_default() += 1;
    }
    fn failed(&mut self, e: &transport::Error) {
        self.errors += 1;
        let e = e.to_string();
        // The first of each kind of error, as it happens: what the broker
        // went through is the story when a bound is missed.
        if self.errors == 1 || e.split(" message ").next() != self.last_error.split(" message ").next() {
            eprintln!("{:?}: {e}", std::time::SystemTime::now());
        }
        self.last_error = e;
    }
    /// The longest pause between two consecutive events within `window`.
    fn longest_pause(&self, window: (Instant, Instant)) -> Duration {
        let times: Vec<Instant> = self
            .times
            .iter()
            .copied()
            .filter(|t| *t >= window.0 && *t <= window.1)
            .collect();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(window.1 - window.0)
    }
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

async fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool, state: impl Fn() -> String) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "{what} (waited {deadline:?}): {}", state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cluster `scripts/brokers` runs: its URL, and how to find the node
/// leading a topic.
struct Cluster {
    name: &'static str,
    nodes: &'static [&'static str],
    /// The node (one of `nodes`) that leads `topic`'s stream or queue, or
    /// why it is not known yet (a broker's tool that failed under load, a
    /// replica still joining).
    leader: fn(&str) -> Result<String, String>,
    /// The longest pause publishers and consumers may see (the docs' bound).
    bound: Duration,
}

impl Cluster {
    async fn connect(&self) -> Option<(Arc<dyn Transport>, String)> {
        let running = self.nodes.iter().all(|n| node_pid(self.name, n).is_some());
        let url = brokers(&["url", self.name]);
        let connected = match (&url, running) {
            (Some(url), true) => transport::connect(url).await.ok(),
            _ => None,
        };
        match (connected, url) {
            (Some(t), Some(url)) => Some((t, url)),
            _ if std::env::var("CI").is_ok() => {
                panic!("{} is not running (scripts/brokers up {})", self.name, self.name)
            }
            _ => {
                eprintln!(
                    "skipped: {} is not running (scripts/brokers up {})",
                    self.name, self.name
                );
                None
            }
        }
    }
}

// One cluster at a time: the pauses measured are the cluster's, not the
// host's CPU shared with another failover.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn kill_the_leader_while_busy(cluster: &Cluster) {
    let _one = SERIAL.lock().await;
    let Some((t, url)) = cluster.connect().await else {
        return;
    };
    let name = cluster.name;
    let topic = format!("failover-{}", uuid::Uuid::now_v7().simple());
    let options = SubscribeOptions::new("g").ack_timeout(Duration::from_secs(10));
    let mut sub = t.subscribe(&topic, options.clone()).await.expect("subscribe");

    let published = Arc::new(Mutex::new(Log::default()));
    let delivered = Arc::new(Mutex::new(Log::default()));
    let (stop, stopped) = watch::channel(false);

    let publisher = tokio::spawn({
        let (t, topic, log, mut stopped) = (t.clone(), topic.clone(), published.clone(), stopped.clone());
        async move {
            let mut i = 0u64;
            while !*stopped.borrow_and_update() {
                let m = Message::new(format!("m{i}")).with_key(format!("k{}", i % 8));
                i += 1;
                // The transport bounds every publish; this only keeps a
                // hanging one from hanging the test.
                match tokio::time::timeout(Duration::from_secs(60), t.publish(&topic, m.clone())).await {
                    Ok(Ok(())) => lock(&log).record(m.id),
                    Ok(Err(e)) => {
                        assert!(e.is_retryable(), "a node loss gave a final error: {e}");
                        lock(&log).failed(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => panic!("a publish hung for 60 s"),
                }
            }
        }
    });
    let consumer = tokio::spawn({
        let (log, mut stopped) = (delivered.clone(), stopped.clone());
        async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => return sub,
                    next = sub.next() => match next {
                        Some(Ok(d)) => {
                            lock(&log).record(d.id().to_owned());
                            // An ack lost with the node is a redelivery, counted below.
                            let _ = d.ack().await;
                        }
                        Some(Err(e)) => {
                            assert!(e.is_retryable(), "a node loss ended the stream with a final error: {e}");
                            lock(&log).failed(&e);
                        }
                        None => panic!("the subscription ended"),
                    },
                }
            }
        }
    });

    let state = || {
        let (p, d) = (lock(&published), lock(&delivered));
        format!(
            "{} published, {} failed (last: {}); {} delivered, {} stream errors (last: {})",
            p.ids.len(),
            p.errors,
            p.last_error,
            d.ids.len(),
            d.errors,
            d.last_error
        )
    };
    wait_until(
        "publishes before the kill",
        Duration::from_secs(30),
        || lock(&published).ids.len() >= 200,
        state,
    )
    .await;
    // Asked until known: the brokers' tools are slow on a loaded machine,
    // and a replica may still be joining a topic declared a moment ago.
    let asked = Instant::now();
    let leader = loop {
        match (cluster.leader)(&topic) {
            Ok(leader) => break leader,
            Err(why) => {
                assert!(
                    asked.elapsed() < Duration::from_secs(60),
                    "{name}: the leader of {topic} not known after 60 s: {why}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let pid = node_pid(name, &leader).expect("the leader's pid");
    let before = lock(&published).ids.len();
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let killed = Instant::now();
    let rejoin = Rejoin(name);
    eprintln!("{name}: killed {leader} (pid {pid}), the leader of {topic}, after {before} publishes");

    // Both sides carry on without the node.
    wait_until(
        "publishes after the kill",
        cluster.bound * 2,
        || lock(&published).ids.len() >= before + 200,
        state,
    )
    .await;
    wait_until(
        "deliveries after the kill",
        cluster.bound * 2,
        || {
            lock(&delivered)
                .times
                .last()
                .is_some_and(|t| *t > killed + Duration::from_millis(500))
        },
        state,
    )
    .await;
    stop.send(true).unwrap();
    publisher.await.expect("publisher");
    let now = Instant::now();
    let window = (killed - Duration::from_secs(1), now);
    let publish_pause = lock(&published).longest_pause(window);
    let delivery_pause = lock(&delivered).longest_pause(window);

    // Then everything acknowledged arrives.
    let mut sub = consumer.await.expect("consumer");
    let acked: Vec<String> = lock(&published).ids.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = acked
            .iter()
            .filter(|id| !lock(&delivered).ids.contains_key(*id))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {missing} of {} acknowledged publishes never arrived",
            acked.len()
        );
        match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            Ok(Some(Ok(d))) => {
                lock(&delivered).record(d.id().to_owned());
                let _ = d.ack().await;
            }
            Ok(Some(Err(e))) => assert!(e.is_retryable(), "{name}: {e}"),
            Ok(None) => panic!("{name}: the subscription ended"),
            Err(_) => {}
        }
    }
    {
        let (p, d) = (lock(&published), lock(&delivered));
        let duplicates: usize = d.ids.values().map(|n| n - 1).sum();
        eprintln!(
            "{name}: {} acknowledged publishes all consumed; {} publishes failed ({}), {} stream errors, \
             {duplicates} duplicates; longest pause {publish_pause:?} publishing, {delivery_pause:?} consuming",
            p.ids.len(),
            p.errors,
            p.last_error,
            d.errors
        );
    }
    assert!(
        publish_pause <= cluster.bound,
        "{name}: publishing paused {publish_pause:?} (bound {:?})",
        cluster.bound
    );
    assert!(
        delivery_pause <= cluster.bound,
        "{name}: consuming paused {delivery_pause:?} (bound {:?})",
        cluster.bound
    );
    let _ = t.close().await;

    // The node comes back on its data and the cluster is whole again.
    let rejoining = Instant::now();
    std::mem::forget(rejoin);
    assert!(brokers(&["up", name]).is_some(), "scripts/brokers up {name} failed");
    let t = transport::connect(&url).await.expect("connect after the rejoin");
    t.publish(&topic, Message::new("after"))
        .await
        .expect("publish after the rejoin");
    let _ = t.close().await;
    eprintln!("{name}: {} rejoined within {:?}", leader, rejoining.elapsed());
}

/// Starts the killed node again however the test ends, so the next test
/// (and the conformance run against the cluster) find it whole.
struct Rejoin(&'static str);

impl Drop for Rejoin {
    fn drop(&mut self) {
        if brokers(&["up", self.0]).is_none() {
            eprintln!("scripts/brokers up {} failed", self.0);
        }
    }
}

/// The primary that owns the stream's hash slot (the stream's key is the
/// topic: no key prefix in the cluster's URL), from any live node.
#[cfg(feature = "redis")]
fn redis_slot_primary(topic: &str) -> Result<String, String> {
    let cli = |port: u16, args: &[&str]| -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    (7001..=7009)
        .find_map(|port| {
            let slot: u16 = cli(port, &["cluster", "keyslot", topic])?.trim().parse().ok()?;
            let nodes = cli(port, &["cluster", "nodes"])?;
            nodes.lines().find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (addr, flags) = (f.get(1)?, f.get(2)?);
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let owns = f.iter().skip(8).any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
                });
                let port: u16 = addr.split(['@', ':']).nth(1)?.parse().ok()?;
                owns.then(|| format!("n{}", port - 7000))
            })
        })
        .ok_or_else(|| format!("no live node names the primary of {topic}'s slot"))
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_survives_losing_the_slot_primary() {
    kill_the_leader_while_busy(&Cluster {
        name: "redis-cluster",
        nodes: &["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"],
        leader: redis_slot_primary,
        bound: Duration::from_secs(15),
    })
    .await;
}

/// The leader of the group's quorum queue (`<topic>/g`), from any live node.
#[cfg(feature = "rabbitmq")]
fn rabbitmq_queue_leader(topic: &str) -> Result<String, String> {
    let queue = format!("{topic}/g");
    let mut why = String::from("rabbitmqctl failed on every node");
    for node in ["1", "2", "3"] {
        let Some(out) = brokers(&[
            "ctl",
            "rabbitmq-cluster",
            node,
            "list_queues",
            "name",
            "leader",
            "members",
            "--formatter",
            "json",
            "-q",
        ]) else {
            continue;
        };
        let queues: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let Some(q) = queues
            .as_array()
            .into_iter()
            .flatten()
            .find(|q| q["name"] == queue.as_str())
        else {
            why = format!("no queue {queue} on node {node}");
            continue;
        };
        let members = q["members"].as_array().map_or(0, Vec::len);
        // rabbit2@localhost
        let leader = q["leader"]
            .as_str()
            .and_then(|l| l.strip_prefix("rabbit")?.split('@').next());
        match leader {
            Some(n) if members == 3 => return Ok(format!("n{n}")),
            _ => why = format!("the queue of {topic} is not on three nodes with a leader: {q}"),
        }
    }
    Err(why)
}

#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_cluster_survives_losing_the_queue_leader() {
    kill_the_leader_while_busy(&Cluster {
        name: "rabbitmq-cluster",
        nodes: &["n1", "n2", "n3"],
        leader: rabbitmq_queue_leader,
        bound: Duration::from_secs(15),
    })
    .await;
}

/// The JetStream stream leader, from the monitoring endpoint of any live
/// node; the stream must be replicated to the two other nodes.
#[cfg(feature = "nats")]
fn nats_stream_leader(topic: &str) -> Result<String, String> {
    let mut why = String::from("no node answered");
    for i in 0..3 {
        let Ok(out) = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}/jsz?streams=true", 8231 + i)])
            .output()
        else {
            continue;
        };
        let Ok(jsz) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            continue;
        };
        let Some(stream) = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"].as_str().is_some_and(|n| n.ends_with(topic)))
        else {
            why = format!("no stream of {topic} on node {}", i + 1);
            continue;
        };
        let cluster = &stream["cluster"];
        let replicas = cluster["replicas"].as_array().map_or(0, Vec::len);
        match cluster["leader"].as_str() {
            Some(leader) if replicas == 2 => return Ok(leader.to_owned()),
            _ => why = format!("the stream of {topic} is not on three nodes with a leader: {cluster}"),
        }
    }
    Err(why)
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_survives_losing_the_stream_leader() {
    kill_the_leader_while_busy(&Cluster {
        name: "nats-cluster",
        nodes: &["n1", "n2", "n3"],
        leader: nats_stream_leader,
        bound: Duration::from_secs(15),
    })
    .await;
}
