//! The JSON report a run writes: `target/conformance/<backend>.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// It held.
    Passed,
    /// It did not.
    Failed,
    /// It does not apply to the backend (a capability it declares it lacks;
    /// the lack itself is proven by a negative check).
    Skipped,
    /// It applies but was not run: a known defect of the broker under test
    /// (not of the backend), with a reason and a reproduction. Counted
    /// apart from passes: the promise is not proven there.
    NotProven,
}

impl CheckStatus {
    /// How tables show it.
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "FAILED",
            CheckStatus::Skipped => "skipped",
            CheckStatus::NotProven => "not proven",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Check name.
    pub name: String,
    /// Outcome.
    pub status: CheckStatus,
    /// Failure message, skip reason or known defect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a check not proven: how to reproduce the broker's defect
    /// outside this library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproduction: Option<String>,
    /// Run time in milliseconds.
    #[serde(default)]
    pub millis: u64,
}

/// The report of one run against one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Backend name.
    pub backend: String,
    /// The checks, in suite order.
    pub checks: Vec<CheckRecord>,
}

impl Report {
    /// Checks with `status`.
    pub fn count(&self, status: CheckStatus) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// One line: passed, failed, skipped and not proven counts.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} passed, {} failed, {} skipped (capability not declared), {} not proven (broker defect)",
            self.backend,
            self.count(CheckStatus::Passed),
            self.count(CheckStatus::Failed),
            self.count(CheckStatus::Skipped),
            self.count(CheckStatus::NotProven)
        )
    }

    /// The default place: `<target dir>/conformance/<backend>.json`. The
    /// target dir is `CARGO_TARGET_DIR`, else `target` beside the
    /// `Cargo.lock` above the running package (cargo sets
    /// `CARGO_MANIFEST_DIR` for tests), else this workspace's.
    pub fn default_path(backend: &str) -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                let package = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
                package
                    .ancestors()
                    .find(|dir| dir.join("Cargo.lock").is_file())
                    .map(|root| root.join("target"))
            })
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
        target.join("conformance").join(format!("{backend}.json"))
    }

    /// Write as pretty JSON, creating the directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)
    }
}
