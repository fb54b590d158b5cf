//! The AsyncAPI 3.0 document of a catalog: servers per broker, a channel
//! per topic with the messages on it, send and receive operations (the
//! consumer group of each), the dead-letter channel of each group, and the
//! messages with their payload schemas and CloudEvents headers.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use transport_core::headers::{
    CE_CAUSATIONID, CE_CORRELATIONID, CE_DATAVERSION, CE_ID, CE_SOURCE, CE_SPECVERSION, CE_SUBJECT, CE_TIME, CE_TYPE,
    CONTENT_TYPE, DLQ_ATTEMPTS, DLQ_REASON,
};

use crate::catalog::{Catalog, Declared};
use crate::error::ContractError;

/// The AsyncAPI schema format of Avro 1.9 schemas.
const AVRO_FORMAT: &str = "application/vnd.apache.avro;version=1.9.0";

/// A broker the service runs against, as the document's `servers` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The server's name in the document (`production`, `staging`).
    pub name: String,
    /// The broker URL, as `transport::connect` takes it; only its scheme,
    /// host and port are written (never credentials).
    pub url: String,
}

impl std::str::FromStr for Server {
    type Err = String;

    /// `NAME=URL`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, url) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: a server is NAME=URL"))?;
        Ok(Server {
            name: name.to_owned(),
            url: url.to_owned(),
        })
    }
}

/// AsyncAPI ids of channels, operations and messages: letters, digits, `_`, `-`.
fn id(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect()
}

fn message_id(d: &Declared) -> String {
    id(&format!("{}_v{}_{}", d.event_type, d.version.major, d.version.minor))
}

/// Protocol and host of a broker URL (no credentials, no query). The
/// authority is split as the backends split it (the host after the last
/// `@`, before the first `/` or `?`), so a password with an unencoded `#`
/// or `/` never reads as a host; of several hosts (`k1:9092,k2:9092`) the
/// first is the server's host and all are in its description.
fn server(s: &Server) -> Result<Value, ContractError> {
    let refuse = |why: &str| ContractError::Declaration(format!("server {}: {why}", s.name));
    let (scheme, rest) = s
        .url
        .split_once("://")
        .ok_or_else(|| refuse("not a URL (scheme://host)"))?;
    let protocol = match scheme {
        "kafka" => "kafka",
        "kafka+ssl" => "kafka-secure",
        "amqp" => "amqp",
        "amqps" => "amqps",
        "nats" | "tls" => "nats",
        "redis" | "redis+cluster" | "rediss" | "rediss+cluster" => "redis",
        "sqs" => "sqs",
        "memory" => "memory",
        other => return Err(refuse(&format!("unknown scheme {other:?}"))),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hosts: Vec<&str> = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .split(',')
        .filter(|h| !h.is_empty())
        .collect();
    let host = match hosts.first() {
        Some(h) => (*h).to_owned(),
        None if protocol == "sqs" => {
            let region = rest[end..]
                .trim_start_matches(['/', '?'])
                .split('&')
                .find_map(|kv| kv.strip_prefix("region="))
                .unwrap_or("us-east-1");
            format!("sqs.{region}.amazonaws.com")
        }
        None => "localhost".to_owned(),
    };
    let mut server = json!({"host": host, "protocol": protocol});
    if hosts.len() > 1 {
        server["description"] = json!(format!("Seeds: {}.", hosts.join(", ")));
    }
    Ok(server)
}

/// The payload schema as an AsyncAPI schema: its `$defs` moved to
/// `components.schemas` under `prefix.`, references rewritten.
fn payload(schema: &Value, prefix: &str, components: &mut Map<String, Value>) -> Result<Value, ContractError> {
    fn rewrite(v: &Value, prefix: &str) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "$schema" && k.as_str() != "$defs")
                    .map(|(k, v)| match (k.as_str(), v.as_str()) {
                        // schemars writes a recursive root type as `#`.
                        ("$ref", Some("#")) => (k.clone(), Value::String(format!("#/components/schemas/{prefix}"))),
                        ("$ref", Some(r)) if r.starts_with("#/$defs/") => {
                            let name = component(&r["#/$defs/".len()..]);
                            (
                                k.clone(),
                                Value::String(format!("#/components/schemas/{prefix}.{name}")),
                            )
                        }
                        _ => (k.clone(), rewrite(v, prefix)),
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| rewrite(v, prefix)).collect()),
            other => other.clone(),
        }
    }
    if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
        for (name, def) in defs {
            insert_once(
                components,
                format!("{prefix}.{}", component(name)),
                rewrite(def, prefix),
                "schema definition",
            )?;
        }
    }
    Ok(rewrite(schema, prefix))
}

