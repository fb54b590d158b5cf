//! Runs the whole suite against `TRANSPORT_URL` (default `memory://`).
//!
//! `cargo test -p conformance-tests --test conformance -- <filter>` runs the
//! checks whose names contain the filter; the report lists what ran.
//!
//! `CONFORMANCE_SKIP="[backend/]check=reason;..."` skips checks that a
//! particular broker (not the backend) gets wrong, with the reason in the
//! report (see [`conformance_tests::broker_skips`]). `CONFORMANCE_REPORT`
//! names the report file (default: the backend's name).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use conformance_tests::{broker_skips, checks, CheckRecord, CheckStatus, Report};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use transport_core::redact_url;

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let args = Arguments::from_args();
    let url = std::env::var("TRANSPORT_URL").unwrap_or_else(|_| "memory://".to_owned());
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    let transport = match runtime.block_on(transport::connect(&url)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot connect to {}: {e}", redact_url(&url));
            std::process::exit(2);
        }
    };
    let backend = transport.backend();
    let caps = transport.capabilities();
    let broker_skips = broker_skips(backend).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    eprintln!("conformance suite against {backend} ({})", redact_url(&url));
    let records: Arc<Mutex<Vec<CheckRecord>>> = Arc::default();
    let all = checks();
    let trials = all
        .iter()
        .map(|check| {
            let check = *check;
            let (runtime, transport, records) = (runtime.clone(), transport.clone(), records.clone());
            let skip = check.skip_for(&caps, &broker_skips);
            Trial::ignorable_test(check.name, move || {
                let start = Instant::now();
                let (status, reason, outcome) = match skip {
                    Some(reason) => (
                        CheckStatus::Skipped,
                        Some(reason.clone()),
                        Ok(Completion::ignored_with(reason)),
                    ),
                    None => match runtime.block_on((check.run)(&transport)) {
                        Ok(()) => (CheckStatus::Passed, None, Ok(Completion::Completed)),
                        Err(e) => (CheckStatus::Failed, Some(e.0.clone()), Err(Failed::from(e.0))),
                    },
                };
                records.lock().unwrap().push(CheckRecord {
                    name: check.name.to_owned(),
                    status,
                    reason,
                    millis: start.elapsed().as_millis() as u64,
                });
                outcome
            })
            .with_kind(backend)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);

    let mut ran = std::mem::take(&mut *records.lock().unwrap());
    let order = |name: &str| all.iter().position(|c| c.name == name);
    ran.sort_by_key(|r| order(&r.name));
    let report = Report {
        backend: backend.to_owned(),
        checks: ran,
    };
    if !args.list && !report.checks.is_empty() {
        // CONFORMANCE_REPORT names the report when one backend runs in
        // several modes (e.g. `sqs-queue` for SQS point-to-point).
        let name = std::env::var("CONFORMANCE_REPORT").unwrap_or_else(|_| backend.to_owned());
        let path = Report::default_path(&name);
        match report.write(&path) {
            Ok(()) => eprintln!("report: {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
    let _ = runtime.block_on(transport.close());
    conclusion.exit();
}
