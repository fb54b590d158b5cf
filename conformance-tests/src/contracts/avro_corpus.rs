//! The Avro compatibility corpus: schema changes, each with the verdict the
//! Avro specification gives for each reader, compared with the gate's
//! (which applies `apache-avro`'s schema compatibility checker), and judged
//! with data: every sample a writer's schema can produce (one per enum
//! symbol, union branch and edge value) is written with it and read back
//! through Avro schema resolution with the reader's. Where the gate says a
//! change breaks a reader, some sample fails to resolve or comes back
//! changed (an `i64` truncated to `i32`); where it says none does, every
//! sample comes back the same. Changes that only names decide (a renamed
//! record: resolution of data does not look at names) carry no witness and
//! say so.

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use serde_json::{json, Value};
use transport_contracts::{avro_schema_breaks, Compatibility, Reader};

use crate::support::{CheckFailure, CheckResult};

/// A change and what the Avro specification says of it.
pub struct AvroCase {
    /// What changed.
    pub name: &'static str,
    /// The schema before.
    pub old: Value,
    /// The schema after.
    pub new: Value,
    /// Rules reported for new readers of old data (empty: compatible).
    pub backward: &'static [&'static str],
    /// Rules reported for old readers of new data.
    pub forward: &'static [&'static str],
    /// Whether data can show the break (false where only names decide).
    pub witnessed: bool,
}

fn line() -> Value {
    json!({"type": "record", "name": "Line", "fields": [
        {"name": "sku", "type": "string"},
        {"name": "qty", "type": "int"}
    ]})
}

/// An order record using every kind of Avro type an event does.
pub fn base() -> Value {
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "int"},
        {"name": "currency", "type": "string", "default": "EUR"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["OPEN", "CLOSED"]}},
        {"name": "note", "type": ["null", "string"], "default": null},
        {"name": "lines", "type": {"type": "array", "items": line()}},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "price", "type": "float"},
        {"name": "weight", "type": "long"},
        {"name": "raw", "type": "bytes"}
    ]})
}

fn field_index(schema: &Value, name: &str) -> usize {
    schema["fields"]
        .as_array()
        .and_then(|f| f.iter().position(|f| f["name"] == name))
        .unwrap_or_else(|| panic!("no field {name}"))
}

/// `base()` with field `name`'s type set to `ty`.
fn retype(name: &str, ty: Value) -> Value {
    let mut s = base();
    let i = field_index(&s, name);
    s["fields"][i]["type"] = ty;
    s
}

fn with_field(field: Value) -> Value {
    let mut s = base();
    s["fields"].as_array_mut().unwrap().push(field);
    s
}

fn without_field(name: &str) -> Value {
    let mut s = base();
    let i = field_index(&s, name);
    s["fields"].as_array_mut().unwrap().remove(i);
    s
}

fn edit(f: impl FnOnce(&mut Value)) -> Value {
    let mut s = base();
    f(&mut s);
    s
}

