//! The gate over a service's catalog and its `contracts/` folder: a first
//! lock accepts everything, compatible new minors pass, a breaking change
//! is named, locked versions are immutable, versions do not go back, a
//! new major is free, and a type no longer declared is reported.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use transport_contracts::gate::{GateError, Problem};
use transport_contracts::{Catalog, Compatibility, EventType, Json, Version};

/// Declares `$name` as `$ty` at `$version` with fields `$fields`.
macro_rules! event {
    ($name:ident, $ty:literal, $major:literal, $minor:literal, { $($field:ident : $t:ty),* }) => {
        #[derive(Serialize, Deserialize, JsonSchema)]
        #[allow(dead_code)]
        struct $name { $($field: $t),* }
        impl EventType for $name {
            const TYPE: &'static str = $ty;
            const VERSION: Version = Version::new($major, $minor);
            type Codec = Json;
        }
    };
}

event!(Placed10, "shop.order.placed", 1, 0, { id: String, amount: i64 });
// A compatible minor: an optional field added, and a doc-only change.
event!(Placed11, "shop.order.placed", 1, 1, { id: String, amount: i64, note: Option<String> });
// A breaking minor: a required field added.
event!(Placed12, "shop.order.placed", 1, 2, { id: String, amount: i64, note: Option<String>, currency: String });
// 1.0 again with another schema.
event!(Placed10Changed, "shop.order.placed", 1, 0, { id: String, amount: f64 });
// A new major: free to break.
event!(Placed20, "shop.order.placed", 2, 0, { order: String });
event!(Cancelled10, "shop.order.cancelled", 1, 0, { id: String });

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn problems(e: GateError) -> Vec<Problem> {
    match e {
        GateError::Refused { problems, .. } => problems,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn the_life_of_a_contracts_folder() {
    let locked = dir("life");
    let backward = Compatibility::Backward;
    let v10 = Catalog::new("checkout")
        .produces::<Placed10>("orders")
        .unwrap()
        .produces::<Cancelled10>("orders")
        .unwrap();
    // Nothing accepted yet: the first lock accepts all.
    v10.lock(&locked, backward).unwrap();
    assert!(locked.join("shop.order.placed/1.0.schema.json").is_file());
    v10.check(&locked, backward).unwrap();

    // A compatible minor passes and is locked beside 1.0.
    let v11 = Catalog::new("checkout")
        .produces::<Placed11>("orders")
        .unwrap()
        .produces::<Cancelled10>("orders")
        .unwrap();
    v11.lock(&locked, backward).unwrap();
    assert!(locked.join("shop.order.placed/1.1.schema.json").is_file());

    // A required field added: named, and nothing is written.
    let v12 = Catalog::new("checkout")
        .produces::<Placed12>("orders")
        .unwrap()
        .produces::<Cancelled10>("orders")
        .unwrap();
    let e = v12.lock(&locked, backward).unwrap_err();
    assert_eq!(
        e.to_string(),
        "1 change(s) refused under BACKWARD:\n  shop.order.placed 1.1 -> 1.2: /currency: required-added \
         (required by the reader, not written); breaks new readers of old data\n"
    );
    assert!(!locked.join("shop.order.placed/1.2.schema.json").exists());
    // Under FORWARD the same change is fine (old readers ignore the field).
    v12.check(&locked, Compatibility::Forward).unwrap();

    // A locked version with another schema; a version older than the newest locked.
    let changed = Catalog::new("checkout")
        .produces::<Placed10Changed>("orders")
        .unwrap()
        .produces::<Cancelled10>("orders")
        .unwrap();
    let p = problems(changed.check(&locked, backward).unwrap_err());
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::VersionWentBack { current, locked, .. }
            if *current == Version::new(1, 0) && *locked == Version::new(1, 1)))
            || p.iter().any(|p| matches!(p, Problem::LockedVersionChanged { .. })),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::LockedVersionChanged { version, .. } if *version == Version::new(1, 0))),
        "{p:?}"
    );

    // A new major is free; dropping v1 and the cancelled type is reported.
    let v20 = Catalog::new("checkout").produces::<Placed20>("orders").unwrap();
    let p = problems(v20.check(&locked, backward).unwrap_err());
    let removed: Vec<(String, u32)> = p
        .iter()
        .map(|p| match p {
            Problem::Removed { event_type, major } => (event_type.clone(), *major),
            other => panic!("only removals expected, got {other}"),
        })
        .collect();
    assert_eq!(
        removed,
        [
            ("shop.order.cancelled".to_owned(), 1),
            ("shop.order.placed".to_owned(), 1)
        ]
    );
    // Keeping v1 declared (consumers still read it through an upcaster): accepted.
    Catalog::new("checkout")
        .produces::<Placed20>("orders")
        .unwrap()
        .consumes::<Placed11>("orders", "billing")
        .unwrap()
        .produces::<Cancelled10>("orders")
        .unwrap()
        .lock(&locked, backward)
        .unwrap();
}

