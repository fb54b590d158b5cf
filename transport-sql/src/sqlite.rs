//! SQLite statements. SQLite runs one writer at a time, so a claim is one
//! `UPDATE … RETURNING` statement: the lease it writes is the lock. Times
//! are this process's clock in milliseconds (the database is embedded: the
//! relays sharing it run on this host).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite, SqliteConnection};
use transport_core::runtime::Claim;
use transport_core::{Error, Result};

use crate::dialect::sealed::{Claimed, Failure, NewRow, ParkedRow, Statements};
use crate::dialect::{from_millis, millis, Dialect};
use crate::error::{db_error, enqueue_error};
use crate::status::OutboxStatus;
use crate::table::TableName;

impl Dialect for Sqlite {}

type ClaimedRow = (i64, String, String, Option<String>, String, Vec<u8>, i32);
type ParkedTuple = (
    i64,
    String,
    String,
    Option<String>,
    i32,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, millis)
}

/// Sequence numbers as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn seq_list(seqs: &[i64]) -> String {
    serde_json::to_string(seqs).unwrap_or_else(|_| "[]".to_owned())
}

#[async_trait]
impl Statements for Sqlite {
    const SYSTEM: &'static str = "sqlite";

    fn check_table_name(name: &TableName) -> Result<()> {
        if name.as_str().contains('.') {
            return Err(Error::invalid(format!(
                "table name {name}: SQLite tables of the outbox and idempotency store are not schema-qualified"
            )));
        }
        Ok(())
    }

