//! The idempotency store checks: a claim is taken once, completed or
//! released, expires and is taken over, in groups of its own; the SQL
//! stores also mark in the caller's transaction, exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use transport_core::runtime::{Claim, IdempotencyStore};
use transport_core::Result;
use transport_sql::{Dialect, Mark, SqlIdempotencyStore};

use super::*;
use crate::ensure;
use crate::support::{unique, within_bounds, CheckFailure, CheckResult};

/// A check of an idempotency store.
pub type StoreCheck = fn(Arc<dyn IdempotencyStore>) -> BoxFuture<'static, CheckResult>;

/// A check of the SQL idempotency store's transactional marking.
pub type SqlStoreCheck<DB> = fn(Arc<SqlIdempotencyStore<DB>>) -> BoxFuture<'static, CheckResult>;

const LEASE: Duration = Duration::from_secs(60);

/// The idempotency-store contract, for every store.
pub fn idempotency_checks() -> Vec<(&'static str, StoreCheck)> {
    vec![
        ("claim_complete_release", |s| Box::pin(claim_complete_release(s))),
        ("groups_are_independent", |s| Box::pin(groups_are_independent(s))),
        ("expired_claim_is_taken_over", |s| {
            Box::pin(expired_claim_is_taken_over(s))
        }),
        ("done_keys_expire_after_ttl", |s| {
            Box::pin(done_keys_expire_after_ttl(s))
        }),
        ("concurrent_claims_acquire_once", |s| {
            Box::pin(concurrent_claims_acquire_once(s))
        }),
    ]
}

/// What the SQL store adds: marking inside the handler's transaction.
pub fn sql_idempotency_checks<DB: Dialect>() -> Vec<(&'static str, SqlStoreCheck<DB>)> {
    vec![
        ("mark_in_transaction_is_exactly_once", |s| {
            Box::pin(mark_in_transaction_is_exactly_once(s))
        }),
        ("rolled_back_mark_leaves_the_key_free", |s| {
            Box::pin(rolled_back_mark_leaves_the_key_free(s))
        }),
        ("mark_is_forgotten_after_its_ttl", |s| {
            Box::pin(mark_is_forgotten_after_its_ttl(s))
        }),
        ("purge_takes_only_expired_keys", |s| {
            Box::pin(purge_takes_only_expired_keys(s))
        }),
    ]
}

async fn claim_complete_release(s: Arc<dyn IdempotencyStore>) -> CheckResult {
    let (g, id) = (unique("g"), unique("m"));
    ensure!(
        s.claim(&g, &id, LEASE).await? == Claim::Acquired,
        "first claim not acquired"
    );
    match s.claim(&g, &id, LEASE).await? {
        Claim::InProgress(left) => ensure!(left <= LEASE, "claim left {left:?}, longer than its lease {LEASE:?}"),
        other => {
            return Err(CheckFailure(format!(
                "second claim of a held key: {other:?}, expected InProgress"
            )))
        }
    }
    s.release(&g, &id).await?;
    ensure!(
        s.claim(&g, &id, LEASE).await? == Claim::Acquired,
        "released key not acquired again"
    );
    s.complete(&g, &id, Duration::from_secs(3600)).await?;
    ensure!(s.claim(&g, &id, LEASE).await? == Claim::Done, "completed key not done");
    s.release(&g, &id).await?;
    ensure!(
        s.claim(&g, &id, LEASE).await? == Claim::Done,
        "release removed a done key"
    );
    // Complete twice is harmless (the layer completes after a handler's
    // transaction may have marked the key already).
    s.complete(&g, &id, Duration::from_secs(3600)).await?;
    ensure!(
        s.claim(&g, &id, LEASE).await? == Claim::Done,
        "second complete changed the key"
    );
    Ok(())
}

async fn groups_are_independent(s: Arc<dyn IdempotencyStore>) -> CheckResult {
    let (g1, g2, id) = (unique("g"), unique("g"), unique("m"));
    s.claim(&g1, &id, LEASE).await?;
    s.complete(&g1, &id, Duration::from_secs(3600)).await?;
    ensure!(
        s.claim(&g2, &id, LEASE).await? == Claim::Acquired,
        "another group's done key blocked this group"
    );
    ensure!(
        s.claim(&g1, &unique("m"), LEASE).await? == Claim::Acquired,
        "another id of the group was not free"
    );
    Ok(())
}

