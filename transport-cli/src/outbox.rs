//! `transport outbox`: run a relay, show an outbox's state, retry or
//! discard parked rows, create the table, measure the relay.

use std::time::{Duration, Instant, SystemTime};

use transport::sql::sqlx::{Postgres, Sqlite};
use transport::sql::{Dialect, Outbox, OutboxStatus, Parked};
use transport::{format_time, redact_url, Message};

use crate::cli::{OutboxArgs, OutboxOp};
use crate::dlq::picked;
use crate::target::{connect, failed, url_or_env, CliError, CliResult};

pub async fn run(args: OutboxArgs) -> CliResult {
    let db = args
        .db
        .clone()
        .ok_or_else(|| CliError::new("--db URL (or TRANSPORT_OUTBOX_DB) is required: postgres://… or sqlite://path"))?;
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        run_on::<Postgres>(&db, args).await
    } else if db.starts_with("sqlite:") {
        run_on::<Sqlite>(&db, args).await
    } else {
        Err(CliError::new(format!(
            "{}: the outbox database must be postgres://… or sqlite://…",
            redact_url(&db)
        )))
    }
}

/// `e`, from `what` on the database at `db`, with a hint.
fn db_failed(what: &str, db: &str, e: &transport::Error) -> CliError {
    let hint = match e.kind() {
        transport::ErrorKind::ConnectionLost | transport::ErrorKind::Timeout => {
            " (is the database running and reachable?)"
        }
        _ => "",
    };
    CliError(format!("{what} on {} failed: {e}{hint}", redact_url(db)))
}

async fn run_on<DB: Dialect>(db: &str, args: OutboxArgs) -> CliResult {
    let table = if matches!(args.op, OutboxOp::Bench { .. }) {
        format!("{}_bench", args.table)
    } else {
        args.table.clone()
    };
    let outbox = Outbox::<DB>::connect(db)
        .await
        .map_err(|e| db_failed("connecting", db, &e))?
        .with_table(&table)
        .map_err(|e| CliError::new(e.to_string()))?;
    let fail = |what: &str, e: transport::Error| db_failed(&format!("{what} {table}"), db, &e);
    match args.op {
        OutboxOp::Migrate { print } => {
            if print {
                for statement in outbox.migration_sql() {
                    println!("{statement};\n");
                }
            } else {
                outbox.migrate().await.map_err(|e| fail("migrating", e))?;
                println!("outbox table {table} ready");
            }
        }
        OutboxOp::Relay {
            to,
            batch,
            poll,
            lease,
            max_attempts,
            once,
        } => {
            let url = url_or_env(to)?;
            let broker = connect(&url).await?;
            let relay = outbox
                .relay(broker.clone())
                .batch_size(batch)
                .poll_interval(poll)
                .lease(lease)
                .max_attempts((max_attempts > 0).then_some(max_attempts));
            if once {
                let (mut published, mut retrying, mut parked) = (0, 0, 0);
                loop {
                    let step = relay.run_once().await.map_err(|e| fail("relaying", e))?;
                    published += step.published;
                    retrying += step.retrying;
                    parked += step.parked;
                    if step.claimed == 0 || step.broker_failed {
                        break;
                    }
                }
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"published": published, "retrying": retrying, "parked": parked})
                    );
                } else {
                    println!("published {published}, failed and retrying {retrying}, parked {parked}");
                }
            } else {
                let stop = shutdown();
                // Said once the signal handlers are in place.
                eprintln!("relaying {table} to {} (Ctrl-C or SIGTERM to stop)", redact_url(&url));
                relay.run(stop).await.map_err(|e| fail("relaying", e))?;
            }
            broker.close().await.map_err(|e| failed("closing", &url, &e))?;
        }
        OutboxOp::Status { parked } => {
            let status = outbox.status().await.map_err(|e| fail("reading", e))?;
            let rows = outbox.parked(parked).await.map_err(|e| fail("reading", e))?;
            print_status(&table, &status, &rows, args.json);
        }
        OutboxOp::Retry { pick } => {
            let selection = picked(&pick)?;
            let n = outbox
                .retry(&selection)
                .await
                .map_err(|e| fail("retrying parked rows of", e))?;
            println!("{n} parked row(s) back for the relay");
        }
        OutboxOp::Discard { pick } => {
            let selection = picked(&pick)?;
            let n = outbox
                .discard(&selection)
                .await
                .map_err(|e| fail("discarding parked rows of", e))?;
            println!("{n} parked row(s) discarded");
        }
        OutboxOp::Bench { to, rows, batch, size } => {
            let url = url_or_env(to)?;
            bench(&outbox, &url, rows.max(1), batch.max(1), size, args.json).await?;
        }
    }
    Ok(())
}

