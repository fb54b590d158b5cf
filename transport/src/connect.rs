//! Opening a backend from a URL: the scheme picks the backend, the rest of
//! the URL configures it.

use std::sync::Arc;

use transport_core::{Error, ErrorKind, Result, Transport};

/// Every scheme this library knows, with the cargo feature that enables it.
const KNOWN: &[(&str, &str)] = &[
    ("memory", "(always on)"),
    ("redis", "redis"),
    ("rediss", "redis"),
    ("nats", "nats"),
    ("tls", "nats"),
    ("amqp", "rabbitmq"),
    ("amqps", "rabbitmq"),
    ("sqs", "sqs"),
    ("kafka", "kafka"),
    ("kafka+ssl", "kafka"),
];

/// The schemes compiled into this build.
pub fn schemes() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut out = vec!["memory"];
    #[cfg(feature = "redis")]
    out.extend(["redis", "rediss"]);
    #[cfg(feature = "nats")]
    out.extend(["nats", "tls"]);
    #[cfg(feature = "rabbitmq")]
    out.extend(["amqp", "amqps"]);
    #[cfg(feature = "sqs")]
    out.push("sqs");
    #[cfg(feature = "kafka")]
    out.extend(["kafka", "kafka+ssl"]);
    out
}

/// Connect to the broker `url` names, such as `memory://` or
/// `redis://127.0.0.1:6379`.
///
/// A scheme whose cargo feature is off, or an unknown scheme, is an
/// `Unsupported` error saying which feature to enable.
pub async fn connect(url: &str) -> Result<Arc<dyn Transport>> {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .ok_or_else(|| {
            Error::invalid("a transport URL looks like scheme://..., such as memory:// or redis://127.0.0.1:6379")
        })?;
    match scheme.as_str() {
        "memory" => Ok(Arc::new(backend_memory::MemoryTransport::from_url(url)?)),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Arc::new(backend_redis::RedisTransport::connect(url).await?)),
        #[cfg(feature = "nats")]
        "nats" | "tls" => Ok(Arc::new(backend_nats::NatsTransport::connect(url).await?)),
        #[cfg(feature = "rabbitmq")]
        "amqp" | "amqps" => Ok(Arc::new(backend_rabbitmq::RabbitTransport::connect(url).await?)),
        #[cfg(feature = "sqs")]
        "sqs" => Ok(Arc::new(backend_sqs::SqsTransport::connect(url).await?)),
        #[cfg(feature = "kafka")]
        "kafka" | "kafka+ssl" => Ok(Arc::new(backend_kafka::KafkaTransport::connect(url).await?)),
        other => Err(not_compiled(other)),
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
    Error::new(ErrorKind::Unsupported, message).with_operation("connect")
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
        assert!(e.to_string().contains("memory"), "{e}");
        assert_eq!(
            connect("no-scheme").await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
