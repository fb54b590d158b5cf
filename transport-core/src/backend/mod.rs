//! The toolkit for backend authors: what every backend needs and would
//! otherwise write again. Applications do not need anything here.
//!
//! A backend crate has the same small files as every other one:
//!
//! | file | holds |
//! |---|---|
//! | `lib.rs` | the docs (`docs.md`), `SCHEME`, a few `pub use` lines |
//! | `config.rs` | the configuration, from a URL and from the builder |
//! | `core.rs` | the client connection and the mapping of its errors, in one place |
//! | `provision.rs` | creating topics, groups and dead-letter queues on the broker |
//! | `publisher.rs` | `publish` and `publish_batch` |
//! | `subscriber.rs` | the read loop (a [`Fetch`] run by [`pull_subscription`]) and the settler |
//! | `dead_letters.rs` | the [`DeadLetterQueue`](crate::DeadLetterQueue) operations |
//! | `backlog.rs` | [`Transport::backlog`](crate::Transport::backlog): what a group has left, read from the broker |
//! | `backend.rs` | the builder and the [`Transport`](crate::Transport) impl, delegating to the files above |
//!
//! The pieces here: [`cloudevents::Binding`] (the broker's CloudEvents
//! protocol binding for the header codec), [`Lifecycle`] (the closed guard and error tagging),
//! [`pull_subscription`] (a read loop with flow control, reconnect backoff
//! and one error policy), [`on_drop`] (settling a dropped delivery),
//! [`delivery`] and [`subscription`] (the constructors), plus the
//! dead-letter model and name rules every backend applies.

pub mod cloudevents;
mod lifecycle;
mod pull;
mod stale;

pub use lifecycle::{on_drop, Lifecycle};
pub use pull::{pull_subscription, Backoff, Fetch};
pub use stale::StaleGuard;

pub use crate::dead_letter::{dead_letter_message, redrive_message};
pub use crate::delivery::{DeliveryInfo, Settler};
pub use crate::flow::InFlightLimit;
pub use crate::names::{validate_group, validate_topic};

use std::sync::Arc;

use futures::stream::BoxStream;

use crate::delivery::Delivery;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::options::{StartFrom, SubscribeOptions};
use crate::subscription::Subscription;

/// A delivery of `message` that `settler` settles.
pub fn delivery(message: Arc<Message>, info: DeliveryInfo, settler: Box<dyn Settler>) -> Delivery {
    Delivery::new(message, info, settler)
}

/// The subscription for a backend's raw stream of deliveries; the rules
/// every backend shares (exhausted redeliveries dead-lettered on arrival,
/// redrives for other groups skipped) are applied on top.
pub fn subscription(
    topic: impl Into<String>,
    group: impl Into<String>,
    deliveries: BoxStream<'static, Result<Delivery>>,
) -> Subscription {
    Subscription::new(topic, group, deliveries)
}

/// For backends without replay: `StartFrom::Earliest` is refused with a
/// final `Unsupported` instead of quietly starting at the latest message
/// (the group would miss what it asked for without knowing).
pub fn refuse_replay(options: &SubscribeOptions) -> Result<()> {
    match options.start {
        StartFrom::Earliest => Err(Error::new(
            ErrorKind::Unsupported,
            "StartFrom::Earliest: this backend keeps no history to replay to a new group; \
             use StartFrom::Latest (a group receives what is published after it first subscribes)",
        )
        .with_retryable(false)),
        StartFrom::Latest => Ok(()),
    }
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
    fn userinfo_is_percent_decoded_not_form_decoded() {
        assert_eq!(super::decode_userinfo("p+ss%40w%2Brd%20x").unwrap(), "p+ss@w+rd x");
        assert!(super::decode_userinfo("%FF").is_err());
        let odd = "p+ss w@rd:/%é";
        assert_eq!(super::decode_userinfo(&super::encode_userinfo(odd)).unwrap(), odd);
    }
}
