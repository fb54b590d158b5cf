#![doc = include_str!("../docs.md")]
#![warn(missing_docs)]

mod backend;
mod backlog;
mod config;
mod core;
mod dead_letter_queue;
mod idempotency;
mod names;
mod provision;
mod publisher;
mod settle;
mod subscriber;

pub use backend::RedisTransport;
pub use config::RedisConfig;
pub use idempotency::RedisIdempotencyStore;

/// URL scheme and backend name (`rediss` is accepted for TLS).
pub const SCHEME: &str = "redis";
