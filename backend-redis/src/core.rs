//! The backend's core: the raw backend (`Redis`), connecting (the
//! `BackendConfig` impl; one server, or a cluster behind the same type so
//! every command, pipeline and script is written once), error mapping, the
//! entry encoding and the Lua scripts that make settlement transitions
//! atomic.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ClientTlsConfig, Cmd, Pipeline, RedisFuture, Script, TlsCertificates, Value};
use transport_core::backend::cloudevents::Binding;
use transport_core::backend::{BackendConfig, RawTransport};
use transport_core::headers::header_text;
use transport_core::Bytes;
use transport_core::{Error, ErrorKind, Headers, Message, Operation};

use crate::config::RedisConfig;
use crate::SCHEME;

/// What every operation of the backend shares: the configuration and the
/// connection for commands (subscriptions open their own readers).
pub(crate) struct Core {
    pub(crate) config: RedisConfig,
    pub(crate) conn: Conn,
}

/// The raw backend the core's wrapper calls.
pub(crate) struct Redis {
    pub(crate) core: Arc<Core>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("config", &self.core.config)
            .finish_non_exhaustive()
    }
}

impl BackendConfig for RedisConfig {
    const BACKEND: &'static str = SCHEME;

    fn from_url(url: &str) -> Result<Self, Error> {
        RedisConfig::from_url(url)
    }

    async fn open(self) -> Result<impl RawTransport, Error> {
        self.check_cluster()?;
        let conn = connect(&self, self.command_timeout).await?;
        Ok(Redis {
            core: Arc::new(Core { config: self, conn }),
        })
    }
}

/// Map a redis error to the library's error (the core's wrapper names the
/// operation).
pub(crate) fn map_err(e: redis::RedisError) -> Error {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    let code = e.code().unwrap_or("");
    // A NOPERM inside MULTI/EXEC (a batch) comes back as the aborted
    // transaction's errors: look at each.
    let no_perm = e
        .clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, s)| s.kind() == Some(S::NoPerm)));
    let kind = match e.kind() {
        K::AuthenticationFailed => ErrorKind::Unauthorized,
        _ if no_perm => ErrorKind::Forbidden,
        _ if matches!(code, "WRONGPASS" | "NOAUTH") => ErrorKind::Unauthorized,
        _ if code == "NOGROUP" => ErrorKind::NotFound,
        _ if e.is_timeout() => ErrorKind::Timeout,
        _ if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => ErrorKind::ConnectionLost,
        K::InvalidClientConfig => ErrorKind::InvalidArgument,
        _ => ErrorKind::Backend,
    };
    // A cluster in a failover answers CLUSTERDOWN, MASTERDOWN, READONLY
    // (a demoted primary) or TRYAGAIN until a replica takes over: passing.
    let retryable = kind.default_retryable()
        || matches!(
            e.kind(),
            K::Server(S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly | S::Moved | S::Ask)
        );
    let hint = match kind {
        ErrorKind::Unauthorized => "; check the user name and password in the URL",
        ErrorKind::Forbidden => {
            "; the Redis user lacks a command or key this library needs (backend-redis/docs.md, \"Permissions\")"
        }
        ErrorKind::ConnectionLost => "; check that Redis is running and reachable",
        _ => "",
    };
    Error::new(kind, format!("{e}{hint}"))
        .with_backend(SCHEME)
        .with_retryable(retryable)
}

