//! The relay: claims committed outbox rows, publishes them, deletes them.
//!
//! At least once: a row is deleted only after the broker confirmed it, so a
//! relay that dies between the two leaves the row leased, and the next relay
//! publishes it again once the lease runs out, under the same message id.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use transport_core::{Error, ErrorKind, Headers, Message, Result, Transport};

use crate::dialect::sealed::{Claimed, Failure};
use crate::dialect::Dialect;
use crate::outbox::Outbox;

/// Publishes an [`Outbox`]'s committed rows through a [`Transport`].
///
/// Several relays may run on one table: each claims rows under a lease,
/// and a key's rows stay with one relay at a time, published in enqueue
/// order. A row whose publish fails blocks only the later rows of its key:
/// it is retried with exponential backoff and parked (with its error, for
/// [`Outbox::retry`] or [`Outbox::discard`]) when the error cannot be fixed
/// by retrying (`MessageTooLarge`, `InvalidArgument`, ...) or after
/// [`max_attempts`](Self::max_attempts). A parked row no longer holds its
/// key back.
pub struct Relay<DB: Dialect> {
    outbox: Outbox<DB>,
    transport: Arc<dyn Transport>,
    owner: String,
    batch_size: usize,
    poll_interval: Duration,
    lease: Duration,
    max_attempts: Option<u32>,
    retry_backoff: (Duration, Duration),
}

impl<DB: Dialect> fmt::Debug for Relay<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("outbox", &self.outbox)
            .field("transport", &self.transport.backend())
            .field("owner", &self.owner)
            .field("batch_size", &self.batch_size)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// What one [`Relay::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStep {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows published and deleted.
    pub published: usize,
    /// Rows whose publish failed and will be retried.
    pub retrying: usize,
    /// Rows parked.
    pub parked: usize,
    /// Whether publishing stopped at a retryable error (the broker is
    /// likely unavailable): the relay backs off before the next claim.
    pub broker_failed: bool,
}

impl<DB: Dialect> Relay<DB> {
    /// A relay with batches of 100, a poll every 100 ms when idle, leases of
    /// 30 s, up to 20 attempts with backoff from 1 s to 5 min.
    pub fn new(outbox: Outbox<DB>, transport: Arc<dyn Transport>) -> Self {
        Relay {
            outbox,
            transport,
            owner: transport_core::new_id(),
            batch_size: 100,
            poll_interval: Duration::from_millis(100),
            lease: Duration::from_secs(30),
            max_attempts: Some(20),
            retry_backoff: (Duration::from_secs(1), Duration::from_secs(300)),
        }
    }

