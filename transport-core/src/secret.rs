//! A string that never shows in `Debug`, `Display` or logs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A password, token or key. `Debug` and `Display` print `***`; the value is
/// reachable only through [`expose`](Self::expose).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for handing to the broker client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    // Query parameters that commonly carry secrets.
    let tail: String = tail
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((k, _))
                if ["password", "token", "secret", "secret_key", "nkey", "sasl_password"]
                    .iter()
                    .any(|s| k.trim_start_matches('?').eq_ignore_ascii_case(s)) =>
            {
                format!("{k}=***")
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "\"***\" ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("amqp://u:pw@h/vh"), "amqp://u:***@h/vh");
        assert_eq!(redact_url("nats://tok@h"), "nats://***@h");
        assert_eq!(
            redact_url("sqs://?region=x&secret_key=abc"),
            "sqs://?region=x&secret_key=***"
        );
        assert_eq!(redact_url("memory://"), "memory://");
    }
}
