//! PostgreSQL statements. Times are the server's (`now()`), so relays on
//! several hosts agree on leases and backoffs whatever their clocks say.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgConnection, Pool, Postgres};
use transport_core::runtime::Claim;
use transport_core::tls::{Pem, TlsOptions};
use transport_core::{Error, Result};

use crate::dialect::sealed::{Claimed, Failure, NewRow, ParkedRow, Statements};
use crate::dialect::{from_millis, lock_key, millis, Dialect};
use crate::error::{db_error, enqueue_error};
use crate::status::OutboxStatus;
use crate::table::TableName;

impl Dialect for Postgres {}

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

/// sqlx's options for a URL, which also takes the TLS options every backend
/// takes (`tls_ca`, `tls_cert`, `tls_key`): with them, the server's
/// certificate is verified against `tls_ca` and its host name
/// (`sslmode=verify-full`; any other mode beside them is refused, however
/// spelled). sqlx adds `tls_ca` to Mozilla's bundled roots rather than
/// using it alone, so without the host-name check (`verify-ca`) any
/// publicly trusted certificate would pass. Files are read at each new
/// pooled connection, so a rotated certificate is picked up. sqlx's own
/// names (`sslrootcert`, `sslcert`, `sslkey`) work as well.
fn connect_options(url: &str) -> Result<PgConnectOptions> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut tls = TlsOptions::default();
    let mut mode_given = false;
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if tls.url_option(&k, &v)? {
            continue;
        }
        mode_given |= matches!(k.as_ref(), "sslmode" | "ssl-mode");
        rest.append_pair(&k, &v);
    }
    let rest = rest.finish();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{rest}")
    };
    let mut options = PgConnectOptions::from_str(&url).map_err(|e| db_error(e, "connect", ""))?;
    if !tls.is_set() {
        return Ok(options);
    }
    if !mode_given {
        options = options.ssl_mode(PgSslMode::VerifyFull);
    }
    // The mode sqlx will use, whatever key set it last.
    if !matches!(options.get_ssl_mode(), PgSslMode::VerifyFull) {
        return Err(Error::invalid(format!(
            "tls_ca, tls_cert and tls_key need the server's certificate and host name verified: \
             sslmode=verify-full (or no sslmode), not {:?}",
            options.get_ssl_mode()
        )));
    }
    // Read now too: a missing file or text that is not PEM is a
    // configuration error here, not a failed handshake later.
    tls.load()?;
    if let Some(ca) = &tls.ca {
        options = match ca {
            Pem::File(path) => options.ssl_root_cert(path),
            Pem::Text(text) => options.ssl_root_cert_from_pem(text.as_bytes().to_vec()),
        };
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        options = match cert {
            Pem::File(path) => options.ssl_client_cert(path),
            Pem::Text(text) => options.ssl_client_cert_from_pem(text.as_bytes()),
        };
        options = match key {
            Pem::File(path) => options.ssl_client_key(path),
            Pem::Text(text) => options.ssl_client_key_from_pem(text.as_bytes()),
        };
    }
    Ok(options)
}

#[async_trait]
impl Statements for Postgres {
    const SYSTEM: &'static str = "postgres";

    async fn connect(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<Pool<Self>> {
        let options = connect_options(url)?;
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| db_error(e, "connect", ""))
    }