/// Every change of the corpus.
pub fn corpus() -> Vec<AvroCase> {
    let case = |name, new: Value, backward, forward| AvroCase {
        name,
        old: base(),
        new,
        backward,
        forward,
        witnessed: true,
    };
    let status = |symbols: Value| json!({"type": "enum", "name": "Status", "symbols": symbols});
    let mut line_qty_long = line();
    line_qty_long["fields"][1]["type"] = json!("long");
    let mut line_plus = line();
    line_plus["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "unit", "type": "int"}));
    let mut line_plus_default = line();
    line_plus_default["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "unit", "type": "int", "default": 1}));
    let mut line_less = line();
    line_less["fields"].as_array_mut().unwrap().remove(1);
    let mut line_sku_int = line();
    line_sku_int["fields"][0]["type"] = json!("int");
    vec![
        case("unchanged", base(), &[], &[]),
        case(
            "doc added to a field",
            edit(|s| s["fields"][0]["doc"] = json!("The order's id.")),
            &[],
            &[],
        ),
        case(
            "field added with a default",
            with_field(json!({"name": "channel", "type": "string", "default": "web"})),
            &[],
            &[],
        ),
        case(
            "field added without a default",
            with_field(json!({"name": "channel", "type": "string"})),
            &["required-added"],
            &[],
        ),
        case(
            "optional field added (null default)",
            with_field(json!({"name": "coupon", "type": ["null", "string"], "default": null})),
            &[],
            &[],
        ),
        case("field with a default removed", without_field("currency"), &[], &[]),
        case(
            "field without a default removed",
            without_field("id"),
            &[],
            &["required-added"],
        ),
        case("optional field removed", without_field("note"), &[], &[]),
        case(
            "int widened to long",
            retype("amount", json!("long")),
            &[],
            &["type-changed"],
        ),
        case(
            "int widened to float",
            retype("amount", json!("float")),
            &[],
            &["type-changed"],
        ),
        case(
            "int widened to double",
            retype("amount", json!("double")),
            &[],
            &["type-changed"],
        ),
        case(
            "long widened to float",
            retype("weight", json!("float")),
            &[],
            &["type-changed"],
        ),
        case(
            "long widened to double",
            retype("weight", json!("double")),
            &[],
            &["type-changed"],
        ),
        case(
            "long narrowed to int",
            retype("weight", json!("int")),
            &["type-changed"],
            &[],
        ),
        case(
            "float widened to double",
            retype("price", json!("double")),
            &[],
            &["type-changed"],
        ),
        case(
            "int changed to string",
            retype("amount", json!("string")),
            &["type-changed"],
            &["type-changed"],
        ),
        case("string to bytes", retype("id", json!("bytes")), &[], &[]),
        case("bytes to string", retype("raw", json!("string")), &[], &[]),
        case(
            "float changed to string",
            retype("price", json!("string")),
            &["type-changed"],
            &["type-changed"],
        ),
        case(
            "enum symbol added",
            retype("status", status(json!(["OPEN", "CLOSED", "HELD"]))),
            &[],
            &["enum-value-removed"],
        ),
        case(
            "enum symbol removed",
            retype("status", status(json!(["OPEN"]))),
            &["enum-value-removed"],
            &[],
        ),
        case(
            "enum symbols reordered",
            retype("status", status(json!(["CLOSED", "OPEN"]))),
            &[],
            &[],
        ),
        case(
            "optional made required",
            edit(|s| {
                let i = field_index(s, "note");
                s["fields"][i] = json!({"name": "note", "type": "string"});
            }),
            &["type-changed"],
            &[],
        ),
        case(
            "required made optional",
            retype("id", json!(["null", "string"])),
            &[],
            &["type-changed"],
        ),
        case(
            "union branch added",
            retype("note", json!(["null", "string", "int"])),
            &[],
            &["union-branch-removed"],
        ),
        case(
            "union branch removed",
            retype("note", json!(["null"])),
            &["union-branch-removed"],
            &[],
        ),
        case(
            "int made a union with null",
            retype("amount", json!(["null", "int"])),
            &[],
            &["type-changed"],
        ),
        case(
            "array items widened",
            retype("lines", json!({"type": "array", "items": line_qty_long})),
            &[],
            &["type-changed"],
        ),
        case(
            "nested field added without a default",
            retype("lines", json!({"type": "array", "items": line_plus})),
            &["required-added"],
            &[],
        ),
        case(
            "nested field added with a default",
            retype("lines", json!({"type": "array", "items": line_plus_default})),
            &[],
            &[],
        ),
        case(
            "nested field without a default removed",
            retype("lines", json!({"type": "array", "items": line_less})),
            &[],
            &["required-added"],
        ),
        case(
            "nested field type changed",
            retype("lines", json!({"type": "array", "items": line_sku_int})),
            &["type-changed"],
            &["type-changed"],
        ),
        case(
            "map values changed",
            retype("tags", json!({"type": "map", "values": "int"})),
            &["type-changed"],
            &["type-changed"],
        ),
        case(
            "map values widened",
            retype("tags", json!({"type": "map", "values": "bytes"})),
            &[],
            &[],
        ),
        case(
            "map became an array",
            retype("tags", json!({"type": "array", "items": "string"})),
            &["type-changed"],
            &["type-changed"],
        ),
        case(
            "default added",
            edit(|s| s["fields"][0]["default"] = json!("none")),
            &[],
            &[],
        ),
        case(
            "default removed",
            edit(|s| {
                s["fields"][2].as_object_mut().unwrap().remove("default");
            }),
            &[],
            &[],
        ),
        case(
            "fields reordered",
            edit(|s| s["fields"].as_array_mut().unwrap().swap(0, 1)),
            &[],
            &[],
        ),
        case(
            "field renamed",
            edit(|s| s["fields"][1]["name"] = json!("total")),
            &["required-added"],
            &["required-added"],
        ),
        AvroCase {
            name: "enum renamed",
            old: base(),
            new: retype(
                "status",
                json!({"type": "enum", "name": "State", "symbols": ["OPEN", "CLOSED"]}),
            ),
            backward: &["name-changed"],
            forward: &["name-changed"],
            witnessed: false,
        },
        AvroCase {
            name: "nested record renamed",
            old: base(),
            new: retype(
                "lines",
                json!({"type": "array", "items": {"type": "record", "name": "Item", "fields": [
                    {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}
                ]}}),
            ),
            backward: &["name-changed"],
            forward: &["name-changed"],
            witnessed: false,
        },
    ]
}

/// One sample per variant: each enum symbol, union branch and edge value
/// (`i32::MAX`, `2^40`, `1e300`) appears in some sample.
fn samples(schema: &Schema) -> Vec<Avro> {
    let count = variants(schema);
    (0..count).map(|i| sample(schema, i)).collect()
}

fn variants(schema: &Schema) -> usize {
    match schema {
        Schema::Boolean | Schema::Int | Schema::Long | Schema::Double | Schema::String | Schema::Bytes => 3,
        Schema::Enum(e) => e.symbols.len(),
        Schema::Union(u) => u.variants().iter().map(variants).sum::<usize>().max(1),
        // Every item variant, and one empty.
        Schema::Array(a) => variants(&a.items) + 1,
        Schema::Map(m) => variants(&m.types) + 1,
        Schema::Record(r) => r.fields.iter().map(|f| variants(&f.schema)).max().unwrap_or(1),
        _ => 1,
    }
}

fn sample(schema: &Schema, i: usize) -> Avro {
    match schema {
        Schema::Null => Avro::Null,
        Schema::Boolean => Avro::Boolean(i % 2 == 0),
        Schema::Int => Avro::Int([0, 5, i32::MAX][i % 3]),
        Schema::Long => Avro::Long([0, 5, 1 << 40][i % 3]),
        Schema::Float => Avro::Float(1.5),
        Schema::Double => Avro::Double([0.5, 1.5, 1e300][i % 3]),
        Schema::String => Avro::String(["a", "text", ""][i % 3].to_owned()),
        Schema::Bytes => Avro::Bytes([&b"ab"[..], b"", b"xyz"][i % 3].to_vec()),
        Schema::Enum(e) => {
            let k = i % e.symbols.len();
            Avro::Enum(k as u32, e.symbols[k].clone())
        }
        Schema::Union(u) => {
            // Walk the branches, each with its own variants.
            let mut k = i % variants(schema);
            for (b, branch) in u.variants().iter().enumerate() {
                let n = variants(branch);
                if k < n {
                    return Avro::Union(b as u32, Box::new(sample(branch, k)));
                }
                k -= n;
            }
            Avro::Union(0, Box::new(sample(&u.variants()[0], 0)))
        }
        Schema::Array(a) => match i % variants(schema) {
            k if k == variants(&a.items) => Avro::Array(vec![]),
            k => Avro::Array(vec![sample(&a.items, k)]),
        },
        Schema::Map(m) => match i % variants(schema) {
            k if k == variants(&m.types) => Avro::Map(Default::default()),
            k => Avro::Map([("k".to_owned(), sample(&m.types, k))].into()),
        },
        Schema::Record(r) => Avro::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), sample(&f.schema, i)))
                .collect(),
        ),
        Schema::Fixed(f) => Avro::Fixed(f.size, vec![0; f.size]),
        _ => Avro::Null,
    }
}

