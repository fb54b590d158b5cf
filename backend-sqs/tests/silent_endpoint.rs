//! The SQS timeouts are options of the URL, checked up front. That a silent
//! endpoint fails `connect` within them is `transport/tests/connect_times_out.rs`
//! (with every other backend).

use std::time::Duration;

use transport_core::ErrorKind;

#[test]
fn timeouts_are_configurable_and_checked() {
    let c = backend_sqs::SqsConfig::from_url("sqs://?connect_timeout_ms=1500&request_timeout_ms=9000").unwrap();
    assert_eq!(c.connect_timeout, Duration::from_millis(1500));
    assert_eq!(c.request_timeout, Duration::from_secs(9));
    // Shorter than a long poll: fine, a receive gets the wait on top.
    let c = backend_sqs::SqsConfig::from_url("sqs://?wait_s=20&request_timeout_ms=1000").unwrap();
    assert_eq!(
        (c.wait, c.request_timeout),
        (Duration::from_secs(20), Duration::from_secs(1))
    );
    let e = backend_sqs::SqsConfig::from_url("sqs://?connect_timeout_ms=0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}