    fn outbox_migration(t: &TableName) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    msg_key TEXT,
    headers TEXT NOT NULL,
    payload BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner TEXT,
    lease_until TIMESTAMPTZ,
    error_kind TEXT,
    last_error TEXT,
    parked_at TIMESTAMPTZ
)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} (seq) WHERE parked_at IS NULL",
                t.index("pending")
            ),
            // Rows that hold their key back (leased or failed): few at any
            // time, so a claim finds the blocked keys without walking the
            // index entries of every row deleted since the last vacuum.
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} (msg_key) WHERE lease_until IS NOT NULL OR attempts > 0",
                t.index("held")
            ),
        ]
    }

    fn idempotency_migration(t: &TableName) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
    consumer_group TEXT NOT NULL,
    message_id TEXT NOT NULL,
    done BOOLEAN NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer_group, message_id)
)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {} ON {t} (expires_at)", t.index("expires")),
        ]
    }

    async fn migrate(pool: &Pool<Self>, t: &TableName, statements: &[String]) -> Result<()> {
        // Concurrent `CREATE TABLE IF NOT EXISTS` can still collide in
        // PostgreSQL's catalog: an advisory lock makes migrations take turns.
        let err = |e| db_error(e, "migrate", t.as_str());
        let mut tx = pool.begin().await.map_err(err)?;
        take_turn(&mut tx, t).await.map_err(err)?;
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

    async fn enqueue(conn: &mut PgConnection, t: &TableName, row: NewRow<'_>) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {t} (id, topic, msg_key, headers, payload) VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(row.id)
        .bind(row.topic)
        .bind(row.key)
        .bind(&row.headers)
        .bind(row.payload)
        .execute(conn)
        .await
        .map(drop)
        .map_err(|e| enqueue_error(e, t.as_str(), row.id))
    }

    async fn claim(pool: &Pool<Self>, t: &TableName, owner: &str, limit: i64, lease: Duration) -> Result<Vec<Claimed>> {
        let err = |e| db_error(e, "claim", t.as_str());
        // Claims take turns (a transaction-scoped advisory lock, held for
        // one short statement): a relay's claim then sees every lease the
        // previous claim took, which keeps a key's rows with one relay at a
        // time. SKIP LOCKED still keeps a claim from waiting on rows another
        // relay is deleting or releasing.
        let mut tx = pool.begin().await.map_err(err)?;
        take_turn(&mut tx, t).await.map_err(err)?;
        // The planner overestimates the key subquery's cost and JIT-compiles
        // the claim, which then takes 50 ms instead of 2.
        sqlx::query("SET LOCAL jit = off")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        // A row is publishable when no earlier row of its key is still
        // unpublished and blocked (leased elsewhere or waiting for a retry):
        // `blocked` has each such key's first blocked row. Earlier
        // publishable rows of a key come in the same claim, since the claim
        // takes the lowest sequence numbers first.
        let rows: Vec<ClaimedRow> = sqlx::query_as(&format!(
            "WITH blocked AS (
                SELECT msg_key, min(seq) AS seq FROM {t}
                WHERE (lease_until IS NOT NULL OR attempts > 0) AND parked_at IS NULL AND msg_key IS NOT NULL
                  AND (lease_until > now() OR next_attempt_at > now())
                GROUP BY msg_key),
             picked AS (
                SELECT o.seq FROM {t} o LEFT JOIN blocked b ON b.msg_key = o.msg_key
                WHERE o.parked_at IS NULL AND o.next_attempt_at <= now()
                  AND (o.lease_until IS NULL OR o.lease_until <= now())
                  AND (b.seq IS NULL OR o.seq < b.seq)
                ORDER BY o.seq LIMIT $1
                FOR UPDATE OF o SKIP LOCKED)
             UPDATE {t} SET lease_owner = $2, lease_until = now() + $3 * interval '1 millisecond'
             FROM picked WHERE {t}.seq = picked.seq
             RETURNING {t}.seq, {t}.id, {t}.topic, {t}.msg_key, {t}.headers, {t}.payload, {t}.attempts"
        ))
        .bind(limit)
        .bind(owner)
        .bind(millis(lease))
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        let mut claimed: Vec<Claimed> = rows.into_iter().map(claimed).collect();
        claimed.sort_by_key(|c| c.seq);
        Ok(claimed)
    }

    async fn delete(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<()> {
        sqlx::query(&format!("DELETE FROM {t} WHERE seq = ANY($1)"))
            .bind(seqs)
            .execute(pool)
            .await
            .map(drop)
            .map_err(|e| db_error(e, "mark published", t.as_str()))
    }

    async fn release(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {t} SET lease_owner = NULL, lease_until = NULL WHERE seq = ANY($1)"
        ))
        .bind(seqs)
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| db_error(e, "release", t.as_str()))
    }

    async fn fail(pool: &Pool<Self>, t: &TableName, f: &Failure<'_>) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {t} SET attempts = $2, error_kind = $3, last_error = $4, lease_owner = NULL, lease_until = NULL,
                 next_attempt_at = now() + $5 * interval '1 millisecond',
                 parked_at = CASE WHEN $6 THEN now() ELSE NULL END
             WHERE seq = $1"
        ))
        .bind(f.seq)
        .bind(f.attempts)
        .bind(f.kind)
        .bind(f.error)
        .bind(f.retry_in.map_or(0, millis))
        .bind(f.retry_in.is_none())
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| db_error(e, "record failure", t.as_str()))
    }

    async fn status(pool: &Pool<Self>, t: &TableName) -> Result<OutboxStatus> {
        let (pending, retrying, parked, oldest): (i64, i64, i64, Option<f64>) = sqlx::query_as(&format!(
            "SELECT count(*) FILTER (WHERE parked_at IS NULL),
                    count(*) FILTER (WHERE parked_at IS NULL AND attempts > 0),
                    count(*) FILTER (WHERE parked_at IS NOT NULL),
                    (EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)) * 1000)::float8
             FROM {t}"
        ))
        .fetch_one(pool)
        .await
        .map_err(|e| db_error(e, "status", t.as_str()))?;
        Ok(OutboxStatus {
            pending: pending as u64,
            retrying: retrying as u64,
            parked: parked as u64,
            oldest_pending_age: oldest.map(|ms| Duration::from_millis(ms.max(0.0) as u64)),
        })
    }

    async fn parked(pool: &Pool<Self>, t: &TableName, limit: i64) -> Result<Vec<ParkedRow>> {
        let rows: Vec<ParkedTuple> = sqlx::query_as(&format!(
            "SELECT seq, id, topic, msg_key, attempts, error_kind, last_error,
                    (EXTRACT(EPOCH FROM created_at) * 1000)::int8, (EXTRACT(EPOCH FROM parked_at) * 1000)::int8
             FROM {t} WHERE parked_at IS NOT NULL ORDER BY seq LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(|e| db_error(e, "list parked", t.as_str()))?;
        Ok(rows.into_iter().map(parked_row).collect())
    }

    async fn unpark(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<u64> {
        sqlx::query(&format!(
            "UPDATE {t} SET parked_at = NULL, attempts = 0, next_attempt_at = now(), lease_owner = NULL, lease_until = NULL
             WHERE seq = ANY($1) AND parked_at IS NOT NULL"
        ))
        .bind(seqs)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error(e, "retry", t.as_str()))
    }

    async fn discard(pool: &Pool<Self>, t: &TableName, seqs: &[i64]) -> Result<u64> {
        sqlx::query(&format!(
            "DELETE FROM {t} WHERE seq = ANY($1) AND parked_at IS NOT NULL"
        ))
        .bind(seqs)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error(e, "discard", t.as_str()))
    }

    async fn claim_key(pool: &Pool<Self>, t: &TableName, group: &str, id: &str, lease: Duration) -> Result<Claim> {
        let err = |e| db_error(e, "claim", t.as_str());
        // The key may be released or expire between the two statements:
        // then the next round inserts it.
        for _ in 0..5 {
            let acquired: Option<(i32,)> = sqlx::query_as(&format!(
                "INSERT INTO {t} AS k (consumer_group, message_id, done, expires_at)
                 VALUES ($1, $2, false, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (consumer_group, message_id) DO UPDATE
                     SET done = false, expires_at = EXCLUDED.expires_at WHERE k.expires_at <= now()
                 RETURNING 1"
            ))
            .bind(group)
            .bind(id)
            .bind(millis(lease))
            .fetch_optional(pool)
            .await
            .map_err(err)?;
            if acquired.is_some() {
                return Ok(Claim::Acquired);
            }
            let held: Option<(bool, i64)> = sqlx::query_as(&format!(
                "SELECT done, (EXTRACT(EPOCH FROM expires_at - now()) * 1000)::int8 FROM {t}
                 WHERE consumer_group = $1 AND message_id = $2 AND expires_at > now()"
            ))
            .bind(group)
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(err)?;
            match held {
                Some((true, _)) => return Ok(Claim::Done),
                Some((false, left)) => return Ok(Claim::InProgress(Duration::from_millis(left.max(0) as u64))),
                None => continue,
            }
        }
        Ok(Claim::InProgress(Duration::from_millis(100)))
    }

    async fn complete_key(pool: &Pool<Self>, t: &TableName, group: &str, id: &str, ttl: Duration) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {t} (consumer_group, message_id, done, expires_at)
             VALUES ($1, $2, true, now() + $3 * interval '1 millisecond')
             ON CONFLICT (consumer_group, message_id) DO UPDATE SET done = true, expires_at = EXCLUDED.expires_at"
        ))
        .bind(group)
        .bind(id)
        .bind(millis(ttl))
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| db_error(e, "complete", t.as_str()))
    }

    async fn release_key(pool: &Pool<Self>, t: &TableName, group: &str, id: &str) -> Result<()> {
        sqlx::query(&format!(
            "DELETE FROM {t} WHERE consumer_group = $1 AND message_id = $2 AND NOT done"
        ))
        .bind(group)
        .bind(id)
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| db_error(e, "release", t.as_str()))
    }

    async fn mark_done(conn: &mut PgConnection, t: &TableName, group: &str, id: &str, ttl: Duration) -> Result<bool> {
        // ON CONFLICT DO UPDATE locks the key's row: a second transaction
        // marking the same key waits for the first, then re-reads the row
        // and finds it done (the WHERE fails, no row is affected).
        sqlx::query(&format!(
            "INSERT INTO {t} AS k (consumer_group, message_id, done, expires_at)
             VALUES ($1, $2, true, now() + $3 * interval '1 millisecond')
             ON CONFLICT (consumer_group, message_id) DO UPDATE
                 SET done = true, expires_at = EXCLUDED.expires_at
                 WHERE NOT k.done OR k.expires_at <= now()"
        ))
        .bind(group)
        .bind(id)
        .bind(millis(ttl))
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
        .map_err(|e| db_error(e, "mark processed", t.as_str()))
    }

    async fn purge_expired(pool: &Pool<Self>, t: &TableName) -> Result<u64> {
        sqlx::query(&format!(
            "DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM {t} WHERE expires_at <= now() LIMIT 1000)"
        ))
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error(e, "purge", t.as_str()))
    }
}

