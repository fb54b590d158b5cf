//! Runs the whole suite against `TRANSPORT_URL` (default `memory://`).
//!
//! `cargo test -p conformance-tests --test conformance -- <filter>` runs the
//! checks whose names contain the filter; the report lists what ran.
//! `CONFORMANCE_SKIP="[backend/]check=reason|reproduction;..."` names known
//! broker defects (reported as "not proven"), `CONFORMANCE_REPORT` names the
//! report file, `CONFORMANCE_CHECK_TIMEOUT_MS` bounds each check.

use transport_core::redact_url;

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let url = std::env::var("TRANSPORT_URL").unwrap_or_else(|_| "memory://".to_owned());
    eprintln!("TRANSPORT_URL={}", redact_url(&url));
    conformance_tests::test_main(|| transport::connect(&url))
}
