//! `transport bench`: publish -> consume -> ack throughput and latency.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use transport::{Bytes, Message, SubscribeOptions};

use crate::cli::BenchArgs;
use crate::target::{connect, failed, url_or_env, CliError, CliResult};

const SENT_AT: &str = "bench-sent-us";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub async fn run(args: BenchArgs) -> CliResult {
    let url = url_or_env(args.url.clone())?;
    let broker = connect(&url).await?;
    let topic = format!("bench-{}", transport::new_id().replace('-', ""));
    let mut sub = broker
        .subscribe(&topic, SubscribeOptions::new("bench").max_in_flight(512))
        .await
        .map_err(|e| failed("subscribing", &url, &e))?;
    let count = args.count.max(1);
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );

    let payload = Bytes::from(vec![b'x'; args.size]);
    let start = Instant::now();
    let publishers: Vec<_> = (0..args.concurrency.max(1))
        .map(|p| {
            let (broker, topic, payload) = (broker.clone(), topic.clone(), payload.clone());
            let share =
                count / args.concurrency.max(1) as u64 + u64::from((p as u64) < count % args.concurrency.max(1) as u64);
            let batch = args.batch.max(1) as u64;
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < share {
                    let k = batch.min(share - sent);
                    let msgs: Vec<Message> = (0..k)
                        .map(|_| Message::new(payload.clone()).with_header(SENT_AT, now_us().to_string()))
                        .collect();
                    if k == 1 {
                        broker.publish(&topic, msgs.into_iter().next().expect("one")).await?;
                    } else {
                        broker.publish_batch(&topic, msgs).await?;
                    }
                    sent += k;
                }
                Ok::<_, transport::Error>(())
            })
        })
        .collect();

    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let mut received = 0u64;
    while received < count {
        let d = match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) if e.is_retryable() => continue,
            Ok(Some(Err(e))) => return Err(failed("receiving", &url, &e)),
            Ok(None) | Err(_) => {
                return Err(CliError::new(format!(
                    "bench on {}: only {received} of {count} messages arrived (nothing for 30s)",
                    broker.backend()
                )))
            }
        };
        if let Some(sent) = d.headers().get(SENT_AT).and_then(|s| s.parse::<u64>().ok()) {
            let _ = latency.record(now_us().saturating_sub(sent));
        }
        d.ack().await.map_err(|e| failed("acking", &url, &e))?;
        received += 1;
        bar.inc(1);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let mut publish_errors = Vec::new();
    for p in publishers {
        match p.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => publish_errors.push(e.to_string()),
            Err(e) => publish_errors.push(e.to_string()),
        }
    }
    let _ = broker.close().await;
    if let Some(e) = publish_errors.first() {
        return Err(CliError::new(format!(
            "bench on {}: publishing failed: {e}",
            broker.backend()
        )));
    }
    let rate = count as f64 / elapsed.as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "backend": broker.backend(),
                "size": args.size,
                "count": count,
                "concurrency": args.concurrency,
                "batch": args.batch,
                "seconds": elapsed.as_secs_f64(),
                "messages_per_second": rate,
                "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": latency.max() as f64 / 1000.0},
            })
        );
    } else {
        println!(
            "{}: {count} messages of {} bytes, {} publisher(s), batch {}",
            broker.backend(),
            args.size,
            args.concurrency,
            args.batch
        );
        println!("  end to end: {rate:.0} msg/s ({:.2}s)", elapsed.as_secs_f64());
        println!(
            "  latency:    p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            latency.max() as f64 / 1000.0
        );
    }
    Ok(())
}