async fn expired_claim_is_taken_over(s: Arc<dyn IdempotencyStore>) -> CheckResult {
    let (g, id) = (unique("g"), unique("m"));
    let lease = Duration::from_millis(400);
    let start = Instant::now();
    ensure!(
        s.claim(&g, &id, lease).await? == Claim::Acquired,
        "first claim not acquired"
    );
    loop {
        match s.claim(&g, &id, lease).await? {
            Claim::Acquired => break,
            Claim::InProgress(left) => ensure!(left <= lease, "claim left {left:?}, longer than its lease"),
            Claim::Done => return Err(CheckFailure("an expired claim reads as done".into())),
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "claim not taken over 10 s after its lease ran out"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Stores round expiries to milliseconds (Redis, SQL) or better.
    within_bounds(
        "expired claim taken over",
        start.elapsed(),
        lease - Duration::from_millis(5),
        lease + Duration::from_secs(3),
    )
}

async fn done_keys_expire_after_ttl(s: Arc<dyn IdempotencyStore>) -> CheckResult {
    let (g, id) = (unique("g"), unique("m"));
    let ttl = Duration::from_millis(400);
    ensure!(
        s.claim(&g, &id, LEASE).await? == Claim::Acquired,
        "first claim not acquired"
    );
    let start = Instant::now();
    s.complete(&g, &id, ttl).await?;
    loop {
        match s.claim(&g, &id, LEASE).await? {
            Claim::Acquired => break,
            Claim::Done => {}
            other => return Err(CheckFailure(format!("done key read as {other:?}"))),
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "done key still there 10 s after its TTL"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    within_bounds(
        "done key forgotten",
        start.elapsed(),
        ttl - Duration::from_millis(5),
        ttl + Duration::from_secs(3),
    )
}

async fn concurrent_claims_acquire_once(s: Arc<dyn IdempotencyStore>) -> CheckResult {
    let (g, id) = (unique("g"), unique("m"));
    let claims = futures::future::join_all((0..16).map(|_| {
        let (s, g, id) = (s.clone(), g.clone(), id.clone());
        tokio::spawn(async move { s.claim(&g, &id, LEASE).await })
    }))
    .await;
    let mut acquired = 0;
    for c in claims {
        match c.map_err(|e| CheckFailure(format!("claim task failed: {e}")))?? {
            Claim::Acquired => acquired += 1,
            Claim::InProgress(_) => {}
            Claim::Done => return Err(CheckFailure("a claimed key read as done".into())),
        }
    }
    ensure!(
        acquired == 1,
        "{acquired} of 16 concurrent claims acquired the key, expected 1"
    );
    Ok(())
}

async fn mark_in_transaction_is_exactly_once<DB: Dialect>(s: Arc<SqlIdempotencyStore<DB>>) -> CheckResult {
    let (g, id) = (unique("g"), unique("m"));
    let pool = s.pool().clone();
    ensure!(
        s.claim(&g, &id, LEASE).await? == Claim::Acquired,
        "claim before marking not acquired"
    );
    let mut first = pool.begin().await.map_err(sql)?;
    ensure!(
        s.mark_processed(&mut first, &g, &id).await? == Mark::Marked,
        "first mark did not mark"
    );
    // A second transaction marks the same key while the first is open: it
    // must wait for the first and then find the key processed.
    let second = {
        let (s, g, id) = (s.clone(), g.clone(), id.clone());
        tokio::spawn(async move {
            let mut tx = s.pool().begin().await.map_err(sql)?;
            let mark = s.mark_processed(&mut tx, &g, &id).await?;
            tx.rollback().await.map_err(sql)?;
            Ok::<Mark, CheckFailure>(mark)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(
        !second.is_finished(),
        "a second transaction marked a key another open transaction holds"
    );
    first.commit().await.map_err(sql)?;
    let mark = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .map_err(|_| CheckFailure("the second mark still waits 10 s after the first committed".into()))?
        .map_err(|e| CheckFailure(format!("second mark task failed: {e}")))??;
    ensure!(
        mark == Mark::AlreadyProcessed,
        "second mark after the first committed: {mark:?}"
    );
    ensure!(
        s.claim(&g, &id, LEASE).await? == Claim::Done,
        "a key marked in a committed transaction is not done"
    );
    Ok(())
}

async fn rolled_back_mark_leaves_the_key_free<DB: Dialect>(s: Arc<SqlIdempotencyStore<DB>>) -> CheckResult {
    let (g, id) = (unique("g"), unique("m"));
    let mut tx = s.pool().begin().await.map_err(sql)?;
    ensure!(
        s.mark_processed(&mut tx, &g, &id).await? == Mark::Marked,
        "mark did not mark"
    );
    tx.rollback().await.map_err(sql)?;
    ensure!(
        s.claim(&g, &id, LEASE).await? == Claim::Acquired,
        "a mark whose transaction rolled back still holds the key"
    );
    let mut tx = s.pool().begin().await.map_err(sql)?;
    ensure!(
        s.mark_processed(&mut tx, &g, &id).await? == Mark::Marked,
        "the claimed key could not be marked by its claimant's transaction"
    );
    tx.commit().await.map_err(sql)?;
    Ok(())
}

/// A store of its own (fresh table) on `s`'s database, remembering marks
/// for `ttl`.
async fn store_with_ttl<DB: Dialect>(
    s: &SqlIdempotencyStore<DB>,
    ttl: Duration,
) -> Result<SqlIdempotencyStore<DB>, CheckFailure> {
    let store = SqlIdempotencyStore::new(s.pool().clone())
        .with_table(&unique("processed").replace('-', "_"))?
        .ttl(ttl);
    store.migrate().await?;
    Ok(store)
}

async fn mark_is_forgotten_after_its_ttl<DB: Dialect>(s: Arc<SqlIdempotencyStore<DB>>) -> CheckResult {
    let ttl = Duration::from_millis(400);
    let s = store_with_ttl(&s, ttl).await?;
    let (g, id) = (unique("g"), unique("m"));
    let mut tx = s.pool().begin().await.map_err(sql)?;
    ensure!(
        s.mark_processed(&mut tx, &g, &id).await? == Mark::Marked,
        "first mark did not mark"
    );
    tx.commit().await.map_err(sql)?;
    let start = Instant::now();
    loop {
        let mut tx = s.pool().begin().await.map_err(sql)?;
        let mark = s.mark_processed(&mut tx, &g, &id).await?;
        tx.rollback().await.map_err(sql)?;
        if mark == Mark::Marked {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "a mark with a {ttl:?} TTL still holds the key after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    within_bounds(
        "expired mark taken over",
        start.elapsed(),
        ttl - Duration::from_millis(50),
        ttl + Duration::from_secs(3),
    )
}

async fn purge_takes_only_expired_keys<DB: Dialect>(s: Arc<SqlIdempotencyStore<DB>>) -> CheckResult {
    let s = store_with_ttl(&s, Duration::from_secs(3600)).await?;
    let g = unique("g");
    let (expired, done, held) = (unique("m"), unique("m"), unique("m"));
    s.complete(&g, &expired, Duration::from_millis(100)).await?;
    s.complete(&g, &done, Duration::from_secs(3600)).await?;
    ensure!(
        s.claim(&g, &held, Duration::from_secs(3600)).await? == Claim::Acquired,
        "claim not acquired"
    );
    let mut tx = s.pool().begin().await.map_err(sql)?;
    let marked = unique("m");
    ensure!(
        s.mark_processed(&mut tx, &g, &marked).await? == Mark::Marked,
        "mark did not mark"
    );
    tx.commit().await.map_err(sql)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let purged = s.purge_expired().await?;
    ensure!(purged == 1, "purge took {purged} keys, expected the one expired");
    ensure!(s.claim(&g, &done, LEASE).await? == Claim::Done, "purge took a done key");
    ensure!(s.claim(&g, &marked, LEASE).await? == Claim::Done, "purge took a mark");
    ensure!(
        matches!(s.claim(&g, &held, LEASE).await?, Claim::InProgress(_)),
        "purge took a held claim"
    );
    ensure!(
        s.claim(&g, &expired, LEASE).await? == Claim::Acquired,
        "the expired key is still there"
    );
    Ok(())
}
