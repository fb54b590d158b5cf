#![doc = include_str!("../docs.md")]
#![warn(missing_docs)]

mod backend;
mod config;
mod consumer;
mod core;
mod partition;

pub use backend::{KafkaBuilder, KafkaTransport};
pub use config::{KafkaConfig, SaslMechanism};

/// URL scheme and backend name (`kafka+ssl` is accepted for TLS).
pub const SCHEME: &str = "kafka";