/// Insert under a sanitised id, refusing two names that map to one id.
fn insert_once(map: &mut Map<String, Value>, id: String, value: Value, what: &str) -> Result<(), ContractError> {
    if map.contains_key(&id) {
        return Err(ContractError::Declaration(format!(
            "two {what}s map to the AsyncAPI id {id} (ids keep letters, digits, - and _): rename one"
        )));
    }
    map.insert(id, value);
    Ok(())
}

/// A component key: letters, digits, `.`, `-`, `_`.
fn component(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `ce-dataversion`s a reader of `d` takes: any minor of its major, or
/// for Avro (read with exactly its schema) its own version only.
fn dataversion_pattern(d: &Declared) -> String {
    let (major, minor) = (d.version.major, d.version.minor);
    if crate::compatibility::is_avro(&d.schema) {
        if minor == 0 {
            format!("^{major}(\\.0)?$")
        } else {
            format!("^{major}\\.{minor}$")
        }
    } else {
        format!("^{major}(\\.[0-9]+)?$")
    }
}

/// The CloudEvents attributes of a message of `d`, as the headers the
/// library writes (binary content mode; Kafka writes `ce_` for `ce-`).
fn headers(d: &Declared) -> Value {
    let s = |description: &str| json!({"type": "string", "description": description});
    json!({
        "type": "object",
        "properties": {
            CE_SPECVERSION: {"type": "string", "const": "1.0"},
            CE_ID: s("Unique id of the event (also the message id)."),
            CE_TYPE: {"type": "string", "const": d.event_type},
            CE_SOURCE: s("Who emitted the event."),
            CE_DATAVERSION: {
                "type": "string",
                "pattern": dataversion_pattern(d),
                "description": format!("The data version, MAJOR.MINOR; this schema is {}.", d.version),
            },
            CE_TIME: {"type": "string", "format": "date-time"},
            CE_SUBJECT: s("What the event is about, within the source."),
            CE_CORRELATIONID: s("Shared by every event of one business flow."),
            CE_CAUSATIONID: s("The id of the event that caused this one."),
            CONTENT_TYPE: {"type": "string", "const": d.content_type},
        },
        "required": [CE_SPECVERSION, CE_ID, CE_TYPE, CE_SOURCE],
    })
}

impl Catalog {
    /// The service's AsyncAPI 3.0 document, `servers` listing the brokers
    /// it runs against (none: the document has no `servers`).
    pub fn asyncapi(&self, servers: &[Server]) -> Result<Value, ContractError> {
        let mut doc_servers = Map::new();
        for s in servers {
            doc_servers.insert(id(&s.name), server(s)?);
        }
        let mut messages = Map::new();
        let mut schemas = Map::new();
        // topic -> message ids sent; (topic, group) -> message ids received.
        let mut sent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut received: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
        for d in self.events() {
            let mid = message_id(d);
            if messages.contains_key(&mid) {
                return Err(ContractError::Declaration(format!(
                    "two event types map to the AsyncAPI message id {mid}"
                )));
            }
            let description = d
                .schema
                .get("description")
                .or_else(|| d.schema.get("doc"))
                .and_then(Value::as_str);
            // Avro schemas travel as a multi-format schema object; JSON
            // Schemas as AsyncAPI schemas, their definitions shared.
            let payload_schema = if crate::compatibility::is_avro(&d.schema) {
                json!({"schemaFormat": AVRO_FORMAT, "schema": d.schema})
            } else {
                payload(&d.schema, &mid, &mut schemas)?
            };
            insert_once(&mut schemas, mid.clone(), payload_schema, "schema")?;
            let mut message = json!({
                "name": d.event_type,
                "title": format!("{} {}", d.event_type, d.version),
                "contentType": d.content_type,
                "headers": headers(d),
                "payload": {"$ref": format!("#/components/schemas/{mid}")},
                "correlationId": {"location": format!("$message.header#/{CE_CORRELATIONID}")},
                "x-rust-type": d.rust_type,
            });
            if let Some(text) = description {
                message["summary"] = json!(text);
            }
            messages.insert(mid.clone(), message);
            for topic in &d.produced_to {
                sent.entry(topic).or_default().push(mid.clone());
            }
            for c in &d.consumed_in {
                received.entry((&c.topic, &c.group)).or_default().push(mid.clone());
            }
        }
        let mut channels = Map::new();
        let mut operations = Map::new();
        let refs = |ids: &[String]| -> Map<String, Value> {
            ids.iter()
                .map(|m| (m.clone(), json!({"$ref": format!("#/components/messages/{m}")})))
                .collect()
        };
        let mut on_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (topic, ids) in &sent {
            on_topic.entry(topic).or_default().extend(ids.iter().cloned());
        }
        for ((topic, _), ids) in &received {
            on_topic.entry(topic).or_default().extend(ids.iter().cloned());
        }
        for (topic, ids) in &mut on_topic {
            ids.sort();
            ids.dedup();
            insert_once(
                &mut channels,
                id(topic),
                json!({"address": topic, "title": topic, "messages": refs(ids)}),
                "topic",
            )?;
        }
        let channel_messages = |channel: &str, ids: &[String]| -> Vec<Value> {
            ids.iter()
                .map(|m| json!({"$ref": format!("#/channels/{channel}/messages/{m}")}))
                .collect()
        };
        for (topic, ids) in &sent {
            let ch = id(topic);
            insert_once(
                &mut operations,
                id(&format!("send_{topic}")),
                json!({
                    "action": "send",
                    "channel": {"$ref": format!("#/channels/{ch}")},
                    "summary": format!("{} publishes to {topic}.", self.service()),
                    "messages": channel_messages(&ch, ids),
                }),
                "operation",
            )?;
        }
        for ((topic, group), ids) in &received {
            let ch = id(topic);
            let group_binding = json!({"groupId": {"type": "string", "enum": [group]}, "bindingVersion": "0.5.0"});
            insert_once(
                &mut operations,
                id(&format!("receive_{topic}__{group}")),
                json!({
                    "action": "receive",
                    "channel": {"$ref": format!("#/channels/{ch}")},
                    "summary": format!("{} consumes {topic} in group {group}.", self.service()),
                    "messages": channel_messages(&ch, ids),
                    "bindings": {"kafka": group_binding},
                }),
                "operation",
            )?;
            let dead = id(&format!("{topic}__{group}__dead_letters"));
            insert_once(
                &mut channels,
                dead.clone(),
                json!({
                    "address": null,
                    "title": format!("dead letters of {group} on {topic}"),
                    "description": format!(
                        "What group {group} could not handle on {topic}: each message as it arrived, with \
                         {DLQ_REASON} (why), {DLQ_ATTEMPTS} and the failure times in headers. Where it lives \
                         depends on the broker (see each backend's docs.md); read it with \
                         `transport dlq URL {topic} --group {group}`."
                    ),
                    "messages": refs(ids),
                }),
                "dead-letter channel",
            )?;
            insert_once(
                &mut operations,
                id(&format!("dead_letter_{topic}__{group}")),
                json!({
                    "action": "send",
                    "channel": {"$ref": format!("#/channels/{dead}")},
                    "summary": format!("Group {group} dead-letters what it cannot handle (failed attempts, events that break their schema)."),
                    "messages": channel_messages(&dead, ids),
                }),
                "operation",
            )?;
        }
        let mut doc = json!({
            "asyncapi": "3.0.0",
            "info": {
                "title": self.service(),
                "version": self.version(),
                "description": format!(
                    "The events of {}, generated from its declared event types. Messages are CloudEvents 1.0 \
                     in binary content mode: the attributes are headers.",
                    self.service()
                ),
            },
            "defaultContentType": "application/json",
            "channels": channels,
            "operations": operations,
            "components": {"messages": messages, "schemas": schemas},
        });
        if !doc_servers.is_empty() {
            doc["servers"] = Value::Object(doc_servers);
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_never_carry_credentials() {
        let s = Server {
            name: "prod".into(),
            url: "amqps://app:s3cret@mq.internal:5671/%2f?heartbeat=10".into(),
        };
        let v = server(&s).unwrap();
        assert_eq!(v, json!({"host": "mq.internal:5671", "protocol": "amqps"}));
        let sqs = server(&"aws=sqs://?region=eu-west-1".parse().unwrap()).unwrap();
        assert_eq!(sqs["host"], "sqs.eu-west-1.amazonaws.com");
        // A password with an unencoded `#` and `/` splits as the backends split it.
        let odd = server(&"k=kafka://svc:2024#Winter@b1:9092,b2:9092".parse().unwrap()).unwrap();
        assert_eq!(odd["host"], "b1:9092");
        assert_eq!(odd["description"], "Seeds: b1:9092, b2:9092.");
        assert!(!odd.to_string().contains("2024") && !odd.to_string().contains("Winter"));
        assert!(server(&"x=ftp://h".parse().unwrap()).is_err());
        assert!("no-equals".parse::<Server>().is_err());
    }
}
