//! What differs between databases, behind one sealed trait: each database
//! module (`postgres.rs`, `sqlite.rs`) implements every statement; the
//! outbox, relay and idempotency store above it are written once.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::Pool;
use transport_core::runtime::Claim;
use transport_core::Result;

use crate::status::OutboxStatus;
use crate::table::TableName;

/// A database the outbox and the idempotency store run on:
/// [`sqlx::Postgres`] (feature `postgres`) or [`sqlx::Sqlite`] (feature
/// `sqlite`). Sealed: its statements are this crate's.
pub trait Dialect: sealed::Statements {}

pub(crate) mod sealed {
    use super::*;

    /// One outbox row as the relay claims it.
    #[derive(Debug)]
    pub struct Claimed {
        pub seq: i64,
        pub id: String,
        pub topic: String,
        pub key: Option<String>,
        pub headers: String,
        pub payload: Vec<u8>,
        pub attempts: i32,
    }

    /// One row to insert.
    pub struct NewRow<'a> {
        pub id: &'a str,
        pub topic: &'a str,
        pub key: Option<&'a str>,
        pub headers: String,
        pub payload: &'a [u8],
    }

    /// A failed publish of one row: retried after `retry_in`, or parked
    /// when `retry_in` is `None`.
    pub struct Failure<'a> {
        pub seq: i64,
        pub attempts: i32,
        pub kind: &'a str,
        pub error: &'a str,
        pub retry_in: Option<Duration>,
    }

    /// A parked row, for listing and selecting.
    pub struct ParkedRow {
        pub seq: i64,
        pub id: String,
        pub topic: String,
        pub key: Option<String>,
        pub attempts: i32,
        pub kind: Option<String>,
        pub error: Option<String>,
        pub created_at: SystemTime,
        pub parked_at: SystemTime,
    }

    #[async_trait]
    pub trait Statements: sqlx::Database + Sized {
        /// For errors and logs.
        const SYSTEM: &'static str;

        fn check_table_name(_name: &TableName) -> Result<()> {
            Ok(())
        }
        async fn connect(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<Pool<Self>>;

        fn outbox_migration(t: &TableName) -> Vec<String>;
        fn idempotency_migration(t: &TableName) -> Vec<String>;
        /// Run `statements` once even when several processes migrate at once.
        async fn migrate(pool: &Pool<Self>, t: &TableName, statements: &[String]) -> Result<()>;
        /// Run `sql` (a probe of `t`'s columns); `NotFound` when the table
        /// or one of its columns is missing.
        async fn probe(pool: &Pool<Self>, t: &TableName, sql: &str) -> Result<()>;

        async fn enqueue(conn: &mut Self::Connection, t: &TableName, row: NewRow<'_>) -> Result<()>;
        /// Lease up to `limit` publishable rows to `owner`, in `seq` order.
        async fn claim(
            pool: &Pool<Self>,
            t: &TableName,
            owner: &str,
            limit: i64,
            lease: Duration,
        ) -> Result<Vec<Claimed>>;
        async fn delete(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<()>;
        async fn release(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<()>;
        async fn fail(pool: &Pool<Self>, t: &TableName, failure: &Failure<'_>) -> Result<()>;
        async fn status(pool: &Pool<Self>, t: &TableName) -> Result<OutboxStatus>;
        async fn parked(pool: &Pool<Self>, t: &TableName, limit: i64) -> Result<Vec<ParkedRow>>;
        /// Back to pending with fresh attempts; how many were parked.
        async fn unpark(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<u64>;
        async fn discard(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<u64>;

        async fn claim_key(pool: &Pool<Self>, t: &TableName, group: &str, id: &str, lease: Duration) -> Result<Claim>;
        async fn complete_key(pool: &Pool<Self>, t: &TableName, group: &str, id: &str, ttl: Duration) -> Result<()>;
        async fn release_key(pool: &Pool<Self>, t: &TableName, group: &str, id: &str) -> Result<()>;
        /// Mark done inside the caller's transaction; false if it was done already.
        async fn mark_done(
            conn: &mut Self::Connection,
            t: &TableName,
            group: &str,
            id: &str,
            ttl: Duration,
        ) -> Result<bool>;
        /// Delete up to 1000 expired keys.
        async fn purge_expired(pool: &Pool<Self>, t: &TableName) -> Result<u64>;
    }
}

/// Selects every column of the outbox table and no row: fails when the
/// migration has not run (or an older one did).
pub(crate) fn outbox_probe(t: &TableName) -> String {
    format!(
        "SELECT seq, id, topic, msg_key, headers, payload, created_at, attempts, next_attempt_at, \
         lease_owner, lease_until, error_kind, last_error, parked_at FROM {t} LIMIT 0"
    )
}

/// The same for the table of processed ids.
pub(crate) fn idempotency_probe(t: &TableName) -> String {
    format!("SELECT consumer_group, message_id, done, expires_at FROM {t} LIMIT 0")
}

/// Milliseconds of a duration, saturating, for SQL parameters.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A time given in milliseconds since the Unix epoch.
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A stable 64-bit FNV-1a hash, for advisory lock keys derived from table names.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn lock_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}
