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
