//! This library beside RustStream (crates.io `ruststream` 0.7.7 and
//! `ruststream-nats` 0.7.1) on the same workload, in one process:
//!
//! - 1 KiB payloads, fresh and stamped per message, one publisher and one
//!   consumer, the publisher at most 1024 messages ahead of the consumer;
//! - publishes one at a time (each returning once the broker took it: on
//!   NATS once the JetStream PubAck came) and in batches of 100;
//! - one ack per message, either from a bare loop (receive, ack) or from
//!   each library's consumer runtime with a handler that returns `Ok`;
//! - on each in-memory broker (`memory://` and `MemoryBroker`) and on NATS
//!   JetStream (`nats://` and `JetStreamSubject` + `JetStreamPublish`);
//! - alternating rounds (ours, theirs, theirs, ours, ...), so a machine or a
//!   broker that drifts favours neither side; the median of the rounds and
//!   their min-max, per-round ratios, and the median p50/p99 of the
//!   publish-to-receive latency.
//!
//! ```text
//! cargo run --release --manifest-path compare/ruststream/Cargo.toml
//! ```
//! `BENCH_MESSAGES` (default 200000 on memory, 20000 on NATS),
//! `BENCH_ROUNDS` (default 6), `BENCH_CONCURRENCY` (handler calls at once in
//! the runtime workloads, default 1), `BENCH_BACKEND` (`memory` or `nats`,
//! default both), `BENCH_ONLY` (runs the workloads whose name, such as
//! `nats/runtime/batch100`, contains it), `TRANSPORT_NATS_URL` (default
//! nats://127.0.0.1:4222; NATS is skipped when nothing answers there).
//! README.md lists where the two libraries do different work.

mod ours;
mod probe;
mod theirs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use probe::{Probe, Sample, PAYLOAD};

/// The group (ours) and durable consumer name (theirs).
pub const GROUP: &str = "bench";
/// Unacked deliveries the consumer may hold: our `max_in_flight`, their
/// `max_ack_pending` on NATS (their in-memory broker has no such limit).
pub const IN_FLIGHT: usize = 1024;
/// Messages of each untimed warm-up run (connections, first streams,
/// allocator), as conformance-tests' `compare` warms up.
const WARM_UP: u64 = 1_000;

/// How the consumer takes the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consume {
    /// The bare subscription: next delivery, ack, in one task.
    Loop,
    /// The library's consumer runtime calling a handler that returns `Ok`.
    Runtime,
}

#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    pub consume: Consume,
    /// Messages per publish call (1: `publish`; 100: a batch).
    pub batch: usize,
}

const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "loop/single",
        consume: Consume::Loop,
        batch: 1,
    },
    Workload {
        name: "loop/batch100",
        consume: Consume::Loop,
        batch: 100,
    },
    Workload {
        name: "runtime/single",
        consume: Consume::Runtime,
        batch: 1,
    },
    Workload {
        name: "runtime/batch100",
        consume: Consume::Runtime,
        batch: 100,
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lib {
    Ours,
    Theirs,
}

impl Lib {
    fn name(self) -> &'static str {
        match self {
            Lib::Ours => "transport",
            Lib::Theirs => "ruststream",
        }
    }
}

enum Backend {
    Memory,
    Nats {
        ours: ours::Pair,
        theirs: theirs::nats::Setup,
    },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Nats { .. } => "nats",
        }
    }
}

