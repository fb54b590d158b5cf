//! `transport monitor`: groups' backlogs as Prometheus gauges, with alerts
//! on lag and dead letters.

use std::collections::HashSet;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use transport::telemetry::names::*;
use transport::{Accuracy, Backlog, SubscribeOptions, Transport};

use crate::cli::{LagThreshold, MonitorArgs};
use crate::target::{connect, failed, url_or_env, CliError, CliResult};

pub async fn run(args: MonitorArgs) -> CliResult {
    let url = url_or_env(args.url.clone())?;
    let broker = connect(&url).await?;
    if let Some(LagThreshold::Age(_)) = args.alert_lag {
        if broker.capabilities().backlog.oldest_waiting_age == Accuracy::Unavailable {
            return Err(CliError::new(format!(
                "{} cannot tell how long a message has waited; alert on a count instead (--alert-lag 1000)",
                broker.backend()
            )));
        }
    }
    let handle = install(&args)?;
    let mut firing: HashSet<String> = HashSet::new();
    loop {
        let mut alerts = Vec::new();
        for topic in &args.topic {
            for group in &args.group {
                let b = broker
                    .backlog(topic, &SubscribeOptions::new(group))
                    .await
                    .map_err(|e| failed(&format!("reading the backlog of {group} on {topic}"), &url, &e))?;
                record(broker.as_ref(), topic, group, &b);
                alerts.extend(check(&args, topic, group, &b));
            }
        }
        let now: HashSet<String> = alerts.iter().map(|(id, _)| id.clone()).collect();
        for (id, text) in &alerts {
            if args.once || !firing.contains(id) {
                eprintln!("ALERT {text}");
            }
        }
        for id in firing.difference(&now) {
            eprintln!("RESOLVED {id}");
        }
        firing = now;
        if args.once {
            print!("{}", handle.render());
            return match alerts.len() {
                0 => Ok(()),
                n => Err(CliError::new(format!("{n} alert(s) firing"))),
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The Prometheus recorder, serving `/metrics` on `--listen` when given.
fn install(args: &MonitorArgs) -> CliResult<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    if let Some(addr) = args.listen {
        builder = builder.with_http_listener(addr);
    }
    let (recorder, exporter) = builder
        .build()
        .map_err(|e| CliError::new(format!("cannot start the metrics listener: {e}")))?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| CliError::new(format!("metrics recorder: {e}")))?;
    if args.listen.is_some() {
        tokio::spawn(async move {
            if let Err(e) = exporter.await {
                eprintln!("the metrics listener stopped: {e:?}");
            }
        });
    }
    Ok(handle)
}

fn record(broker: &dyn Transport, topic: &str, group: &str, b: &Backlog) {
    let labels = [
        (SYSTEM, broker.backend().to_owned()),
        (DESTINATION, topic.to_owned()),
        (GROUP, group.to_owned()),
    ];
    let figures = [
        (BACKLOG_WAITING, b.waiting.map(|n| n as f64)),
        (BACKLOG_IN_FLIGHT, b.in_flight.map(|n| n as f64)),
        (BACKLOG_DEAD_LETTERS, b.dead_letters.map(|n| n as f64)),
        (BACKLOG_OLDEST_AGE, b.oldest_waiting_age.map(|d| d.as_secs_f64())),
    ];
    // A figure the broker cannot tell is not exported, rather than as 0.
    for (name, value) in figures {
        if let Some(v) = value {
            metrics::gauge!(name, &labels).set(v);
        }
    }
}

/// The alerts `b` fires: (identity, text).
fn check(args: &MonitorArgs, topic: &str, group: &str, b: &Backlog) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match args.alert_lag {
        Some(LagThreshold::Count(max)) if b.waiting.is_some_and(|w| w > max) => out.push((
            format!("lag {topic}/{group}"),
            format!(
                "lag {topic}/{group}: {} messages waiting (more than {max})",
                b.waiting.unwrap_or(0)
            ),
        )),
        Some(LagThreshold::Age(max)) if b.oldest_waiting_age.is_some_and(|a| a > max) => out.push((
            format!("lag {topic}/{group}"),
            format!(
                "lag {topic}/{group}: the oldest message has waited {} (more than {})",
                humantime::format_duration(std::time::Duration::from_secs(
                    b.oldest_waiting_age.unwrap_or_default().as_secs()
                )),
                humantime::format_duration(max)
            ),
        )),
        _ => {}
    }
    if let (Some(max), Some(dead)) = (args.alert_dlq, b.dead_letters) {
        if dead > max {
            out.push((
                format!("dead letters {topic}/{group}"),
                format!("dead letters {topic}/{group}: {dead} in the dead-letter queue (more than {max})"),
            ));
        }
    }
    out
}
