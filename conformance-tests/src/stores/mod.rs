//! The store suite: what every idempotency store and every outbox must do,
//! as public check functions run against each real store (PostgreSQL,
//! SQLite, Redis, memory) by `tests/stores.rs`, which writes
//! `target/conformance/<suite>-<store>.json` like the conformance suite.
//!
//! One file per store kind: `idempotency.rs`, `outbox.rs` (with the
//! fault-injecting transport it needs in `faulty.rs`).

mod faulty;
mod idempotency;
mod outbox;

pub use faulty::Faulty;
pub use idempotency::*;
pub use outbox::*;

use crate::support::CheckFailure;

fn sql(e: transport_sql::sqlx::Error) -> CheckFailure {
    CheckFailure(format!("database error: {e}"))
}
