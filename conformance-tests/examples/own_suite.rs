//! The conformance suite against your own broker configuration, from your
//! own crate: this whole file is what a `harness = false` test target
//! (`[[test]] name = "conformance" harness = false`) needs.
//!
//! ```sh
//! cargo run -p conformance-tests --example own_suite                      # memory://, 64 KiB limit
//! TRANSPORT_URL=redis://127.0.0.1:6379/0 cargo run -p conformance-tests --features redis --example own_suite -- dead_letter
//! ```
//!
//! Arguments are those of `cargo test` (a name filter, `--list`,
//! `--test-threads N`); the report goes to `target/conformance/<backend>.json`.
//! For a backend of your own, return it here instead of `transport::connect`.

conformance_tests::conformance_main!(async {
    // The configuration under test: your service's, not the defaults.
    let url = std::env::var("TRANSPORT_URL").unwrap_or_else(|_| "memory://own-suite?max_message_size=65536".to_owned());
    transport::connect(&url).await
});
