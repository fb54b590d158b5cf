//! What one message costs on the path a service takes, counted rather than
//! timed: the transport from [`transport::connect`] on `memory://` and the
//! consumer runtime with its default layers, no metrics recorder and no
//! tracing subscriber installed.
//!
//! - Heap allocations per message, with a counting global allocator.
//! - Instructions per message, when `scripts/cost` runs one path under
//!   `valgrind --tool=callgrind`, collecting only inside
//!   `cost_measured_section`.
//!
//! Each path runs at `n` and at `2n` messages and reports the difference
//! divided by `n`, so what a run costs once (connecting, subscribing, the
//! consumer starting and stopping) is not counted against a message. The
//! messages (1 KiB payloads) are made before the measured section: making
//! one is the caller's cost, not the path's.
//!
//! ```text
//! cargo bench -p transport --bench cost                 every path: allocations per message
//! cargo bench -p transport --bench cost -- PATH N       one path at N messages (what callgrind runs)
//! ```
//!
//! Paths: `publish` (one message a call), `publish_batch` (100 a call),
//! `receive_ack` (take a delivery from the subscription and ack it),
//! `runtime` (one delivery through `Consumer::run_fn`: retry delays and
//! panic catching around an acking handler), `runtime_full` (the README's
//! full stack: retry delays, lease, breaker, idempotency on the in-memory
//! store, handler timeout, panic catching).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use support::full_stack;
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use transport::runtime::{Consumer, Context};
use transport::{Message, Outcome, SubscribeOptions};

#[path = "support/full_stack.rs"]
mod support;

/// Counts allocations (and reallocations, which may move) while counting is on.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PATHS: [&str; 5] = ["publish", "publish_batch", "receive_ack", "runtime", "runtime_full"];
const TOPIC: &str = "cost";
const BATCH: usize = 100;

/// What the measured section counted.
#[derive(Debug, Clone, Copy)]
struct Counted {
    allocations: u64,
    bytes: u64,
}

/// The only code callgrind collects in (`--toggle-collect`): runs `work` to
/// completion with the allocation counter on. Not generic and never
/// inlined, so it is one symbol.
#[inline(never)]
#[no_mangle]
fn cost_measured_section(runtime: &Runtime, work: Pin<Box<dyn Future<Output = ()> + '_>>) -> Counted {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    runtime.block_on(work);
    COUNTING.store(false, Ordering::SeqCst);
    Counted {
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
    }
}

fn messages(n: usize) -> Vec<Message> {
    let payload = bytes::Bytes::from(vec![b'x'; 1024]);
    (0..n)
        .map(|i| Message::new(payload.clone()).with_key(format!("key-{}", i % 16)))
        .collect()
}

/// One run of `path` over `n` messages on a fresh `memory://` transport.
fn run(path: &str, n: usize) -> Counted {
    // One thread: what callgrind counts is then the same from run to run.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let transport = runtime
        .block_on(transport::connect("memory://"))
        .expect("memory:// connects");
    let options = SubscribeOptions::new("cost").max_in_flight(1024);
    match path {
        "publish" => {
            let batch = messages(n);
            cost_measured_section(
                &runtime,
                Box::pin(async {
                    for m in batch {
                        transport.publish(TOPIC, m).await.expect("published");
                    }
                }),
            )
        }
        "publish_batch" => {
            let mut batch = messages(n);
            cost_measured_section(
                &runtime,
                Box::pin(async {
                    while !batch.is_empty() {
                        let rest = batch.split_off(batch.len().saturating_sub(BATCH));
                        transport.publish_batch(TOPIC, rest).await.expect("published");
                    }
                }),
            )
        }
        "receive_ack" => {
            let mut subscription = runtime
                .block_on(async {
                    let s = transport.subscribe(TOPIC, options).await?;
                    transport.publish_batch(TOPIC, messages(n)).await?;
                    Ok::<_, transport::Error>(s)
                })
                .expect("subscribed and published");
            cost_measured_section(
                &runtime,
                Box::pin(async move {
                    for _ in 0..n {
                        let delivery = subscription.next().await.expect("a delivery").expect("received");
                        delivery.ack().await.expect("acked");
                    }
                }),
            )
        }
        "runtime" | "runtime_full" => {
            // The group exists (and holds the n messages) before the
            // consumer subscribes again.
            runtime
                .block_on(async {
                    drop(transport.subscribe(TOPIC, options.clone()).await?);
                    transport.publish_batch(TOPIC, messages(n)).await
                })
                .expect("published");
            let done = Arc::new(Notify::new());
            let handled = Arc::new(AtomicU64::new(0));
            let consumer = Consumer::new(transport.clone(), TOPIC, options).concurrency(16);
            let (notify, count) = (done.clone(), handled.clone());
            let handler = move |_ctx: Context| {
                let (notify, count) = (notify.clone(), count.clone());
                async move {
                    if count.fetch_add(1, Ordering::Relaxed) + 1 == n as u64 {
                        notify.notify_one();
                    }
                    Outcome::Ack
                }
            };
            let full = path == "runtime_full";
            cost_measured_section(
                &runtime,
                Box::pin(async move {
                    let shutdown = async move { done.notified().await };
                    let stats = if full {
                        consumer.run(full_stack(handler), shutdown).await
                    } else {
                        consumer.run_fn(handler, shutdown).await
                    }
                    .expect("the consumer ran");
                    assert_eq!(stats.acked, n as u64, "every delivery acked");
                }),
            )
        }
        other => panic!("unknown path {other:?}: one of {PATHS:?}"),
    }
}

/// Per message: the cost at `2n` less the cost at `n`, over `n`.
fn per_message(path: &str, n: usize) -> (f64, f64) {
    let once = run(path, n);
    let twice = run(path, 2 * n);
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    (per(once.allocations, twice.allocations), per(once.bytes, twice.bytes))
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is PATH N.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.as_slice() {
        [path, n] => {
            let n: usize = n.parse().expect("N is a count of messages");
            let counted = run(path, n);
            println!("{path} {n} allocations={} bytes={}", counted.allocations, counted.bytes);
        }
        [] => {
            println!("{:<14} {:>18} {:>16}", "path", "allocations/msg", "bytes/msg");
            for path in PATHS {
                let (allocations, bytes) = per_message(path, 5_000);
                println!("{path:<14} {allocations:>18.2} {bytes:>16.0}");
            }
        }
        _ => panic!("usage: cost [PATH N]"),
    }
}