/// Wait for the table's transaction-scoped advisory lock: migrations and
/// claims on one table take turns.
async fn take_turn(tx: &mut PgConnection, t: &TableName) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(t.as_str()))
        .execute(tx)
        .await
        .map(drop)
}

fn claimed((seq, id, topic, key, headers, payload, attempts): ClaimedRow) -> Claimed {
    Claimed {
        seq,
        id,
        topic,
        key,
        headers,
        payload,
        attempts,
    }
}

fn parked_row((seq, id, topic, key, attempts, kind, error, created, parked): ParkedTuple) -> ParkedRow {
    ParkedRow {
        seq,
        id,
        topic,
        key,
        attempts,
        kind,
        error,
        created_at: from_millis(created),
        parked_at: from_millis(parked),
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[test]
    fn tls_options_turn_verification_on_and_refuse_a_weaker_sslmode() {
        let dir = std::env::temp_dir().join(format!("pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        let url = format!("postgres://u@h:5432/db?tls_ca={}&application_name=x", ca.display());
        let o = connect_options(&url).unwrap();
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
        assert_eq!(o.get_application_name(), Some("x"));
        assert!(connect_options(&format!("{url}&sslmode=verify-full")).is_ok());
        for weaker in [
            "sslmode=disable",
            "sslmode=prefer",
            "sslmode=require",
            "sslmode=verify-ca",
            "sslmode=verify-full&ssl-mode=disable",
        ] {
            let e = connect_options(&format!("{url}&{weaker}")).unwrap_err();
            assert_eq!(e.kind(), transport_core::ErrorKind::InvalidArgument, "{weaker}: {e}");
        }
        let e = connect_options("postgres://u@h/db?tls_ca=/nonexistent/ca.pem").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