/// Ctrl-C or SIGTERM. The handlers are installed now, not when the future
/// is first polled (the relay polls it only between rounds): a signal that
/// comes during the first round must not kill the process mid-round.
fn shutdown() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (int, term) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_status(table: &str, status: &OutboxStatus, parked: &[Parked], json: bool) {
    let age = status.oldest_pending_age.map(|a| a.as_secs_f64());
    if json {
        let rows: Vec<serde_json::Value> = parked
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id, "topic": p.topic, "key": p.key, "attempts": p.attempts,
                    "error_kind": p.error_kind, "error": p.error,
                    "enqueued_at": format_time(p.enqueued_at), "parked_at": format_time(p.parked_at),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "table": table, "pending": status.pending, "retrying": status.retrying,
                "parked": status.parked, "oldest_pending_age_seconds": age, "parked_rows": rows,
            })
        );
        return;
    }
    println!(
        "{table}: {} pending ({} retrying), {} parked, oldest pending {}",
        status.pending,
        status.retrying,
        status.parked,
        status
            .oldest_pending_age
            .map_or("-".to_owned(), |a| humantime::format_duration(Duration::from_secs(
                a.as_secs()
            ))
            .to_string())
    );
    for p in parked {
        let ago = SystemTime::now().duration_since(p.parked_at).unwrap_or_default();
        println!(
            "  parked {} -> {} key {} after {} attempt(s), {} ago: [{}] {}",
            p.id,
            p.topic,
            p.key.as_deref().unwrap_or("-"),
            p.attempts,
            humantime::format_duration(Duration::from_secs(ago.as_secs())),
            p.error_kind.as_deref().unwrap_or("?"),
            p.error.as_deref().unwrap_or("")
        );
    }
}

/// The relay's rate against the broker's own: the same rows published with
/// `publish_batch` by one publisher (what the relay does), then enqueued in
/// transactions of `batch` rows and relayed.
async fn bench<DB: Dialect>(
    outbox: &Outbox<DB>,
    url: &str,
    rows: usize,
    batch: usize,
    size: usize,
    json: bool,
) -> CliResult {
    let fail = |what: &str, e: transport::Error| CliError::new(format!("{what}: {e}"));
    outbox
        .migrate()
        .await
        .map_err(|e| fail("migrating the bench table", e))?;
    let broker = connect(url).await?;
    let payload = transport::Bytes::from(vec![b'x'; size]);
    let messages = |n: usize| (0..n).map(|i| Message::new(payload.clone()).with_key(format!("k{}", i % 16)));

    let topic = format!("outbox-bench-plain-{}", transport::new_id().replace('-', ""));
    let start = Instant::now();
    let all: Vec<Message> = messages(rows).collect();
    for chunk in all.chunks(batch) {
        broker
            .publish_batch(&topic, chunk.to_vec())
            .await
            .map_err(|e| failed("publishing", url, &e))?;
    }
    let plain = rows as f64 / start.elapsed().as_secs_f64();

    let topic = format!("outbox-bench-relay-{}", transport::new_id().replace('-', ""));
    let start = Instant::now();
    let all: Vec<Message> = messages(rows).collect();
    for chunk in all.chunks(batch) {
        let mut tx = outbox
            .pool()
            .begin()
            .await
            .map_err(|e| CliError::new(format!("beginning a transaction: {e}")))?;
        for m in chunk {
            outbox
                .enqueue(&mut tx, &topic, m.clone())
                .await
                .map_err(|e| fail("enqueueing", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| CliError::new(format!("committing: {e}")))?;
    }
    let enqueued = rows as f64 / start.elapsed().as_secs_f64();

    let relay = outbox.relay(broker.clone()).batch_size(batch);
    let start = Instant::now();
    let mut published = 0;
    while published < rows {
        let step = relay.run_once().await.map_err(|e| fail("relaying", e))?;
        if step.claimed == 0 || step.broker_failed {
            return Err(CliError::new(format!(
                "the relay stopped after {published} of {rows} rows: {step:?}"
            )));
        }
        published += step.published;
    }
    let relayed = rows as f64 / start.elapsed().as_secs_f64();
    let _ = broker.close().await;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "broker": redact_url(url), "rows": rows, "batch": batch, "size": size,
                "plain_publish_per_s": plain.round(), "enqueue_per_s": enqueued.round(),
                "relay_per_s": relayed.round(), "relay_vs_plain": (relayed / plain * 100.0).round() / 100.0,
            })
        );
    } else {
        println!(
            "{rows} rows of {size} bytes, batches of {batch}, into {}",
            redact_url(url)
        );
        println!("  plain publish_batch   {plain:>10.0} msg/s");
        println!("  outbox enqueue        {enqueued:>10.0} rows/s (transactions of {batch})");
        println!(
            "  relay                 {relayed:>10.0} rows/s ({:.2}x the plain publish rate)",
            relayed / plain
        );
    }
    Ok(())
}
