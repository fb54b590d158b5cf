//! The event catalog as Markdown: every event type with its versions, what
//! changed between them, its fields (with their doc comments and rules), an
//! example payload, and who produces and consumes it on which topic.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Map, Value};

use crate::catalog::{Catalog, Declared};
use crate::compatibility::{schema_breaks, Compatibility};

/// How deep nested objects are listed and examples built.
const DEPTH: usize = 6;

impl Catalog {
    /// The catalog as a Markdown document.
    pub fn markdown(&self) -> String {
        let mut by_type: BTreeMap<&str, Vec<&Declared>> = BTreeMap::new();
        for d in self.events() {
            by_type.entry(&d.event_type).or_default().push(d);
        }
        let mut out = String::new();
        let _ = writeln!(out, "# Events of {} {}\n", self.service(), self.version());
        let _ = writeln!(
            out,
            "Generated from the service's declared event types. Every event is a CloudEvent 1.0 in binary \
             content mode: `ce-type` names the type, `ce-dataversion` its version, the payload is the data.\n"
        );
        out.push_str("| event type | versions | produced to | consumed in |\n|---|---|---|---|\n");
        for (event_type, versions) in &by_type {
            let list = |f: &dyn Fn(&Declared) -> Vec<String>| {
                let mut all: Vec<String> = versions.iter().flat_map(|d| f(d)).collect();
                all.sort();
                all.dedup();
                if all.is_empty() {
                    "-".to_owned()
                } else {
                    all.join(", ")
                }
            };
            let _ = writeln!(
                out,
                "| [`{event_type}`](#{}) | {} | {} | {} |",
                anchor(event_type),
                versions
                    .iter()
                    .map(|d| d.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                list(&|d| d.produced_to.clone()),
                list(&|d| d
                    .consumed_in
                    .iter()
                    .map(|c| format!("{} ({})", c.topic, c.group))
                    .collect()),
            );
        }
        for (event_type, versions) in &by_type {
            let _ = writeln!(out, "\n## {event_type}\n");
            if let Some(text) = versions
                .last()
                .and_then(|d| d.schema.get("description"))
                .and_then(Value::as_str)
            {
                let _ = writeln!(out, "{text}\n");
            }
            for (i, d) in versions.iter().enumerate().rev() {
                version(&mut out, d, i.checked_sub(1).map(|p| versions[p]));
            }
        }
        out
    }
}

fn anchor(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect::<String>()
        .to_ascii_lowercase()
}

fn version(out: &mut String, d: &Declared, previous: Option<&Declared>) {
    let _ = writeln!(
        out,
        "### {} {}\n\n`{}`, declared by `{}`.",
        d.event_type, d.version, d.content_type, d.rust_type
    );
    if !d.produced_to.is_empty() {
        let _ = writeln!(out, "Produced to: {}.", d.produced_to.join(", "));
    }
    if !d.consumed_in.is_empty() {
        let consumed: Vec<String> = d
            .consumed_in
            .iter()
            .map(|c| format!("{} (group {})", c.topic, c.group))
            .collect();
        let _ = writeln!(out, "Consumed from: {}.", consumed.join(", "));
    }
    if let Some(p) = previous {
        let changes = schema_breaks(&p.schema, &d.schema, Compatibility::Full);
        let kind = if p.version.major == d.version.major {
            "compatible with"
        } else {
            "a new major version after"
        };
        let _ = writeln!(out, "\nChanged from {} ({kind} it):\n", p.version);
        let (now, before) = (properties(&d.schema), properties(&p.schema));
        let added: Vec<String> = now
            .iter()
            .filter(|name| !before.contains(name))
            .map(|name| format!("- `{name}` added"))
            .collect();
        let removed: Vec<String> = before
            .iter()
            .filter(|name| !now.contains(name))
            .map(|name| format!("- `{name}` removed"))
            .collect();
        for line in added.iter().chain(&removed) {
            let _ = writeln!(out, "{line}");
        }
        for c in &changes {
            let _ = writeln!(out, "- {c}");
        }
        if added.is_empty() && removed.is_empty() && changes.is_empty() {
            let _ = writeln!(out, "- no change to the data");
        }
    }
    let _ = writeln!(out, "\n| field | type | required | description |\n|---|---|---|---|");
    let avro = crate::compatibility::is_avro(&d.schema);
    let example = if avro {
        avro_fields(out, &d.schema, "", DEPTH);
        let mut named = Map::new();
        avro_named(&d.schema, None, &mut named);
        avro_example(&d.schema, DEPTH, &named)
    } else {
        fields(out, &d.schema, &d.schema, "", DEPTH);
        d.schema
            .get("examples")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
            .cloned()
            .unwrap_or_else(|| example_of(&d.schema, &d.schema, DEPTH))
    };
    let _ = writeln!(
        out,
        "\nExample data:\n\n```json\n{}\n```\n",
        serde_json::to_string_pretty(&example).unwrap_or_default()
    );
}

fn properties(schema: &Value) -> Vec<String> {
    if let Some(fields) = schema.get("fields").and_then(Value::as_array) {
        return fields
            .iter()
            .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect();
    }
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// An Avro type in words: `string`, `array of Line`, `null or string`.
fn avro_type(t: &Value, depth: usize) -> String {
    match t {
        Value::String(name) => name.clone(),
        Value::Array(branches) => branches
            .iter()
            .map(|b| avro_type(b, depth))
            .collect::<Vec<_>>()
            .join(" or "),
        Value::Object(m) => match m.get("type").and_then(Value::as_str) {
            Some("array") if depth > 0 => format!("array of {}", avro_type(&m["items"], depth - 1)),
            Some("map") if depth > 0 => format!("map of {}", avro_type(&m["values"], depth - 1)),
            Some("enum") => {
                let symbols: Vec<String> = m
                    .get("symbols")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(Value::to_string)
                    .collect();
                format!("one of {}", symbols.join(", "))
            }
            Some(kind @ ("record" | "fixed")) => m.get("name").and_then(Value::as_str).unwrap_or(kind).to_owned(),
            Some(other) => other.to_owned(),
            None => "any".to_owned(),
        },
        _ => "any".to_owned(),
    }
}

/// The fields of an Avro record (a field is required unless it has a default).
fn avro_fields(out: &mut String, record: &Value, prefix: &str, depth: usize) {
    for f in record.get("fields").and_then(Value::as_array).into_iter().flatten() {
        let name = f.get("name").and_then(Value::as_str).unwrap_or("?");
        let path = format!("{prefix}{name}");
        let ty = &f["type"];
        let doc = f.get("doc").and_then(Value::as_str).unwrap_or("").replace('|', "\\|");
        let _ = writeln!(
            out,
            "| `{path}` | {} | {} | {doc} |",
            avro_type(ty, DEPTH).replace('|', "\\|"),
            if f.get("default").is_some() { "no" } else { "yes" },
        );
        if depth > 0 {
            match ty.get("type").and_then(Value::as_str) {
                Some("record") => avro_fields(out, ty, &format!("{path}."), depth - 1),
                Some("array") if ty["items"].get("type").and_then(Value::as_str) == Some("record") => {
                    avro_fields(out, &ty["items"], &format!("{path}[]."), depth - 1)
                }
                _ => {}
            }
        }
    }
}

/// The named types (records, enums, fixed) of an Avro schema, by name and
/// by full name: a second use of one is only its name.
fn avro_named(t: &Value, namespace: Option<&str>, out: &mut Map<String, Value>) {
    match t {
        Value::Array(branches) => branches.iter().for_each(|b| avro_named(b, namespace, out)),
        Value::Object(m) => {
            let ns = m.get("namespace").and_then(Value::as_str).or(namespace);
            if let (Some("record" | "enum" | "fixed"), Some(name)) = (
                m.get("type").and_then(Value::as_str),
                m.get("name").and_then(Value::as_str),
            ) {
                out.insert(name.to_owned(), t.clone());
                if let Some(ns) = ns {
                    out.insert(format!("{ns}.{name}"), t.clone());
                }
            }
            for f in m.get("fields").and_then(Value::as_array).into_iter().flatten() {
                avro_named(&f["type"], ns, out);
            }
            for key in ["items", "values"] {
                if let Some(inner) = m.get(key) {
                    avro_named(inner, ns, out);
                }
            }
        }
        _ => {}
    }
}

/// A value of the Avro schema, in Avro's JSON form (a union's value plain).
fn avro_example(t: &Value, depth: usize, named: &Map<String, Value>) -> Value {
    match t {
        Value::String(name) => match name.as_str() {
            "null" => Value::Null,
            "boolean" => json!(false),
            "int" | "long" => json!(1),
            "float" | "double" => json!(1.5),
            "bytes" | "string" => json!("text"),
            other => match named.get(other) {
                Some(def) if depth > 0 => avro_example(def, depth - 1, named),
                _ => Value::Null,
            },
        },
        Value::Array(branches) => branches
            .iter()
            .find(|b| **b != json!("null"))
            .or(branches.first())
            .map_or(Value::Null, |b| avro_example(b, depth, named)),
        Value::Object(m) if m.get("logicalType") == Some(&json!("uuid")) => {
            json!("00000000-0000-0000-0000-000000000000")
        }
        Value::Object(m) => match m.get("type").and_then(Value::as_str) {
            Some("record") if depth > 0 => Value::Object(
                m.get("fields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|f| {
                        let name = f.get("name")?.as_str()?.to_owned();
                        Some((
                            name,
                            f.get("default")
                                .cloned()
                                .unwrap_or_else(|| avro_example(&f["type"], depth - 1, named)),
                        ))
                    })
                    .collect(),
            ),
            Some("enum") => m
                .get("symbols")
                .and_then(Value::as_array)
                .and_then(|s| s.first())
                .cloned()
                .unwrap_or(Value::Null),
            Some("array") if depth > 0 => json!([avro_example(&m["items"], depth - 1, named)]),
            Some("map") if depth > 0 => json!({"key": avro_example(&m["values"], depth - 1, named)}),
            Some("fixed") => json!("\u{0}".repeat(m.get("size").and_then(Value::as_u64).unwrap_or(0).min(64) as usize)),
            Some(other) => avro_example(&json!(other), depth, named),
            None => Value::Null,
        },
        _ => Value::Null,
    }
}

/// The schema a local `$ref` points to.
fn resolve<'v>(root: &'v Value, schema: &'v Value) -> &'v Value {
    let mut s = schema;
    for _ in 0..DEPTH {
        match s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(p) => match root.pointer(p) {
                Some(t) => s = t,
                None => break,
            },
            None => break,
        }
    }
    s
}

