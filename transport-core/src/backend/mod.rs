//! The toolkit for backend authors: the raw traits a backend implements,
//! the one wrapper that turns it into a [`Transport`](crate::Transport), and
//! what every backend needs and would otherwise write again. Applications do
//! not need anything here.
//!
//! A backend implements [`RawTransport`] (its name, capabilities and
//! close) and the narrow traits it is made of, each in the file of its
//! concern: [`RawPublish`] (store a validated batch), [`RawSubscribe`],
//! [`RawDeadLetters`] (open a dead-letter queue) and [`RawBacklog`]; also
//! [`Settler`] (the life of one delivery after it was handed out) and
//! [`DeadLetterQueue`](crate::DeadLetterQueue) (over a
//! [`Selection`](crate::Selection)), and its configuration implements
//! [`BackendConfig`] (read from a URL, open the raw backend): its public
//! type is then `Connector<ItsConfig>`, whose constructors return
//! [`transport`]`(raw)`, which applies the closed guard, validation,
//! capability enforcement, error context and telemetry once for all
//! backends (see `wrap.rs`).
//!
//! A backend crate has the same small files as every other one:
//!
//! | file | holds |
//! |---|---|
//! | `lib.rs` | the docs (`docs.md`), `SCHEME`, a few `pub use` lines |
//! | `config.rs` | the configuration, from a URL, a file or code |
//! | `backend.rs` | the public type (`Connector<ItsConfig>`) and the [`RawTransport`] impl: name, capabilities, close |
//! | `core.rs` | the client connection (the [`BackendConfig`] impl) and the mapping of its errors, in one place |
//! | `names.rs` | the name of every broker object (streams, keys, queues, exchanges, subjects) |
//! | `provision.rs` | creating topics, groups and dead-letter queues on the broker, or checking them (`provision=false`) ([`RawProvision`]) |
//! | `publisher.rs` | storing a batch ([`RawPublish`]) |
//! | `subscriber.rs` | the read loop ([`RawSubscribe`], mostly a [`Fetch`] run by [`pull_deliveries`]) |
//! | `settle.rs` | the [`Settler`]: ack, nack with delay, dead-letter, extend |
//! | `dead_letter_queue.rs` | depth, peek, redrive and discard by [`Selection`](crate::Selection) ([`RawDeadLetters`] opens it) |
//! | `backlog.rs` | what a group has left, read from the broker ([`RawBacklog`]) |
//!
//! Operation structs hold the backend's `Arc<Core>`, never the public
//! transport. The pieces here: [`cloudevents::Binding`] (the broker's
//! CloudEvents protocol binding for the header codec), [`Lifecycle`] (the
//! closed flag read loops watch), [`pull_deliveries`] (a read loop with flow
//! control, reconnect backoff and one error policy), [`on_drop`] (settling
//! a dropped delivery), [`delivery`] (the constructor), plus the
//! dead-letter model and name rules every backend applies.

pub mod cloudevents;
mod connector;
mod lifecycle;
mod pull;
mod raw;
mod stale;
mod wrap;

pub use connector::{BackendConfig, Connector};
pub use lifecycle::{on_drop, Lifecycle};
pub use pull::{pull_deliveries, Fetch, ReconnectBackoff};
pub use raw::{
    Deliveries, RawBacklog, RawDeadLetters, RawProvision, RawPublish, RawSubscribe, RawTransport, SubscribeRequest,
};
pub use stale::StaleGuard;
pub use wrap::transport;

pub use crate::dead_letter::{dead_letter_message, redrive_message};
pub use crate::delivery::Settler;
pub use crate::flow::InFlightLimit;
pub use crate::names::{escape_dots, validate_group, validate_topic};

use std::sync::Arc;

use crate::delivery::Delivery;
use crate::delivery_info::DeliveryInfo;
use crate::error::{Error, Result};
use crate::message::Message;

