//! The store suite against every store: idempotency stores (memory, SQLite,
//! PostgreSQL, Redis) and outboxes (SQLite, PostgreSQL). SQLite runs in a
//! temporary file; PostgreSQL and Redis where `POSTGRES_URL` and
//! `REDIS_URL` point (`scripts/test` starts both). A store whose server is
//! absent is reported as skipped, and fails the run under `CI=true`.
//!
//! Reports: `target/conformance/{idempotency,outbox}-<store>.json`. With
//! `STORE_VERSION=<server>-<version>` (`postgres-17`, `redis-8.0`,
//! `valkey-8.1`: `scripts/test` runs the newer servers so) only the suites
//! of that server's store run, reported as `<suite>-<server>-<version>`.

use std::sync::Arc;
use std::time::Duration;

use conformance_tests::stores::{idempotency_checks, outbox_checks, sql_idempotency_checks};
use conformance_tests::{async_case, run_trials, Case, CheckResult};
use futures::future::BoxFuture;
use libtest_mimic::Arguments;
use transport::redis::RedisIdempotencyStore;
use transport_core::runtime::{IdempotencyStore, MemoryIdempotencyStore};
use transport_sql::sqlx::{Postgres, Sqlite};
use transport_sql::{Dialect, Outbox, SqlIdempotencyStore};

const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

type Runtime = Arc<tokio::runtime::Runtime>;

/// A check of a store or outbox (the suite's `StoreCheck`, `OutboxCheck`, ...).
type Check<T> = fn(T) -> BoxFuture<'static, CheckResult>;

/// A trial per check, each run on `subject`, or all skipped with the reason
/// `subject` could not be opened (its server is absent).
fn cases<T: Clone + Send + 'static>(
    rt: &Runtime,
    subject: &Result<T, String>,
    checks: Vec<(&'static str, Check<T>)>,
) -> Vec<Case> {
    checks
        .into_iter()
        .map(|(name, check)| {
            let (skip, subject) = match subject {
                Ok(s) => (None, Some(s.clone())),
                Err(why) => (Some(why.clone()), None),
            };
            async_case(name, rt.clone(), CHECK_TIMEOUT, skip, move || {
                check(subject.expect("opened when not skipped"))
            })
        })
        .collect()
}

/// The SQL stores: the contract of every store, then the transactional marks.
fn sql_cases<DB: Dialect>(rt: &Runtime, store: Result<Arc<SqlIdempotencyStore<DB>>, String>) -> Vec<Case> {
    let shared = store.clone().map(|s| s as Arc<dyn IdempotencyStore>);
    let mut all = cases(rt, &shared, idempotency_checks());
    all.extend(cases(rt, &store, sql_idempotency_checks::<DB>()));
    all
}

fn env_url(var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| format!("{var} is not set (scripts/test starts the server and sets it)"))
}

fn main() {
    let args = Arguments::from_args();
    let rt: Runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    let dir = std::env::temp_dir().join(format!("transport-stores-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let sqlite_url = format!("sqlite://{}", dir.join("stores.db").display());

    let sqlite_store: Result<Arc<SqlIdempotencyStore<Sqlite>>, String> = rt.block_on(async {
        let s = SqlIdempotencyStore::<Sqlite>::connect(&sqlite_url)
            .await
            .map_err(|e| e.to_string())?;
        s.migrate().await.map_err(|e| e.to_string())?;
        Ok(Arc::new(s))
    });
    let sqlite_outbox = rt
        .block_on(Outbox::<Sqlite>::connect(&sqlite_url))
        .map_err(|e| e.to_string());
    let postgres_url = env_url("POSTGRES_URL");
    let postgres_store: Result<Arc<SqlIdempotencyStore<Postgres>>, String> = rt.block_on(async {
        let s = SqlIdempotencyStore::<Postgres>::connect(postgres_url.as_ref()?)
            .await
            .map_err(|e| e.to_string())?;
        s.migrate().await.map_err(|e| e.to_string())?;
        Ok(Arc::new(s))
    });
    let postgres_outbox = rt.block_on(async {
        Outbox::<Postgres>::connect(postgres_url.as_ref()?)
            .await
            .map_err(|e| e.to_string())
    });
    let redis_store: Result<Arc<dyn IdempotencyStore>, String> = rt.block_on(async {
        let url = env_url("REDIS_URL")?;
        let s = RedisIdempotencyStore::connect(&url).await.map_err(|e| e.to_string())?;
        Ok(Arc::new(s) as Arc<dyn IdempotencyStore>)
    });

    let memory_store: Result<Arc<dyn IdempotencyStore>, String> = Ok(Arc::new(MemoryIdempotencyStore::new()));
    let absent: Vec<String> = [
        ("postgres", postgres_outbox.as_ref().err()),
        ("redis", redis_store.as_ref().err()),
    ]
    .into_iter()
    .filter_map(|(name, e)| e.map(|e| format!("{name}: {e}")))
    .collect();

    let suites: Vec<(&str, &str, Vec<Case>)> = vec![
        (
            "memory",
            "idempotency-memory",
            cases(&rt, &memory_store, idempotency_checks()),
        ),
        ("sqlite", "idempotency-sqlite", sql_cases(&rt, sqlite_store)),
        ("sqlite", "outbox-sqlite", cases(&rt, &sqlite_outbox, outbox_checks())),
        ("postgres", "idempotency-postgres", sql_cases(&rt, postgres_store)),
        (
            "postgres",
            "outbox-postgres",
            cases(&rt, &postgres_outbox, outbox_checks()),
        ),
        (
            "redis",
            "idempotency-redis",
            cases(&rt, &redis_store, idempotency_checks()),
        ),
    ];
    let version = std::env::var("STORE_VERSION").ok();
    // The store a newer server stands in for: Valkey is a Redis.
    let only = version.as_deref().map(|v| {
        let server = v.rsplit_once('-').map_or(v, |(server, _)| server);
        let store = if server == "valkey" { "redis" } else { server };
        (store.to_owned(), v.to_owned())
    });
    let absent: Vec<String> = absent
        .into_iter()
        .filter(|a| {
            only.as_ref()
                .is_none_or(|(store, _)| a.starts_with(&format!("{store}:")))
        })
        .collect();
    let mut failed = false;
    for (store, report, cases) in suites {
        let report = match &only {
            None => report.to_owned(),
            Some((wanted, _)) if wanted != store => continue,
            Some((_, version)) => report.replace(store, version),
        };
        failed |= run_trials(&args, store, &report, cases).has_failed();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !absent.is_empty() {
        eprintln!("stores not reachable, their checks skipped: {}", absent.join("; "));
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("CI=true: a test that cannot run fails");
            std::process::exit(2);
        }
    }
    std::process::exit(i32::from(failed) * 101);
}
