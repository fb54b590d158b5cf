//! Transactional outbox and durable idempotent consumers on PostgreSQL
//! (feature `postgres`) and SQLite (feature `sqlite`), through `sqlx`, for
//! any transport backend.
//!
//! - **Outbox**: [`Outbox::enqueue`] writes an outgoing message in the
//!   service's own transaction, next to the state change it announces; a
//!   [`Relay`] publishes committed rows with `publish_batch` and deletes
//!   them. At least once, in enqueue order per key, several relays at once,
//!   failing rows retried with backoff and then parked for an operator.
//! - **Idempotency**: [`SqlIdempotencyStore`] is an
//!   [`IdempotencyStore`](transport_core::runtime::IdempotencyStore) for the
//!   runtime's `IdempotencyLayer`; with the handler's writes in the
//!   transaction [`begin_once`](SqlIdempotencyStore::begin_once) opens (or
//!   [`mark_processed`](SqlIdempotencyStore::mark_processed) in its own),
//!   a handler's effect happens exactly once.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn demo() -> transport_core::Result<()> {
//! use std::sync::Arc;
//! use sqlx::Sqlite;
//! use transport_core::{Message, Transport};
//! use transport_sql::Outbox;
//!
//! # let transport: Arc<dyn Transport> = todo!();
//! let outbox = Outbox::<Sqlite>::connect("sqlite://orders.db").await?;
//! outbox.migrate().await?;
//!
//! // The state change and its event commit together.
//! let mut tx = outbox.pool().begin().await.expect("begin");
//! sqlx::query("INSERT INTO orders (id) VALUES (?)").bind("o-1").execute(&mut *tx).await.expect("insert");
//! outbox.enqueue(&mut tx, "orders", Message::new("order o-1 placed").with_key("o-1")).await?;
//! tx.commit().await.expect("commit");
//!
//! // In the same process (or as its own: `transport outbox relay`):
//! // publish what was committed, until told to stop.
//! let relay = outbox.relay(transport).spawn();
//! // ... at shutdown (the round in progress finishes first):
//! relay.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Errors are the library's [`Error`](transport_core::Error) with backend
//! `sql`: a database that does not answer or went away is `Timeout` or
//! `ConnectionLost` (retryable), a missing migration `NotFound`, refused
//! credentials `Unauthorized`.

#![warn(missing_docs)]

mod dialect;
mod error;
mod idempotency;
mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
mod relay;
#[cfg(feature = "sqlite")]
mod sqlite;
mod status;
mod table;

pub use dialect::Dialect;
pub use idempotency::{Mark, SqlIdempotencyStore, DEFAULT_PROCESSED_TABLE};
pub use outbox::{Outbox, DEFAULT_OUTBOX_TABLE};
pub use relay::{Relay, RelayStep, RunningRelay};
pub use status::{OutboxStatus, Parked};

/// sqlx, as this crate uses it: pools and transactions for the service's
/// own statements.
pub use sqlx;
#[cfg(feature = "postgres")]
pub use sqlx::Postgres;
#[cfg(feature = "sqlite")]
pub use sqlx::Sqlite;