struct Config {
    rounds: usize,
    concurrency: usize,
    only: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_num(name: &str) -> Option<u64> {
    env(name).map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

fn main() {
    let config = Config {
        rounds: env_num("BENCH_ROUNDS").unwrap_or(6).max(1) as usize,
        concurrency: env_num("BENCH_CONCURRENCY").unwrap_or(1).max(1) as usize,
        only: env("BENCH_ONLY"),
    };
    let which = env("BENCH_BACKEND");
    let wants = |name: &str| which.as_deref().is_none_or(|b| b == name);
    let url = env("TRANSPORT_NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    // Two worker threads, as every bench of this project: the machine's size.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");

    if wants("memory") {
        let n = env_num("BENCH_MESSAGES").unwrap_or(200_000);
        rt.block_on(bench(&Backend::Memory, n, &config));
    }
    if wants("nats") {
        match rt.block_on(connect_nats(&url)) {
            Err(reason) => println!("skipped: no NATS at {url} ({reason})"),
            Ok(backend) => {
                let n = env_num("BENCH_MESSAGES").unwrap_or(20_000);
                rt.block_on(bench(&backend, n, &config));
                if let Backend::Nats {
                    ours: pair,
                    theirs: setup,
                } = backend
                {
                    rt.block_on(async {
                        pair.close().await;
                        setup.close().await;
                    });
                }
            }
        }
    }
}

/// Both libraries' connections, or why NATS is not there.
async fn connect_nats(url: &str) -> Result<Backend, String> {
    let pair = tokio::time::timeout(Duration::from_secs(5), ours::Pair::connect(url))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let setup = tokio::time::timeout(Duration::from_secs(5), theirs::nats::Setup::connect(url))
        .await
        .map_err(|_| "no answer within 5 s".to_owned())??;
    Ok(Backend::Nats {
        ours: pair,
        theirs: setup,
    })
}

async fn bench(backend: &Backend, n: u64, config: &Config) {
    let workloads: Vec<Workload> = WORKLOADS
        .into_iter()
        .filter(|w| {
            let full = format!("{}/{}", backend.name(), w.name);
            config.only.as_deref().is_none_or(|o| full.contains(o))
        })
        .collect();
    if workloads.is_empty() {
        return;
    }
    println!(
        "{}: {n} messages of {PAYLOAD} bytes per run, {} alternating rounds (transport, ruststream, ruststream, \
         transport, ...), handler calls at once in the runtime: {}",
        backend.name(),
        config.rounds,
        config.concurrency
    );
    for w in &workloads {
        for lib in [Lib::Ours, Lib::Theirs] {
            run(backend, lib, *w, n.min(WARM_UP), config.concurrency).await;
        }
    }
    // samples[workload][0 = ours, 1 = theirs][round]
    let mut samples: Vec<[Vec<Sample>; 2]> = workloads.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for round in 0..config.rounds {
        let order = if round % 2 == 0 {
            [Lib::Ours, Lib::Theirs]
        } else {
            [Lib::Theirs, Lib::Ours]
        };
        for (i, w) in workloads.iter().enumerate() {
            for lib in order {
                let sample = run(backend, lib, *w, n, config.concurrency).await;
                samples[i][lib as usize].push(sample);
            }
        }
    }
    report(backend.name(), &workloads, &samples);
}

/// One run of `w` through `lib`, on fresh topics/streams.
async fn run(backend: &Backend, lib: Lib, w: Workload, n: u64, concurrency: usize) -> Sample {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    // Unique per run and never a prefix of another tag (the `z`), so the
    // streams of a run can be found by it.
    let tag = format!("{}n{}z", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
    let probe = Probe::new(n);
    let elapsed = match (backend, lib) {
        (Backend::Memory, Lib::Ours) => {
            let pair = ours::Pair::single(transport::connect(ours::MEMORY_URL).await.expect("memory:// opens"));
            let elapsed = ours::run(&pair, &format!("vsrs-ours-{tag}"), w, &probe, concurrency).await;
            pair.close().await;
            elapsed
        }
        (Backend::Memory, Lib::Theirs) => {
            theirs::memory::run(&format!("vsrs-theirs-{tag}"), w, &probe, concurrency).await
        }
        (
            Backend::Nats {
                ours: pair,
                theirs: setup,
            },
            Lib::Ours,
        ) => {
            let elapsed = ours::run(pair, &format!("vsrs-ours-{tag}"), w, &probe, concurrency).await;
            // Our streams (the topic's and its dead-letter topic's) hold the
            // tag too; RustStream's connection deletes them like its own.
            setup.delete_streams(&tag).await;
            elapsed
        }
        (Backend::Nats { theirs: setup, .. }, Lib::Theirs) => {
            let elapsed = setup.run(&tag, w, &probe, concurrency).await;
            setup.delete_streams(&tag).await;
            elapsed
        }
    };
    probe.sample(elapsed)
}

fn report(backend: &str, workloads: &[Workload], samples: &[[Vec<Sample>; 2]]) {
    println!(
        "{:<26} {:<11} {:>10} {:>23} {:>11} {:>11}",
        "workload", "library", "msg/s", "min-max", "p50", "p99"
    );
    for (w, per_lib) in workloads.iter().zip(samples) {
        let name = format!("{backend}/{}", w.name);
        for lib in [Lib::Ours, Lib::Theirs] {
            let runs = &per_lib[lib as usize];
            let rates: Vec<f64> = runs.iter().map(|s| s.rate).collect();
            let (lo, hi) = spread(&rates);
            let p50 = median(&runs.iter().map(|s| s.p50.as_secs_f64()).collect::<Vec<_>>());
            let p99 = median(&runs.iter().map(|s| s.p99.as_secs_f64()).collect::<Vec<_>>());
            println!(
                "{:<26} {:<11} {:>10.0} {:>11.0}-{:<11.0} {:>11.1?} {:>11.1?}",
                if lib == Lib::Ours { name.as_str() } else { "" },
                lib.name(),
                median(&rates),
                lo,
                hi,
                Duration::from_secs_f64(p50),
                Duration::from_secs_f64(p99),
            );
        }
        // The two runs of a round ran back to back: their ratio is the
        // least disturbed comparison there is.
        let ratios: Vec<f64> = per_lib[0]
            .iter()
            .zip(&per_lib[1])
            .map(|(o, t)| o.rate / t.rate)
            .collect();
        let (lo, hi) = spread(&ratios);
        println!(
            "{:<26} {:<11} {:>9.2}x {:>10.2}x-{:<.2}x  (transport / ruststream, per round)",
            "",
            "ratio",
            median(&ratios),
            lo,
            hi
        );
    }
}

/// The median; the mean of the middle two for an even count.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => v[len / 2],
        len => (v[len / 2 - 1] + v[len / 2]) / 2.0,
    }
}

fn spread(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}
