//! The broker-agnostic core: traits and types every backend implements, the
//! dead-letter model, typed events and the consumer runtime.
//!
//! Applications usually depend on the `transport` facade, which re-exports
//! this crate and opens a backend from a URL.
//!
//! Everything an application uses is at the crate root, plus three modules:
//! [`runtime`] (the consumer runtime and its middleware), [`headers`] (the
//! header names the library writes on every broker) and [`backend`] (the
//! toolkit for backend authors, which applications do not need).
//!
//! ```no_run
//! # async fn demo(transport: std::sync::Arc<dyn transport_core::Transport>) -> transport_core::Result<()> {
//! use futures::StreamExt;
//! use transport_core::{Message, SubscribeOptions};
//!
//! transport.publish("orders", Message::new("hello").with_key("order-1")).await?;
//! let mut sub = transport.subscribe("orders", SubscribeOptions::new("billing")).await?;
//! if let Some(delivery) = sub.next().await {
//!     let delivery = delivery?;
//!     println!("{} attempt {}", delivery.id(), delivery.attempt());
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod backend;
mod backlog;
mod capabilities;
mod dead_letter;
mod dead_letter_queue;
mod delivery;
mod delivery_info;
mod error;
mod event;
mod flow;
pub mod headers;
mod message;
mod names;
mod operation;
mod options;
mod received;
mod rfc3339;
pub mod runtime;
mod secret;
mod selection;
mod settle;
mod subscription;
pub mod telemetry;
pub mod tls;
mod topology;
mod transport;

pub use backlog::{Accuracy, Backlog, BacklogAccuracy};
pub use capabilities::{Capabilities, KeyOrdering};
pub use dead_letter::DeadLetter;
pub use dead_letter_queue::DeadLetterQueue;
pub use delivery::Delivery;
pub use delivery_info::DeliveryInfo;
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventError};
pub use message::{new_id, Headers, Message};
pub use names::MAX_NAME_LEN;
pub use operation::Operation;
pub use options::{DeadLetterPolicy, StartFrom, SubscribeOptions};
pub use received::Received;
pub use rfc3339::{format_time, parse_time};
pub use secret::{redact_url, Secret};
pub use selection::Selection;
pub use settle::{Outcome, Settlement};
pub use subscription::Subscription;
pub use topology::{BrokerObject, Topology};
pub use transport::{Publisher, Subscriber, Transport};

// Re-exported so backends and users agree on the versions.
pub use async_trait::async_trait;
pub use bytes::Bytes;
