//! What the live tests that stop, freeze or restart a broker share: the
//! brokers `scripts/brokers` started, found by their pid files.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

#[cfg(feature = "otel")]
pub mod spans;

/// The URL in `var` (scripts/test exports one per broker it started);
/// without it the test is skipped with a message, and fails under `CI`.
pub fn live(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok() => panic!("{var} is not set"),
        Err(_) => {
            eprintln!("skipped: {var} is not set");
            None
        }
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `scripts/brokers ARGS...`'s output, when it succeeds.
pub fn brokers(args: &[&str]) -> Option<String> {
    let out = Command::new(root().join("scripts/brokers")).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The pid of a broker `scripts/brokers` started, if it runs.
pub fn pid(name: &str) -> Option<u32> {
    let brokers = root().join(".brokers");
    let file = match name {
        "redis" => brokers.join("redis/redis.pid"),
        "nats" => brokers.join("nats/nats.pid"),
        "rabbitmq" => brokers.join("rabbitmq/rabbit.pid"),
        "sqs" => brokers.join("sqs/moto.pid"),
        "kafka" => brokers.join("kafka/tansu.pid"),
        // Debian 13's RabbitMQ, in the trixie root scripts/brokers makes.
        "rabbitmq-4.0" => std::path::PathBuf::from(
            std::env::var("TRIXIE_ROOT").unwrap_or_else(|_| "/var/lib/transport-brokers/trixie".into()),
        )
        .join("srv/transport/rabbitmq-4.0/rabbit.pid"),
        _ => return None,
    };
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// The pid of one node of a cluster `scripts/brokers up <cluster>` started
/// (`.brokers/<cluster>/<node>/*.pid`), if it runs.
pub fn node_pid(cluster: &str, node: &str) -> Option<u32> {
    let dir = root().join(".brokers").join(cluster).join(node);
    let file = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "pid"))?;
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}
