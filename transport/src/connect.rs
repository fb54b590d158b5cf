//! Opening a backend from a URL: one table maps each scheme to the factory
//! that opens it; the rest of the URL configures the backend. Third-party
//! backends join the table with [`register`].

use std::sync::{Arc, OnceLock, RwLock};

use futures::future::BoxFuture;
use transport_core::{Error, ErrorKind, Operation, Result, Transport};

/// Opens a transport from a URL of its scheme.
pub type Factory = Arc<dyn Fn(&str) -> BoxFuture<'static, Result<Arc<dyn Transport>>> + Send + Sync>;

/// Every scheme this library ships, with the cargo feature that enables it
/// (for the error when it is not compiled in).
const KNOWN: &[(&str, &str)] = &[
    ("memory", "(always on)"),
    ("redis", "redis"),
    ("rediss", "redis"),
    ("redis+cluster", "redis"),
    ("rediss+cluster", "redis"),
    ("nats", "nats"),
    ("tls", "nats"),
    ("amqp", "rabbitmq"),
    ("amqps", "rabbitmq"),
    ("sqs", "sqs"),
    ("kafka", "kafka"),
    ("kafka+ssl", "kafka"),
];

fn factory<F, Fut>(open: F) -> Factory
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Arc<dyn Transport>>> + Send + 'static,
{
    Arc::new(move |url: &str| Box::pin(open(url.to_owned())))
}

/// The backends compiled into this build, by scheme.
fn builtin() -> Vec<(String, Factory)> {
    // `mut` is unused when no broker feature is on.
    #[allow(unused_mut)]
    let mut table: Vec<(&str, Factory)> = vec![(
        "memory",
        factory(|url: String| async move { backend_memory::MemoryTransport::from_url(&url) }),
    )];
    #[cfg(feature = "redis")]
    for scheme in ["redis", "rediss", "redis+cluster", "rediss+cluster"] {
        table.push((
            scheme,
            factory(|url: String| async move { backend_redis::RedisTransport::connect(&url).await }),
        ));
    }
    #[cfg(feature = "nats")]
    for scheme in ["nats", "tls"] {
        table.push((
            scheme,
            factory(|url: String| async move { backend_nats::NatsTransport::connect(&url).await }),
        ));
    }
    #[cfg(feature = "rabbitmq")]
    for scheme in ["amqp", "amqps"] {
        table.push((
            scheme,
            factory(|url: String| async move { backend_rabbitmq::RabbitTransport::connect(&url).await }),
        ));
    }
    #[cfg(feature = "sqs")]
    table.push((
        "sqs",
        factory(|url: String| async move { backend_sqs::SqsTransport::connect(&url).await }),
    ));
    #[cfg(feature = "kafka")]
    for scheme in ["kafka", "kafka+ssl"] {
        table.push((
            scheme,
            factory(|url: String| async move { backend_kafka::KafkaTransport::connect(&url).await }),
        ));
    }
    table.into_iter().map(|(s, f)| (s.to_owned(), f)).collect()
}

fn registry() -> &'static RwLock<Vec<(String, Factory)>> {
    static REGISTRY: OnceLock<RwLock<Vec<(String, Factory)>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(builtin()))
}

/// The schemes [`connect`] opens in this build: the compiled-in backends
/// and every registered one.
pub fn schemes() -> Vec<String> {
    let table = registry().read().unwrap_or_else(|e| e.into_inner());
    table.iter().map(|(s, _)| s.clone()).collect()
}

/// Make [`connect`] open `scheme://...` URLs with `open` (a third-party
/// backend, or a wrapper around a built-in one). Replaces what the scheme
/// opened before. A third-party backend implements
/// [`RawTransport`](transport_core::backend::RawTransport) and returns
/// [`backend::transport`](transport_core::backend::transport)`(raw)`, so it
/// gets the validation, error context and telemetry every built-in backend has. A scheme is lowercase letters, digits, `+`, `-` or `.`,
/// starting with a letter.
///
/// ```no_run
/// # async fn demo() -> transport::Result<()> {
/// use transport::memory::MemoryTransport;
///
/// transport::register("test", |url: String| async move { MemoryTransport::from_url(&url.replacen("test", "memory", 1)) })?;
/// let broker = transport::connect("test://").await?;
/// # Ok(()) }
/// ```
pub fn register<F, Fut>(scheme: &str, open: F) -> Result<()>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Arc<dyn Transport>>> + Send + 'static,
{
    let valid = scheme.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return Err(Error::invalid(format!(
            "{scheme:?} is not a URL scheme (lowercase letters, digits, '+', '-', '.')"
        ))
        .with_operation(Operation::Register));
    }
    let mut table = registry().write().unwrap_or_else(|e| e.into_inner());
    let open = factory(open);
    match table.iter_mut().find(|(s, _)| s == scheme) {
        Some(entry) => entry.1 = open,
        None => table.push((scheme.to_owned(), open)),
    }
    Ok(())
}

/// Connect to the broker `url` names, such as `memory://` or
/// `redis://127.0.0.1:6379`.
///
/// A scheme whose cargo feature is off, or an unknown scheme, is an
/// `Unsupported` error that names the feature to enable and lists the
/// schemes compiled in.
pub async fn connect(url: &str) -> Result<Arc<dyn Transport>> {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .ok_or_else(|| {
            Error::invalid("a transport URL looks like scheme://..., such as memory:// or redis://127.0.0.1:6379")
                .with_operation(Operation::Connect)
        })?;
    let open = {
        let table = registry().read().unwrap_or_else(|e| e.into_inner());
        table.iter().find(|(s, _)| *s == scheme).map(|(_, f)| f.clone())
    };
    match open {
        Some(open) => open(url).await,
        None => Err(not_compiled(&scheme)),
    }
}

fn not_compiled(scheme: &str) -> Error {
    let compiled = schemes().join(", ");
    let message = match KNOWN.iter().find(|(s, _)| *s == scheme) {
        Some((_, feature)) => format!(
            "the {scheme}:// backend is not compiled in: enable the `{feature}` feature of the transport crate (compiled in: {compiled})"
        ),
        None => format!("unknown URL scheme {scheme}:// (compiled in: {compiled})"),
    };
    Error::new(ErrorKind::Unsupported, message).with_operation(Operation::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_always_connects_and_unknown_schemes_are_unsupported() {
        let t = connect("memory://").await.unwrap();
        assert_eq!(t.backend(), "memory");
        let e = connect("bogus://x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("compiled in: memory"), "{e}");
        assert_eq!(
            connect("no-scheme").await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[tokio::test]
    async fn registered_schemes_connect_and_are_listed() {
        register("unit-test", |url: String| async move {
            backend_memory::MemoryTransport::from_url(&url.replacen("unit-test", "memory", 1))
        })
        .unwrap();
        assert!(schemes().iter().any(|s| s == "unit-test"));
        assert_eq!(connect("unit-test://").await.unwrap().backend(), "memory");
        assert_eq!(
            register("Bad Scheme", |url: String| async move {
                backend_memory::MemoryTransport::from_url(&url)
            })
            .unwrap_err()
            .kind(),
            ErrorKind::InvalidArgument
        );
    }
}
