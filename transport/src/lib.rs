//! Broker-agnostic messaging for services: publish, subscribe, ack, nack and
//! dead-letter with the same meaning on every broker.
//!
//! Pick a broker with a cargo feature and a URL; `memory://` is always there.
//!
//! | scheme | feature | backend |
//! |---|---|---|
//! | `memory://` | (always) | `memory` |
//! | `redis://`, `rediss://`, `redis+cluster://` | `redis` | `redis` |
//! | `nats://`, `tls://` | `nats` | `nats` |
//! | `amqp://`, `amqps://` | `rabbitmq` | `rabbitmq` |
//! | `sqs://` | `sqs` | `sqs` |
//! | `kafka://`, `kafka+ssl://` | `kafka` | `kafka` |
//!
//! ```no_run
//! use futures::StreamExt;
//! use transport::{Message, SubscribeOptions};
//!
//! # async fn demo() -> transport::Result<()> {
//! let broker = transport::connect("memory://").await?;
//! let mut orders = broker.subscribe("orders", SubscribeOptions::new("billing")).await?;
//! broker.publish("orders", Message::new("order 1").with_key("customer-7")).await?;
//! while let Some(delivery) = orders.next().await {
//!     let delivery = delivery?;
//!     match std::str::from_utf8(delivery.payload()) {
//!         Ok(text) => { println!("got {text}"); delivery.ack().await? }
//!         Err(_) => delivery.dead_letter("payload is not UTF-8").await?,
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Every item of [`transport_core`] is re-exported here.
#![warn(missing_docs)]

mod connect;

pub use connect::{connect, register, schemes, Factory};
pub use transport_core::*;

/// The in-memory backend.
pub mod memory {
    pub use backend_memory::*;
}

/// The Kafka backend (feature `kafka`).
#[cfg(feature = "kafka")]
pub mod kafka {
    pub use backend_kafka::*;
}

/// The SQS + SNS backend (feature `sqs`).
#[cfg(feature = "sqs")]
pub mod sqs {
    pub use backend_sqs::*;
}

/// The RabbitMQ backend (feature `rabbitmq`).
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq {
    pub use backend_rabbitmq::*;
}

/// The NATS JetStream backend (feature `nats`).
#[cfg(feature = "nats")]
pub mod nats {
    pub use backend_nats::*;
}

/// The transactional outbox, its relay and the durable idempotency store
/// on PostgreSQL (feature `postgres`) and SQLite (feature `sqlite`).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod sql {
    pub use transport_sql::*;
}

/// Events as contracts (feature `contracts`): declared event types with
/// versions and schemas, checked at publish and consume, upcast from older
/// versions, and routed by type to typed handlers.
#[cfg(feature = "contracts")]
pub mod contracts {
    pub use transport_contracts::*;
}

/// The Redis Streams backend (feature `redis`).
#[cfg(feature = "redis")]
pub mod redis {
    pub use backend_redis::*;
}
