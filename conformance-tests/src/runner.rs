//! Running the suite: [`run`] for a whole report, [`run_check`] for one
//! check, and [`test_main`] (or [`conformance_main!`](crate::conformance_main))
//! to turn it into test trials of a `harness = false` test in any crate.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use transport_core::Transport;

use crate::report::{CheckRecord, CheckStatus, Report};
use crate::{checks, Check, CheckResult};

/// A check that one broker (not the backend) gets wrong, shown by a
/// reproduction outside this library. The check is not run and the report
/// lists it as [`CheckStatus::NotProven`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDefect {
    /// What the broker does wrong.
    pub reason: String,
    /// How to see it without this library (a command, an example, an issue).
    pub reproduction: String,
}

/// How [`run`] runs the suite.
#[derive(Clone)]
pub struct RunOptions {
    filter: Option<String>,
    known_defects: BTreeMap<String, KnownDefect>,
    check_timeout: Duration,
    parallel: usize,
    on_record: Option<OnRecord>,
}

type OnRecord = Arc<dyn Fn(&CheckRecord) + Send + Sync>;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            filter: None,
            known_defects: BTreeMap::new(),
            check_timeout: Duration::from_secs(180),
            parallel: 4,
            on_record: None,
        }
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("filter", &self.filter)
            .field("known_defects", &self.known_defects)
            .field("check_timeout", &self.check_timeout)
            .field("parallel", &self.parallel)
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    /// Every check, four at a time, each failing after 180 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The options the environment asks for, for `backend`:
    /// `CONFORMANCE_SKIP="[backend/]check=reason|reproduction;..."` (known
    /// broker defects) and `CONFORMANCE_CHECK_TIMEOUT_MS`.
    pub fn from_env(backend: &str) -> Result<Self, String> {
        let mut options = RunOptions::new();
        if let Some(ms) = std::env::var("CONFORMANCE_CHECK_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            options = options.check_timeout(Duration::from_millis(ms));
        }
        let raw = std::env::var("CONFORMANCE_SKIP").unwrap_or_default();
        for entry in raw.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || format!("CONFORMANCE_SKIP entry {entry:?} is not `[backend/]check=reason|reproduction`");
            let (target, rest) = entry.split_once('=').ok_or_else(bad)?;
            let (reason, reproduction) = rest.split_once('|').ok_or_else(bad)?;
            let (only, name) = match target.trim().split_once('/') {
                Some((b, n)) => (Some(b.trim()), n.trim()),
                None => (None, target.trim()),
            };
            // Every entry is checked (a renamed check must not stay skipped
            // unnoticed), only this backend's apply.
            let checked = RunOptions::new().known_defect(name, reason, reproduction)?;
            if only.is_none_or(|b| b == backend) {
                options.known_defects.extend(checked.known_defects);
            }
        }
        Ok(options)
    }

    /// Only checks whose name contains `filter`.
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Do not run `check` on this broker: it has a known defect there. An
    /// unknown check name, or an empty reason or reproduction, is an error
    /// (a renamed check must not stay skipped unnoticed).
    pub fn known_defect(
        mut self,
        check: &str,
        reason: impl Into<String>,
        reproduction: impl Into<String>,
    ) -> Result<Self, String> {
        let (reason, reproduction) = (reason.into().trim().to_owned(), reproduction.into().trim().to_owned());
        if !checks().iter().any(|c| c.name == check) {
            return Err(format!("known defect for unknown check {check:?}"));
        }
        if reason.is_empty() || reproduction.is_empty() {
            return Err(format!(
                "known defect of {check}: a reason and a reproduction are both required"
            ));
        }
        self.known_defects
            .insert(check.to_owned(), KnownDefect { reason, reproduction });
        Ok(self)
    }

    /// The longest one check may take before it fails (default 180 s): a
    /// backend that hangs fails the check instead of the run.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// How many checks [`run`] runs at once (default 4; every check uses
    /// its own topics).
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// Called with each record as its check ends (progress display).
    pub fn on_record(mut self, f: impl Fn(&CheckRecord) + Send + Sync + 'static) -> Self {
        self.on_record = Some(Arc::new(f));
        self
    }

    /// The checks this run selects, in suite order.
    pub fn selected(&self) -> Vec<Check> {
        checks()
            .into_iter()
            .filter(|c| self.filter.as_deref().is_none_or(|f| c.name.contains(f)))
            .collect()
    }
}