    /// Rows claimed and published per round (1 or more).
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// How long an idle relay waits before looking for rows again.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long claimed rows stay with this relay: longer than a round of
    /// publishing takes. When a relay dies, its rows wait this long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Park a row after this many failed publishes (`None`: retry failures
    /// that are retryable forever).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts.map(|a| a.max(1));
        self
    }

    /// The first and the longest wait before a failed row is tried again
    /// (doubling in between).
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.retry_backoff = (first, max.max(first));
        self
    }

    /// Publish until `shutdown` completes. A round in progress finishes
    /// first. Database and broker errors that may pass are retried with
    /// backoff (100 ms doubling to 10 s); errors that will not pass (the
    /// table is missing, the credentials are refused) end the relay.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(10));
        let mut pause = first;
        let mut checked = false;
        loop {
            let step = if checked {
                self.run_once().await
            } else {
                self.outbox.check().await.map(|()| {
                    checked = true;
                    RelayStep::default()
                })
            };
            let wait = match step {
                Ok(step) if step.broker_failed => {
                    pause = (pause * 2).min(max);
                    pause
                }
                Ok(step) => {
                    pause = first;
                    if step.claimed >= self.batch_size || step.published > 0 {
                        Duration::ZERO
                    } else {
                        self.poll_interval
                    }
                }
                Err(e) if !e.is_retryable() => {
                    tracing::error!(error = %e, table = self.outbox.table(), "outbox relay stopped");
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, table = self.outbox.table(), retry_in = ?pause, "outbox relay: database unavailable");
                    let wait = pause;
                    pause = (pause * 2).min(max);
                    wait
                }
            };
            if wait.is_zero() {
                // Still let a shutdown in between full batches.
                if futures_ready(&mut shutdown).await {
                    return Ok(());
                }
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Run in a task of its own until [`RunningRelay::stop`].
    pub fn spawn(self) -> RunningRelay
    where
        DB: 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            self.run(async {
                let _ = stopped.await;
            })
            .await
        });
        RunningRelay { stop, task }
    }

    /// One round: claim a batch, publish it (by topic, with
    /// `publish_batch`; one by one after a batch failed, to tell which row
    /// failed), delete what was published, record the failures.
    pub async fn run_once(&self) -> Result<RelayStep> {
        let limit = i64::try_from(self.batch_size).unwrap_or(i64::MAX);
        let rows = self
            .outbox
            .bounded(DB::claim(
                &self.outbox.pool,
                &self.outbox.table,
                &self.owner,
                limit,
                self.lease,
            ))
            .await?;
        let mut round = Round {
            claimed: rows.len(),
            ..Round::default()
        };
        if rows.is_empty() {
            return Ok(RelayStep::default());
        }
        let max_size = self.transport.capabilities().max_message_size;
        // Per topic, in claim order (the batch is already in enqueue order).
        let mut topics: Vec<(String, Vec<(Claimed, Message)>)> = Vec::new();
        for mut row in rows {
            let checked = message_of(&mut row).and_then(|m| {
                m.validate()?;
                if let Some(max) = max_size {
                    m.check_size(max)?;
                }
                Ok(m)
            });
            match checked {
                Ok(m) => match topics.iter_mut().find(|(t, _)| *t == row.topic) {
                    Some((_, list)) => list.push((row, m)),
                    None => topics.push((row.topic.clone(), vec![(row, m)])),
                },
                Err(e) => round.failed.push((row, e)),
            }
        }
        for (topic, list) in topics {
            if round.broker_failed {
                round.release.extend(list.iter().map(|(r, _)| r.seq));
                continue;
            }
            self.publish(&topic, list, &mut round).await;
        }
        let refused = round.refused.take();
        let step = self.settle(round).await?;
        match refused {
            Some(e) => Err(e),
            None => Ok(step),
        }
    }

    async fn publish(&self, topic: &str, list: Vec<(Claimed, Message)>, round: &mut Round) {
        let messages = list.iter().map(|(_, m)| m.clone()).collect();
        let batch_error = match self.transport.publish_batch(topic, messages).await {
            Ok(()) => {
                round.published.extend(list.iter().map(|(r, _)| r.seq));
                return;
            }
            Err(e) => e,
        };
        tracing::debug!(error = %batch_error, topic, "outbox batch failed; publishing its rows one by one");
        let mut blocked: HashSet<String> = HashSet::new();
        for (row, message) in list {
            let held = row.key.as_ref().is_some_and(|k| blocked.contains(k));
            if round.broker_failed || held {
                round.release.push(row.seq);
                continue;
            }
            match self.transport.publish(topic, message).await {
                Ok(()) => round.published.push(row.seq),
                Err(e) if matches!(e.kind(), ErrorKind::Tls | ErrorKind::Unauthorized) => {
                    round.broker_failed = true;
                    round.release.push(row.seq);
                    round.refused = Some(e);
                }
                Err(e) => {
                    if let Some(key) = &row.key {
                        blocked.insert(key.clone());
                    }
                    if e.is_retryable() {
                        round.broker_failed = true;
                    }
                    round.failed.push((row, e));
                }
            }
        }
    }

    /// Record the round: published rows first (what matters most if the
    /// database goes away now), then failures, then unattempted rows.
    async fn settle(&self, round: Round) -> Result<RelayStep> {
        let (pool, table) = (&self.outbox.pool, &self.outbox.table);
        let mut step = RelayStep {
            claimed: round.claimed,
            published: round.published.len(),
            broker_failed: round.broker_failed,
            ..RelayStep::default()
        };
        if !round.published.is_empty() {
            // Published rows left undeleted go out again after the lease:
            // worth a few quick retries (a pooled connection the database
            // dropped fails once, the next one works).
            let mut pause = Duration::from_millis(50);
            loop {
                match self.outbox.bounded(DB::delete(pool, table, &round.published)).await {
                    Ok(()) => break,
                    Err(e) if e.is_retryable() && pause <= Duration::from_millis(400) => {
                        tracing::debug!(error = %e, "deleting published outbox rows failed; retrying");
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        for (row, error) in &round.failed {
            let attempts = row.attempts.saturating_add(1);
            let retry_in = self.retry_in(attempts, error);
            let text = error.to_string();
            let failure = Failure {
                seq: row.seq,
                attempts,
                kind: error.kind().as_str(),
                error: &text,
                retry_in,
            };
            self.outbox.bounded(DB::fail(pool, table, &failure)).await?;
            if retry_in.is_some() {
                step.retrying += 1;
                tracing::warn!(id = %row.id, topic = %row.topic, attempts, error = %error, "outbox row failed; will retry");
            } else {
                step.parked += 1;
                tracing::error!(id = %row.id, topic = %row.topic, attempts, error = %error, "outbox row parked");
            }
        }
        if !round.release.is_empty() {
            self.outbox.bounded(DB::release(pool, table, &round.release)).await?;
        }
        let db = DB::SYSTEM;
        metrics::counter!(PUBLISHED, "db.system" => db).increment(step.published as u64);
        metrics::counter!(FAILED, "db.system" => db, "transport.outcome" => "retry").increment(step.retrying as u64);
        metrics::counter!(FAILED, "db.system" => db, "transport.outcome" => "parked").increment(step.parked as u64);
        Ok(step)
    }

    /// When to try a failed row again, or `None` to park it.
    fn retry_in(&self, attempts: i32, error: &Error) -> Option<Duration> {
        let permanent = !error.is_retryable()
            && matches!(
                error.kind(),
                ErrorKind::MessageTooLarge
                    | ErrorKind::InvalidArgument
                    | ErrorKind::Decode
                    | ErrorKind::Unsupported
                    | ErrorKind::Unauthorized
                    | ErrorKind::Forbidden
                    | ErrorKind::Tls
                    | ErrorKind::NotFound
            );
        let exhausted = self
            .max_attempts
            .is_some_and(|max| u32::try_from(attempts).unwrap_or(u32::MAX) >= max);
        if permanent || exhausted {
            return None;
        }
        let (first, max) = self.retry_backoff;
        let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(20);
        Some(first.saturating_mul(1 << doublings).min(max))
    }
}

/// A relay running in its own task ([`Relay::spawn`]).
#[derive(Debug)]
pub struct RunningRelay {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningRelay {
    /// Let the round in progress finish, then end; how the relay ended.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| Error::new(ErrorKind::Backend, format!("the outbox relay task failed: {e}")))?
    }

    /// Whether it ended by itself (on an error retrying cannot fix).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Rows published by the relay.
const PUBLISHED: &str = "transport.outbox.published.messages";
/// Rows whose publish failed, by what happens next (`retry`, `parked`).
const FAILED: &str = "transport.outbox.failed.messages";

#[derive(Default)]
struct Round {
    claimed: usize,
    published: Vec<i64>,
    failed: Vec<(Claimed, Error)>,
    release: Vec<i64>,
    broker_failed: bool,
    /// A refusal of the connection itself (a certificate, the
    /// credentials): no row is to blame, none is parked, and the relay
    /// stops with it.
    refused: Option<Error>,
}

/// Whether `shutdown` has completed, without waiting for it.
async fn futures_ready(shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        () = shutdown.as_mut() => true,
        () = std::future::ready(()) => false,
    }
}

impl<DB: Dialect> Outbox<DB> {
    /// A relay publishing this outbox's rows through `transport`.
    pub fn relay(&self, transport: Arc<dyn Transport>) -> Relay<DB> {
        Relay::new(self.clone(), transport)
    }
}

/// A claimed row as the message it was enqueued as; `Decode` if its
/// headers column was changed into something that is not a JSON map.
/// The payload moves out of the row (the relay keeps only its other fields).
pub(crate) fn message_of(row: &mut Claimed) -> Result<Message> {
    let map: BTreeMap<String, String> = serde_json::from_str(&row.headers).map_err(|e| {
        Error::new(
            ErrorKind::Decode,
            format!("outbox row {}: headers are not a JSON map of strings", row.id),
        )
        .with_source(e)
    })?;
    let mut headers = Headers::new();
    for (name, value) in map {
        headers.insert(name, value);
    }
    Ok(Message {
        id: row.id.clone(),
        key: row.key.clone(),
        headers,
        payload: std::mem::take(&mut row.payload).into(),
    })
}