/// A connection to one server or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Open a connection that reconnects by itself; `response_timeout` bounds
/// each command (on a cluster, including its redirects and retries).
pub(crate) async fn connect(config: &RedisConfig, response_timeout: Duration) -> Result<Conn, Error> {
    // Also for a plain URL: a cluster may redirect to TLS nodes.
    transport_core::tls::install_default_provider();
    let certificates = tls_certificates(config)?;
    let mut conn = if config.cluster_nodes.is_empty() {
        let client = match &certificates {
            Some(c) => redis::Client::build_with_tls(config.client_url(), c.clone()),
            None => redis::Client::open(config.client_url()),
        }
        .map_err(connect_error)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        Conn::Single(
            client
                .get_connection_manager_with_config(manager_config)
                .await
                .map_err(connect_error)?,
        )
    } else {
        // A failover makes commands for the lost primary's slots fail until
        // a replica is promoted (the cluster's node timeout plus an
        // election): retry soon and often, within the command's deadline,
        // rather than the client's default waits of over a second.
        let mut builder = ClusterClient::builder(config.cluster_urls());
        if let Some(c) = certificates {
            builder = builder.certs(c);
        }
        let client = builder
            .connection_timeout(config.connect_timeout)
            .response_timeout(response_timeout)
            .overall_response_timeout(Some(response_timeout))
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()
            .map_err(connect_error)?;
        Conn::Cluster(client.get_async_connection().await.map_err(connect_error)?)
    };
    // Credentials are checked on the first command; do it now so a wrong
    // password fails here, quickly, as Unauthorized.
    redis::cmd("PING")
        .query_async::<()>(&mut conn)
        .await
        .map_err(connect_error)?;
    Ok(conn)
}

/// The operator's CA and client certificate, read now so a missing file is
/// a configuration error before any connection is tried.
fn tls_certificates(config: &RedisConfig) -> Result<Option<TlsCertificates>, Error> {
    if !config.tls_options.is_set() {
        return Ok(None);
    }
    let material = config
        .tls_options
        .load()
        .map_err(|e| e.with_backend(SCHEME).with_operation(Operation::Connect))?;
    Ok(Some(TlsCertificates {
        client_tls: material.identity_pem().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.to_vec(),
            client_key: key.to_vec(),
        }),
        root_cert: material.ca_pem().map(<[u8]>::to_vec),
    }))
}

/// A failure to connect: before a wrapper exists, so named here. A TLS
/// handshake failure is told apart from a lost connection: it is not
/// retried.
fn connect_error(e: redis::RedisError) -> Error {
    match transport_core::tls::handshake_error(&e) {
        Some(tls) => tls.with_backend(SCHEME),
        None => map_err(e),
    }
    .with_operation(Operation::Connect)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn time_of_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

const F_ID: &str = "id";
const F_KEY: &str = "key";
const F_PAYLOAD: &str = "payload";
const F_HEADER: &str = "h.";

/// Stream entry fields for a message: `id`, `key`, `payload`, `h.<name>`.
pub(crate) fn encode(message: &Message) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = Vec::with_capacity(3 + message.headers.len());
    fields.push((F_ID.as_bytes().to_vec(), message.id.as_bytes().to_vec()));
    if let Some(k) = &message.key {
        fields.push((F_KEY.as_bytes().to_vec(), k.as_bytes().to_vec()));
    }
    for (name, value) in Binding::Http.encode(&message.headers) {
        fields.push((format!("{F_HEADER}{name}").into_bytes(), value.as_bytes().to_vec()));
    }
    fields.push((F_PAYLOAD.as_bytes().to_vec(), message.payload.to_vec()));
    fields
}

/// `XADD stream [NOMKSTREAM] [MAXLEN ~ max_len] * <fields of message>`;
/// with `NOMKSTREAM` (a transport that does not provision) a missing
/// stream is not created and the reply is nil.
pub(crate) fn xadd(stream: &str, max_len: Option<u64>, existing_only: bool, message: &Message) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if existing_only {
        cmd.arg("NOMKSTREAM");
    }
    if let Some(n) = max_len {
        cmd.arg("MAXLEN").arg("~").arg(n);
    }
    cmd.arg("*");
    for (k, v) in encode(message) {
        cmd.arg(k).arg(v);
    }
    cmd
}