/// Run `check` against `transport`: skipped when the backend's capabilities
/// rule it out, not proven when `options` names a known defect, else run
/// with the check deadline.
pub async fn run_check(check: Check, transport: &Arc<dyn Transport>, options: &RunOptions) -> CheckRecord {
    let start = Instant::now();
    let (status, reason, reproduction) = if let Some(reason) = check.skip_reason(&transport.capabilities()) {
        (CheckStatus::Skipped, Some(reason.to_owned()), None)
    } else if let Some(defect) = options.known_defects.get(check.name) {
        (
            CheckStatus::NotProven,
            Some(defect.reason.clone()),
            Some(defect.reproduction.clone()),
        )
    } else {
        match run_with_deadline(check, transport.clone(), options.check_timeout).await {
            Ok(()) => (CheckStatus::Passed, None, None),
            Err(e) => (CheckStatus::Failed, Some(e), None),
        }
    };
    let record = CheckRecord {
        name: check.name.to_owned(),
        status,
        reason,
        reproduction,
        millis: start.elapsed().as_millis() as u64,
    };
    if let Some(f) = &options.on_record {
        f(&record);
    }
    record
}

/// Run `check` with its deadline, whatever the backend does. The check runs
/// on a thread of its own (`block_on` on a blocking-pool thread), so a check
/// or backend that never yields (a stream that is always ready, a busy loop)
/// cannot also starve the timer that ends it: the deadline is watched from
/// the runtime's workers. A panic in the check is a failure naming it.
async fn run_with_deadline(check: Check, transport: Arc<dyn Transport>, deadline: Duration) -> Result<(), String> {
    let handle = tokio::runtime::Handle::current();
    let running = tokio::task::spawn_blocking(move || handle.block_on((check.run)(&transport)));
    let abort = running.abort_handle();
    match tokio::time::timeout(deadline, running).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.0),
        Ok(Err(e)) => Err(format!("the check panicked: {}", panic_text(e))),
        Err(_) => {
            // A blocking task cannot be cancelled; the thread is left to
            // finish (or spin) on its own, and the run goes on.
            abort.abort();
            Err(format!("did not finish within {deadline:?}"))
        }
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned()),
        Err(e) => e.to_string(),
    }
}

/// Run the selected checks against `transport`, `parallel` at a time, and
/// return the report (records in suite order).
///
/// Takes the `Arc` the runtime checks need (a consumer owns its transport).
///
/// ```no_run
/// # async fn demo() -> transport_core::Result<()> {
/// # let transport: std::sync::Arc<dyn transport_core::Transport> = todo!();
/// use conformance_tests::{run, CheckStatus, RunOptions};
///
/// let report = run(&transport, &RunOptions::new().parallel(8)).await;
/// println!("{}", report.summary());
/// assert_eq!(report.count(CheckStatus::Failed), 0);
/// # Ok(()) }
/// ```
pub async fn run(transport: &Arc<dyn Transport>, options: &RunOptions) -> Report {
    let selected = options.selected();
    let mut records: Vec<CheckRecord> = futures::stream::iter(selected.iter().copied())
        .map(|check| run_check(check, transport, options))
        .buffer_unordered(options.parallel)
        .collect()
        .await;
    records.sort_by_key(|r| selected.iter().position(|c| c.name == r.name));
    Report {
        backend: transport.backend().to_owned(),
        checks: records,
    }
}

/// The runtime a harness runs its async cases on (see [`async_case`]).
pub fn test_runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    )
}

/// The `main` of a `harness = false` test that runs the suite as test trials
/// (filtering, `--list`, `--test-threads` as with `cargo test`) against the
/// transport `connect` opens, with [`RunOptions::from_env`], and writes the
/// report to `target/conformance/<backend>.json` (`CONFORMANCE_REPORT`
/// renames it). Exits the process with the test result.
pub fn test_main<F, Fut, E>(connect: F) -> !
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<dyn Transport>, E>>,
    E: fmt::Display,
{
    let args = libtest_mimic::Arguments::from_args();
    let runtime = test_runtime();
    let transport = match runtime.block_on(connect()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot connect the transport under test: {e}");
            std::process::exit(2);
        }
    };
    let backend = transport.backend();
    let options = RunOptions::from_env(backend).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    eprintln!("conformance suite against {backend}");
    let trials: Vec<Case> = checks()
        .into_iter()
        .map(|check| {
            let (runtime, transport, options) = (runtime.clone(), transport.clone(), options.clone());
            let run: Box<dyn FnOnce() -> CheckRecord + Send> = Box::new(move || {
                // The trial thread keeps a deadline of its own, outside the
                // runtime: should every worker be stuck in code that never
                // yields, the check's own timer could not fire, and this
                // one still ends the trial.
                let (done, record) = std::sync::mpsc::channel();
                let outer = options.check_timeout + Duration::from_secs(10);
                runtime.spawn(async move {
                    let _ = done.send(run_check(check, &transport, &options).await);
                });
                record.recv_timeout(outer).unwrap_or_else(|_| CheckRecord {
                    name: check.name.to_owned(),
                    status: CheckStatus::Failed,
                    reason: Some(format!(
                        "did not finish within {outer:?}, and the runtime stopped answering (a task that never yields?)"
                    )),
                    reproduction: None,
                    millis: outer.as_millis() as u64,
                })
            });
            (check.name, run)
        })
        .collect();
    let report = std::env::var("CONFORMANCE_REPORT").unwrap_or_else(|_| backend.to_owned());
    let conclusion = run_trials(&args, backend, &report, trials);
    let _ = runtime.block_on(transport.close());
    conclusion.exit();
}

