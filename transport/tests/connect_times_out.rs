//! A broker that accepts connections and never answers (a hung process, a
//! wrong port behind a load balancer) cannot hang `connect`: on every
//! backend compiled in, it fails within its configured connect timeout with
//! a typed error. The silent broker is a listener of this test, so nothing
//! needs to run.

use std::time::{Duration, Instant};

use transport_core::ErrorKind;

/// A loopback port that accepts and holds connections, answering nothing.
async fn silent_port() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, holder)
}

/// `connect(url)` fails within [0.5 s, 6 s] (a 700 ms bound, 1 s for
/// Kafka, plus the backend's own slack) with Timeout or ConnectionLost.
async fn fails_in_time(url: String) {
    let start = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), transport::connect(&url)).await;
    let took = start.elapsed();
    let err = match outcome {
        Err(_) => panic!("connect to a silent broker ({url}) still hangs after 20 s"),
        Ok(Ok(_)) => panic!("connect to a silent broker ({url}) succeeded"),
        Ok(Err(e)) => e,
    };
    assert!(
        matches!(err.kind(), ErrorKind::Timeout | ErrorKind::ConnectionLost),
        "{url}: {err}"
    );
    assert!(
        took >= Duration::from_millis(500) && took <= Duration::from_secs(6),
        "{url}: failed after {took:?} with a 700 ms connect timeout: {err}"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis() {
    let (port, holder) = silent_port().await;
    fails_in_time(format!("redis://127.0.0.1:{port}?connect_timeout_ms=700")).await;
    holder.abort();
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn nats() {
    let (port, holder) = silent_port().await;
    fails_in_time(format!("nats://127.0.0.1:{port}?connect_timeout_ms=700")).await;
    holder.abort();
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn rabbitmq() {
    let (port, holder) = silent_port().await;
    fails_in_time(format!(
        "amqp://guest:guest@127.0.0.1:{port}/%2f?connect_timeout_ms=700"
    ))
    .await;
    holder.abort();
}

#[cfg(feature = "sqs")]
#[tokio::test]
async fn sqs() {
    let (port, holder) = silent_port().await;
    fails_in_time(format!(
        "sqs://?region=us-east-1&endpoint=http://127.0.0.1:{port}&access_key=a&secret_key=s&connect_timeout_ms=700"
    ))
    .await;
    holder.abort();
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn kafka() {
    let (port, holder) = silent_port().await;
    fails_in_time(format!("kafka://127.0.0.1:{port}?request_timeout_ms=1000")).await;
    holder.abort();
}
