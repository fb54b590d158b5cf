//! The conformance suite: what publish, subscribe, ack, nack and dead-letter
//! must mean on every backend.
//!
//! Each check is a public async function taking `&Arc<dyn Transport>`, so a
//! third-party backend can run them from its own tests. [`checks`] lists them
//! with the capability each needs; a check whose capability the backend does
//! not declare is skipped with that reason.
//!
//! ```no_run
//! # async fn demo(t: std::sync::Arc<dyn transport_core::Transport>) {
//! for check in conformance_tests::checks() {
//!     match check.skip_reason(&t.capabilities()) {
//!         Some(reason) => println!("{}: skipped ({reason})", check.name),
//!         None => println!("{}: {:?}", check.name, (check.run)(&t).await),
//!     }
//! }
//! # }
//! ```
//!
//! The `conformance` test of this crate runs every check against the
//! backend named by `TRANSPORT_URL` (default `memory://`) and writes
//! `target/conformance/<backend>.json`.

mod checks;
mod report;
mod runtime_checks;
mod support;
pub mod throughput;

use std::sync::Arc;

use futures::future::BoxFuture;
use transport_core::{Capabilities, Transport};

pub use checks::*;
pub use report::{CheckRecord, CheckStatus, Report};
pub use runtime_checks::*;
pub use support::{timing, unique, CheckFailure, CheckResult, Timing};

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

    /// Why the check does not run: a capability the backend does not
    /// declare, else a known defect of the broker (from [`broker_skips`]).
    pub fn skip_for(
        &self,
        caps: &Capabilities,
        broker_skips: &std::collections::HashMap<String, String>,
    ) -> Option<String> {
        self.skip_reason(caps)
            .map(str::to_owned)
            .or_else(|| broker_skips.get(self.name).cloned())
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

/// Checks to skip because a particular **broker** (not the backend) gets
/// them wrong, from `CONFORMANCE_SKIP`: `check=reason` or
/// `backend/check=reason` entries separated by `;`. Returns check name ->
/// reason for `backend`. For broker defects shown by a reproduction outside
/// this library only; an unknown check name or a missing reason is an error,
/// so a renamed check cannot stay skipped unnoticed.
pub fn broker_skips(backend: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let raw = std::env::var("CONFORMANCE_SKIP").unwrap_or_default();
    let all = checks();
    let mut out = std::collections::HashMap::new();
    for entry in raw.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (target, reason) = entry.split_once('=').unwrap_or((entry, ""));
        let (only, name) = match target.trim().split_once('/') {
            Some((b, n)) => (Some(b.trim()), n.trim()),
            None => (None, target.trim()),
        };
        if !all.iter().any(|c| c.name == name) || reason.trim().is_empty() {
            return Err(format!(
                "CONFORMANCE_SKIP entry {entry:?} is not `[backend/]known_check=reason`"
            ));
        }
        if only.is_none_or(|b| b == backend) {
            out.insert(name.to_owned(), format!("broker defect: {}", reason.trim()));
        }
    }
    Ok(out)
}

fn always(_: &Capabilities) -> Option<&'static str> {
    None
}

macro_rules! check {
    ($name:ident) => {
        check!($name, always)
    };
    ($name:ident, $requires:expr) => {
        Check {
            name: stringify!($name),
            requires: $requires,
            run: |t| Box::pin($name(t)),
        }
    };
}

/// Every check, in a stable order.
pub fn checks() -> Vec<Check> {
    vec![
        check!(round_trip_empty_payload),
        check!(round_trip_binary_payload),
        check!(round_trip_near_max_size),
        check!(round_trip_headers_key_id),
        check!(events_round_trip),
        check!(topic_isolation),
        check!(fan_out_two_groups, |c| c
            .single_group
            .then_some("point-to-point: a topic has one group")),
        check!(competing_consumers),
        check!(per_key_order, |c| (!c.ordered_per_key_single_consumer())
            .then_some("the backend declares no per-key ordering")),
        check!(per_key_order_across_nack, |c| (!(c.ordered_per_key_single_consumer()
            && c.ordering_across_nack))
            .then_some("the backend does not keep per-key order across a nack")),
        check!(batch_publish_order, |c| (!c.ordered_per_key_single_consumer())
            .then_some("the backend declares no per-key ordering")),
        check!(batch_publish_complete),
        check!(ack_is_final),
        check!(nack_redelivers_with_next_attempt),
        check!(nack_delay_respected, |c| (!c.nack_delay)
            .then_some("the backend cannot delay a redelivery")),
        check!(ack_timeout_redelivers, |c| (!c.ack_timeout_redelivery)
            .then_some("the backend does not redeliver on ack timeout")),
        check!(dropped_delivery_redelivered, |c| (!c.ack_timeout_redelivery)
            .then_some("the backend does not redeliver on ack timeout")),
        check!(crashed_consumer_loses_nothing, |c| (!c.ack_timeout_redelivery)
            .then_some("the backend does not redeliver on ack timeout")),
        check!(max_attempts_dead_letters, |c| (!c.dead_letter_ops)
            .then_some("the backend has no dead-letter operations")),
        check!(explicit_dead_letter, |c| (!c.dead_letter_ops)
            .then_some("the backend has no dead-letter operations")),
        check!(dead_letter_operations, |c| (!c.dead_letter_ops)
            .then_some("the backend has no dead-letter operations")),
        check!(offline_group_catches_up),
        check!(replay_for_new_group, |c| (!c.replay)
            .then_some("the backend cannot replay retained messages to a new group")),
        check!(oversize_rejected, |c| c
            .max_message_size
            .is_none()
            .then_some("the backend declares no message size limit")),
        check!(invalid_names_rejected),
        check!(concurrent_publishers),
        check!(graceful_shutdown_drains, |c| (!c.ack_timeout_redelivery)
            .then_some("the backend does not redeliver on ack timeout")),
        check!(runtime_retries_and_dead_letters, |c| (!c.dead_letter_ops)
            .then_some("the backend has no dead-letter operations")),
        check!(runtime_backoff_between_attempts, |c| (!c.nack_delay)
            .then_some("the backend cannot delay a redelivery")),
        check!(runtime_lease_extends_long_handler, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_breaker_holds_while_open, |c| (!c.extend).then_some(
            "the backend cannot extend a delivery, so held calls would time out"
        )),
        check!(runtime_idempotency_applies_once),
        check!(runtime_timeout_and_panic_are_transient),
        check!(runtime_follow_up_is_linked),
        check!(close_and_reopen_continues),
    ]
}
