//! The validation failure rate the playbooks graph and alert on: events a
//! router could not hand to a handler, by event type and failure.

use transport_core::runtime::Context;
use transport_core::telemetry::names::{DESTINATION, GROUP};

use crate::error::ContractError;

/// Counter: events a [`Router`](crate::Router) did not hand to a handler,
/// by [`EVENT_TYPE`] and [`FAILURE`] (`malformed`, `invalid`,
/// `not_an_event`, `unknown_type`, `unknown_version`), with the topic and
/// consumer group. Prometheus writes it
/// `transport_consumer_validation_failures_total`.
pub const VALIDATION_FAILURES: &str = "transport.consumer.validation.failures";
/// Attribute of [`VALIDATION_FAILURES`]: the event type, for routed types
/// (`unknown` otherwise, so foreign producers cannot grow the label set).
pub const EVENT_TYPE: &str = "transport.event.type";
/// Attribute of [`VALIDATION_FAILURES`]: the failure's
/// [`label`](ContractError::label).
pub const FAILURE: &str = transport_core::telemetry::names::FAILURE;

pub(crate) fn count_failure(ctx: &Context, event_type: Option<&str>, error: &ContractError) {
    metrics::counter!(
        VALIDATION_FAILURES,
        EVENT_TYPE => event_type.unwrap_or("unknown").to_owned(),
        FAILURE => error.label(),
        DESTINATION => ctx.topic().to_owned(),
        GROUP => ctx.group().to_owned(),
    )
    .increment(1);
}
