//! `transport check`: the conformance suite from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use conformance_tests::{checks, CheckStatus, Report, RunOptions};
use indicatif::{ProgressBar, ProgressStyle};
use transport::redact_url;
use transport::Transport;

use crate::cli::CheckArgs;
use crate::target::{connect, url_or_env, CliError, CliResult};

/// Backends `--all` looks for, as `TRANSPORT_URL_<NAME>`.
const BACKENDS: &[&str] = &["memory", "redis", "nats", "rabbitmq", "sqs", "kafka"];

/// Report name prefixes of the store suite (`conformance-tests/tests/stores.rs`).
const STORE_SUITES: &[&str] = &["outbox-", "idempotency-"];

/// Reports that are suites of their own, each its own matrix, not a broker:
/// the cost gate (`scripts/cost`, `cost.json`: paths x instructions and
/// allocations per message) and the contract suite (`contracts.json`:
/// schema changes and generated documents).
const OWN_SUITES: &[&str] = &["cost", "contracts"];

pub async fn run(args: CheckArgs) -> CliResult {
    if let Some(dir) = &args.from_reports {
        // The store suite's reports (outbox-*, idempotency-*) are a matrix
        // of their own: stores x store checks, not brokers x broker checks.
        // So is each suite of OWN_SUITES.
        let (own, reports): (Vec<Report>, Vec<Report>) = read_reports(dir)?
            .into_iter()
            .partition(|r| OWN_SUITES.contains(&r.backend.as_str()));
        let (stores, brokers): (Vec<Report>, Vec<Report>) = reports
            .into_iter()
            .partition(|r| STORE_SUITES.iter().any(|s| r.backend.starts_with(s)));
        if !brokers.is_empty() {
            print_matrix(&brokers);
        }
        let others = std::iter::once(stores).chain(own.into_iter().map(|r| vec![r]));
        for (i, other) in others.filter(|o| !o.is_empty()).enumerate() {
            if i > 0 || !brokers.is_empty() {
                println!();
            }
            print_matrix(&other);
        }
        return Ok(());
    }
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
        let report = run_suite(broker.clone(), args.filter.as_deref(), args.parallel.max(1)).await?;
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

/// Every `*.json` report in `dir`, in a stable order.
fn read_reports(dir: &std::path::Path) -> Result<Vec<Report>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::new(format!("cannot read {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut reports = Vec::new();
    for path in paths {
        let text = std::fs::read(&path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
        match serde_json::from_slice::<Report>(&text) {
            Ok(mut report) => {
                // A report written under another name (sqs-fifo.json) is
                // shown under that name; the interop report of a broker
                // (interop-redis.json) joins that broker's column, and the
                // TLS failure cases (tls-failures-redis.json) join the
                // suite's run over TLS (redis-tls).
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    report.backend = match stem.strip_prefix("tls-failures-") {
                        Some(backend) => format!("{backend}-tls"),
                        None => stem.strip_prefix("interop-").unwrap_or(stem).to_owned(),
                    };
                }
                match reports.iter_mut().find(|r: &&mut Report| r.backend == report.backend) {
                    Some(same) => same.checks.extend(report.checks),
                    None => reports.push(report),
                }
            }
            // Files of other formats may share the directory.
            Err(_) => continue,
        }
    }
    if reports.is_empty() {
        return Err(CliError::new(format!("no conformance reports in {}", dir.display())));
    }
    reports.sort_by(|a, b| a.backend.cmp(&b.backend));
    Ok(reports)
}

fn default_report_path(backend: &str) -> PathBuf {
    PathBuf::from("target")
        .join("conformance")
        .join(format!("{backend}.json"))
}

async fn run_suite(broker: Arc<dyn Transport>, filter: Option<&str>, parallel: usize) -> Result<Report, CliError> {
    let mut options = RunOptions::from_env(broker.backend()).map_err(CliError::new)?;
    if let Some(f) = filter {
        options = options.filter(f);
    }
    let bar = ProgressBar::new(options.selected().len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let options = options.parallel(parallel).on_record({
        let bar = bar.clone();
        move |r| {
            bar.set_message(format!("{} {}", r.name, r.status.label()));
            bar.inc(1);
        }
    });
    let report = conformance_tests::run(&broker, &options).await;
    bar.finish_and_clear();
    Ok(report)
}

fn print_table(report: &Report) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["check", report.backend.as_str(), "time", "reason"]);
    for c in &report.checks {
        let reason = match (&c.reason, &c.reproduction) {
            (Some(r), Some(repro)) => format!("{r} (reproduction: {repro})"),
            (Some(r), None) => r.clone(),
            _ => String::new(),
        };
        table.add_row([
            c.name.clone(),
            c.status.label().to_owned(),
            format!("{:.1}s", c.millis as f64 / 1000.0),
            reason,
        ]);
    }
    println!("{table}");
    println!("{}", report.summary());
}

fn print_matrix(reports: &[Report]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec!["check".to_owned()];
    header.extend(reports.iter().map(|r| r.backend.clone()));
    table.set_header(header);
    // The suite's checks in suite order, then any other (interop) check the
    // reports hold, in the order they first appear.
    let mut names: Vec<String> = checks().iter().map(|c| c.name.to_owned()).collect();
    for c in reports.iter().flat_map(|r| &r.checks) {
        if !names.contains(&c.name) {
            names.push(c.name.clone());
        }
    }
    names.retain(|n| reports.iter().any(|r| r.checks.iter().any(|c| &c.name == n)));
    for name in names {
        let mut row = vec![name.clone()];
        for r in reports {
            let cell = match r.checks.iter().find(|c| c.name == name).map(|c| c.status) {
                Some(CheckStatus::Passed) => "✓",
                Some(CheckStatus::Failed) => "✗ FAILED",
                Some(CheckStatus::Skipped) => "– skipped",
                Some(CheckStatus::NotProven) => "? not proven",
                None => "",
            };
            row.push(cell.to_owned());
        }
        table.add_row(row);
    }
    println!("{table}");
    for r in reports {
        println!("{}", r.summary());
        for c in r.checks.iter().filter(|c| c.status == CheckStatus::NotProven) {
            println!(
                "  not proven on {}: {} — {} (reproduction: {})",
                r.backend,
                c.name,
                c.reason.as_deref().unwrap_or(""),
                c.reproduction.as_deref().unwrap_or("")
            );
        }
    }
}
