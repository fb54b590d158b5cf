//! CloudEvents protocol bindings: how each broker carries the `ce-*`
//! attribute headers and the content type of an event in binary content
//! mode. A backend passes its outgoing headers through [`Binding::encode`]
//! and each incoming header through [`Binding::decode`], so that events
//! written by a CloudEvents SDK on that broker decode here and the other
//! way round, and application code only ever sees the one form of
//! [`Event`](crate::Event): `ce-<attribute>` with the plain value, and
//! `content-type`.
//!
//! Headers that are not CloudEvents attributes pass through unchanged.

use std::borrow::Cow;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::event::{CE_PREFIX, CE_SPECVERSION};
use crate::message::{Headers, CONTENT_TYPE};

/// The binding of one broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Binding {
    /// The Kafka protocol binding: `ce_<attribute>` record headers with
    /// UTF-8 values, `content-type` header. (The `partitionkey` attribute
    /// is also the record key, which the backend sets from the message key.)
    Kafka,
    /// The RabbitMQ protocol binding (AMQP 0-9-1): `ce-<attribute>` headers
    /// with plain values; the content type belongs in the AMQP
    /// `content-type` property, which the backend fills from the
    /// `content-type` header this yields.
    RabbitMq,
    /// The NATS protocol binding: `ce-<attribute>` headers, percent-encoded
    /// values, and the content type as `ce-datacontenttype`.
    Nats,
    /// The HTTP binding's rules (`ce-<attribute>`, percent-encoded values,
    /// `content-type`), for brokers that have no binding of their own:
    /// Redis Streams, SQS.
    Http,
}

/// What the HTTP and NATS bindings percent-encode: space, `"`, `%`,
/// controls, and (always, by `utf8_percent_encode`) everything not ASCII.
const ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

const KAFKA_PREFIX: &str = "ce_";
const CE_DATACONTENTTYPE: &str = "ce-datacontenttype";

impl Binding {
    fn percent_encoded(self) -> bool {
        matches!(self, Binding::Nats | Binding::Http)
    }

    /// The wire headers for a message's headers, in order.
    pub fn encode(self, headers: &Headers) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        let is_event = headers.get(CE_SPECVERSION).is_some();
        headers.iter().map(move |(name, value)| {
            let name = match (self, name.strip_prefix(CE_PREFIX)) {
                (Binding::Kafka, Some(attribute)) => Cow::Owned(format!("{KAFKA_PREFIX}{attribute}")),
                (_, Some(_)) => Cow::Borrowed(name),
                (Binding::Nats, None) if name == CONTENT_TYPE && is_event => Cow::Borrowed(CE_DATACONTENTTYPE),
                (_, None) => return (Cow::Borrowed(name), Cow::Borrowed(value)),
            };
            let value = if self.percent_encoded() {
                Cow::from(utf8_percent_encode(value, ENCODE))
            } else {
                Cow::Borrowed(value)
            };
            (name, value)
        })
    }

    /// One wire header as the library names it: attribute names in
    /// lowercase with the `ce-` prefix, values decoded where the binding
    /// encodes them. A value whose percent-encoding is not valid UTF-8 is
    /// kept as it came (the message is delivered; decoding it as an
    /// [`Event`](crate::Event) sees the raw text).
    pub fn decode<'a>(self, name: &'a str, value: &'a str) -> (Cow<'a, str>, Cow<'a, str>) {
        let attribute = match self {
            Binding::Kafka => strip_prefix_ignore_case(name, KAFKA_PREFIX),
            _ => strip_prefix_ignore_case(name, CE_PREFIX),
        };
        let Some(attribute) = attribute else {
            return (Cow::Borrowed(name), Cow::Borrowed(value));
        };
        let attribute = attribute.to_ascii_lowercase();
        let value = if self.percent_encoded() {
            let unquoted = unquote(value);
            match percent_decode_str(&unquoted).decode_utf8() {
                Ok(decoded) => Cow::Owned(decoded.into_owned()),
                Err(_) => Cow::Borrowed(value),
            }
        } else {
            Cow::Borrowed(value)
        };
        if self == Binding::Nats && attribute == "datacontenttype" {
            return (Cow::Borrowed(CONTENT_TYPE), value);
        }
        (Cow::Owned(format!("{CE_PREFIX}{attribute}")), value)
    }
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &name[prefix.len()..])
}

