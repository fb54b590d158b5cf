//! An endpoint that accepts connections and never answers cannot hang the
//! transport: `connect` fails with `Timeout` within its configured bound.
//! Needs no broker (the silent endpoint is a listener of this test).

use std::time::{Duration, Instant};

use backend_sqs::SqsTransport;
use transport_core::ErrorKind;

#[tokio::test]
async fn connect_to_a_silent_endpoint_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold every connection, answering nothing.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let start = Instant::now();
    let err = SqsTransport::connect(&format!(
        "sqs://?region=us-east-1&endpoint=http://127.0.0.1:{port}&access_key=a&secret_key=s&connect_timeout_ms=700"
    ))
    .await
    .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("connect_timeout_ms"), "{err}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "took {took:?} with a 700 ms bound"
    );
    holder.abort();
}

#[test]
fn timeouts_are_configurable_and_checked() {
    let c = backend_sqs::SqsConfig::from_url("sqs://?connect_timeout_ms=1500&request_timeout_ms=9000").unwrap();
    assert_eq!(c.connect_timeout, Duration::from_millis(1500));
    assert_eq!(c.request_timeout, Duration::from_secs(9));
    // Shorter than a long poll plus 5 s: refused, not a hang later.
    let e = backend_sqs::SqsConfig::from_url("sqs://?wait_s=20&request_timeout_ms=10000").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(backend_sqs::SqsConfig::from_url("sqs://?connect_timeout_ms=0").is_err());
}
