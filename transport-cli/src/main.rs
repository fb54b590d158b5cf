//! `transport`: one command line for every broker this library supports.

mod bench;
mod check;
mod cli;
mod consume;
mod contracts;
mod demo;
mod demo_contracts;
mod demo_outbox;
mod dlq;
mod measured;
mod monitor;
mod outbox;
mod plot;
mod provision;
mod publish;
mod stats;
mod sweep;
mod target;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Publish(a) => publish::run(a).await,
            Command::Consume(a) => consume::run(a).await,
            Command::Dlq(a) => dlq::run(a).await,
            Command::Stats(a) => stats::run(a).await,
            Command::Monitor(a) => monitor::run(a).await,
            Command::Provision(a) => provision::run(a).await,
            Command::Check(a) => check::run(a).await,
            Command::Bench(a) if a.sweep || !a.plot.is_empty() => sweep::command(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Contracts(a) => contracts::run(a),
            Command::Demo(a) => demo::run(a).await,
            Command::Outbox(a) => outbox::run(a).await,
        }
    });
    // Background tasks (reconnects, heartbeats) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