#[test]
fn transitive_modes_compare_with_every_locked_version() {
    // 1.0 requires `amount`, 1.1 and 1.2 make it optional: readers on 1.1
    // read 1.2 data (FORWARD against the newest passes), readers still on
    // 1.0 do not (FORWARD_TRANSITIVE names it).
    event!(A10, "t.x", 1, 0, { id: String, amount: i64 });
    event!(A11, "t.x", 1, 1, { id: String, amount: Option<i64> });
    event!(A12, "t.x", 1, 2, { id: String, amount: Option<i64>, note: Option<String> });
    let locked = dir("transitive");
    Catalog::new("s")
        .produces::<A10>("t")
        .unwrap()
        .lock(&locked, Compatibility::Backward)
        .unwrap();
    Catalog::new("s")
        .produces::<A11>("t")
        .unwrap()
        .lock(&locked, Compatibility::Backward)
        .unwrap();
    let a12 = Catalog::new("s").produces::<A12>("t").unwrap();
    a12.check(&locked, Compatibility::Forward).unwrap();
    let p = problems(a12.check(&locked, Compatibility::ForwardTransitive).unwrap_err());
    let rules: Vec<(Version, &str)> = p
        .iter()
        .map(|p| match p {
            Problem::Breaking { from, change, .. } => (*from, change.rule),
            other => panic!("only breaking changes expected, got {other}"),
        })
        .collect();
    let v10 = Version::new(1, 0);
    assert_eq!(rules, [(v10, "required-added"), (v10, "type-narrowed")], "{p:?}");
}

#[test]
fn unreadable_files_are_named() {
    let locked = dir("unreadable");
    std::fs::create_dir_all(locked.join("shop.order.placed")).unwrap();
    std::fs::write(locked.join("shop.order.placed/1.x.schema.json"), "{}").unwrap();
    let e = Catalog::new("s").check(&locked, Compatibility::Backward).unwrap_err();
    assert!(
        matches!(&e, GateError::Unreadable { path, .. } if path.ends_with("1.x.schema.json")),
        "{e}"
    );
    std::fs::write(locked.join("shop.order.placed/1.x.schema.json"), "").unwrap();
    std::fs::remove_file(locked.join("shop.order.placed/1.x.schema.json")).unwrap();
    std::fs::write(locked.join("shop.order.placed/1.0.schema.json"), "{not json").unwrap();
    let e = Catalog::new("s").check(&locked, Compatibility::Backward).unwrap_err();
    assert!(e.to_string().contains("1.0.schema.json"), "{e}");
}

#[test]
fn a_version_declared_by_two_types_is_refused() {
    event!(One, "t.y", 1, 0, { a: String });
    event!(Other, "t.y", 1, 0, { b: String });
    let e = Catalog::new("s")
        .produces::<One>("t")
        .unwrap()
        .consumes::<Other>("t", "g")
        .unwrap_err();
    assert!(e.to_string().contains("declared by two types"), "{e}");
}

/// Descriptions may change in a locked version; a field called `title` or
/// `description` may not.
#[test]
fn fields_named_like_annotations_are_data() {
    use transport_contracts::gate::{verdict, Schemas};
    let schema = |title_type: &str, doc: &str| {
        serde_json::json!({"type": "object", "description": doc,
            "properties": {"title": {"type": title_type, "description": doc}}})
    };
    let one = |s: serde_json::Value| -> Schemas { [(("t.z".to_owned(), Version::new(1, 0)), s)].into() };
    verdict(
        &one(schema("string", "a")),
        &one(schema("string", "b")),
        Compatibility::Backward,
    )
    .unwrap();
    let p = problems(
        verdict(
            &one(schema("string", "a")),
            &one(schema("integer", "a")),
            Compatibility::Backward,
        )
        .unwrap_err(),
    );
    assert!(matches!(&p[..], [Problem::LockedVersionChanged { .. }]), "{p:?}");
}