/// Whether the value read means what was written: numbers equal as
/// numbers, strings and bytes by their bytes, enums by symbol, records by
/// the fields both have, unions by what they hold.
fn same(written: &Avro, read: &Avro) -> bool {
    let number = |v: &Avro| match v {
        Avro::Int(n) => Some(f64::from(*n)),
        Avro::Long(n) => Some(*n as f64),
        Avro::Float(n) => Some(f64::from(*n)),
        Avro::Double(n) => Some(*n),
        _ => None,
    };
    let bytes = |v: &Avro| match v {
        Avro::String(s) => Some(s.as_bytes().to_vec()),
        Avro::Bytes(b) => Some(b.clone()),
        _ => None,
    };
    match (written, read) {
        // Avro promotes int to long, float, double and long to float, double,
        // float to double: a narrowing that resolution lets through
        // (truncating, rounding) is not the same value.
        (Avro::Long(_), Avro::Int(_)) | (Avro::Double(_), Avro::Float(_)) => false,
        (Avro::Union(_, w), r) => same(w, r),
        (w, Avro::Union(_, r)) => same(w, r),
        (Avro::Record(w), Avro::Record(r)) => w
            .iter()
            .all(|(name, wv)| r.iter().find(|(n, _)| n == name).is_none_or(|(_, rv)| same(wv, rv))),
        (Avro::Array(w), Avro::Array(r)) => w.len() == r.len() && w.iter().zip(r).all(|(a, b)| same(a, b)),
        (Avro::Map(w), Avro::Map(r)) => {
            w.len() == r.len() && w.iter().all(|(k, v)| r.get(k).is_some_and(|rv| same(v, rv)))
        }
        (Avro::Enum(_, w), Avro::Enum(_, r)) => w == r,
        // A promotion to float keeps what a float holds (the specification
        // allows int and long to float, losing digits).
        (w @ (Avro::Int(_) | Avro::Long(_)), Avro::Float(r)) => number(w).map(|n| n as f32) == Some(*r),
        (w, r) if number(w).is_some() => number(w) == number(r),
        (w, r) if bytes(w).is_some() => bytes(w) == bytes(r),
        (w, r) => w == r,
    }
}