/// A value written as an RFC 7230 quoted string (older producers of the
/// HTTP and NATS bindings did), unescaped; others as they are.
fn unquote(value: &str) -> Cow<'_, str> {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return Cow::Borrowed(value);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_headers() -> Headers {
        [
            ("ce-specversion", "1.0"),
            ("ce-id", "A 1"),
            ("ce-source", "/shop/€ \"x\" 100%"),
            ("content-type", "application/json"),
            ("x-app", "a b%"),
        ]
        .into_iter()
        .collect()
    }

    fn wire(b: Binding) -> Vec<(String, String)> {
        b.encode(&event_headers())
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect()
    }

    fn round_trip(b: Binding) -> Headers {
        wire(b)
            .iter()
            .map(|(n, v)| {
                let (n, v) = b.decode(n, v);
                (n.into_owned(), v.into_owned())
            })
            .collect()
    }

    #[test]
    fn every_binding_round_trips() {
        for b in [Binding::Kafka, Binding::RabbitMq, Binding::Nats, Binding::Http] {
            assert_eq!(round_trip(b), event_headers(), "{b:?}");
        }
    }

    #[test]
    fn wire_forms_follow_each_binding() {
        let kafka = wire(Binding::Kafka);
        assert!(kafka.contains(&("ce_source".into(), "/shop/€ \"x\" 100%".into())));
        assert!(kafka.contains(&("content-type".into(), "application/json".into())));
        let nats = wire(Binding::Nats);
        assert!(nats.contains(&("ce-source".into(), "/shop/%E2%82%AC%20%22x%22%20100%25".into())));
        assert!(nats.contains(&("ce-datacontenttype".into(), "application/json".into())));
        assert!(
            nats.contains(&("x-app".into(), "a b%".into())),
            "only attributes are encoded"
        );
        let http = wire(Binding::Http);
        assert!(http.contains(&("ce-id".into(), "A%201".into())));
        assert!(http.contains(&("content-type".into(), "application/json".into())));
        let rabbit = wire(Binding::RabbitMq);
        assert!(rabbit.contains(&("ce-source".into(), "/shop/€ \"x\" 100%".into())));
        // A message that is not an event keeps its content-type on NATS.
        let plain: Headers = [("content-type", "text/plain")].into_iter().collect();
        assert_eq!(Binding::Nats.encode(&plain).next().unwrap().0, "content-type");
    }

    #[test]
    fn decoding_accepts_what_the_bindings_allow() {
        let d = |b: Binding, n: &'static str, v: &'static str| {
            let (n, v) = b.decode(n, v);
            (n.into_owned(), v.into_owned())
        };
        assert_eq!(d(Binding::Http, "Ce-Id", "%41%e2%82%ac"), ("ce-id".into(), "A€".into()));
        assert_eq!(
            d(Binding::Nats, "ce-id", "\"a \\\"b\\\"\""),
            ("ce-id".into(), "a \"b\"".into())
        );
        assert_eq!(d(Binding::Kafka, "CE_ID", "50%25"), ("ce-id".into(), "50%25".into()));
        // Overlong UTF-8 is not decoded: the raw text stays.
        assert_eq!(d(Binding::Http, "ce-id", "%C0%A0"), ("ce-id".into(), "%C0%A0".into()));
        assert_eq!(
            d(Binding::Nats, "ce-datacontenttype", "a/b"),
            ("content-type".into(), "a/b".into())
        );
        assert_eq!(
            d(Binding::Nats, "ce-datacontenttype", "a%2Fb%3B%20x"),
            ("content-type".into(), "a/b; x".into())
        );
        assert_eq!(
            d(Binding::Kafka, "ce-id", "x"),
            ("ce-id".into(), "x".into()),
            "ce- is no Kafka attribute but passes"
        );
        assert_eq!(d(Binding::Http, "cex", "%41"), ("cex".into(), "%41".into()));
        // Header names are case-insensitive in the bindings that percent-encode.
        assert_eq!(
            d(Binding::Nats, "Ce-DataContentType", "a/b"),
            ("content-type".into(), "a/b".into())
        );
    }

    #[test]
    fn plus_is_a_plus() {
        // Percent-encoding as the HTTP binding uses it (RFC 3986), not form
        // encoding: `+` is a literal, and stays one both ways.
        for b in [Binding::Http, Binding::Nats] {
            let (_, v) = b.decode("ce-subject", "a+b%20c");
            assert_eq!(v, "a+b c", "{b:?}");
            let h: Headers = [("ce-specversion", "1.0"), ("ce-subject", "1+1")].into_iter().collect();
            let wire: Vec<(String, String)> = b.encode(&h).map(|(n, v)| (n.into_owned(), v.into_owned())).collect();
            let back: Headers = wire
                .iter()
                .map(|(n, v)| {
                    let (n, v) = b.decode(n, v);
                    (n.into_owned(), v.into_owned())
                })
                .collect();
            assert_eq!(back, h, "{b:?}");
        }
    }
}
