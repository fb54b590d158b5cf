//! Compatibility of two JSON Schemas, decided structurally: a reader's
//! schema accepts everything the writer's schema accepts (every instance
//! valid under the writer's is valid under the reader's), keyword by
//! keyword. Where a keyword is not analysed and differs, the change is
//! reported (the gate never passes what it cannot show safe).
//!
//! One assumption, the playbooks' "add optional fields": data holds only
//! the properties its writer's schema declares, so a property the reader
//! adds (optional) is compatible even where the writer's object is open
//! (unless the writer says `additionalProperties: true` or gives a schema
//! for extra properties: then they are data too).
//!
//! Integer formats schemars writes (`int32`, `uint64`, ...) carry the
//! bounds of their Rust type, which serde enforces when reading: an `i64`
//! field becoming `i32` is `maximum-lowered`.
//!
//! The walk is bounded: recursive types end where a pair of schemas is
//! already being compared, and a schema whose alternatives multiply the
//! work beyond a budget is reported `too-complex`.

use std::cell::Cell;

use serde_json::{Map, Value};

use super::{Breaking, Compatibility, Reader};

/// Every change between `old` and `new` that breaks a reader `mode` must
/// keep working (transitivity is the caller's: this compares two versions).
pub fn json_schema_breaks(old: &Value, new: &Value, mode: Compatibility) -> Vec<Breaking> {
    let mut out = Vec::new();
    if mode.backward() {
        out.extend(accepts(old, new, Reader::NewReadsOld));
    }
    if mode.forward() {
        out.extend(accepts(new, old, Reader::OldReadsNew));
    }
    out
}

/// What `reader` refuses of what `writer` accepts.
fn accepts(writer: &Value, reader: &Value, who: Reader) -> Vec<Breaking> {
    let budget = Cell::new(BUDGET);
    let mut walk = Walk {
        writer_root: writer,
        reader_root: reader,
        who,
        stack: Vec::new(),
        out: Vec::new(),
        budget: &budget,
    };
    walk.subset(writer, reader, "");
    let mut out = walk.out;
    if budget.get() == 0 {
        out.push(Breaking {
            path: String::new(),
            rule: "too-complex",
            detail: format!("comparing took more than {BUDGET} steps (alternatives within alternatives)"),
            reader: who,
        });
    }
    out
}

/// Schema pairs compared, at most, per reader.
const BUDGET: usize = 20_000;

/// Keywords that say nothing about which data is valid.
const ANNOTATIONS: [&str; 12] = [
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords this module analyses.
const ANALYSED: [&str; 28] = [
    "$ref",
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "nullable",
    "allOf",
    "not",
    "unevaluatedProperties",
];

/// String formats a validator checks (schemars' numeric formats such as
/// `int64` are annotations: the range keywords carry those limits).
const CHECKED_FORMATS: [&str; 19] = [
    "idn-email",
    "idn-hostname",
    "iri",
    "iri-reference",
    "uri-template",
    "relative-json-pointer",
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "uuid",
    "regex",
    "json-pointer",
];

struct Walk<'a> {
    writer_root: &'a Value,
    reader_root: &'a Value,
    who: Reader,
    /// The schema pairs being compared, by address (a pair met again
    /// within itself is a recursive type: compatible so far, stop).
    stack: Vec<(usize, usize)>,
    out: Vec<Breaking>,
    /// Comparisons left (shared by trial walks).
    budget: &'a Cell<usize>,
}

impl<'a> Walk<'a> {
    fn report(&mut self, path: &str, rule: &'static str, detail: String) {
        self.out.push(Breaking {
            path: path.to_owned(),
            rule,
            detail,
            reader: self.who,
        });
    }

