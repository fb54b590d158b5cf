//! The durable idempotency store: "this message was processed" kept in the
//! service's database, written in the same transaction as the handler's
//! own writes, which makes the handler's effect happen once.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{Pool, Transaction};
use transport_core::async_trait;
use transport_core::runtime::{Claim, Context, IdempotencyStore};
use transport_core::Result;

use crate::dialect::{idempotency_probe, Dialect};
use crate::error::db_error;
use crate::outbox::bounded;
use crate::table::TableName;

/// The default table of processed message ids.
pub const DEFAULT_PROCESSED_TABLE: &str = "transport_processed";

/// Whether [`SqlIdempotencyStore::mark_processed`] recorded the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "on AlreadyProcessed the transaction must not apply its effect"]
pub enum Mark {
    /// First time: apply the effect and commit.
    Marked,
    /// Another transaction processed it: roll back and acknowledge.
    AlreadyProcessed,
}

/// An [`IdempotencyStore`] in a PostgreSQL or SQLite table, for
/// [`IdempotencyLayer`](transport_core::runtime::IdempotencyLayer).
///
/// Used alone it deduplicates redeliveries (at-least-once effects become
/// once, unless the consumer dies between its effect and `complete`). For
/// an exactly-once effect, the handler calls
/// [`mark_processed`](Self::mark_processed) in its own transaction before
/// writing: the mark and the effect commit together, and a duplicate,
/// even one processed at the same moment by another consumer, finds the
/// mark and changes nothing.
pub struct SqlIdempotencyStore<DB: Dialect> {
    pool: Pool<DB>,
    table: TableName,
    ttl: Duration,
    timeout: Duration,
    ops: AtomicU64,
}

impl<DB: Dialect> fmt::Debug for SqlIdempotencyStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlIdempotencyStore")
            .field("database", &DB::SYSTEM)
            .field("table", &self.table.as_str())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<DB: Dialect> SqlIdempotencyStore<DB> {
    /// A store on the service's pool, in table `transport_processed`, keys
    /// marked in transactions kept 7 days.
    pub fn new(pool: Pool<DB>) -> Self {
        SqlIdempotencyStore {
            pool,
            table: TableName::new(DEFAULT_PROCESSED_TABLE).expect("the default table name is an identifier"),
            ttl: Duration::from_secs(7 * 24 * 3600),
            timeout: Duration::from_secs(10),
            ops: AtomicU64::new(0),
        }
    }

    /// Open a pool to `url` (see [`Outbox::connect`](crate::Outbox::connect)).
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(SqlIdempotencyStore::new(
            DB::connect(url, 10, Duration::from_secs(5)).await?,
        ))
    }

    /// Use table `name`.
    pub fn with_table(mut self, name: &str) -> Result<Self> {
        let table = TableName::new(name)?;
        DB::check_table_name(&table)?;
        self.table = table;
        Ok(self)
    }

    /// How long [`mark_processed`](Self::mark_processed) remembers a key
    /// (the layer's `complete` uses the layer's own TTL).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long one statement may take before it fails with `Timeout` (10 s).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// The statements [`migrate`](Self::migrate) runs.
    pub fn migration_sql(&self) -> Vec<String> {
        DB::idempotency_migration(&self.table)
    }

    /// Create the table if it does not exist.
    pub async fn migrate(&self) -> Result<()> {
        bounded(
            self.timeout,
            DB::migrate(&self.pool, &self.table, &self.migration_sql()),
        )
        .await
    }

    /// `NotFound` when the migration has not run.
    pub async fn check(&self) -> Result<()> {
        bounded(
            self.timeout,
            DB::probe(&self.pool, &self.table, &idempotency_probe(&self.table)),
        )
        .await
    }

    /// Record `(group, id)` as processed with `conn`, the handler's
    /// transaction, before it writes its effect. On
    /// [`Mark::AlreadyProcessed`] roll back (drop the transaction) and
    /// acknowledge. In PostgreSQL a concurrent duplicate waits here until
    /// the first transaction ends.
    pub async fn mark_processed(&self, conn: &mut DB::Connection, group: &str, id: &str) -> Result<Mark> {
        let marked = DB::mark_done(conn, &self.table, group, id, self.ttl).await?;
        Ok(if marked { Mark::Marked } else { Mark::AlreadyProcessed })
    }

    /// [`mark_processed`](Self::mark_processed) for the message being
    /// handled (its group and id; use `mark_processed` with the same key if
    /// the layer derives keys with `key_with`).
    pub async fn mark_context(&self, conn: &mut DB::Connection, ctx: &Context) -> Result<Mark> {
        self.mark_processed(conn, ctx.group(), ctx.id()).await
    }

    /// A transaction on the store's pool with the message being handled
    /// already marked in it: `Some(tx)` the first time (write the effect in
    /// `tx`, then commit), `None` when it was processed before (acknowledge
    /// and write nothing). [`mark_context`](Self::mark_context) in one call,
    /// for handlers whose effect lives in the store's database.
    pub async fn begin_once(&self, ctx: &Context) -> Result<Option<Transaction<'static, DB>>> {
        let begin = async { (self.pool.begin().await).map_err(|e| db_error(e, "begin", self.table.as_str())) };
        let mut tx = bounded(self.timeout, begin).await?;
        Ok(match self.mark_context(&mut tx, ctx).await? {
            Mark::Marked => Some(tx),
            Mark::AlreadyProcessed => None,
        })
    }

    /// Delete up to 1000 expired keys; how many. Claims run it every 1024
    /// calls, so the table stays as large as the TTL keeps it.
    pub async fn purge_expired(&self) -> Result<u64> {
        bounded(self.timeout, DB::purge_expired(&self.pool, &self.table)).await
    }
}

#[async_trait]
impl<DB: Dialect> IdempotencyStore for SqlIdempotencyStore<DB> {
    async fn claim(&self, group: &str, id: &str, lease: Duration) -> Result<Claim> {
        if self.ops.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            if let Err(e) = self.purge_expired().await {
                tracing::warn!(error = %e, table = self.table.as_str(), "purging expired idempotency keys failed");
            }
        }
        bounded(self.timeout, DB::claim_key(&self.pool, &self.table, group, id, lease)).await
    }

    async fn complete(&self, group: &str, id: &str, ttl: Duration) -> Result<()> {
        bounded(self.timeout, DB::complete_key(&self.pool, &self.table, group, id, ttl)).await
    }

    async fn release(&self, group: &str, id: &str) -> Result<()> {
        bounded(self.timeout, DB::release_key(&self.pool, &self.table, group, id)).await
    }
}
