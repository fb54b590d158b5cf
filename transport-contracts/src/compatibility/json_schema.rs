//! Compatibility of two JSON Schemas, decided structurally: a reader's
//! schema accepts everything the writer's schema accepts (every instance
//! valid under the writer's is valid under the reader's), keyword by
//! keyword. Where a keyword is not analysed and differs, the change is
//! reported (the gate never passes what it cannot show safe).
//!
//! One assumption, the playbooks' "add optional fields": data holds only
//! the properties its writer's schema declares, so a property the reader
//! adds (optional) is compatible even where the writer's object is open.

use std::collections::HashSet;

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
    let mut walk = Walk {
        writer_root: writer,
        reader_root: reader,
        who,
        seen: HashSet::new(),
        out: Vec::new(),
    };
    walk.subset(writer, reader, "");
    walk.out
}

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
const ANALYSED: [&str; 27] = [
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
];

/// String formats a validator checks (schemars' numeric formats such as
/// `int64` are annotations: the range keywords carry those limits).
const CHECKED_FORMATS: [&str; 13] = [
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
    /// `$ref` pairs being compared (recursive types end here).
    seen: HashSet<(String, String)>,
    out: Vec<Breaking>,
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

    /// Whether `reader` accepts every instance `writer` accepts, at `path`.
    fn subset(&mut self, writer: &'a Value, reader: &'a Value, path: &str) {
        let (writer, wref) = resolve(self.writer_root, writer);
        let (reader, rref) = resolve(self.reader_root, reader);
        if let (Some(w), Some(r)) = (&wref, &rref) {
            if !self.seen.insert((w.clone(), r.clone())) {
                return;
            }
        }
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
        // Alternatives of the writer: each must be accepted.
        if let Some(branches) = alternatives(w) {
            for branch in branches {
                self.subset(branch, reader, path);
            }
            return;
        }
        // Alternatives of the reader: one must accept the writer whole.
        if let Some(branches) = alternatives(r) {
            let mut best: Option<Vec<Breaking>> = None;
            for branch in branches {
                let mut sub = Walk {
                    writer_root: self.writer_root,
                    reader_root: self.reader_root,
                    who: self.who,
                    seen: self.seen.clone(),
                    out: Vec::new(),
                };
                sub.subset(writer, branch, path);
                if best.as_ref().is_none_or(|b| sub.out.len() < b.len()) {
                    best = Some(sub.out);
                }
            }
            self.out.extend(best.unwrap_or_default());
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

    fn arrays(&mut self, w: &'a Map<String, Value>, r: &'a Map<String, Value>, path: &str) {
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

    fn objects(&mut self, w: &'a Map<String, Value>, r: &'a Map<String, Value>, path: &str) {
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
        let extra = w.get("additionalProperties");
        for (name, rschema) in rprops.into_iter().flatten() {
            match (wprops.and_then(|p| p.get(name)), extra) {
                (Some(wschema), _) => self.subset(wschema, rschema, &child(path, name)),
                // A map: its entries may carry this name.
                (None, Some(e)) if e.is_object() => self.subset(e, rschema, &child(path, name)),
                // Not declared by the writer: absent from its data.
                (None, _) => {}
            }
        }
        let closed = r.get("additionalProperties");
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
        if let (Some(we), Some(re)) = (extra.filter(|e| e.is_object()), closed) {
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

/// The schema a local `$ref` (`#/$defs/Name`) points to, and the ref.
fn resolve<'v>(root: &'v Value, schema: &'v Value) -> (&'v Value, Option<String>) {
    let mut current = schema;
    let mut last = None;
    for _ in 0..32 {
        let Some(r) = current.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p)) else {
            break;
        };
        last = Some(r.to_owned());
        current = target;
    }
    (current, last)
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
    let inclusive = m.get(key).and_then(Value::as_f64).map(|v| (v, false));
    let strict = m.get(exclusive).and_then(Value::as_f64).map(|v| (v, true));
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
        (i, s) => i.or(s),
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