    /// A walk of its own (for trying one alternative), sharing the budget.
    fn trial(&self) -> Walk<'a> {
        Walk {
            writer_root: self.writer_root,
            reader_root: self.reader_root,
            who: self.who,
            stack: self.stack.clone(),
            out: Vec::new(),
            budget: self.budget,
        }
    }

    /// The schema a local `$ref` points to, or `None` (reported) when it
    /// cannot be resolved; siblings of the `$ref` come back as a schema of
    /// their own.
    fn deref<'v>(&mut self, writer_side: bool, schema: &'v Value, path: &str) -> Option<(&'v Value, Option<Value>)>
    where
        'a: 'v,
    {
        let root = if writer_side {
            self.writer_root
        } else {
            self.reader_root
        };
        let mut current = schema;
        let mut siblings = None;
        for _ in 0..32 {
            let Some(r) = current.get("$ref").and_then(Value::as_str) else {
                return Some((current, siblings));
            };
            let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p)) else {
                self.report(
                    path,
                    "unresolved-ref",
                    format!("`$ref: {r}` cannot be resolved (only local references are)"),
                );
                return None;
            };
            if siblings.is_none() {
                let rest: Map<String, Value> = current
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| k.as_str() != "$ref" && !ANNOTATIONS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !rest.is_empty() {
                    siblings = Some(Value::Object(rest));
                }
            }
            current = target;
        }
        self.report(path, "unresolved-ref", "`$ref`s lead to more `$ref`s".into());
        None
    }

    /// Whether `reader` accepts every instance `writer` accepts, at `path`.
    fn subset(&mut self, writer: &Value, reader: &Value, path: &str) {
        if self.budget.get() == 0 {
            return;
        }
        self.budget.set(self.budget.get() - 1);
        // Siblings of a writer's `$ref` only narrow what it writes: left out.
        let Some((writer, _)) = self.deref(true, writer, path) else {
            return;
        };
        let Some((reader, reader_siblings)) = self.deref(false, reader, path) else {
            return;
        };
        let key = (writer as *const Value as usize, reader as *const Value as usize);
        if self.stack.contains(&key) {
            return;
        }
        self.stack.push(key);
        if let Some(siblings) = &reader_siblings {
            self.subset(writer, siblings, path);
        }
        self.compare(writer, reader, path);
        self.stack.pop();
    }

    fn compare(&mut self, writer: &Value, reader: &Value, path: &str) {
        match (writer, reader) {
            (_, Value::Bool(true)) | (Value::Bool(false), _) => return,
            (Value::Bool(true), r) if is_unconstrained(r) => return,
            (Value::Bool(true), _) => {
                return self.report(
                    path,
                    "constraint-added",
                    "the writer allows anything, the reader constrains it".into(),
                );
            }
            (_, Value::Bool(false)) => {
                return self.report(path, "constraint-added", "the reader accepts nothing here".into());
            }
            _ => {}
        }
        let (Some(w), Some(r)) = (writer.as_object(), reader.as_object()) else {
            return self.report(
                path,
                "invalid-schema",
                "a schema is neither an object nor a boolean".into(),
            );
        };
        // Alternatives of the writer: each (with the keywords beside them) must be accepted.
        if let Some(branches) = alternatives(w) {
            let beside = without(w, &["anyOf", "oneOf"]);
            for branch in branches {
                match self.deref(true, branch, path) {
                    Some((branch, _)) if has_constraints(&beside) => {
                        let merged = merge(&beside, branch);
                        self.subset(&merged, reader, path);
                    }
                    Some((branch, _)) => self.subset(branch, reader, path),
                    None => {}
                }
            }
            return;
        }
        // Alternatives of the reader: the keywords beside them must accept
        // the writer, and one alternative must accept each of its types.
        if let Some(branches) = alternatives(r) {
            let beside = without(r, &["anyOf", "oneOf"]);
            if has_constraints(&beside) {
                self.subset(writer, &Value::Object(beside), path);
            }
            let one_of = r.contains_key("oneOf") && !r.contains_key("anyOf");
            // The writer itself where it has one type (its address ends
            // recursive types), else once per type.
            let split = split_types(w);
            let pieces: Vec<&Value> = if split.is_empty() {
                vec![writer]
            } else {
                split.iter().collect()
            };
            for piece in pieces {
                let mut best: Option<Vec<Breaking>> = None;
                let mut accepting = 0;
                for branch in branches {
                    let mut sub = self.trial();
                    sub.subset(piece, branch, path);
                    if sub.out.is_empty() {
                        accepting += 1;
                    }
                    if best.as_ref().is_none_or(|b| sub.out.len() < b.len()) {
                        best = Some(sub.out);
                    }
                }
                self.out.extend(best.unwrap_or_default());
                if one_of && accepting > 1 {
                    self.report(
                        path,
                        "one-of-ambiguous",
                        format!("{accepting} `oneOf` alternatives of the reader accept what is written; `oneOf` wants exactly one"),
                    );
                }
            }
            return;
        }
        self.types(w, r, path);
        self.enums(w, r, path);
        let kinds = types_of(w);
        let may = |t: &str| {
            kinds
                .as_ref()
                .is_none_or(|k| k.iter().any(|k| k == t || (t == "number" && k == "integer")))
        };
        if may("number") {
            self.numbers(w, r, path);
        }
        if may("string") {
            self.strings(w, r, path);
        }
        if may("array") {
            self.arrays(w, r, path);
        }
        if may("object") {
            self.objects(w, r, path);
        }
        self.unanalysed(w, r, path);
    }

    fn types(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let Some(reads) = types_of(r) else { return };
        let Some(writes) = types_of(w) else {
            return self.report(
                path,
                "type-narrowed",
                format!("the writer allows any type, the reader only {}", reads.join(" or ")),
            );
        };
        for t in writes {
            let accepted = reads.contains(&t) || (t == "integer" && reads.iter().any(|r| r == "number"));
            if !accepted {
                self.report(
                    path,
                    "type-narrowed",
                    format!("{t} is written, the reader accepts {}", reads.join(" or ")),
                );
            }
        }
    }

    fn enums(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let Some(allowed) = values_of(r) else { return };
        match values_of(w) {
            None => self.report(
                path,
                "enum-added",
                format!("the reader accepts only {}", list(&allowed)),
            ),
            Some(written) => {
                for v in written.iter().filter(|v| !allowed.contains(v)) {
                    self.report(
                        path,
                        "enum-value-removed",
                        format!("{v} is written, the reader does not accept it"),
                    );
                }
            }
        }
    }

    fn numbers(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let lower = |m: &Map<String, Value>| bound(m, "minimum", "exclusiveMinimum");
        let upper = |m: &Map<String, Value>| bound(m, "maximum", "exclusiveMaximum");
        if let Some((rmin, rex)) = lower(r) {
            match lower(w) {
                Some((wmin, wex)) if wmin > rmin || (wmin == rmin && (wex || !rex)) => {}
                was => self.report(
                    path,
                    "minimum-raised",
                    format!(
                        "writer {}, reader {}",
                        describe(was, "no minimum", ">"),
                        show(rmin, rex, ">")
                    ),
                ),
            }
        }
        if let Some((rmax, rex)) = upper(r) {
            match upper(w) {
                Some((wmax, wex)) if wmax < rmax || (wmax == rmax && (wex || !rex)) => {}
                was => self.report(
                    path,
                    "maximum-lowered",
                    format!(
                        "writer {}, reader {}",
                        describe(was, "no maximum", "<"),
                        show(rmax, rex, "<")
                    ),
                ),
            }
        }
        if let Some(m) = r.get("multipleOf").and_then(Value::as_f64) {
            let ok = w
                .get("multipleOf")
                .and_then(Value::as_f64)
                .is_some_and(|n| (n / m - (n / m).round()).abs() < 1e-9);
            if !ok {
                self.report(
                    path,
                    "multiple-of-changed",
                    format!("the reader wants multiples of {m}"),
                );
            }
        }
    }

    fn strings(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        self.at_least(w, r, path, "minLength", "min-length-raised");
        self.at_most(w, r, path, "maxLength", "max-length-lowered");
        if let Some(p) = r.get("pattern") {
            if w.get("pattern") != Some(p) {
                self.report(path, "pattern-changed", format!("the reader wants values matching {p}"));
            }
        }
        if let Some(f) = r
            .get("format")
            .and_then(Value::as_str)
            .filter(|f| CHECKED_FORMATS.contains(f))
        {
            if w.get("format").and_then(Value::as_str) != Some(f) {
                self.report(path, "format-added", format!("the reader wants a {f}"));
            }
        }
    }

    fn arrays(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        self.at_least(w, r, path, "minItems", "min-items-raised");
        self.at_most(w, r, path, "maxItems", "max-items-lowered");
        if r.get("uniqueItems") == Some(&Value::Bool(true)) && w.get("uniqueItems") != Some(&Value::Bool(true)) {
            self.report(path, "unique-items-added", "the reader wants unique items".into());
        }
        if let Some(ri) = r.get("items") {
            let wi = w.get("items").unwrap_or(&Value::Bool(true));
            self.subset(wi, ri, &format!("{path}/*"));
        }
    }

    fn objects(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let wprops = w.get("properties").and_then(Value::as_object);
        let rprops = r.get("properties").and_then(Value::as_object);
        let declared = |props: Option<&Map<String, Value>>, name: &str| props.is_some_and(|p| p.contains_key(name));
        let required = |m: &Map<String, Value>| -> Vec<String> {
            m.get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let (wreq, rreq) = (required(w), required(r));
        for name in rreq.iter().filter(|n| !wreq.contains(n)) {
            let detail = if declared(wprops, name) {
                "optional for the writer, required by the reader"
            } else {
                "required by the reader, not written"
            };
            self.report(&child(path, name), "required-added", detail.into());
        }
        // Extra properties the writer's data may hold: a schema, or
        // anything when it says `true` (absent: none, the assumption).
        let extra = w
            .get("additionalProperties")
            .filter(|e| e.is_object() || **e == Value::Bool(true));
        for (name, rschema) in rprops.into_iter().flatten() {
            match (wprops.and_then(|p| p.get(name)), extra) {
                (Some(wschema), _) => self.subset(wschema, rschema, &child(path, name)),
                // A map: its entries may carry this name.
                (None, Some(e)) => self.subset(e, rschema, &child(path, name)),
                // Not declared by the writer: absent from its data.
                (None, None) => {}
            }
        }
        let closed = r
            .get("additionalProperties")
            .or_else(|| r.get("unevaluatedProperties").filter(|u| **u == Value::Bool(false)));
        for (name, wschema) in wprops.into_iter().flatten().filter(|(n, _)| !declared(rprops, n)) {
            match closed {
                Some(Value::Bool(false)) => self.report(
                    &child(path, name),
                    "property-removed",
                    "written, and the reader's object does not allow it".into(),
                ),
                Some(e) if e.is_object() => self.subset(wschema, e, &child(path, name)),
                _ => {}
            }
        }
        if let (Some(we), Some(re)) = (extra, closed) {
            match re {
                Value::Bool(false) => self.report(
                    path,
                    "property-removed",
                    "the writer allows entries, the reader none".into(),
                ),
                re if re.is_object() => self.subset(we, re, &format!("{path}/*")),
                _ => {}
            }
        }
        self.at_least(w, r, path, "minProperties", "min-properties-raised");
        self.at_most(w, r, path, "maxProperties", "max-properties-lowered");
    }

    fn at_least(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str, key: &str, rule: &'static str) {
        if let Some(rmin) = r.get(key).and_then(Value::as_f64) {
            if w.get(key).and_then(Value::as_f64).is_none_or(|wmin| wmin < rmin) {
                self.report(path, rule, format!("writer {key} {}, reader {rmin}", opt(w.get(key))));
            }
        }
    }

    fn at_most(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str, key: &str, rule: &'static str) {
        if let Some(rmax) = r.get(key).and_then(Value::as_f64) {
            if w.get(key).and_then(Value::as_f64).is_none_or(|wmax| wmax > rmax) {
                self.report(path, rule, format!("writer {key} {}, reader {rmax}", opt(w.get(key))));
            }
        }
    }

    /// Keywords of the reader not analysed here: changed is breaking.
    fn unanalysed(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        for (key, value) in r {
            let known = ANNOTATIONS.contains(&key.as_str()) || ANALYSED.contains(&key.as_str());
            if (!known || key == "allOf" || key == "not") && w.get(key) != Some(value) {
                self.report(
                    path,
                    "unanalysed-keyword-changed",
                    format!("`{key}` differs and is not analysed"),
                );
            }
        }
    }
}

