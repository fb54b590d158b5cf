//! Spans the library opens, recorded through OpenTelemetry's in-memory
//! exporter (feature `otel`).

use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// Spans recorded through OpenTelemetry's in-memory exporter, from this
/// thread's tracing while it lives.
pub struct Recorder {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Recorder {
    pub fn start() -> Recorder {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);
        Recorder {
            exporter,
            provider,
            _guard,
        }
    }

    /// Every span finished so far.
    pub fn spans(&self) -> Vec<SpanData> {
        let _ = self.provider.force_flush();
        self.exporter.get_finished_spans().expect("spans")
    }

    /// The finished spans once one named with each of `prefixes` is among
    /// them, waiting up to 10 s: a span is exported when its last handle
    /// drops, which can be after the code that opened it returned (a task
    /// or another thread still holds a handle). Sleeping, not blocking, lets
    /// this runtime's other tasks finish and drop theirs.
    pub async fn spans_with(&self, prefixes: &[&str]) -> Vec<SpanData> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans();
            let all_there = prefixes.iter().all(|p| spans.iter().any(|s| s.name.starts_with(p)));
            if all_there || Instant::now() > deadline {
                // Past the deadline `named` says which one is missing.
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The first span whose name starts with `prefix`.
pub fn named<'a>(spans: &'a [SpanData], prefix: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name.starts_with(prefix)).unwrap_or_else(|| {
        panic!(
            "no span {prefix:?} among {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}
