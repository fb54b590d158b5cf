//! Outgoing messages: id, optional ordering key, headers and payload.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// String headers, kept sorted by name so every backend stores and returns
/// them in the same order.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(BTreeMap::new())
    }

    /// Set a header, returning the previous value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(name.into(), value.into())
    }

    /// The value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Remove a header, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// Whether the header is present.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Headers in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Remove every header whose name starts with `prefix`.
    pub fn remove_prefixed(&mut self, prefix: &str) {
        self.0.retain(|k, _| !k.starts_with(prefix));
    }

    /// Bytes the headers take (names and values), for size limits.
    pub fn encoded_len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Headers(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for Headers {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.0.extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
    }
}

impl IntoIterator for Headers {
    type Item = (String, String);
    type IntoIter = btree_map::IntoIter<String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A message to publish, or the content of a received one.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique id; a UUIDv7 unless the caller chose one. Backends that
    /// deduplicate publishes use it as the deduplication id.
    pub id: String,
    /// Ordering key: messages with the same key keep their order where the
    /// backend's [`Capabilities::ordering`](crate::Capabilities::ordering) says so.
    pub key: Option<String>,
    /// Application headers.
    pub headers: Headers,
    /// The body, binary-safe.
    pub payload: Bytes,
}

impl Message {
    /// A message with this payload and a fresh UUIDv7 id.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            id: new_id(),
            key: None,
            headers: Headers::new(),
            payload: payload.into(),
        }
    }

    /// A message whose payload is `value` as JSON, with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let payload = serde_json::to_vec(value)
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, "value cannot be encoded as JSON").with_source(e))?;
        let mut message = Message::new(payload);
        message.headers.insert(CONTENT_TYPE, "application/json");
        Ok(message)
    }

    /// Set the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Set the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Add a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Decode the payload as JSON.
    pub fn decode_json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Error::new(ErrorKind::Decode, "payload is not the expected JSON").with_source(e))
    }

    /// Bytes this message takes: payload, headers, id and key. Backends compare
    /// this with their [`max_message_size`](crate::Capabilities::max_message_size).
    pub fn encoded_len(&self) -> usize {
        self.payload.len() + self.headers.encoded_len() + self.id.len() + self.key.as_ref().map_or(0, String::len)
    }

    /// `MessageTooLarge` when the message is over `limit` bytes.
    pub fn check_size(&self, limit: usize) -> Result<()> {
        let size = self.encoded_len();
        if size > limit {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!("message {} is {size} bytes, the limit is {limit}", self.id),
            ));
        }
        Ok(())
    }

    /// Check the id, key and header names: non-empty id, no control characters
    /// in names, which several brokers reject or mangle.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty() {
            return Err(Error::invalid("message id must not be empty"));
        }
        for (name, _) in self.headers.iter() {
            if name.is_empty() || name.chars().any(|c| c.is_control() || c == ':' || c == ' ') {
                return Err(Error::invalid(format!(
                    "header name {name:?} must be non-empty, without spaces, ':' or control characters"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("headers", &self.headers)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Header holding the payload's media type.
pub const CONTENT_TYPE: &str = "content-type";

/// A fresh UUIDv7, as text.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v7_and_sortable() {
        let a = Message::new("a");
        let b = Message::new("b");
        let parsed = uuid::Uuid::parse_str(&a.id).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert!(a.id < b.id);
    }

    #[test]
    fn json_round_trip_and_size() {
        let m = Message::json(&serde_json::json!({"n": 1})).unwrap().with_key("k");
        assert_eq!(m.headers.get(CONTENT_TYPE), Some("application/json"));
        let v: serde_json::Value = m.decode_json().unwrap();
        assert_eq!(v["n"], 1);
        assert!(m.check_size(10).is_err());
        assert!(m.check_size(1000).is_ok());
    }

    #[test]
    fn headers_collection() {
        let mut h: Headers = [("b", "2"), ("a", "1")].into_iter().collect();
        h.extend([("c", "3")]);
        assert_eq!((h.len(), h.is_empty()), (3, false));
        assert_eq!(h.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2"), ("c", "3")]);
        assert_eq!(h.remove("b").as_deref(), Some("2"));
        let owned: Vec<(String, String)> = h.into_iter().collect();
        assert_eq!(owned, [("a".into(), "1".into()), ("c".into(), "3".into())]);
        assert!(Headers::new().is_empty());
    }

    #[test]
    fn header_names_are_checked() {
        assert!(Message::new("").with_header("ok-name", "v").validate().is_ok());
        assert!(Message::new("").with_header("bad name", "v").validate().is_err());
        assert!(Message::new("").with_id("").validate().is_err());
        // ':' ends a header name in HTTP and NATS; control characters are
        // refused or mangled by several brokers.
        for bad in ["a:b", "tab\tname", "new\nline", ""] {
            assert!(
                Message::new("").with_header(bad, "v").validate().is_err(),
                "header name {bad:?} accepted"
            );
        }
    }

    #[test]
    fn size_counts_everything_up_to_the_limit() {
        let m = Message::new("12345")
            .with_id("id")
            .with_key("key")
            .with_header("h", "vv");
        assert_eq!(m.encoded_len(), 5 + 3 + 2 + 3);
        // The limit itself is allowed; one byte more is not.
        assert!(m.check_size(13).is_ok());
        let err = m.check_size(12).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
    }
}