/// The message in a stream entry. Entries written by other producers are
/// accepted: their fields become headers, the entry id the message id.
pub(crate) fn decode(entry_id: &str, fields: &[Value]) -> Message {
    let mut id = None;
    let mut key = None;
    let mut payload = Bytes::new();
    let mut headers = Headers::new();
    let mut foreign = false;
    for pair in fields.chunks(2) {
        let [Value::BulkString(name), value] = pair else {
            continue;
        };
        let value = match value {
            Value::BulkString(v) => v.clone(),
            Value::SimpleString(s) => s.clone().into_bytes(),
            Value::Int(i) => i.to_string().into_bytes(),
            _ => Vec::new(),
        };
        match name.as_slice() {
            b"id" => id = Some(header_text(&value).into_owned()),
            b"key" => key = Some(header_text(&value).into_owned()),
            b"payload" => payload = Bytes::from(value),
            n => {
                let name = match n.strip_prefix(F_HEADER.as_bytes()) {
                    Some(header) => header,
                    None => {
                        foreign = true;
                        n
                    }
                };
                // Bytes that are not UTF-8 arrive in the lossless `base64:` form.
                let (name, value) = (header_text(name), header_text(&value));
                let (name, value) = Binding::Http.decode(&name, &value);
                headers.insert(name, value);
            }
        }
    }
    if foreign {
        headers.insert("transport-redis-entry", entry_id);
    }
    Message {
        id: id.unwrap_or_else(|| entry_id.to_owned()),
        key,
        headers,
        payload,
    }
}

/// One entry read or claimed, with its delivery count and first failure.
pub(crate) struct Entry {
    pub entry_id: String,
    pub message: Message,
    pub attempt: u32,
    pub first_failure: Option<SystemTime>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// Parse `[id, [f, v, ...]]`.
fn parse_entry(v: &Value) -> Option<(String, Message)> {
    let Value::Array(parts) = v else { return None };
    let id = text(parts.first()?)?;
    let Value::Array(fields) = parts.get(1)? else {
        return None;
    };
    let message = decode(&id, fields);
    Some((id, message))
}

/// Parse an `XREADGROUP` reply (new entries: attempt 1).
pub(crate) fn parse_read(reply: Value) -> Vec<Entry> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for stream in &streams {
        let Value::Array(parts) = stream else { continue };
        let Some(Value::Array(entries)) = parts.get(1) else {
            continue;
        };
        for e in entries {
            if let Some((entry_id, message)) = parse_entry(e) {
                out.push(Entry {
                    entry_id,
                    message,
                    attempt: 1,
                    first_failure: None,
                });
            }
        }
    }
    out
}

/// Parse the claim scripts' reply: `[[id, fields, count, first_failure_ms|false], ...]`.
pub(crate) fn parse_claimed(reply: Value) -> Vec<Entry> {
    let Value::Array(items) = reply else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else { return None };
            let entry_id = text(parts.first()?)?;
            let Value::Array(fields) = parts.get(1)? else {
                return None;
            };
            let attempt = parts.get(2).and_then(int).unwrap_or(2) as u32;
            let first_failure = parts.get(3).and_then(int).map(time_of_ms);
            Some(Entry {
                message: decode(&entry_id, fields),
                entry_id,
                attempt,
                first_failure,
            })
        })
        .collect()
}

/// Parse `XRANGE` (dead-letter peek).
pub(crate) fn parse_range(reply: Value) -> Vec<(String, Message)> {
    let Value::Array(items) = reply else { return Vec::new() };
    items.iter().filter_map(parse_entry).collect()
}

/// Scripts: keys are passed explicitly, so they work with any prefix.
pub(crate) struct Scripts {
    /// KEYS: stream, delayed, failures. ARGV: group, consumer, now_ms, count.
    /// Claims the nacked entries whose delay is over.
    pub claim_due: Script,
    /// KEYS: stream, delayed, failures. ARGV: group, consumer, min_idle_ms, count, now_ms.
    /// Claims entries idle past the ack timeout (not parked by a nack).
    pub reclaim: Script,
    /// KEYS: stream, delayed, failures. ARGV: group, entry id, delivery count, due_ms, now_ms.
    pub nack: Script,
    /// KEYS: stream, delayed, failures. ARGV: group, entry id, delivery count.
    pub ack: Script,
    /// KEYS: stream, delayed, failures, dlq. ARGV: group, entry id, delivery count, fields...
    pub dead_letter: Script,
    /// KEYS: stream (delayed, failures unused). ARGV: group, entry id,
    /// delivery count, consumer, idle_ms.
    pub extend: Script,
    /// KEYS: dlq, target. ARGV: dlq entry id, fields...
    pub redrive: Script,
    /// KEYS: stream (delayed, failures unused). ARGV: group, entry id,
    /// delivery count. 1 while the handle is current (the entry pending
    /// with that count), else 0.
    pub current: Script,
}

