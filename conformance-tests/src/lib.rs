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

mod checks;
mod edge_checks;
mod negative_checks;
mod ops_checks;
mod report;
mod runner;
mod runtime_checks;
#[cfg(feature = "stores")]
pub mod stores;
mod support;
pub mod throughput;

use std::sync::Arc;

use futures::future::BoxFuture;
use transport_core::{Capabilities, Transport};

pub use checks::*;
pub use edge_checks::*;
pub use negative_checks::*;
pub use ops_checks::*;
pub use report::{CheckRecord, CheckStatus, Report};
pub use runner::{async_case, run, run_check, run_trials, test_main, Case, KnownDefect, RunOptions};
pub use runtime_checks::*;
pub use support::{timing, unique, within_bounds, CheckFailure, CheckResult, Timing};

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

/// Every check, in a stable order. A check whose capability the backend
/// does not declare is skipped; for each such capability a negative check
/// proves the backend refuses the operation instead of faking it.
pub fn checks() -> Vec<Check> {
    const NO_DLQ: &str = "the backend has no dead-letter operations (dead_letters_unsupported proves it)";
    const NO_TIMEOUT: &str = "the backend does not redeliver on ack timeout";
    vec![
        check!(required_capabilities_declared, negative_checks::no_requirements),
        check!(round_trip_empty_payload),
        check!(round_trip_binary_payload),
        check!(round_trip_near_max_size),
        check!(round_trip_headers_key_id),
        check!(size_limit_is_exact, |c| c.max_message_size.is_none().then_some(
            "no size limit declared (large_messages_without_limit probes it)"
        )),
        check!(large_messages_without_limit, |c| c
            .max_message_size
            .is_some()
            .then_some(
                "the backend declares a size limit (size_limit_is_exact proves it)"
            )),
        check!(events_round_trip),
        check!(topic_isolation),
        check!(fan_out_two_groups, |c| c.single_group.then_some(
            "point-to-point: a topic has one group (second_group_refused proves it)"
        )),
        check!(second_group_refused, |c| (!c.single_group)
            .then_some("topics fan out to every group (fan_out_two_groups proves it)")),
        check!(competing_consumers),
        check!(max_in_flight_respected),
        check!(per_key_order, |c| (!c.ordered_per_key_single_consumer())
            .then_some("the backend declares no per-key ordering")),
        check!(per_key_order_across_nack, |c| (!(c.ordered_per_key_single_consumer()
            && c.ordering_across_nack))
            .then_some("the backend does not keep per-key order across a nack")),
        check!(per_key_order_across_delayed_nack, |c| (!(c
            .ordered_per_key_single_consumer()
            && c.ordering_across_nack
            && c.nack_delay))
            .then_some("the backend does not keep per-key order across a delayed nack")),
        check!(batch_publish_order, |c| (!c.ordered_per_key_single_consumer())
            .then_some("the backend declares no per-key ordering")),
        check!(batch_publish_complete),
        check!(ack_is_final),
        check!(nack_redelivers_with_next_attempt),
        check!(nack_delay_respected, |c| (!c.nack_delay).then_some(
            "the backend cannot delay a redelivery (nack_delay_unsupported proves it)"
        )),
        check!(nack_delay_unsupported, |c| c.nack_delay.then_some(
            "the backend delays redeliveries (nack_delay_respected proves it)"
        )),
        check!(ack_timeout_redelivers, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(dropped_delivery_redelivered, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(crashed_consumer_loses_nothing, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(stale_handle_cannot_settle, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(extend_holds_delivery, |c| (!(c.extend && c.ack_timeout_redelivery))
            .then_some(
                "the backend cannot extend a delivery (extend_unsupported proves it)"
            )),
        check!(extend_unsupported, |c| c.extend.then_some(
            "the backend extends deliveries (extend_holds_delivery proves it)"
        )),
        check!(max_attempts_dead_letters, |c| (!c.dead_letter_ops).then_some(NO_DLQ)),
        check!(unsettled_exhaustion_dead_letters, |c| (!(c.dead_letter_ops
            && c.ack_timeout_redelivery))
            .then_some("needs dead-letter operations and ack-timeout redelivery")),
        check!(redelivered_past_broker_limits, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(explicit_dead_letter, |c| (!c.dead_letter_ops).then_some(NO_DLQ)),
        check!(dead_letter_operations, |c| (!c.dead_letter_ops).then_some(NO_DLQ)),
        check!(dead_letter_queue_counts_many, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(dead_letters_by_selection, |c| (!c.dead_letter_ops).then_some(NO_DLQ)),
        check!(dead_letters_unsupported, |c| c.dead_letter_ops.then_some(
            "the backend has dead-letter operations (the dead-letter checks prove them)"
        )),
        check!(backlog_tracks_the_group, |c| (c.backlog == Default::default())
            .then_some("the backend reads no backlog from the broker")),
        check!(backlog_tells_held_from_waiting, |c| (c.backlog == Default::default())
            .then_some("the backend reads no backlog from the broker")),
        check!(offline_group_catches_up),
        check!(replay_for_new_group, |c| (!c.replay).then_some(
            "the backend cannot replay retained messages to a new group (earliest_without_replay_refused proves it)"
        )),
        check!(earliest_without_replay_refused, |c| c
            .replay
            .then_some("the backend replays (replay_for_new_group proves it)")),
        check!(oversize_rejected, |c| c.max_message_size.is_none().then_some(
            "no size limit declared (large_messages_without_limit probes it)"
        )),
        check!(invalid_names_rejected),
        check!(concurrent_publishers),
        check!(graceful_shutdown_drains, |c| (!c.ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(runtime_retries_and_dead_letters, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(runtime_backoff_between_attempts, |c| (!c.nack_delay)
            .then_some("the backend cannot delay a redelivery")),
        check!(runtime_lease_extends_long_handler, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_breaker_holds_while_open, |c| (!c.extend).then_some(
            "the backend cannot extend a delivery, so held calls would time out"
        )),
        check!(runtime_idempotency_applies_once),
        check!(runtime_layers_pass_readiness_through),
        check!(runtime_timeout_and_panic_are_transient),
        check!(runtime_follow_up_is_linked),
        check!(runtime_keys_run_one_at_a_time_in_order),
        check!(runtime_concurrency_is_bounded),
        check!(runtime_waiting_deliveries_keep_their_lease, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_waited_delivery_starts_with_a_fresh_lease, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_lease_gives_up_after_max_total, |c| (!(c.extend
            && c.ack_timeout_redelivery))
            .then_some("the backend cannot extend a delivery")),
        check!(runtime_retry_delays_follow_the_policy),
        check!(runtime_timeout_cuts_off_at_its_limit),
        check!(runtime_panic_in_call_is_caught_and_counted),
        check!(runtime_breaker_ignores_permanent_failures, |c| (!c.dead_letter_ops)
            .then_some(NO_DLQ)),
        check!(runtime_idempotency_releases_a_failed_claim),
        check!(runtime_shutdown_leaves_queued_deliveries, |c| (!c
            .ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(runtime_redelivered_key_waits_for_the_running_call, |c| (!c
            .ack_timeout_redelivery)
            .then_some(NO_TIMEOUT)),
        check!(runtime_breaker_held_call_lets_shutdown_go),
        check!(runtime_idempotency_groups_are_independent, |c| c
            .single_group
            .then_some("point-to-point: a topic has one group")),
        check!(close_and_reopen_continues),
    ]
}
