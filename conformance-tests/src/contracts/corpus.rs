//! The JSON Schema compatibility corpus: schema changes, each with the
//! rules the gate must report for each reader and samples of data, judged
//! by the `jsonschema` validator. Where the gate says a change breaks a
//! reader, a sample the writer's schema accepts is refused by the reader's
//! (the corpus carries the witness); where it says none does, no sample the
//! writer's schema accepts is refused by the reader's. Samples hold only
//! properties their writer's schema declares (the gate's one assumption).
//! Every rule of the gate appears at least once.

use serde_json::{json, Value};
use transport_contracts::{json_schema_breaks, Compatibility, Reader};

use crate::support::{CheckFailure, CheckResult};

/// An order as schemars derives it: `$defs`, an optional field as a type
/// list, an optional struct as `anyOf [$ref, null]`, an enum, a map.
pub fn base() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Order",
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "amount": {"type": "integer", "minimum": 1},
            "currency": {"type": "string", "maxLength": 3},
            "status": {"$ref": "#/$defs/Status"},
            "note": {"type": ["string", "null"]},
            "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
            "gift": {"anyOf": [{"$ref": "#/$defs/Line"}, {"type": "null"}]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}
        },
        "required": ["id", "amount", "status", "lines"],
        "$defs": {
            "Status": {"type": "string", "enum": ["open", "closed"]},
            "Line": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"]
            }
        }
    })
}

/// A valid order of the base schema, with `changes` merged in (a `null`
/// change removes the field).
fn order(changes: Value) -> Value {
    let mut o = json!({
        "id": "o-1", "amount": 5, "currency": "EUR", "status": "open", "note": null,
        "lines": [{"sku": "a", "qty": 1}], "gift": null, "labels": {"k": "v"}
    });
    for (k, v) in changes.as_object().unwrap() {
        if v == &json!("<absent>") {
            o.as_object_mut().unwrap().remove(k);
        } else {
            o[k] = v.clone();
        }
    }
    o
}

fn edit(f: impl FnOnce(&mut Value)) -> Value {
    let mut s = base();
    f(&mut s);
    s
}

fn set(s: &mut Value, pointer: &str, v: Value) {
    *s.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer}")) = v;
}

fn remove(s: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    s.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
}

fn require(s: &mut Value, name: &str) {
    s["required"].as_array_mut().unwrap().push(json!(name));
}

fn unrequire(s: &mut Value, name: &str) {
    s["required"].as_array_mut().unwrap().retain(|v| v != name);
}

pub struct CorpusCase {
    pub name: &'static str,
    pub old: Value,
    pub new: Value,
    /// The rules the gate reports for new readers of old data, and for old
    /// readers of new data (empty: compatible).
    pub backward: &'static [&'static str],
    pub forward: &'static [&'static str],
    /// Instances of old or new data (each judged under both schemas).
    pub samples: Vec<Value>,
}

