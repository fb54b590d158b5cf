#![doc = include_str!("../docs.md")]
#![warn(missing_docs)]

mod backend;
mod backlog;
mod config;
mod core;
mod dead_letter_queue;
mod deletes;
mod names;
mod provision;
mod publisher;
mod settle;
mod subscriber;

pub use backend::SqsTransport;
pub use config::SqsConfig;

/// URL scheme and backend name.
pub const SCHEME: &str = "sqs";