fn alternatives(m: &Map<String, Value>) -> Option<&Vec<Value>> {
    m.get("anyOf").or_else(|| m.get("oneOf")).and_then(Value::as_array)
}

fn is_unconstrained(schema: &Value) -> bool {
    schema
        .as_object()
        .is_some_and(|m| m.keys().all(|k| ANNOTATIONS.contains(&k.as_str())))
}

/// The `type`s a schema allows (`None`: any).
fn types_of(m: &Map<String, Value>) -> Option<Vec<String>> {
    let mut types: Vec<String> = match m.get("type")? {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => return None,
    };
    if m.get("nullable") == Some(&Value::Bool(true)) {
        types.push("null".into());
    }
    Some(types)
}

/// The values an `enum` or `const` allows (`None`: not restricted).
fn values_of(m: &Map<String, Value>) -> Option<Vec<Value>> {
    match (m.get("enum"), m.get("const")) {
        (Some(Value::Array(values)), _) => Some(values.clone()),
        (_, Some(c)) => Some(vec![c.clone()]),
        _ => None,
    }
}

/// A bound (inclusive `key`, or `exclusive`), the tighter if both; `true`
/// when exclusive.
fn bound(m: &Map<String, Value>, key: &str, exclusive: &str) -> Option<(f64, bool)> {
    // Draft 4 (and OpenAPI 3.0): `exclusiveMinimum: true` makes `minimum` exclusive.
    let flag = m.get(exclusive) == Some(&Value::Bool(true));
    let inclusive = m.get(key).and_then(Value::as_f64).map(|v| (v, flag));
    let strict = m.get(exclusive).and_then(Value::as_f64).map(|v| (v, true));
    let implied = integer_format(m).map(|(lo, hi)| (if key == "minimum" { lo } else { hi }, false));
    match (inclusive, strict) {
        (Some(i), Some(s)) => Some(if key == "minimum" {
            if s.0 >= i.0 {
                s
            } else {
                i
            }
        } else if s.0 <= i.0 {
            s
        } else {
            i
        }),
        (i, s) => i.or(s).or(implied),
    }
}