/// Every change of the corpus.
pub fn corpus() -> Vec<CorpusCase> {
    let case = |name, new: Value, backward, forward, samples| CorpusCase {
        name,
        old: base(),
        new,
        backward,
        forward,
        samples,
    };
    let pair = |name, old: Value, new: Value, backward, forward, samples| CorpusCase {
        name,
        old,
        new,
        backward,
        forward,
        samples,
    };
    // A payment as schemars derives a struct with a flattened enum:
    // properties beside `oneOf`.
    let payment = |id_type: &str| {
        json!({
            "type": "object",
            "properties": {"id": {"type": id_type}},
            "required": ["id"],
            "oneOf": [
                {"properties": {"card": {"type": "string"}}, "required": ["card"]},
                {"properties": {"iban": {"type": "string"}}, "required": ["iban"]}
            ]
        })
    };
    vec![
        case("unchanged", base(), &[], &[], vec![order(json!({}))]),
        case(
            "description and title changed",
            edit(|s| {
                s["title"] = json!("Order v2");
                s["properties"]["id"]["description"] = json!("the id");
            }),
            &[],
            &[],
            vec![order(json!({}))],
        ),
        case(
            "optional property added",
            edit(|s| s["properties"]["channel"] = json!({"type": "string"})),
            &[],
            &[],
            vec![order(json!({})), order(json!({"channel": "web"}))],
        ),
        case(
            "required property added",
            edit(|s| {
                s["properties"]["channel"] = json!({"type": "string"});
                require(s, "channel");
            }),
            &["required-added"],
            &[],
            vec![order(json!({})), order(json!({"channel": "web"}))],
        ),
        case(
            "optional property removed",
            edit(|s| remove(s, "/properties/currency")),
            &[],
            &[],
            vec![order(json!({})), order(json!({"currency": "<absent>"}))],
        ),
        case(
            "required property removed",
            edit(|s| {
                remove(s, "/properties/amount");
                unrequire(s, "amount");
            }),
            &[],
            &["required-added"],
            vec![order(json!({})), order(json!({"amount": "<absent>"}))],
        ),
        case(
            "optional made required",
            edit(|s| require(s, "currency")),
            &["required-added"],
            &[],
            vec![order(json!({"currency": "<absent>"}))],
        ),
        case(
            "required made optional",
            edit(|s| unrequire(s, "amount")),
            &[],
            &["required-added"],
            vec![order(json!({"amount": "<absent>"}))],
        ),
        case(
            "type changed",
            edit(|s| set(s, "/properties/id/type", json!("integer"))),
            &["type-narrowed"],
            &["type-narrowed"],
            vec![order(json!({})), order(json!({"id": 7}))],
        ),
        case(
            "integer widened to number",
            edit(|s| set(s, "/properties/amount/type", json!("number"))),
            &[],
            &["type-narrowed"],
            vec![order(json!({})), order(json!({"amount": 2.5}))],
        ),
        case(
            "null allowed",
            edit(|s| set(s, "/properties/id/type", json!(["string", "null"]))),
            &[],
            &["type-narrowed"],
            vec![order(json!({})), order(json!({"id": null}))],
        ),
        case(
            "optional struct made plain",
            edit(|s| set(s, "/properties/gift", json!({"$ref": "#/$defs/Line"}))),
            &["type-narrowed"],
            &[],
            vec![order(json!({})), order(json!({"gift": {"sku": "g", "qty": 1}}))],
        ),
        case(
            "enum value added",
            edit(|s| set(s, "/$defs/Status/enum", json!(["open", "closed", "held"]))),
            &[],
            &["enum-value-removed"],
            vec![order(json!({})), order(json!({"status": "held"}))],
        ),
        case(
            "enum value removed",
            edit(|s| set(s, "/$defs/Status/enum", json!(["open"]))),
            &["enum-value-removed"],
            &[],
            vec![order(json!({})), order(json!({"status": "closed"}))],
        ),
        case(
            "enum added to a free string",
            edit(|s| s["properties"]["currency"]["enum"] = json!(["EUR", "USD"])),
            &["enum-added"],
            &[],
            vec![order(json!({})), order(json!({"currency": "GBP"}))],
        ),
        case(
            "minimum raised",
            edit(|s| set(s, "/properties/amount/minimum", json!(10))),
            &["minimum-raised"],
            &[],
            vec![order(json!({"amount": 5})), order(json!({"amount": 10}))],
        ),
        case(
            "minimum lowered",
            edit(|s| set(s, "/properties/amount/minimum", json!(0))),
            &[],
            &["minimum-raised"],
            vec![order(json!({"amount": 5})), order(json!({"amount": 0}))],
        ),
        case(
            "minimum made exclusive at the same value",
            edit(|s| {
                remove(s, "/properties/amount/minimum");
                s["properties"]["amount"]["exclusiveMinimum"] = json!(1);
            }),
            &["minimum-raised"],
            &[],
            vec![order(json!({"amount": 1})), order(json!({"amount": 2}))],
        ),
        case(
            "maximum added",
            edit(|s| s["properties"]["amount"]["maximum"] = json!(1000)),
            &["maximum-lowered"],
            &[],
            vec![order(json!({"amount": 5})), order(json!({"amount": 5000}))],
        ),
        case(
            "multipleOf added",
            edit(|s| s["properties"]["amount"]["multipleOf"] = json!(5)),
            &["multiple-of-changed"],
            &[],
            vec![order(json!({"amount": 5})), order(json!({"amount": 7}))],
        ),
        case(
            "maxLength lowered",
            edit(|s| set(s, "/properties/currency/maxLength", json!(2))),
            &["max-length-lowered"],
            &[],
            vec![order(json!({"currency": "EU"})), order(json!({"currency": "EUR"}))],
        ),
        case(
            "maxLength raised",
            edit(|s| set(s, "/properties/currency/maxLength", json!(4))),
            &[],
            &["max-length-lowered"],
            vec![order(json!({"currency": "EUR"})), order(json!({"currency": "EURO"}))],
        ),
        case(
            "minLength added",
            edit(|s| s["properties"]["id"]["minLength"] = json!(3)),
            &["min-length-raised"],
            &[],
            vec![order(json!({"id": "o-1"})), order(json!({"id": "o"}))],
        ),
        case(
            "pattern added",
            edit(|s| s["properties"]["id"]["pattern"] = json!("^o-[0-9]+$")),
            &["pattern-changed"],
            &[],
            vec![order(json!({"id": "o-1"})), order(json!({"id": "x"}))],
        ),
        case(
            "format added",
            edit(|s| s["properties"]["id"]["format"] = json!("uuid")),
            &["format-added"],
            &[],
            vec![
                order(json!({"id": "o-1"})),
                order(json!({"id": "0191e2a4-7f3c-7b8e-9a6d-1c2b3d4e5f60"})),
            ],
        ),
        pair(
            "type changed beside a oneOf",
            payment("string"),
            payment("integer"),
            &["type-narrowed"],
            &["type-narrowed"],
            vec![json!({"id": "p", "card": "c"}), json!({"id": 1, "iban": "i"})],
        ),
        pair(
            "oneOf unchanged beside properties",
            payment("string"),
            payment("string"),
            &[],
            &[],
            vec![json!({"id": "p", "card": "c"}), json!({"id": "p", "iban": "i"})],
        ),
        case(
            "map of anything narrowed",
            edit(|s| set(s, "/properties/labels/additionalProperties", json!({"type": "integer"}))),
            &["type-narrowed"],
            &["type-narrowed"],
            vec![order(json!({})), order(json!({"labels": {"k": 1}}))],
        ),
        pair(
            "open map narrowed to strings",
            edit(|s| set(s, "/properties/labels/additionalProperties", json!(true))),
            base(),
            &["constraint-added"],
            &[],
            vec![order(json!({})), order(json!({"labels": {"k": 1}}))],
        ),
        case(
            "nullable string to an optional newtype",
            edit(|s| {
                set(
                    s,
                    "/properties/note",
                    json!({"anyOf": [{"$ref": "#/$defs/Note"}, {"type": "null"}]}),
                );
                s["$defs"]["Note"] = json!({"type": "string"});
            }),
            &[],
            &[],
            vec![order(json!({})), order(json!({"note": "n"}))],
        ),
        case(
            "integer read through an ambiguous oneOf",
            edit(|s| {
                set(
                    s,
                    "/properties/amount",
                    json!({"oneOf": [{"type": "integer"}, {"type": "number"}]}),
                )
            }),
            &["one-of-ambiguous"],
            &["minimum-raised", "type-narrowed"],
            vec![order(json!({"amount": 5})), order(json!({"amount": 2.5}))],
        ),
        case(
            "a constraint beside a $ref",
            edit(|s| {
                set(
                    s,
                    "/properties/lines/items",
                    json!({"$ref": "#/$defs/Line", "properties": {"sku": {"maxLength": 1}}}),
                )
            }),
            &["max-length-lowered"],
            &[],
            vec![order(json!({})), order(json!({"lines": [{"sku": "ab", "qty": 1}]}))],
        ),
        case(
            "unevaluatedProperties closes the object",
            edit(|s| {
                remove(s, "/properties/note");
                s["unevaluatedProperties"] = json!(false);
            }),
            &["property-removed"],
            &[],
            vec![order(json!({})), order(json!({"note": "<absent>"}))],
        ),
        case(
            "nested type changed in array items",
            edit(|s| set(s, "/$defs/Line/properties/qty/type", json!("string"))),
            &["type-narrowed"],
            &["type-narrowed"],
            vec![order(json!({})), order(json!({"lines": [{"sku": "a", "qty": "1"}]}))],
        ),
        case(
            "nested required added in array items",
            edit(|s| {
                s["$defs"]["Line"]["properties"]["unit"] = json!({"type": "integer"});
                s["$defs"]["Line"]["required"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("unit"));
            }),
            &["required-added"],
            &[],
            vec![
                order(json!({})),
                order(json!({"lines": [{"sku": "a", "qty": 1, "unit": 3}]})),
            ],
        ),
        case(
            "minItems added",
            edit(|s| s["properties"]["lines"]["minItems"] = json!(1)),
            &["min-items-raised"],
            &[],
            vec![order(json!({})), order(json!({"lines": []}))],
        ),
        case(
            "maxItems added",
            edit(|s| s["properties"]["lines"]["maxItems"] = json!(1)),
            &["max-items-lowered"],
            &[],
            vec![
                order(json!({})),
                order(json!({"lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 1}]})),
            ],
        ),
        case(
            "uniqueItems added",
            edit(|s| s["properties"]["lines"]["uniqueItems"] = json!(true)),
            &["unique-items-added"],
            &[],
            vec![
                order(json!({})),
                order(json!({"lines": [{"sku": "a", "qty": 1}, {"sku": "a", "qty": 1}]})),
            ],
        ),
        case(
            "closed object drops a property",
            edit(|s| {
                remove(s, "/properties/note");
                s["additionalProperties"] = json!(false);
            }),
            &["property-removed"],
            &[],
            vec![order(json!({})), order(json!({"note": "<absent>"}))],
        ),
        case(
            "map values narrowed",
            edit(|s| set(s, "/properties/labels/additionalProperties", json!({"type": "integer"}))),
            &["type-narrowed"],
            &["type-narrowed"],
            vec![order(json!({})), order(json!({"labels": {"k": 1}}))],
        ),
        case(
            "map closed",
            edit(|s| set(s, "/properties/labels/additionalProperties", json!(false))),
            &["property-removed"],
            &[],
            vec![order(json!({})), order(json!({"labels": {}}))],
        ),
        case(
            "maxProperties added to the map",
            edit(|s| s["properties"]["labels"]["maxProperties"] = json!(0)),
            &["max-properties-lowered"],
            &[],
            vec![order(json!({})), order(json!({"labels": {}}))],
        ),
        case(
            "an unanalysed keyword added",
            edit(|s| s["dependentRequired"] = json!({"note": ["currency"]})),
            &["unanalysed-keyword-changed"],
            &[],
            vec![order(json!({})), order(json!({"note": "n", "currency": "<absent>"}))],
        ),
        case(
            "any value narrowed to a type",
            edit(|s| set(s, "/properties/note", json!({"type": "string"}))),
            &["type-narrowed"],
            &[],
            vec![order(json!({"note": "n"})), order(json!({}))],
        ),
    ]
}

fn validator(schema: &Value) -> Result<jsonschema::Validator, CheckFailure> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| CheckFailure(format!("a schema of the corpus does not compile: {e}")))
}

fn rules(old: &Value, new: &Value, reader: Reader) -> Vec<&'static str> {
    let mut rules: Vec<&'static str> = json_schema_breaks(old, new, Compatibility::Full)
        .into_iter()
        .filter(|b| b.reader == reader)
        .map(|b| b.rule)
        .collect();
    rules.sort();
    rules.dedup();
    rules
}

/// The gate's verdict on `case` for both readers, against the corpus and
/// against the validator.
pub fn judge(case: &CorpusCase) -> CheckResult {
    let (old, new) = (validator(&case.old)?, validator(&case.new)?);
    let mut disagreements = Vec::new();
    for (reader, expected, writer_v, reader_v) in [
        (Reader::NewReadsOld, case.backward, &old, &new),
        (Reader::OldReadsNew, case.forward, &new, &old),
    ] {
        let got = rules(&case.old, &case.new, reader);
        let mut want = expected.to_vec();
        want.sort();
        if got != want {
            disagreements.push(format!("{reader:?}: the gate says {got:?}, the corpus {want:?}"));
        }
        let witness = case
            .samples
            .iter()
            .any(|s| writer_v.is_valid(s) && !reader_v.is_valid(s));
        if witness == got.is_empty() {
            disagreements.push(format!(
                "{reader:?}: the gate says {got:?}, but the validator finds {} sample the writer accepts and the reader refuses",
                if witness { "a" } else { "no" }
            ));
        }
    }
    if disagreements.is_empty() {
        Ok(())
    } else {
        Err(CheckFailure(disagreements.join("; ")))
    }
}
