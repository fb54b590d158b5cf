//! Operating the library: metrics through the `metrics` facade, spans
//! through `tracing`, and (feature `otel`) W3C trace context carried in
//! message headers through OpenTelemetry, all named after OpenTelemetry's
//! messaging semantic conventions ([`names`]).
//!
//! `metrics` rather than OpenTelemetry metrics: a facade that costs nothing
//! until the application installs a recorder, with Prometheus, StatsD and
//! OpenTelemetry exporters to choose from, and no SDK in the library's
//! dependencies.

pub mod names;
#[cfg(feature = "otel")]
pub mod propagation;
mod publish;

pub(crate) use publish::{traced, PublishMetrics};
