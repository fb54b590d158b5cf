//! The JSON report a run writes: `target/conformance/<backend>.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// It held.
    Passed,
    /// It did not.
    Failed,
    /// It does not apply to the backend.
    Skipped,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Check name.
    pub name: String,
    /// Outcome.
    pub status: CheckStatus,
    /// Failure message or skip reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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

    /// The default place: `<target dir>/conformance/<backend>.json`, where the
    /// target dir is `CARGO_TARGET_DIR` or `target` of the workspace.
    pub fn default_path(backend: &str) -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
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
