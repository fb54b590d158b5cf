//! The conformance suite: what publish, subscribe, ack, nack and dead-letter
//! must mean on every backend, proven against the real broker.
//!
//! Run it from your own crate against your own broker configuration (or a
//! backend of your own): a `harness = false` test whose whole body is
//!
//! ```no_run
//! conformance_tests::conformance_main!(async {
//!     transport::connect("redis://127.0.0.1:6379/0?key_prefix=ct-").await
//! });
//! ```
//!
//! gives one test per check (`cargo test --test conformance -- dead_letter`
//! filters) and writes `target/conformance/<backend>.json`. From code,
//! [`run`] returns the [`Report`]:
//!
//! ```no_run
//! # async fn demo(t: std::sync::Arc<dyn transport_core::Transport>) {
//! let report = conformance_tests::run(&t, &conformance_tests::RunOptions::new()).await;
//! println!("{}", report.summary());
//! # }
//! ```
//!
//! Each check is also a public async function taking `&Arc<dyn Transport>`;
//! [`checks`] lists them with the capability each needs. A check whose
//! capability the backend does not declare is skipped, and a negative check
//! proves the backend refuses that operation with a typed error. Every
//! timing is checked from both sides, every check has a deadline, and a
//! known broker defect ([`RunOptions::known_defect`]) is reported as "not
//! proven", never as passed.

// The macro the check files list their checks with: before the modules.
pub(crate) fn always(_: &Capabilities) -> Option<&'static str> {
    None
}

macro_rules! check {
    ($name:ident) => {
        check!($name, $crate::always)
    };
    ($name:ident, $requires:expr) => {
        $crate::Check {
            name: stringify!($name),
            requires: $requires,
            run: |t| Box::pin($name(t)),
        }
    };
}

pub mod contracts;
mod dead_letters;
mod lifecycle;
mod negative;
mod ordering;
mod report;
mod round_trip;
mod runner;
mod runtime;
mod settlement;
#[cfg(feature = "stores")]
pub mod stores;
mod support;
pub mod throughput;

use std::sync::Arc;

use futures::future::BoxFuture;
use transport_core::{Capabilities, Transport};

pub use dead_letters::*;
pub use lifecycle::*;
pub use negative::*;
pub use ordering::*;
pub use report::{CheckRecord, CheckStatus, Report};
pub use round_trip::*;
pub use runner::{async_case, run, run_check, run_trials, test_main, test_runtime, Case, KnownDefect, RunOptions};
pub use runtime::*;
pub use settlement::*;
pub use support::{live_env, timing, unique, within_bounds, CheckFailure, CheckResult, Timing};

/// One check of the suite.
#[derive(Clone, Copy)]
pub struct Check {
    /// Stable name (also the test name).
    pub name: &'static str,
    /// `Some(reason)` when the capabilities rule the check out.
    pub requires: fn(&Capabilities) -> Option<&'static str>,
    /// Run it.
    pub run: for<'a> fn(&'a Arc<dyn Transport>) -> BoxFuture<'a, CheckResult>,
}

impl Check {
    /// Why the check does not apply to a backend with `caps`, if it does not.
    pub fn skip_reason(&self, caps: &Capabilities) -> Option<&'static str> {
        (self.requires)(caps)
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

/// Every check, in a stable order: by concept (round trip, ordering,
/// settlement, dead letters, lifecycle, the consumer runtime, refusals),
/// each file listing its own with what each needs of the backend. A check
/// whose capability the backend does not declare is skipped; for each such
/// capability a negative check proves the backend refuses the operation
/// instead of faking it.
pub fn checks() -> Vec<Check> {
    [
        negative::checks(),
        round_trip::checks(),
        ordering::checks(),
        settlement::checks(),
        dead_letters::checks(),
        lifecycle::checks(),
        runtime::checks(),
    ]
    .concat()
}
