#![doc = include_str!("../docs.md")]
#![warn(missing_docs)]

mod acks;
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

pub use backend::RabbitTransport;
pub use config::RabbitConfig;

/// Backend name (URL schemes: `amqp`, `amqps`).
pub const SCHEME: &str = "rabbitmq";
