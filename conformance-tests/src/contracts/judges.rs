//! The official AsyncAPI tools (`@asyncapi/parser`, `@asyncapi/diff`) as
//! judges: `transport-contracts/tests/asyncapi/judge.mjs` under Node.js,
//! installed by `scripts/test` (`npm ci` in that folder).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::{unique, CheckFailure};

/// The folder of the judge script and its `node_modules`.
fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../transport-contracts/tests/asyncapi")
}

/// Why the judges cannot run here (no Node.js, or the packages not
/// installed), or `None` when they can.
pub fn absent() -> Option<String> {
    let installed = folder().join("node_modules/@asyncapi/parser").is_dir();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match (node, installed) {
        (false, _) => Some("Node.js is not installed (scripts/test installs it)".into()),
        (true, false) => Some(format!(
            "the AsyncAPI tools are not installed: npm ci --prefix {} (scripts/test does)",
            folder().display()
        )),
        (true, true) => None,
    }
}

/// Run the judge with `args`, each document written to a file first; its
/// JSON answer and whether it exited 0.
fn run(command: &str, docs: &[&Value]) -> Result<(Value, bool), CheckFailure> {
    let dir = std::env::temp_dir().join(unique("asyncapi"));
    std::fs::create_dir_all(&dir).map_err(|e| CheckFailure(format!("temporary folder: {e}")))?;
    let mut cmd = Command::new("node");
    cmd.arg(folder().join("judge.mjs")).arg(command);
    for (i, doc) in docs.iter().enumerate() {
        let path = dir.join(format!("doc{i}.json"));
        let text = serde_json::to_string_pretty(doc).expect("a JSON value serializes");
        std::fs::write(&path, text).map_err(|e| CheckFailure(format!("writing {}: {e}", path.display())))?;
        cmd.arg(path);
    }
    let out = cmd.output().map_err(|e| CheckFailure(format!("running node: {e}")))?;
    let _ = std::fs::remove_dir_all(&dir);
    let answer = serde_json::from_slice(&out.stdout).map_err(|e| {
        CheckFailure(format!(
            "the judge's answer is not JSON ({e}); stdout: {}; stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    Ok((answer, out.status.success()))
}

/// The AsyncAPI parser's errors on `doc` (empty: valid), and its warnings.
pub fn validate(doc: &Value) -> Result<(Vec<Value>, Vec<Value>), CheckFailure> {
    let (answer, _) = run("validate", &[doc])?;
    let list = |key: &str| answer[key].as_array().cloned().unwrap_or_default();
    Ok((list("errors"), list("warnings")))
}

/// `@asyncapi/diff` of two valid documents: its `breaking`, `nonBreaking`
/// and `unclassified` changes (each with `action`, `path`, `before`, `after`).
pub fn diff(old: &Value, new: &Value) -> Result<Value, CheckFailure> {
    let (answer, ok) = run("diff", &[old, new])?;
    if !ok {
        return Err(CheckFailure(format!("a document did not parse: {answer}")));
    }
    Ok(answer)
}