/// The bounds of the Rust integer type a schemars `format` names.
fn integer_format(m: &Map<String, Value>) -> Option<(f64, f64)> {
    let bits = |b: i32| 2f64.powi(b);
    Some(match m.get("format")?.as_str()? {
        "int8" => (-bits(7), bits(7) - 1.0),
        "int16" => (-bits(15), bits(15) - 1.0),
        "int32" => (-bits(31), bits(31) - 1.0),
        "int64" => (-bits(63), bits(63) - 1.0),
        "uint8" => (0.0, bits(8) - 1.0),
        "uint16" => (0.0, bits(16) - 1.0),
        "uint32" => (0.0, bits(32) - 1.0),
        "uint64" => (0.0, bits(64) - 1.0),
        _ => return None,
    })
}

/// `m` without the keywords `drop`.
fn without(m: &Map<String, Value>, drop: &[&str]) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn has_constraints(m: &Map<String, Value>) -> bool {
    m.keys().any(|k| !ANNOTATIONS.contains(&k.as_str()))
}

/// An alternative of the writer with the keywords beside it: both hold of
/// what it writes (`properties` joined, `required` united).
fn merge(beside: &Map<String, Value>, branch: &Value) -> Value {
    let mut out = branch.as_object().cloned().unwrap_or_default();
    for (k, v) in beside {
        match (k.as_str(), out.get_mut(k)) {
            ("properties", Some(Value::Object(props))) => {
                for (name, schema) in v.as_object().into_iter().flatten() {
                    props.entry(name.clone()).or_insert_with(|| schema.clone());
                }
            }
            ("required", Some(Value::Array(names))) => {
                for name in v.as_array().into_iter().flatten() {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
            (_, Some(_)) => {}
            (_, None) => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// The writer's schema once per type it allows (`["string", "null"]`
/// becomes two), for matching each against the reader's alternatives;
/// empty for a schema of one type (or none).
fn split_types(w: &Map<String, Value>) -> Vec<Value> {
    match w.get("type") {
        Some(Value::Array(types)) if types.len() > 1 => types
            .iter()
            .map(|t| {
                let mut one = w.clone();
                one.insert("type".into(), t.clone());
                Value::Object(one)
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn show(v: f64, exclusive: bool, op: &str) -> String {
    format!("{op}{} {v}", if exclusive { "" } else { "=" })
}

fn describe(bound: Option<(f64, bool)>, none: &str, op: &str) -> String {
    match bound {
        None => none.to_owned(),
        Some((v, ex)) => show(v, ex, op),
    }
}

fn opt(v: Option<&Value>) -> String {
    v.map_or("none".into(), Value::to_string)
}

fn list(values: &[Value]) -> String {
    values.iter().map(Value::to_string).collect::<Vec<_>>().join(", ")
}

/// `path` with property `name` (escaped as a JSON pointer token).
fn child(path: &str, name: &str) -> String {
    format!("{path}/{}", name.replace('~', "~0").replace('/', "~1"))
}
