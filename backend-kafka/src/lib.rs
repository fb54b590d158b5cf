#![doc = include_str!("../docs.md")]
#![warn(missing_docs)]

mod backend;
mod backlog;
mod config;
mod core;
mod dead_letter_queue;
mod group;
mod partition;
mod provision;
mod publisher;
mod settle;
mod subscriber;

pub use backend::KafkaTransport;
pub use config::{KafkaConfig, SaslMechanism};
pub use core::TOMBSTONE;

/// URL scheme and backend name (`kafka+ssl` is accepted for TLS).
pub const SCHEME: &str = "kafka";
