//! The JSON Schema compatibility gate: reports name the path and the
//! reader, recursive types terminate, modes parse as registries write them.
//! The corpus of changes judged by the validator is part of the contract
//! suite (`conformance-tests/src/contracts/corpus.rs`).

use serde_json::{json, Value};
use transport_contracts::{json_schema_breaks, Compatibility, Reader};

fn base() -> Value {
    json!({
        "type": "object",
        "properties": {
            "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
            "gift": {"anyOf": [{"$ref": "#/$defs/Line"}, {"type": "null"}]}
        },
        "$defs": {"Line": {"type": "object", "properties": {"qty": {"type": "integer"}}}}
    })
}

fn edit(f: impl FnOnce(&mut Value)) -> Value {
    let mut s = base();
    f(&mut s);
    s
}

fn set(s: &mut Value, pointer: &str, v: Value) {
    *s.pointer_mut(pointer).unwrap() = v;
}

#[test]
fn reports_name_the_path_and_which_reader_breaks() {
    let new = edit(|s| set(s, "/$defs/Line/properties/qty/type", json!("string")));
    let breaks = json_schema_breaks(&base(), &new, Compatibility::Backward);
    // Line is used twice: both places are named.
    let paths: Vec<&str> = breaks.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(paths, ["/gift/qty", "/lines/*/qty"], "{breaks:?}");
    assert_eq!(
        breaks[1].to_string(),
        "/lines/*/qty: type-narrowed (integer is written, the reader accepts string); breaks new readers of old data"
    );
    assert!(json_schema_breaks(&base(), &new, Compatibility::Forward)
        .iter()
        .all(|b| b.reader == Reader::OldReadsNew));
}

#[test]
fn recursive_types_terminate() {
    let tree = json!({
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}
        }, "required": ["name"]}}
    });
    assert!(json_schema_breaks(&tree, &tree, Compatibility::FullTransitive).is_empty());
    let mut narrowed = tree.clone();
    narrowed["$defs"]["Node"]["properties"]["name"]["maxLength"] = json!(3);
    let breaks = json_schema_breaks(&tree, &narrowed, Compatibility::Backward);
    assert_eq!(
        breaks.iter().map(|b| b.rule).collect::<Vec<_>>(),
        ["max-length-lowered"]
    );
}

#[test]
fn compatibility_names_parse_as_registries_write_them() {
    for (text, want) in [
        ("BACKWARD", Compatibility::Backward),
        ("backward_transitive", Compatibility::BackwardTransitive),
        ("full-transitive", Compatibility::FullTransitive),
        ("FORWARD", Compatibility::Forward),
    ] {
        assert_eq!(text.parse::<Compatibility>(), Ok(want));
    }
    assert!("NONE".parse::<Compatibility>().unwrap_err().contains("BACKWARD"));
}

/// Rules the `jsonschema` validator cannot judge (it does not check
/// schemars' integer formats; it refuses remote references and draft-4
/// boolean bounds), judged here by serde and by hand.
#[test]
fn integer_widths_are_bounds_serde_enforces() {
    let field = |format: &str| json!({"type": "object", "properties": {"n": {"type": "integer", "format": format}}});
    let narrowed = json_schema_breaks(&field("int64"), &field("int32"), Compatibility::Backward);
    assert_eq!(
        narrowed.iter().map(|b| b.rule).collect::<Vec<_>>(),
        ["minimum-raised", "maximum-lowered"]
    );
    // The judge: serde refuses what i64 wrote and i32 cannot hold.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Narrow {
        n: i32,
    }
    assert!(serde_json::from_str::<Narrow>(r#"{"n": 4294967296}"#).is_err());
    assert!(json_schema_breaks(&field("int32"), &field("int64"), Compatibility::Backward).is_empty());
    let unsigned = json_schema_breaks(&field("uint64"), &field("uint32"), Compatibility::Backward);
    assert_eq!(unsigned.iter().map(|b| b.rule).collect::<Vec<_>>(), ["maximum-lowered"]);
}

#[test]
fn what_cannot_be_shown_safe_is_reported() {
    let old = json!({"type": "object", "properties": {"id": {"type": "string"}}});
    let remote = json!({"type": "object", "properties": {"id": {"$ref": "ids.json#/Id"}}});
    let breaks = json_schema_breaks(&old, &remote, Compatibility::Backward);
    assert_eq!(
        breaks.iter().map(|b| (b.path.as_str(), b.rule)).collect::<Vec<_>>(),
        [("/id", "unresolved-ref")]
    );
    // Draft 4: `exclusiveMinimum: true` makes the minimum exclusive.
    let min = |exclusive: bool| json!({"type": "integer", "minimum": 0, "exclusiveMinimum": exclusive});
    let breaks = json_schema_breaks(&min(false), &min(true), Compatibility::Backward);
    assert_eq!(breaks.iter().map(|b| b.rule).collect::<Vec<_>>(), ["minimum-raised"]);
}

/// Alternatives within alternatives cannot make the gate run for ever: a
/// chain of 40 `anyOf`s of two branches each ends as `too-complex`.
#[test]
fn alternatives_cannot_explode() {
    let mut defs = serde_json::Map::new();
    for i in 0..40 {
        let next = json!({"$ref": format!("#/$defs/D{}", i + 1)});
        defs.insert(format!("D{i}"), json!({"anyOf": [next.clone(), next]}));
    }
    defs.insert("D40".into(), json!({"type": "integer"}));
    let reader = json!({"$ref": "#/$defs/D0", "$defs": defs});
    let started = std::time::Instant::now();
    let breaks = json_schema_breaks(&json!({"type": "string"}), &reader, Compatibility::Backward);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(breaks.iter().any(|b| b.rule == "too-complex"), "{breaks:?}");
}

/// Schemas that refer to themselves through each other end.
#[test]
fn mutually_recursive_shapes_terminate() {
    let writer = json!({
        "$ref": "#/$defs/A",
        "$defs": {"A": {"type": "object", "properties": {"x": {"type": "object", "properties": {"x": {"$ref": "#/$defs/A"}}}}}}
    });
    let reader = json!({
        "type": "object",
        "properties": {"x": {"$ref": "#/$defs/B"}},
        "$defs": {"B": {"type": "object", "properties": {"x": {"type": "object", "properties": {"x": {"$ref": "#/$defs/B"}}}}}}
    });
    let breaks = json_schema_breaks(&writer, &reader, Compatibility::Full);
    assert!(breaks.iter().all(|b| b.rule != "too-complex"), "{breaks:?}");
}