/// Whether every sample of `writer` reads back the same through `reader`.
fn readable(writer: &Schema, reader: &Schema) -> Result<bool, CheckFailure> {
    for value in samples(writer) {
        let data = apache_avro::to_avro_datum(writer, value.clone())
            .map_err(|e| CheckFailure(format!("a sample does not encode with its own schema: {e}")))?;
        match apache_avro::from_avro_datum(writer, &mut &data[..], Some(reader)) {
            Ok(read) if same(&value, &read) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// The gate's verdict on `case` for both readers, against the
/// specification's and against data.
pub fn judge(case: &AvroCase) -> CheckResult {
    let parse = |v: &Value| Schema::parse(v).map_err(|e| CheckFailure(format!("a schema does not parse: {e}")));
    let (old, new) = (parse(&case.old)?, parse(&case.new)?);
    let mut disagreements = Vec::new();
    for (reader, expected, writer_s, reader_s) in [
        (Reader::NewReadsOld, case.backward, &old, &new),
        (Reader::OldReadsNew, case.forward, &new, &old),
    ] {
        let mut got: Vec<&str> = avro_schema_breaks(&case.old, &case.new, Compatibility::Full)
            .into_iter()
            .filter(|b| b.reader == reader)
            .map(|b| b.rule)
            .collect();
        got.sort();
        got.dedup();
        let mut want = expected.to_vec();
        want.sort();
        if got != want {
            disagreements.push(format!("{reader:?}: the gate says {got:?}, the specification {want:?}"));
        }
        let reads = readable(writer_s, reader_s)?;
        if case.witnessed && reads != got.is_empty() {
            disagreements.push(format!(
                "{reader:?}: the gate says {got:?}, but written samples {} back through resolution",
                if reads { "all read" } else { "do not all read" }
            ));
        }
    }
    if disagreements.is_empty() {
        Ok(())
    } else {
        Err(CheckFailure(disagreements.join("; ")))
    }
}
