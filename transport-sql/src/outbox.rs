//! The outbox table: messages written in the service's own transaction,
//! published later by a [`Relay`](crate::Relay).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use std::time::Duration;

use sqlx::Pool;
use tracing::Instrument;
use transport_core::{Error, ErrorKind, Message, Result, Selection};

use crate::dialect::sealed::NewRow;
use crate::dialect::{outbox_probe, Dialect};
use crate::status::{OutboxStatus, Parked};
use crate::table::TableName;

/// The default outbox table.
pub const DEFAULT_OUTBOX_TABLE: &str = "transport_outbox";

/// A transactional outbox in a PostgreSQL or SQLite database.
///
/// [`enqueue`](Self::enqueue) writes a message with the service's own
/// transaction, so the state change and the event commit or roll back
/// together; a [`Relay`](crate::Relay) publishes committed rows. Cheap to clone.
pub struct Outbox<DB: Dialect> {
    pub(crate) pool: Pool<DB>,
    pub(crate) table: TableName,
    pub(crate) timeout: Duration,
}

impl<DB: Dialect> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Outbox {
            pool: self.pool.clone(),
            table: self.table.clone(),
            timeout: self.timeout,
        }
    }
}

// Not derived: the pool's connect options hold the password.
impl<DB: Dialect> fmt::Debug for Outbox<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("database", &DB::SYSTEM)
            .field("table", &self.table.as_str())
            .finish_non_exhaustive()
    }
}

impl<DB: Dialect> Outbox<DB> {
    /// An outbox on the service's pool, in table `transport_outbox`.
    pub fn new(pool: Pool<DB>) -> Self {
        Outbox {
            pool,
            table: TableName::new(DEFAULT_OUTBOX_TABLE).expect("the default table name is an identifier"),
            timeout: Duration::from_secs(10),
        }
    }

    /// Open a pool of up to 10 connections to `url` (`postgres://…` or
    /// `sqlite://path`; a SQLite file is created if missing). Fails within
    /// 5 s when the database does not answer.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Outbox::new(DB::connect(url, 10, Duration::from_secs(5)).await?))
    }

    /// Use table `name` (letters, digits, `_`; PostgreSQL also `schema.table`).
    pub fn with_table(mut self, name: &str) -> Result<Self> {
        let table = TableName::new(name)?;
        DB::check_table_name(&table)?;
        self.table = table;
        Ok(self)
    }

    /// How long one statement of the relay and of the operations below may
    /// take before it fails with `Timeout` (10 s).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The pool, for the service's own transactions.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        self.table.as_str()
    }

    /// The statements [`migrate`](Self::migrate) runs, for services that
    /// apply schema changes with their own migration tool.
    pub fn migration_sql(&self) -> Vec<String> {
        DB::outbox_migration(&self.table)
    }

    /// Create the table and its indexes if they do not exist (safe to run
    /// from several processes at once).
    pub async fn migrate(&self) -> Result<()> {
        self.bounded(DB::migrate(&self.pool, &self.table, &self.migration_sql()))
            .await
    }

    /// `NotFound` (not retryable) when the table or one of its columns is
    /// missing: the migration has not run.
    pub async fn check(&self) -> Result<()> {
        self.bounded(DB::probe(&self.pool, &self.table, &outbox_probe(&self.table)))
            .await
    }

    /// Write `message` for `topic` with `conn`, the service's transaction
    /// (`&mut tx`): it is published only if that transaction commits. The
    /// message id (a UUIDv7 unless set) is the row's id, and the id the
    /// message is published with, so brokers that deduplicate publishes
    /// absorb a relay's retries.
    ///
    /// Messages of one key are published in the order their transactions
    /// inserted them; enqueue after the state change the message announces,
    /// so that the row lock on that state orders concurrent transactions.
    ///
    /// With the `otel` feature the message carries the trace context of a
    /// `create <topic>` span, child of the caller's span: the consumer's
    /// `process` span joins the request's trace, not the relay's.
    pub async fn enqueue(&self, conn: &mut DB::Connection, topic: &str, message: Message) -> Result<()> {
        if topic.is_empty() {
            return Err(Error::invalid("topic name must not be empty"));
        }
        message.validate()?;
        let span = tracing::info_span!(
            "create",
            otel.name = format!("create {topic}"),
            otel.kind = "producer",
            messaging.operation.type = "create",
            messaging.destination.name = topic,
            messaging.message.id = message.id.as_str(),
        );
        #[cfg(feature = "otel")]
        let message = {
            let mut message = message;
            if !message
                .headers
                .contains(transport_core::telemetry::propagation::TRACEPARENT)
            {
                transport_core::telemetry::propagation::inject(&span, &mut message);
            }
            message
        };
        self.insert(conn, topic, message).instrument(span).await
    }

    async fn insert(&self, conn: &mut DB::Connection, topic: &str, message: Message) -> Result<()> {
        let headers: BTreeMap<&str, &str> = message.headers.iter().collect();
        let row = NewRow {
            id: &message.id,
            topic,
            key: message.key.as_deref(),
            headers: serde_json::to_string(&headers).expect("string maps encode as JSON"),
            payload: &message.payload,
        };
        DB::enqueue(conn, &self.table, row).await
    }

    /// Counts and the oldest pending row's age.
    pub async fn status(&self) -> Result<OutboxStatus> {
        self.bounded(DB::status(&self.pool, &self.table)).await
    }

    /// Up to `limit` parked rows, oldest first.
    pub async fn parked(&self, limit: usize) -> Result<Vec<Parked>> {
        let rows = self
            .bounded(DB::parked(
                &self.pool,
                &self.table,
                i64::try_from(limit).unwrap_or(i64::MAX),
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Parked {
                id: r.id,
                topic: r.topic,
                key: r.key,
                attempts: u32::try_from(r.attempts).unwrap_or(0),
                error_kind: r.kind,
                error: r.error,
                enqueued_at: r.created_at,
                parked_at: r.parked_at,
            })
            .collect())
    }

    /// Put the parked rows `selection` picks (by id, error text, parking
    /// time) back for the relay, with fresh attempts. How many.
    pub async fn retry(&self, selection: &Selection) -> Result<u64> {
        let seqs = self.select_parked(selection).await?;
        self.bounded(DB::unpark(&self.pool, &self.table, &seqs)).await
    }

    /// Delete the parked rows `selection` picks. How many.
    pub async fn discard(&self, selection: &Selection) -> Result<u64> {
        let seqs = self.select_parked(selection).await?;
        self.bounded(DB::discard(&self.pool, &self.table, &seqs)).await
    }

    async fn select_parked(&self, selection: &Selection) -> Result<Vec<i64>> {
        let rows = self.bounded(DB::parked(&self.pool, &self.table, i64::MAX)).await?;
        Ok(rows
            .into_iter()
            .filter(|r| selection.picks(&r.id, r.error.as_deref(), Some(r.parked_at)))
            .map(|r| r.seq)
            .collect())
    }

    /// `operation`, failing with `Timeout` after the statement timeout.
    pub(crate) async fn bounded<T>(&self, operation: impl Future<Output = Result<T>>) -> Result<T> {
        bounded(self.timeout, operation).await
    }
}

/// `operation`, failing with a retryable `Timeout` after `timeout`: a
/// database that stops answering must not hang the relay or a consumer.
pub(crate) async fn bounded<T>(timeout: Duration, operation: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(timeout, operation).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!("the database did not answer within {timeout:?}"),
        )
        .with_backend(crate::error::BACKEND)),
    }
}
