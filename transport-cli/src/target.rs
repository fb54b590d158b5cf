//! Resolving the broker URL and connecting, with one-line errors.

use std::fmt;
use std::sync::Arc;

use transport::redact_url;
use transport::{ErrorKind, Transport};

/// A failure to report in one line, with a hint of what to check.
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    pub fn new(msg: impl Into<String>) -> Self {
        CliError(msg.into())
    }
}

/// `what` failed on the broker at `url`: the error and what to check.
pub fn failed(what: &str, url: &str, e: &transport::Error) -> CliError {
    let hint = match e.kind() {
        ErrorKind::Unauthorized => " (check the user name and password in the URL)",
        ErrorKind::Forbidden => " (the user lacks a permission: see the backend's docs, \"Permissions\")",
        ErrorKind::Tls => " (check tls_ca, tls_cert and tls_key, and the host name in the URL)",
        ErrorKind::ConnectionLost | ErrorKind::Timeout => " (is the broker running and reachable?)",
        ErrorKind::Unsupported => " (check the URL scheme, or rebuild with the backend's feature)",
        ErrorKind::InvalidArgument => " (check the topic, group and options)",
        ErrorKind::MessageTooLarge => " (send a smaller message)",
        _ => "",
    };
    let text = e.to_string();
    // Backends often say what to check already.
    let hint = if text.contains("; check") { "" } else { hint };
    CliError(format!("{what} on {} failed: {text}{hint}", redact_url(url)))
}

/// Split `[URL] REST...`: the URL is the first argument when it contains
/// `://` (topic names cannot), else it comes from `TRANSPORT_URL`.
pub fn split_url(args: &[String]) -> CliResult<(String, Vec<String>)> {
    match args.first() {
        Some(first) if first.contains("://") => Ok((first.clone(), args[1..].to_vec())),
        _ => match std::env::var("TRANSPORT_URL") {
            Ok(url) if !url.is_empty() => Ok((url, args.to_vec())),
            _ => Err(CliError::new(
                "no broker URL: give one as the first argument (e.g. redis://127.0.0.1:6379) or set TRANSPORT_URL",
            )),
        },
    }
}

/// The URL argument, or `TRANSPORT_URL`.
pub fn url_or_env(url: Option<String>) -> CliResult<String> {
    split_url(&url.into_iter().collect::<Vec<_>>()).map(|(u, _)| u)
}

pub async fn connect(url: &str) -> CliResult<Arc<dyn Transport>> {
    transport::connect(url).await.map_err(|e| failed("connecting", url, &e))
}
