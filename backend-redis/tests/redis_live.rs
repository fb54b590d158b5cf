//! Behaviour specific to Redis, against the server `scripts/brokers up redis`
//! starts (`REDIS_URL`, default `redis://127.0.0.1:6379`). Skipped with a
//! message when no server answers, so `cargo test` works without one; the
//! project's test command always starts one.

use std::time::{Duration, Instant};

use backend_redis::{RedisConfig, RedisTransport};
use futures::StreamExt;
use transport_core::{ErrorKind, Message, SubscribeOptions, Transport};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn server() -> Option<std::sync::Arc<dyn Transport>> {
    match RedisTransport::connect(&url()).await {
        Ok(t) => Some(t),
        Err(e) if std::env::var("CI").is_ok() => panic!("no Redis at {}: {e}", url()),
        Err(e) => {
            eprintln!("skipped: no Redis at {}: {e}", url());
            None
        }
    }
}

fn unique(what: &str) -> String {
    format!("it-{what}-{}", uuid::Uuid::now_v7().simple())
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_quickly() {
    let Some(_t) = server().await else { return };
    let user = unique("user");
    let mut admin = raw().await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">right-password")
        .arg("~*")
        .arg("+@all")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let start = Instant::now();
    let base = url().replace("redis://", "");
    let err = RedisTransport::connect(&format!("redis://{user}:wrong-password@{base}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(!err.to_string().contains("wrong-password"), "{err}");
    let ok = RedisTransport::connect(&format!("redis://{user}:right-password@{base}")).await;
    assert!(ok.is_ok(), "{:?}", ok.err());
    redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn debug_never_shows_the_password() {
    let c = RedisConfig::from_url("redis://app:topsecret@127.0.0.1:6379").unwrap();
    assert!(!format!("{c:?}").contains("topsecret"));
    let Some(_t) = server().await else { return };
    let err = RedisTransport::connect("redis://app:topsecret@127.0.0.1:1/0")
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("topsecret"), "{err}");
    assert!(!format!("{err:?}").contains("topsecret"), "{err:?}");
}

#[tokio::test]
async fn survives_dropped_connections() {
    let Some(t) = server().await else { return };
    let topic = unique("drop");
    let options = SubscribeOptions::new("g").ack_timeout(Duration::from_secs(2));
    let mut sub = t.subscribe(&topic, options.clone()).await.unwrap();
    t.publish(&topic, Message::new("before")).await.unwrap();
    let held = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Kill every client connection, ours included.
    let mut admin = raw().await;
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();

    // Publishing works again once the connection is re-established.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = Message::new("after");
    loop {
        match t.publish(&topic, after.clone()).await {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_retryable(), "non-retryable error after a drop: {e}");
                assert!(Instant::now() < deadline, "publish never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The unacked delivery comes back and the new message arrives, on the
    // same subscription (its reader reconnected).
    std::mem::forget(held);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
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

#[tokio::test]
async fn foreign_entries_are_delivered_with_their_fields() {
    let Some(t) = server().await else { return };
    let topic = unique("foreign");
    let mut sub = t.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap();
    let mut conn = raw().await;
    let id: String = redis::cmd("XADD")
        .arg(&topic)
        .arg("*")
        .arg("sensor")
        .arg("t1")
        .arg("celsius")
        .arg("21.5")
        .query_async(&mut conn)
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.id(), id);
    assert_eq!(d.headers().get("celsius"), Some("21.5"));
    assert!(d.payload().is_empty());
    d.ack().await.unwrap();
    t.close().await.unwrap();
    assert_eq!(
        t.publish(&topic, Message::new("x")).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
}

/// `wait_replicas` on a server without replicas: the publish is stored on
/// the primary but fails, retryable, after `wait_timeout_ms` (not before,
/// and not much after); batches report the same and stay whole.
#[tokio::test]
async fn waiting_for_missing_replicas_times_out_retryably() {
    let Some(_t) = server().await else { return };
    let t = RedisTransport::connect(&format!("{}?wait_replicas=1&wait_timeout_ms=300", url()))
        .await
        .unwrap();
    let topic = unique("wait");
    for batch in [vec![Message::new("one")], vec![Message::new("a"), Message::new("b")]] {
        let start = Instant::now();
        let err = t.publish_batch(&topic, batch).await.unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("0 of 1 replicas"), "{err}");
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(3),
            "took {took:?}"
        );
    }
    let len: u64 = redis::cmd("XLEN")
        .arg(&topic)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    assert_eq!(len, 3, "what was published is on the primary");
    // Waiting for no replica is the default: the same server publishes fine.
    let plain = RedisTransport::connect(&url()).await.unwrap();
    plain.publish(&topic, Message::new("plain")).await.unwrap();
}

/// A cluster whose seeds do not answer: the connect fails, retryably, within
/// the connect timeout, naming no password. Needs no server.
#[tokio::test]
async fn a_cluster_without_live_seeds_fails_quickly() {
    let start = Instant::now();
    let err = RedisTransport::connect("redis+cluster://u:s3cret@127.0.0.1:1,127.0.0.1:2?connect_timeout_ms=500")
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(err.is_retryable(), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}