/// A named case of [`run_trials`]: runs once and says how it went.
pub type Case = (&'static str, Box<dyn FnOnce() -> CheckRecord + Send>);

/// A trial that runs `check` on `runtime`, failing it after `timeout`, or
/// reports it skipped for `skip` (a server the check needs is absent).
pub fn async_case<F>(
    name: &'static str,
    runtime: Arc<tokio::runtime::Runtime>,
    timeout: Duration,
    skip: Option<String>,
    check: F,
) -> Case
where
    F: FnOnce() -> futures::future::BoxFuture<'static, CheckResult> + Send + 'static,
{
    let run = move || {
        let start = Instant::now();
        let (status, reason) = match skip {
            Some(why) => (CheckStatus::Skipped, Some(why)),
            None => {
                // On a thread of its own, watched from this one: the
                // deadline holds even if the check never yields.
                let (done, result) = std::sync::mpsc::channel();
                let handle = runtime.handle().clone();
                runtime.spawn_blocking(move || {
                    let _ = done.send(handle.block_on(check()));
                });
                match result.recv_timeout(timeout) {
                    Ok(Ok(())) => (CheckStatus::Passed, None),
                    Ok(Err(e)) => (CheckStatus::Failed, Some(e.0)),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => (
                        CheckStatus::Failed,
                        Some("the check panicked (see its output)".to_owned()),
                    ),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        (CheckStatus::Failed, Some(format!("did not finish within {timeout:?}")))
                    }
                }
            }
        };
        CheckRecord {
            name: name.to_owned(),
            status,
            reason,
            reproduction: None,
            millis: start.elapsed().as_millis() as u64,
        }
    };
    (name, Box::new(run))
}

/// Run `cases` as the test trials of a `harness = false` test (filters,
/// `--list`, `--test-threads` as with `cargo test`; skipped and not-proven
/// cases show as ignored, never as passed), and write their report to
/// `target/conformance/<report>.json` in the suite's format, in case order.
/// [`test_main`] runs the suite with it; other suites (interop, stores) too.
pub fn run_trials(
    args: &libtest_mimic::Arguments,
    backend: &str,
    report: &str,
    cases: Vec<Case>,
) -> libtest_mimic::Conclusion {
    use libtest_mimic::{Completion, Failed, Trial};

    let order: Vec<&'static str> = cases.iter().map(|(name, _)| *name).collect();
    let records: Arc<Mutex<Vec<CheckRecord>>> = Arc::default();
    let trials = cases
        .into_iter()
        .map(|(name, run)| {
            let records = records.clone();
            Trial::ignorable_test(name, move || {
                let record = run();
                let reason = record.reason.clone().unwrap_or_default();
                let outcome = match record.status {
                    CheckStatus::Passed => Ok(Completion::Completed),
                    CheckStatus::Failed => Err(Failed::from(reason)),
                    CheckStatus::Skipped => Ok(Completion::ignored_with(reason)),
                    CheckStatus::NotProven => Ok(Completion::ignored_with(format!("NOT PROVEN: {reason}"))),
                };
                records.lock().unwrap_or_else(|e| e.into_inner()).push(record);
                outcome
            })
            .with_kind(backend)
        })
        .collect();
    let conclusion = libtest_mimic::run(args, trials);
    let mut ran = std::mem::take(&mut *records.lock().unwrap_or_else(|e| e.into_inner()));
    ran.sort_by_key(|r| order.iter().position(|n| *n == r.name));
    if !args.list && !ran.is_empty() {
        let report_of_run = Report {
            backend: backend.to_owned(),
            checks: ran,
        };
        let path = Report::default_path(report);
        match report_of_run.write(&path) {
            Ok(()) => eprintln!("{}\nreport: {}", report_of_run.summary(), path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
    conclusion
}

/// A `main` for a `harness = false` test target that runs the conformance
/// suite against the transport the expression (an `async` block returning
/// `Result<Arc<dyn Transport>, impl Display>`) opens:
///
/// ```no_run
/// // tests/conformance.rs, with `[[test]] name = "conformance" harness = false`
/// conformance_tests::conformance_main!(async {
///     transport::connect("memory://").await
/// });
/// ```
#[macro_export]
macro_rules! conformance_main {
    ($connect:expr) => {
        fn main() {
            $crate::test_main(|| $connect)
        }
    };
}