    async fn connect(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<Pool<Self>> {
        // WAL: readers do not block the writer; NORMAL sync loses nothing
        // a crashed process committed. The busy timeout makes concurrent
        // writers (a relay, the service's transactions) wait instead of failing.
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| db_error(e, "connect", ""))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| db_error(e, "connect", ""))
    }

    fn outbox_migration(t: &TableName) -> Vec<String> {
        vec![
            // AUTOINCREMENT: sequence numbers are never reused after deletes,
            // so they keep telling enqueue order.
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    msg_key TEXT,
    headers TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    error_kind TEXT,
    last_error TEXT,
    parked_at INTEGER
)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} (msg_key, seq) WHERE msg_key IS NOT NULL AND parked_at IS NULL",
                t.index("key")
            ),
        ]
    }

    fn idempotency_migration(t: &TableName) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
    consumer_group TEXT NOT NULL,
    message_id TEXT NOT NULL,
    done INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, message_id)
)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {} ON {t} (expires_at)", t.index("expires")),
        ]
    }

    async fn migrate(pool: &Pool<Self>, t: &TableName, statements: &[String]) -> Result<()> {
        let err = |e| db_error(e, "migrate", t.as_str());
        let mut tx = pool.begin().await.map_err(err)?;
        for statement in statements {
            sqlx::query(statement).execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    async fn probe(pool: &Pool<Self>, t: &TableName, sql: &str) -> Result<()> {
        sqlx::query(sql)
            .execute(pool)
            .await
            .map(drop)
            .map_err(|e| db_error(e, "check", t.as_str()))
    }

    async fn enqueue(conn: &mut SqliteConnection, t: &TableName, row: NewRow<'_>) -> Result<()> {
        let now = now_ms();
        sqlx::query(&format!(
            "INSERT INTO {t} (id, topic, msg_key, headers, payload, created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)"
        ))
        .bind(row.id)
        .bind(row.topic)
        .bind(row.key)
        .bind(&row.headers)
        .bind(row.payload)
        .bind(now)
        .execute(conn)
        .await
        .map(drop)
        .map_err(|e| enqueue_error(e, t.as_str(), row.id))
    }

    async fn claim(pool: &Pool<Self>, t: &TableName, owner: &str, limit: i64, lease: Duration) -> Result<Vec<Claimed>> {
        // Same rule as PostgreSQL's claim: a row waits while an earlier
        // unpublished row of its key is leased elsewhere or backing off.
        let rows: Vec<ClaimedRow> = sqlx::query_as(&format!(
            "UPDATE {t} SET lease_owner = ?1, lease_until = ?2 + ?3
             WHERE seq IN (
                SELECT o.seq FROM {t} o
                WHERE o.parked_at IS NULL AND o.next_attempt_at <= ?2
                  AND (o.lease_until IS NULL OR o.lease_until <= ?2)
                  AND (o.msg_key IS NULL OR NOT EXISTS (
                      SELECT 1 FROM {t} p
                      WHERE p.msg_key = o.msg_key AND p.seq < o.seq AND p.parked_at IS NULL
                        AND (p.next_attempt_at > ?2 OR p.lease_until > ?2)))
                ORDER BY o.seq LIMIT ?4)
             RETURNING seq, id, topic, msg_key, headers, payload, attempts"
        ))
        .bind(owner)
        .bind(now_ms())
        .bind(millis(lease))
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(|e| db_error(e, "claim", t.as_str()))?;
        let mut claimed: Vec<Claimed> = rows
            .into_iter()
            .map(|(seq, id, topic, key, headers, payload, attempts)| Claimed {
                seq,
                id,
                topic,
                key,
                headers,
                payload,
                attempts,
            })
            .collect();
        claimed.sort_by_key(|c| c.seq);
        Ok(claimed)
    }

    async fn delete(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<()> {
        sqlx::query(&format!(
            "DELETE FROM {t} WHERE seq IN (SELECT value FROM json_each(?1))"
        ))
        .bind(seq_list(seqs))
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| db_error(e, "mark published", t.as_str()))
    }

    async fn release(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {t} SET lease_owner = NULL, lease_until = NULL WHERE seq IN (SELECT value FROM json_each(?1))"
        ))
        .bind(seq_list(seqs))
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| db_error(e, "release", t.as_str()))
    }

    async fn fail(pool: &Pool<Self>, t: &TableName, f: &Failure<'_>) -> Result<()> {
        let now = now_ms();
        sqlx::query(&format!(
            "UPDATE {t} SET attempts = ?2, error_kind = ?3, last_error = ?4, lease_owner = NULL, lease_until = NULL,
                 next_attempt_at = ?5 + ?6, parked_at = CASE WHEN ?7 THEN ?5 ELSE NULL END
             WHERE seq = ?1"
        ))
        .bind(f.seq)
        .bind(f.attempts)
        .bind(f.kind)
        .bind(f.error)
        .bind(now)
        .bind(f.retry_in.map_or(0, millis))
        .bind(f.retry_in.is_none())
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| db_error(e, "record failure", t.as_str()))
    }

    async fn status(pool: &Pool<Self>, t: &TableName) -> Result<OutboxStatus> {
        let (pending, retrying, parked, oldest): (i64, i64, i64, Option<i64>) = sqlx::query_as(&format!(
            "SELECT coalesce(sum(parked_at IS NULL), 0),
                    coalesce(sum(parked_at IS NULL AND attempts > 0), 0),
                    coalesce(sum(parked_at IS NOT NULL), 0),
                    min(CASE WHEN parked_at IS NULL THEN created_at END)
             FROM {t}"
        ))
        .fetch_one(pool)
        .await
        .map_err(|e| db_error(e, "status", t.as_str()))?;
        Ok(OutboxStatus {
            pending: pending as u64,
            retrying: retrying as u64,
            parked: parked as u64,
            oldest_pending_age: oldest.map(|created| Duration::from_millis((now_ms() - created).max(0) as u64)),
        })
    }

    async fn parked(pool: &Pool<Self>, t: &TableName, limit: i64) -> Result<Vec<ParkedRow>> {
        let rows: Vec<ParkedTuple> = sqlx::query_as(&format!(
            "SELECT seq, id, topic, msg_key, attempts, error_kind, last_error, created_at, parked_at
             FROM {t} WHERE parked_at IS NOT NULL ORDER BY seq LIMIT ?1"
        ))
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(|e| db_error(e, "list parked", t.as_str()))?;
        Ok(rows
            .into_iter()
            .map(
                |(seq, id, topic, key, attempts, kind, error, created, parked)| ParkedRow {
                    seq,
                    id,
                    topic,
                    key,
                    attempts,
                    kind,
                    error,
                    created_at: from_millis(created),
                    parked_at: from_millis(parked),
                },
            )
            .collect())
    }

    async fn unpark(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<u64> {
        sqlx::query(&format!(
            "UPDATE {t} SET parked_at = NULL, attempts = 0, next_attempt_at = ?2, lease_owner = NULL, lease_until = NULL
             WHERE seq IN (SELECT value FROM json_each(?1)) AND parked_at IS NOT NULL"
        ))
        .bind(seq_list(seqs))
        .bind(now_ms())
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error(e, "retry", t.as_str()))
    }

    async fn discard(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<u64> {
        sqlx::query(&format!(
            "DELETE FROM {t} WHERE seq IN (SELECT value FROM json_each(?1)) AND parked_at IS NOT NULL"
        ))
        .bind(seq_list(seqs))
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error(e, "discard", t.as_str()))
    }

    async fn claim_key(pool: &Pool<Self>, t: &TableName, group: &str, id: &str, lease: Duration) -> Result<Claim> {
        // One statement: SQLite runs it alone, so insert-or-take-over and
        // the answer cannot be split by another writer.
        let now = now_ms();
        let acquired: Option<(i64,)> = sqlx::query_as(&format!(
            "INSERT INTO {t} (consumer_group, message_id, done, expires_at) VALUES (?1, ?2, 0, ?3 + ?4)
             ON CONFLICT (consumer_group, message_id) DO UPDATE
                 SET done = 0, expires_at = excluded.expires_at WHERE {t}.expires_at <= ?3
             RETURNING 1"
        ))
        .bind(group)
        .bind(id)
        .bind(now)
        .bind(millis(lease))
        .fetch_optional(pool)
        .await
        .map_err(|e| db_error(e, "claim", t.as_str()))?;
        if acquired.is_some() {
            return Ok(Claim::Acquired);
        }
        let held: Option<(bool, i64)> = sqlx::query_as(&format!(
            "SELECT done, expires_at FROM {t} WHERE consumer_group = ?1 AND message_id = ?2"
        ))
        .bind(group)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(|e| db_error(e, "claim", t.as_str()))?;
        Ok(match held {
            Some((true, _)) => Claim::Done,
            Some((false, expires)) => Claim::InProgress(Duration::from_millis((expires - now).max(0) as u64)),
            // Released in between: the caller's next claim acquires it.
            None => Claim::InProgress(Duration::ZERO),
        })
    }

    async fn complete_key(pool: &Pool<Self>, t: &TableName, group: &str, id: &str, ttl: Duration) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {t} (consumer_group, message_id, done, expires_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (consumer_group, message_id) DO UPDATE SET done = 1, expires_at = excluded.expires_at"
        ))
        .bind(group)
        .bind(id)
        .bind(now_ms().saturating_add(millis(ttl)))
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| db_error(e, "complete", t.as_str()))
    }

    async fn release_key(pool: &Pool<Self>, t: &TableName, group: &str, id: &str) -> Result<()> {
        sqlx::query(&format!(
            "DELETE FROM {t} WHERE consumer_group = ?1 AND message_id = ?2 AND done = 0"
        ))
        .bind(group)
        .bind(id)
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| db_error(e, "release", t.as_str()))
    }

    async fn mark_done(
        conn: &mut SqliteConnection,
        t: &TableName,
        group: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let now = now_ms();
        sqlx::query(&format!(
            "INSERT INTO {t} (consumer_group, message_id, done, expires_at) VALUES (?1, ?2, 1, ?3 + ?4)
             ON CONFLICT (consumer_group, message_id) DO UPDATE
                 SET done = 1, expires_at = excluded.expires_at
                 WHERE {t}.done = 0 OR {t}.expires_at <= ?3"
        ))
        .bind(group)
        .bind(id)
        .bind(now)
        .bind(millis(ttl))
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
        .map_err(|e| db_error(e, "mark processed", t.as_str()))
    }

    async fn purge_expired(pool: &Pool<Self>, t: &TableName) -> Result<u64> {
        sqlx::query(&format!(
            "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE expires_at <= ?1 LIMIT 1000)"
        ))
        .bind(now_ms())
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error(e, "purge", t.as_str()))
    }
}
