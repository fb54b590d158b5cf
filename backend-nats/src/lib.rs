#![doc = include_str!("../docs.md")]
#![warn(missing_docs)]

mod backend;
mod backlog;
mod config;
mod core;
mod dead_letter_queue;
mod names;
mod provision;
mod publisher;
mod settle;
mod subscriber;

pub use backend::NatsTransport;
pub use config::{NatsConfig, Storage};

/// URL scheme and backend name (`tls` is accepted for TLS).
pub const SCHEME: &str = "nats";
