//! The header names the library writes and reads on every broker, in one
//! place: what a producer or consumer that is not this library sets or sees.

pub use crate::dead_letter::{
    DLQ_ATTEMPTS, DLQ_FIRST_FAILURE, DLQ_GROUP, DLQ_LAST_FAILURE, DLQ_PREFIX, DLQ_REASON, DLQ_TOPIC, REDRIVE_COUNT,
    REDRIVE_GROUP,
};
pub use crate::event::{
    CE_CAUSATIONID, CE_CORRELATIONID, CE_DATASCHEMA, CE_DATAVERSION, CE_ID, CE_PARTITIONKEY, CE_PREFIX, CE_SOURCE,
    CE_SPECVERSION, CE_SUBJECT, CE_TENANTID, CE_TIME, CE_TYPE,
};
pub use crate::message::CONTENT_TYPE;

use std::borrow::Cow;

use base64::Engine as _;

/// The prefix of a header value (or key) that a foreign producer sent as
/// bytes that are not UTF-8 text: `base64:` and the standard base64 of the
/// bytes. Headers are text in this library; this keeps such values
/// lossless instead of replacing bytes with U+FFFD. Valid UTF-8 arrives as
/// it was sent (a foreign text that itself starts with `base64:` is
/// indistinguishable from this form: the docs of each backend say so).
pub const BINARY_VALUE_PREFIX: &str = "base64:";

/// A header value, name or key received as raw bytes, as text: the bytes
/// themselves when they are UTF-8, else [`BINARY_VALUE_PREFIX`] and their
/// standard base64.
///
/// ```
/// use transport_core::headers::{binary_header_value, header_text};
/// assert_eq!(header_text(b"plain"), "plain");
/// assert_eq!(header_text(&[0xff, 0x00]), "base64:/wA=");
/// assert_eq!(binary_header_value("base64:/wA=").as_deref(), Some(&[0xff, 0x00][..]));
/// ```
pub fn header_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(format!(
            "{BINARY_VALUE_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )),
    }
}

/// The bytes of a value [`header_text`] wrote in its binary form; `None`
/// for text without the prefix or with invalid base64 after it.
pub fn binary_header_value(text: &str) -> Option<Vec<u8>> {
    let encoded = text.strip_prefix(BINARY_VALUE_PREFIX)?;
    base64::engine::general_purpose::STANDARD.decode(encoded).ok()
}

/// The one text value of a header a foreign producer repeated in one
/// message (Kafka records may carry a name several times): a JSON array of
/// the values in their order, so none is lost. A name sent once keeps its
/// plain value.
///
/// ```
/// use transport_core::headers::repeated_header_text;
/// assert_eq!(repeated_header_text(&["a".into()]), "a");
/// assert_eq!(repeated_header_text(&["a".into(), "b,c".into()]), r#"["a","b,c"]"#);
/// ```
pub fn repeated_header_text(values: &[String]) -> String {
    match values {
        [one] => one.clone(),
        many => serde_json::to_string(many).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_values_round_trip_and_text_stays_text() {
        for bytes in [&b""[..], b"\xff", b"\x00\xc3", b"caf\xc3\xa9\xff", &[0x80; 33]] {
            let text = header_text(bytes);
            if let Ok(plain) = std::str::from_utf8(bytes) {
                assert_eq!(text, plain);
            } else {
                assert!(text.starts_with(BINARY_VALUE_PREFIX), "{text}");
                assert_eq!(binary_header_value(&text).as_deref(), Some(bytes));
            }
        }
        assert_eq!(header_text("é ✓".as_bytes()), "é ✓");
        assert_eq!(binary_header_value("plain"), None);
        assert_eq!(binary_header_value("base64:***"), None);
    }

    #[test]
    fn repeated_values_keep_order_and_commas() {
        let values = vec!["2".to_owned(), "1".to_owned(), "x, y".to_owned()];
        let text = repeated_header_text(&values);
        let back: Vec<String> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, values);
    }
}