/// The non-null branch of `Option<T>` (`anyOf [T, null]`), or the schema.
fn non_null<'v>(root: &'v Value, schema: &'v Value) -> (&'v Value, bool) {
    let s = resolve(root, schema);
    if let Some(branches) = s.get("anyOf").or_else(|| s.get("oneOf")).and_then(Value::as_array) {
        let others: Vec<&Value> = branches
            .iter()
            .filter(|b| b.get("type") != Some(&json!("null")))
            .collect();
        if others.len() == 1 && branches.len() == 2 {
            return (resolve(root, others[0]), true);
        }
    }
    (s, false)
}

fn type_name(root: &Value, schema: &Value, depth: usize) -> String {
    let (s, nullable) = non_null(root, schema);
    let named = schema
        .get("$ref")
        .or_else(|| {
            schema
                .get("anyOf")
                .and_then(Value::as_array)
                .and_then(|b| b.iter().find_map(|b| b.get("$ref")))
        })
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next());
    let mut name = match (s.get("type"), s.get("enum")) {
        (_, Some(Value::Array(values))) => format!(
            "one of {}",
            values.iter().map(Value::to_string).collect::<Vec<_>>().join(", ")
        ),
        (Some(Value::String(t)), _) if t == "array" => match s.get("items") {
            Some(items) if depth > 0 => format!("array of {}", type_name(root, items, depth - 1)),
            _ => "array".into(),
        },
        (Some(Value::String(t)), _) if t == "object" => named.unwrap_or("object").to_owned(),
        (Some(Value::String(t)), _) => t.clone(),
        (Some(Value::Array(ts)), _) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        _ => named.unwrap_or("any").to_owned(),
    };
    if let Some(f) = s.get("format").and_then(Value::as_str) {
        let _ = write!(name, " ({f})");
    }
    if nullable {
        name.push_str(" or null");
    }
    name
}

