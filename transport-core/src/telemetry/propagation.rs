//! W3C Trace Context in message headers (`traceparent`, `tracestate`),
//! read and written through OpenTelemetry's span context: one trace from
//! the publishing service through the broker into the handler.

use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::message::Message;

/// Header carrying the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// Header carrying the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// Write `span`'s trace context into the message's headers (nothing when
/// the span is not recorded by OpenTelemetry).
pub fn inject(span: &tracing::Span, message: &mut Message) {
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() {
        return;
    }
    message.headers.insert(
        TRACEPARENT,
        format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()),
    );
    let state = sc.trace_state().header();
    if !state.is_empty() {
        message.headers.insert(TRACESTATE, state);
    }
}

/// The remote trace context a message carries, if its `traceparent` is
/// valid: the parent of the handler's `process` span.
pub fn extract(message: &Message) -> Option<Context> {
    let parts: Vec<&str> = message.headers.get(TRACEPARENT)?.trim().split('-').collect();
    let [version, trace, span, flags, rest @ ..] = parts.as_slice() else {
        return None;
    };
    let lower_hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    // Version ff is invalid; 00 has exactly four fields; later versions may add some.
    let version_ok = lower_hex(version, 2) && *version != "ff" && (*version != "00" || rest.is_empty());
    if !(version_ok && lower_hex(trace, 32) && lower_hex(span, 16) && lower_hex(flags, 2)) {
        return None;
    }
    let state = message
        .headers
        .get(TRACESTATE)
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    sc.is_valid().then(|| Context::new().with_remote_span_context(sc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(tp: &str) -> Message {
        Message::new("x").with_header(TRACEPARENT, tp)
    }

    #[test]
    fn valid_traceparent_is_read() {
        let m = with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .with_header(TRACESTATE, "congo=t61rcWkgMzE");
        let cx = extract(&m).expect("valid");
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for tp in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(extract(&with(tp)).is_none(), "{tp}");
        }
        assert!(extract(&Message::new("x")).is_none());
    }
}
