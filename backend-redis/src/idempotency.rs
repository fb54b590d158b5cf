//! A durable [`IdempotencyStore`] in Redis: one key per (group, message id),
//! `SET NX PX` to claim, a TTL to forget (watermill#626 asks for exactly
//! this). Redis writes are not in the handler's database transaction, so
//! this gives "once" for redeliveries, not an exactly-once effect: for that
//! use the SQL store in the same database as the effect.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use redis::Script;
use transport_core::async_trait;
use transport_core::runtime::{Claim, IdempotencyStore};
use transport_core::{Error, Operation, Result};

use crate::config::RedisConfig;
use crate::core::{connect, map_err, Conn};
use crate::names;

/// Idempotency keys in Redis, under `<key_prefix>idem:` (the URL's
/// `key_prefix` option), each expiring with its lease or TTL.
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    conn: Conn,
    prefix: String,
}

// Not derived: the connection's URL may hold the password.
impl fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisIdempotencyStore {
    /// Connect to a `redis://` or `rediss://` URL (the options of
    /// [`RedisConfig::from_url`]; commands time out after `command_timeout_ms`).
    pub async fn connect(url: &str) -> Result<Self> {
        let config =
            RedisConfig::from_url(url).map_err(|e| e.with_backend(crate::SCHEME).with_operation(Operation::Connect))?;
        let conn = connect(&config, config.command_timeout).await?;
        Ok(RedisIdempotencyStore {
            conn,
            prefix: names::idempotency_prefix(&config),
        })
    }

    /// The key of `(group, id)`.
    fn key(&self, group: &str, id: &str) -> String {
        names::idempotency_key(&self.prefix, group, id)
    }
}

struct Scripts {
    claim: Script,
    release: Script,
}

fn scripts() -> &'static Scripts {
    static S: OnceLock<Scripts> = OnceLock::new();
    S.get_or_init(|| Scripts {
        // {1, 0} acquired, {2, ttl} done, {3, ttl} held by another claim.
        claim: Script::new(
            r"
if redis.call('SET', KEYS[1], 'claimed', 'NX', 'PX', ARGV[1]) then return {1, 0} end
local state = redis.call('GET', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if state == 'done' then return {2, ttl} end
return {3, ttl}",
        ),
        // Only a claim is given up; a done key stays.
        release: Script::new(
            r"
if redis.call('GET', KEYS[1]) == 'claimed' then return redis.call('DEL', KEYS[1]) end
return 0",
        ),
    })
}

/// Milliseconds for `PX`, at least 1 (Redis refuses 0).
fn px(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn claim(&self, group: &str, id: &str, lease: Duration) -> Result<Claim> {
        let (state, ttl): (i64, i64) = scripts()
            .claim
            .key(self.key(group, id))
            .arg(px(lease))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| store_error("claim", e))?;
        Ok(match state {
            1 => Claim::Acquired,
            2 => Claim::Done,
            _ => Claim::InProgress(Duration::from_millis(u64::try_from(ttl).unwrap_or(0))),
        })
    }

    async fn complete(&self, group: &str, id: &str, ttl: Duration) -> Result<()> {
        redis::cmd("SET")
            .arg(self.key(group, id))
            .arg("done")
            .arg("PX")
            .arg(px(ttl))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| store_error("complete", e))
    }

    async fn release(&self, group: &str, id: &str) -> Result<()> {
        scripts()
            .release
            .key(self.key(group, id))
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(|e| store_error("release", e))
    }
}

/// A failed step of the store, named in the message (the operation is
/// [`Operation::Store`]).
fn store_error(step: &str, e: redis::RedisError) -> Error {
    let e = map_err(e);
    Error::new(e.kind(), format!("idempotency {step}: {}", e.message()))
        .with_backend(crate::SCHEME)
        .with_retryable(e.is_retryable())
        .with_operation(Operation::Store)
}