/// A delivery of `message` that `settler` settles.
pub fn delivery(message: Arc<Message>, info: DeliveryInfo, settler: Box<dyn Settler>) -> Delivery {
    Delivery::new(message, info, settler)
}

/// Decode the user or password of a URL's userinfo: percent-decoding as RFC
/// 3986 says (`%2B` is `+`, and a literal `+` stays `+`; form decoding would
/// turn it into a space). Not UTF-8 after decoding is `InvalidArgument`.
pub fn decode_userinfo(part: &str) -> Result<String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::invalid("the URL's user or password is not UTF-8 once percent-decoded"))
}

/// The URL option `provision` (`true`, the default, or `false`), the same
/// on every backend: with `false` the transport creates nothing on the
/// broker and checks instead that what it needs exists (`NotFound` naming
/// what is missing). A value other than `true` or `false` is
/// `InvalidArgument`.
pub fn provision_option(value: &str) -> Result<bool> {
    value
        .parse()
        .map_err(|_| Error::invalid(format!("URL option provision must be true or false, got {value:?}")))
}

/// `NotFound` for a broker object a transport with `provision=false`
/// needs and does not create: names it and says how to create it.
pub fn not_provisioned(kind: &str, name: &str) -> Error {
    Error::new(
        crate::error::ErrorKind::NotFound,
        format!(
            "{kind} {name} does not exist, and this transport does not create it (provision=false); \
             create it with `transport provision` (its --print shows what is needed)"
        ),
    )
    .with_retryable(false)
}

/// Encode a user or password for a URL's userinfo (every byte but ASCII
/// letters and digits percent-encoded), the inverse of [`decode_userinfo`].
pub fn encode_userinfo(part: &str) -> String {
    percent_encoding::utf8_percent_encode(part, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A URL that names several hosts, `scheme://[userinfo@]h1:p1,h2:p2[/path][?query]`
/// (the seeds of a cluster), which URL parsers refuse: returns the same URL
/// naming only the first host, to parse as usual, and every host as
/// written. `None` when the URL names one host. An empty entry in the list
/// is `InvalidArgument`.
pub fn split_hosts(url: &str) -> Result<Option<(String, Vec<String>)>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(None);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    if !hosts.contains(',') {
        return Ok(None);
    }
    let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    if hosts.iter().any(String::is_empty) {
        return Err(Error::invalid(format!(
            "empty host in the URL's host list {:?}",
            hosts.join(",")
        )));
    }
    Ok(Some((format!("{scheme}://{userinfo}{}{tail}", hosts[0]), hosts)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_lists_are_split() {
        let (first, hosts) = super::split_hosts("x://u:p%40@a:1,b,c:3/v?q=1").unwrap().unwrap();
        assert_eq!(first, "x://u:p%40@a:1/v?q=1");
        assert_eq!(hosts, ["a:1", "b", "c:3"]);
        assert_eq!(super::split_hosts("x://u@a:1/v?q=a,b").unwrap(), None);
        assert!(super::split_hosts("x://a,,b").is_err());
    }

    #[test]
    fn provision_is_true_or_false() {
        assert!(super::provision_option("true").unwrap());
        assert!(!super::provision_option("false").unwrap());
        let e = super::provision_option("no").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        let missing = super::not_provisioned("stream", "orders");
        assert_eq!(missing.kind(), crate::ErrorKind::NotFound);
        assert!(!missing.is_retryable() && missing.to_string().contains("stream orders"));
    }

    #[test]
    fn userinfo_is_percent_decoded_not_form_decoded() {
        assert_eq!(super::decode_userinfo("p+ss%40w%2Brd%20x").unwrap(), "p+ss@w+rd x");
        assert!(super::decode_userinfo("%FF").is_err());
        let odd = "p+ss w@rd:/%é";
        assert_eq!(super::decode_userinfo(&super::encode_userinfo(odd)).unwrap(), odd);
    }
}
