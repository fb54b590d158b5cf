//! The streams and the consumer group of a topic: created on first use
//! (`XGROUP CREATE ... MKSTREAM`), or with `provision=false` checked
//! (`XINFO GROUPS`, `TYPE`) and never created. The group's helper keys
//! (delayed set, failure times) are plain keys written by the scripts, not
//! objects to provision.

use redis::Value;
use transport_core::backend::{not_provisioned, RawProvision};
use transport_core::{async_trait, Error, ErrorKind, Result, StartFrom, SubscribeOptions, Topology};

use crate::core::{map_err, Conn, Redis};
use crate::names::{self, Keys};

/// The group of a subscription: created (with its stream) when this
/// transport provisions, otherwise checked with the dead-letter stream.
pub(crate) async fn ensure_group(
    conn: &mut Conn,
    keys: &Keys,
    group: &str,
    start: StartFrom,
    provision: bool,
) -> Result<()> {
    if provision {
        return create_group(conn, keys, group, start).await;
    }
    check_group(conn, &keys.stream, group).await?;
    check_stream(conn, &keys.dlq, "dead-letter stream").await
}

async fn create_group(conn: &mut Conn, keys: &Keys, group: &str, start: StartFrom) -> Result<()> {
    let id = match start {
        StartFrom::Earliest => "0",
        StartFrom::Latest => "$",
    };
    let r = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.stream)
        .arg(group)
        .arg(id)
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await;
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other.map_err(map_err),
    }
}

/// A stream with nothing in it: Redis has no command that only creates a
/// stream, so a group is created with it and removed again.
async fn create_stream(conn: &mut Conn, key: &str) -> Result<()> {
    match check_stream(conn, key, "stream").await {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let r = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("transport-provision")
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await;
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => {}
        other => other.map_err(map_err)?,
    }
    redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(key)
        .arg("transport-provision")
        .query_async::<()>(conn)
        .await
        .map_err(map_err)
}

async fn check_stream(conn: &mut Conn, key: &str, kind: &str) -> Result<()> {
    let kind_of: String = redis::cmd("TYPE").arg(key).query_async(conn).await.map_err(map_err)?;
    match kind_of.as_str() {
        "stream" => Ok(()),
        "none" => Err(not_provisioned(kind, key)),
        other => Err(Error::invalid(format!(
            "{kind} {key}: the key holds a {other}, not a stream (another application's key under this \
             key_prefix?)"
        ))),
    }
}

async fn check_group(conn: &mut Conn, stream: &str, group: &str) -> Result<()> {
    check_stream(conn, stream, "stream").await?;
    let groups: Vec<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
        .map_err(map_err)?;
    let named = |g: &Value| -> bool {
        let fields: Vec<(String, Value)> = redis::from_redis_value(g.clone()).unwrap_or_default();
        fields
            .iter()
            .any(|(k, v)| k == "name" && redis::from_redis_value::<String>(v.clone()).is_ok_and(|n| n == group))
    };
    if groups.iter().any(named) {
        Ok(())
    } else {
        Err(not_provisioned(
            "consumer group",
            &format!("{group} of stream {stream}"),
        ))
    }
}

#[async_trait]
impl RawProvision for Redis {
    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Topology {
        let c = &self.core.config;
        let t = Topology::new().with("stream", names::stream(c, topic), "");
        let Some(options) = group else {
            return t;
        };
        let keys = Keys::new(c, topic, options);
        let start = match options.start {
            StartFrom::Earliest => "XGROUP CREATE ... 0: from the first entry",
            StartFrom::Latest => "XGROUP CREATE ... $: from the next entry",
        };
        t.with(
            "consumer group",
            format!("{} of stream {}", options.group, keys.stream),
            start,
        )
        .with("stream", keys.dlq, "dead letters")
    }

    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<Topology> {
        let c = &self.core.config;
        let mut conn = self.core.conn.clone();
        match group {
            None => create_stream(&mut conn, &names::stream(c, topic)).await?,
            Some(options) => {
                let keys = Keys::new(c, topic, options);
                create_group(&mut conn, &keys, &options.group, options.start).await?;
                create_stream(&mut conn, &keys.dlq).await?;
            }
        }
        Ok(self.topology(topic, group))
    }
}
