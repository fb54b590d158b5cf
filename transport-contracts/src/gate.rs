//! The compatibility gate over schema files: the accepted schemas (a
//! service's `contracts/` folder, one file per version, kept in its
//! repository) against the current ones.
//!
//! Rules, per event type:
//! - a locked version is immutable: the same version with another schema
//!   (descriptions aside) is refused, a change needs a new version;
//! - a new minor version must keep the readers of the compatibility mode
//!   working against the latest locked version of its major (every locked
//!   version of it, in the transitive modes);
//! - a new major version is free (readers move with an upcaster), but a
//!   version lower than the newest locked of its major is refused;
//! - an event type or major version that is locked and no longer declared
//!   is reported: its consumers would wait for events that never come.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::compatibility::{schema_breaks, Breaking, Compatibility};
use crate::version::Version;

/// Schemas by event type and version.
pub type Schemas = BTreeMap<(String, Version), Value>;

/// What the gate refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A change that breaks readers, from `from` to `to`.
    Breaking {
        /// `ce-type`.
        event_type: String,
        /// The locked version compared with.
        from: Version,
        /// The current version.
        to: Version,
        /// The change.
        change: Breaking,
    },
    /// A locked version's schema changed.
    LockedVersionChanged {
        /// `ce-type`.
        event_type: String,
        /// The version.
        version: Version,
    },
    /// The current version is older than the newest locked one of its major.
    VersionWentBack {
        /// `ce-type`.
        event_type: String,
        /// The current version.
        current: Version,
        /// The newest locked one.
        locked: Version,
    },
    /// A locked event type (or major version of one) is no longer declared.
    Removed {
        /// `ce-type`.
        event_type: String,
        /// The major version.
        major: u32,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Breaking {
                event_type,
                from,
                to,
                change,
            } => write!(f, "{event_type} {from} -> {to}: {change}"),
            Problem::LockedVersionChanged { event_type, version } => write!(
                f,
                "{event_type} {version}: the schema of a locked version changed; a change needs a new version"
            ),
            Problem::VersionWentBack {
                event_type,
                current,
                locked,
            } => write!(f, "{event_type} {current}: older than the locked {locked}"),
            Problem::Removed { event_type, major } => write!(
                f,
                "{event_type} v{major}: locked, and no longer declared (its consumers would wait for it)"
            ),
        }
    }
}

/// The gate's refusal: the problems found, or a file it could not read.
#[derive(Debug)]
pub enum GateError {
    /// Changes that break readers, with their mode.
    Refused {
        /// The compatibility mode checked.
        mode: Compatibility,
        /// Every problem.
        problems: Vec<Problem>,
    },
    /// A schema file or folder that is not readable.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Writing the lock files failed.
    Io(std::io::Error),
}

impl fmt::Display for GateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateError::Refused { mode, problems } => {
                writeln!(f, "{} change(s) refused under {mode}:", problems.len())?;
                for p in problems {
                    writeln!(f, "  {p}")?;
                }
                Ok(())
            }
            GateError::Unreadable { path, why } => write!(f, "{}: {why}", path.display()),
            GateError::Io(e) => write!(f, "writing the lock files: {e}"),
        }
    }
}

impl std::error::Error for GateError {}

/// Strip what does not change which data is valid, for comparing a locked
/// version with its current schema: annotation keywords of schemas, never
/// the names in `properties` or `$defs` (a field may be called `title`).
fn without_annotations(schema: &Value) -> Value {
    const NAMED: [&str; 5] = [
        "properties",
        "patternProperties",
        "$defs",
        "definitions",
        "dependentSchemas",
    ];
    const VALUES: [&str; 3] = ["enum", "const", "default"];
    match schema {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "title" | "description" | "examples" | "$comment" | "$schema"
                    )
                })
                .map(|(k, v)| {
                    let v = if NAMED.contains(&k.as_str()) {
                        match v {
                            Value::Object(named) => {
                                Value::Object(named.iter().map(|(n, s)| (n.clone(), without_annotations(s))).collect())
                            }
                            other => other.clone(),
                        }
                    } else if VALUES.contains(&k.as_str()) {
                        v.clone()
                    } else {
                        without_annotations(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_annotations).collect()),
        other => other.clone(),
    }
}