/// A script that settles a delivery (KEYS: stream, delayed set, first-failure
/// hash; ARGV: group, entry id, the handle's delivery count, then its own).
/// It acts only while the entry is pending with the handle's delivery
/// count, and returns 0 otherwise.
macro_rules! settling_script {
    ($($body:expr),+ $(,)?) => {
        Script::new(concat!(
            "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)\n",
            "if not p[1] or tonumber(p[1][4]) ~= tonumber(ARGV[3]) then return 0 end\n",
            $($body),+
        ))
    };
}

/// The end of a delivery: acked, and its nack delay and first failure
/// forgotten.
macro_rules! release {
    () => {
        concat!(
            "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n",
            "redis.call('ZREM', KEYS[2], ARGV[2])\n",
            "redis.call('HDEL', KEYS[3], ARGV[2])\n",
        )
    };
}

pub(crate) fn scripts() -> &'static Scripts {
    static S: OnceLock<Scripts> = OnceLock::new();
    S.get_or_init(|| Scripts {
        claim_due: Script::new(
            r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] then
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
    if c[1] then
      table.insert(out, {c[1][1], c[1][2], p[1][4] + 1, redis.call('HGET', KEYS[3], id)})
    else
      redis.call('HDEL', KEYS[3], id)
    end
  end
end
return out",
        ),
        reclaim: Script::new(
            r"
local pend = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[3]), '-', '+', tonumber(ARGV[4]) * 4)
local out = {}
for _, p in ipairs(pend) do
  if #out >= tonumber(ARGV[4]) then break end
  if not redis.call('ZSCORE', KEYS[2], p[1]) then
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), p[1])
    if c[1] then
      redis.call('HSETNX', KEYS[3], p[1], ARGV[5])
      table.insert(out, {c[1][1], c[1][2], p[4] + 1, redis.call('HGET', KEYS[3], p[1])})
    elseif #c == 0 then
      -- trimmed away while pending: nothing left to deliver
      redis.call('XACK', KEYS[1], ARGV[1], p[1])
      redis.call('HDEL', KEYS[3], p[1])
    end
  end
end
return out",
        ),
        // Settling checks the entry's delivery count: a handle from before
        // a redelivery (the count has grown since) settles nothing, so it
        // cannot ack or requeue the live redelivery. Returns 0 then.
        nack: settling_script!(
            "redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])\n",
            "redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[5])\n",
            "return 1",
        ),
        ack: settling_script!(release!(), "return 1"),
        dead_letter: settling_script!("redis.call('XADD', KEYS[4], '*', unpack(ARGV, 4))\n", release!(), "return 1"),
        // JUSTID leaves the delivery count alone.
        extend: settling_script!(
            "local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[4], 0, ARGV[2], 'IDLE', tonumber(ARGV[5]), 'JUSTID')\n",
            "return #c",
        ),
        current: settling_script!("return 1"),
        redrive: Script::new(
            r"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return 1",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let m = Message::new(vec![0u8, 255, 10])
            .with_key("k")
            .with_header("ü", "✓")
            .with_header("empty", "");
        let flat: Vec<Value> = encode(&m)
            .into_iter()
            .flat_map(|(k, v)| [Value::BulkString(k), Value::BulkString(v)])
            .collect();
        assert_eq!(decode("1-0", &flat), m);
    }

    #[test]
    fn foreign_entries_become_headers() {
        let fields = vec![Value::BulkString(b"temp".to_vec()), Value::BulkString(b"21".to_vec())];
        let m = decode("5-1", &fields);
        assert_eq!(m.id, "5-1");
        assert_eq!(m.headers.get("temp"), Some("21"));
        assert_eq!(m.headers.get("transport-redis-entry"), Some("5-1"));
    }
}
