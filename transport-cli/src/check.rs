//! `transport check`: the conformance suite from the command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use conformance_tests::{checks, CheckRecord, CheckStatus, Report};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use transport::redact_url;
use transport::Transport;

use crate::cli::CheckArgs;
use crate::target::{connect, url_or_env, CliError, CliResult};

/// Backends `--all` looks for, as `TRANSPORT_URL_<NAME>`.
const BACKENDS: &[&str] = &["memory", "redis", "nats", "rabbitmq", "sqs", "kafka"];

pub async fn run(args: CheckArgs) -> CliResult {
    let targets: Vec<String> = if args.all {
        BACKENDS
            .iter()
            .filter_map(|b| {
                let var = format!("TRANSPORT_URL_{}", b.to_ascii_uppercase());
                std::env::var(&var)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .or_else(|| (*b == "memory").then(|| "memory://".to_owned()))
            })
            .collect()
    } else {
        vec![url_or_env(args.url.clone())?]
    };
    // The suite makes handlers panic on purpose; the runtime catches those
    // and they would only clutter the progress display.
    std::panic::set_hook(Box::new(|_| {}));

    let mut reports = Vec::new();
    for url in &targets {
        let broker = connect(url).await?;
        eprintln!("checking {} ({})", broker.backend(), redact_url(url));
        let report = run_suite(broker.clone(), args.filter.as_deref(), args.parallel.max(1)).await;
        let _ = broker.close().await;
        let path = match &args.report_dir {
            Some(dir) => dir.join(format!("{}.json", report.backend)),
            None => default_report_path(&report.backend),
        };
        report
            .write(&path)
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("report: {}", path.display());
        reports.push(report);
    }
    let _ = std::panic::take_hook();

    if reports.len() == 1 {
        print_table(&reports[0]);
    } else {
        print_matrix(&reports);
    }
    let failed: usize = reports.iter().map(|r| r.count(CheckStatus::Failed)).sum();
    if failed > 0 {
        return Err(CliError::new(format!("{failed} check(s) failed")));
    }
    Ok(())
}

fn default_report_path(backend: &str) -> PathBuf {
    PathBuf::from("target")
        .join("conformance")
        .join(format!("{backend}.json"))
}

async fn run_suite(broker: Arc<dyn Transport>, filter: Option<&str>, parallel: usize) -> Report {
    let caps = broker.capabilities();
    let broker_skips = match conformance_tests::broker_skips(broker.backend()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}; ignoring it");
            Default::default()
        }
    };
    let all = checks();
    let selected: Vec<_> = all
        .iter()
        .copied()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .collect();
    let bar = ProgressBar::new(selected.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut records: Vec<CheckRecord> = futures::stream::iter(selected)
        .map(|check| {
            let broker = broker.clone();
            let bar = bar.clone();
            let skip = check.skip_for(&caps, &broker_skips);
            async move {
                let start = Instant::now();
                let (status, reason) = match skip {
                    Some(reason) => (CheckStatus::Skipped, Some(reason)),
                    None => match (check.run)(&broker).await {
                        Ok(()) => (CheckStatus::Passed, None),
                        Err(e) => (CheckStatus::Failed, Some(e.0)),
                    },
                };
                let mark = match status {
                    CheckStatus::Passed => "passed",
                    CheckStatus::Failed => "FAILED",
                    CheckStatus::Skipped => "skipped",
                };
                bar.set_message(format!("{} {mark}", check.name));
                bar.inc(1);
                CheckRecord {
                    name: check.name.to_owned(),
                    status,
                    reason,
                    millis: start.elapsed().as_millis() as u64,
                }
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    bar.finish_and_clear();
    records.sort_by_key(|r| all.iter().position(|c| c.name == r.name));
    Report {
        backend: broker.backend().to_owned(),
        checks: records,
    }
}

fn print_table(report: &Report) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["check", report.backend.as_str(), "time", "reason"]);
    for c in &report.checks {
        let status = match c.status {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "FAILED",
            CheckStatus::Skipped => "skipped",
        };
        table.add_row([
            c.name.clone(),
            status.to_owned(),
            format!("{:.1}s", c.millis as f64 / 1000.0),
            c.reason.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    println!(
        "{}: {} passed, {} failed, {} skipped",
        report.backend,
        report.count(CheckStatus::Passed),
        report.count(CheckStatus::Failed),
        report.count(CheckStatus::Skipped)
    );
}

fn print_matrix(reports: &[Report]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec!["check".to_owned()];
    header.extend(reports.iter().map(|r| r.backend.clone()));
    table.set_header(header);
    for check in checks() {
        let mut row = vec![check.name.to_owned()];
        for r in reports {
            let cell = match r.checks.iter().find(|c| c.name == check.name).map(|c| c.status) {
                Some(CheckStatus::Passed) => "✓",
                Some(CheckStatus::Failed) => "✗ FAILED",
                Some(CheckStatus::Skipped) => "– skipped",
                None => "",
            };
            row.push(cell.to_owned());
        }
        table.add_row(row);
    }
    println!("{table}");
    for r in reports {
        println!(
            "{}: {} passed, {} failed, {} skipped",
            r.backend,
            r.count(CheckStatus::Passed),
            r.count(CheckStatus::Failed),
            r.count(CheckStatus::Skipped)
        );
    }
}