/// The rules of a field, in words.
fn rules(s: &Value) -> Vec<String> {
    let m = s.as_object().cloned().unwrap_or_default();
    let words = [
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
        ("minLength", "length >="),
        ("maxLength", "length <="),
        ("minItems", "items >="),
        ("maxItems", "items <="),
        ("multipleOf", "multiple of"),
        ("pattern", "matches"),
    ];
    words
        .iter()
        .filter_map(|(k, w)| m.get(*k).map(|v| format!("{w} {v}")))
        .collect()
}

fn fields(out: &mut String, root: &Value, schema: &Value, prefix: &str, depth: usize) {
    let s = non_null(root, schema).0;
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, p) in props {
        let path = format!("{prefix}{name}");
        let target = non_null(root, p).0;
        let mut description = p
            .get("description")
            .or_else(|| target.get("description"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        let rules = rules(target);
        if !rules.is_empty() {
            if !description.is_empty() {
                description.push(' ');
            }
            let _ = write!(description, "({})", rules.join(", ").replace('|', "\\|"));
        }
        let _ = writeln!(
            out,
            "| `{path}` | {} | {} | {description} |",
            type_name(root, p, DEPTH).replace('|', "\\|"),
            if required.contains(&name.as_str()) { "yes" } else { "no" },
        );
        if depth > 0 {
            if target.get("properties").is_some() {
                fields(out, root, target, &format!("{path}."), depth - 1);
            } else if let Some(items) = target.get("items") {
                fields(out, root, items, &format!("{path}[]."), depth - 1);
            }
        }
    }
}

/// A value the schema accepts, built from its types and rules.
pub(crate) fn example_of(root: &Value, schema: &Value, depth: usize) -> Value {
    let s = non_null(root, schema).0;
    if let Some(v) = s.get("examples").and_then(Value::as_array).and_then(|e| e.first()) {
        return v.clone();
    }
    if let Some(v) = s.get("const") {
        return v.clone();
    }
    if let Some(v) = s.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return v.clone();
    }
    let t = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.get("properties").is_some() => "object",
        _ => "null",
    };
    let number = |integer: bool| {
        let min = s.get("minimum").and_then(Value::as_f64);
        let ex = s
            .get("exclusiveMinimum")
            .and_then(Value::as_f64)
            .map(|v| if integer { v + 1.0 } else { v + 0.5 });
        let max = s.get("maximum").and_then(Value::as_f64);
        let v = min.or(ex).unwrap_or(if max.is_some_and(|m| m < 1.0) {
            max.unwrap_or(0.0)
        } else {
            1.0
        });
        if integer {
            json!(v as i64)
        } else {
            json!(v)
        }
    };
    match t {
        "object" if depth > 0 => {
            let mut m = Map::new();
            for (name, p) in s.get("properties").and_then(Value::as_object).into_iter().flatten() {
                m.insert(name.clone(), example_of(root, p, depth - 1));
            }
            Value::Object(m)
        }
        "object" => json!({}),
        "array" if depth > 0 => {
            // At least one item, and no more than an example needs (a
            // schema asking for millions gets an example that says less).
            let n = s.get("minItems").and_then(Value::as_u64).unwrap_or(1).clamp(1, 3);
            let item = s
                .get("items")
                .map(|i| example_of(root, i, depth - 1))
                .unwrap_or(Value::Null);
            Value::Array(vec![item; n as usize])
        }
        "array" => json!([]),
        "integer" => number(true),
        "number" => number(false),
        "boolean" => json!(false),
        "string" => {
            let text = match s.get("format").and_then(Value::as_str) {
                Some("date-time") => "2026-12-07T12:00:00Z".to_owned(),
                Some("date") => "2026-12-07".to_owned(),
                Some("time") => "12:00:00Z".to_owned(),
                Some("uuid") => "0193a8f2-7c1d-7e2f-9a3b-4c5d6e7f8091".to_owned(),
                Some("email") => "someone@example.com".to_owned(),
                Some("uri") => "https://example.com/".to_owned(),
                _ => {
                    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0).min(256) as usize;
                    let max = s.get("maxLength").and_then(Value::as_u64).map(|m| m as usize);
                    let base = "text".to_owned();
                    let mut t = if base.len() < min { "x".repeat(min) } else { base };
                    if let Some(max) = max {
                        t.truncate(max.max(min));
                    }
                    t
                }
            };
            json!(text)
        }
        _ => Value::Null,
    }
}