/// The gate: `Ok` when `current` may be accepted after `locked`.
pub fn verdict(locked: &Schemas, current: &Schemas, mode: Compatibility) -> Result<(), GateError> {
    let mut problems = Vec::new();
    for ((event_type, version), schema) in current {
        let same_major: Vec<(&Version, &Value)> = locked
            .iter()
            .filter(|((t, v), _)| t == event_type && v.major == version.major)
            .map(|((_, v), s)| (v, s))
            .collect();
        if let Some((_, old)) = same_major.iter().find(|(v, _)| *v == version) {
            if without_annotations(old) != without_annotations(schema) {
                problems.push(Problem::LockedVersionChanged {
                    event_type: event_type.clone(),
                    version: *version,
                });
            }
            continue;
        }
        let Some(newest) = same_major.iter().map(|(v, _)| **v).max() else {
            continue;
        };
        if newest > *version {
            problems.push(Problem::VersionWentBack {
                event_type: event_type.clone(),
                current: *version,
                locked: newest,
            });
            continue;
        }
        for (from, old) in same_major.iter().filter(|(v, _)| mode.transitive() || **v == newest) {
            for change in schema_breaks(old, schema, mode) {
                problems.push(Problem::Breaking {
                    event_type: event_type.clone(),
                    from: **from,
                    to: *version,
                    change,
                });
            }
        }
    }
    let mut majors: Vec<(&String, u32)> = locked.keys().map(|(t, v)| (t, v.major)).collect();
    majors.dedup();
    for (event_type, major) in majors {
        if !current.keys().any(|(t, v)| t == event_type && v.major == major) {
            problems.push(Problem::Removed {
                event_type: event_type.clone(),
                major,
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(GateError::Refused { mode, problems })
    }
}

/// Read every `<type>/<major>.<minor>.schema.json` under `dir` (a missing
/// folder is an empty set: nothing accepted yet).
pub fn read(dir: &Path) -> Result<Schemas, GateError> {
    let unreadable = |path: &Path, why: String| GateError::Unreadable {
        path: path.to_owned(),
        why,
    };
    let mut schemas = Schemas::new();
    let types = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(schemas),
        Err(e) => return Err(unreadable(dir, e.to_string())),
    };
    for entry in types {
        let entry = entry.map_err(|e| unreadable(dir, e.to_string()))?;
        if !entry.path().is_dir() {
            continue;
        }
        let event_type = entry.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(entry.path()).map_err(|e| unreadable(&entry.path(), e.to_string()))? {
            let path = file.map_err(|e| unreadable(&entry.path(), e.to_string()))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let Some(version) = name.strip_suffix(".schema.json") else {
                continue;
            };
            let version = Version::parse(version)
                .ok_or_else(|| unreadable(&path, "the file name is not <major>.<minor>.schema.json".into()))?;
            let text = std::fs::read_to_string(&path).map_err(|e| unreadable(&path, e.to_string()))?;
            let schema: Value = serde_json::from_str(&text).map_err(|e| unreadable(&path, e.to_string()))?;
            schemas.insert((event_type.clone(), version), schema);
        }
    }
    Ok(schemas)
}

/// Remove the schema files under `dir` (`<type>/*.schema.json`, and the
/// type folders left empty); nothing else is touched.
pub fn clear(dir: &Path) -> std::io::Result<()> {
    let types = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in types {
        let folder = entry?.path();
        if !folder.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&folder)? {
            let path = file?.path();
            if path.to_string_lossy().ends_with(".schema.json") {
                std::fs::remove_file(&path)?;
            }
        }
        // Only when empty: a folder with other files stays.
        let _ = std::fs::remove_dir(&folder);
    }
    Ok(())
}

/// Write each schema to `dir/<type>/<major>.<minor>.schema.json` (pretty,
/// one trailing newline, so diffs in review stay readable).
pub fn write(dir: &Path, schemas: &Schemas) -> std::io::Result<()> {
    for ((event_type, version), schema) in schemas {
        if event_type.contains(['/', '\\']) || event_type.starts_with('.') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("event type {event_type:?} cannot name a folder"),
            ));
        }
        let folder = dir.join(event_type);
        std::fs::create_dir_all(&folder)?;
        let mut text = serde_json::to_string_pretty(schema).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(folder.join(format!("{version}.schema.json")), text)?;
    }
    Ok(())
}
