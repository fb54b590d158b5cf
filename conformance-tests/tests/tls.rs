//! TLS against real servers with a private CA (`scripts/brokers up
//! <backend>-tls`): mutual and server-only TLS work, and everything a
//! security reviewer would try fails at connect, within a bound, as a typed
//! error that says what to fix and shows no key material:
//!
//! - a CA the client does not trust (the other CA; the system's roots),
//! - an expired server certificate,
//! - a host name the certificate does not name,
//! - no client certificate, or one from another CA, where one is demanded,
//! - TLS to a plain port, plain text to a TLS port,
//! - a certificate file that does not exist, TLS options on a plain URL.
//!
//! Kafka: no broker here speaks TLS, so librdkafka's handshake is proven
//! against the Redis TLS servers (`scripts/brokers url kafka-tls`): every
//! case up to the handshake's end, no round trip.
//!
//! `TLS_BACKEND` (redis, nats, rabbitmq, sqs, kafka, postgres: the
//! outbox's and idempotency store's database) picks the servers; writes
//! `target/conformance/tls-failures-<backend>.json` (shown in the
//! `<backend>-tls` column). Servers not running: the trials are ignored, and
//! fail under `CI=true`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conformance_tests::{async_case, run_trials, unique, CheckFailure};
use futures::StreamExt;
use libtest_mimic::Arguments;
use transport_core::{ErrorKind, Message, SubscribeOptions};

type CheckResult = Result<(), CheckFailure>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(CheckFailure(format!($($msg)+)));
        }
    };
}

/// Every connect in these trials gives up after this long...
const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// ...so a refusal must come within this (the Redis client's two retries of
/// a connect that times out, and a slow machine, included): a hang fails.
const REFUSED_WITHIN: Duration = Duration::from_secs(20);

/// The servers of one backend, as `scripts/brokers url` names them.
#[derive(Clone)]
struct Servers {
    /// Demands a client certificate; the URL names the CA and client certificate.
    mutual: String,
    /// Server authentication only (bare URL).
    lax: String,
    /// Shows an expired certificate (bare URL).
    expired: String,
    /// A plain port (bare URL with the TLS scheme).
    plain: String,
    /// The test CA and certificates.
    certs: PathBuf,
}

impl Servers {
    /// The mutual-TLS server with none of the options its URL carries.
    fn mutual_without_options(&self) -> String {
        self.mutual.split('?').next().unwrap_or_default().to_owned()
    }

    fn file(&self, name: &str) -> String {
        self.certs.join(name).display().to_string()
    }

    fn ca(&self, name: &str) -> String {
        format!("tls_ca={}", self.file(name))
    }

    fn client(&self, name: &str) -> String {
        format!(
            "tls_cert={}&tls_key={}",
            self.file(&format!("{name}.pem")),
            self.file(&format!("{name}.key"))
        )
    }

    /// The base64 bodies of the client keys: must never show in an error.
    fn key_body(&self) -> Vec<String> {
        ["client.key", "rogue.key"]
            .iter()
            .flat_map(|k| {
                std::fs::read_to_string(self.certs.join(k))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
            .collect()
    }
}

/// `url` with `options` added to its query, and a short connect timeout.
fn with(url: &str, options: &[&str]) -> String {
    let mut out = url.to_owned();
    // Kafka's connect is bounded by its request timeout.
    let timeout = if url.starts_with("kafka") {
        "request_timeout_ms"
    } else {
        "connect_timeout_ms"
    };
    let timeout = format!("{timeout}={CONNECT_TIMEOUT_MS}");
    // The outbox's pool bounds a PostgreSQL connect (5 s) by itself.
    let timeout = (!url.starts_with("postgres")).then_some(timeout.as_str());
    for o in options.iter().copied().chain(timeout) {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(o);
    }
    out
}

fn with_option(url: &str, option: &str) -> String {
    format!("{url}{}{option}", if url.contains('?') { '&' } else { '?' })
}

/// The URL with the scheme's plain-text twin.
fn plain_scheme(url: &str) -> String {
    [
        ("rediss://", "redis://"),
        ("tls://", "nats://"),
        ("amqps://", "amqp://"),
        ("kafka+ssl://", "kafka://"),
        ("endpoint=https://", "endpoint=http://"),
    ]
    .iter()
    .find(|(tls, _)| url.contains(tls))
    .map_or_else(
        // PostgreSQL negotiates TLS on its one port: plain text is asked for.
        || with_option(url, "sslmode=disable"),
        |(tls, plain)| url.replacen(tls, plain, 1),
    )
}

/// Connect, publish and receive one message.
async fn round_trip(url: &str) -> CheckResult {
    if url.starts_with("postgres") {
        return database_round_trip(url).await;
    }
    let t = transport::connect(url)
        .await
        .map_err(|e| CheckFailure(format!("connect failed: {e}")))?;
    let topic = unique("tls");
    let mut sub = t.subscribe(&topic, SubscribeOptions::new("g")).await?;
    t.publish(&topic, Message::new("over tls")).await?;
    let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .map_err(|_| CheckFailure("no delivery within 30 s".into()))?
        .ok_or_else(|| CheckFailure("subscription ended".into()))??;
    ensure!(d.payload().as_ref() == b"over tls", "payload {:?}", d.payload());
    d.ack().await?;
    drop(sub);
    let _ = t.close().await;
    Ok(())
}

/// The outbox's table made and read over TLS: statements, not just a handshake.
#[cfg(feature = "stores")]
async fn database_round_trip(url: &str) -> CheckResult {
    use transport_sql::{Outbox, Postgres};
    let outbox = Outbox::<Postgres>::connect(url)
        .await
        .map_err(|e| CheckFailure(format!("connect failed: {e}")))?
        .with_table(&unique("tls_outbox").replace('-', "_"))?;
    outbox.migrate().await?;
    let status = outbox.status().await?;
    ensure!(status.pending == 0, "a new outbox holds {status:?}");
    outbox.pool().close().await;
    Ok(())
}

#[cfg(not(feature = "stores"))]
async fn database_round_trip(_: &str) -> CheckResult {
    Err(CheckFailure("PostgreSQL needs the stores feature".into()))
}

/// Connect (a broker's transport, or the outbox's database pool) and close.
async fn connect_and_close(url: &str) -> Result<(), transport_core::Error> {
    #[cfg(feature = "stores")]
    if url.starts_with("postgres") {
        let outbox = transport_sql::Outbox::<transport_sql::Postgres>::connect(url).await?;
        outbox.pool().close().await;
        return Ok(());
    }
    let t = transport::connect(url).await?;
    let _ = t.close().await;
    Ok(())
}

/// Connecting to `url` fails within [`REFUSED_WITHIN`], and the error
/// shows no key material: the error.
async fn refusal(servers: &Servers, url: &str) -> Result<transport_core::Error, CheckFailure> {
    let start = Instant::now();
    let outcome = tokio::time::timeout(REFUSED_WITHIN + Duration::from_secs(5), connect_and_close(url)).await;
    let took = start.elapsed();
    let e = match outcome {
        Err(_) => return Err(CheckFailure(format!("connect hung for {took:?}"))),
        Ok(Ok(())) => return Err(CheckFailure(format!("connected to {url}; it must be refused"))),
        Ok(Err(e)) => e,
    };
    ensure!(
        took <= REFUSED_WITHIN,
        "refused only after {took:?} (at most {REFUSED_WITHIN:?}): {e}"
    );
    let text = format!("{e} {e:?}");
    for line in servers.key_body() {
        ensure!(!text.contains(&line), "the error shows the private key: {e}");
    }
    Ok(e)
}

/// [`refusal`], with `kind` (not retryable) and a message containing `says`.
async fn refused(servers: &Servers, url: &str, kind: ErrorKind, says: &str) -> CheckResult {
    let e = refusal(servers, url).await?;
    ensure!(e.kind() == kind, "expected a {kind} error, got {} ({e})", e.kind());
    ensure!(!e.is_retryable(), "a {} error must not be retryable: {e}", e.kind());
    ensure!(e.to_string().contains(says), "the error does not say {says:?}: {e}");
    Ok(())
}

/// [`refused`] for a client certificate the server wants and does not get.
/// RabbitMQ closes right after the handshake, and the client sees either
/// the alert or the reset first; a reset stays retryable (a restarting
/// broker resets too) and its message says what it may mean.
async fn client_certificate_refused(servers: &Servers, url: &str) -> CheckResult {
    if !url.starts_with("amqps") && !url.starts_with("postgres") {
        return refused(servers, url, ErrorKind::Tls, "client certificate").await;
    }
    // PostgreSQL asks for a certificate and lets pg_hba refuse its absence
    // (FATAL 28000: Unauthorized).
    let e = refusal(servers, url).await?;
    ensure!(
        (e.kind() == ErrorKind::Tls || e.kind() == ErrorKind::ConnectionLost || e.kind() == ErrorKind::Unauthorized)
            && e.to_string().contains("client certificate"),
        "expected a refused client certificate, got {e}"
    );
    Ok(())
}

/// What a refused server certificate's error says: librdkafka does not
/// tell an unknown CA, an expired certificate and a wrong host name apart.
fn verify_says(url: &str, specific: &'static str) -> &'static str {
    if url.starts_with("kafka") {
        "could not be verified"
    } else {
        specific
    }
}

type Case = fn(Servers) -> futures::future::BoxFuture<'static, CheckResult>;

fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("mutual_tls_round_trip", |s| {
            Box::pin(async move { round_trip(&with(&s.mutual, &[])).await })
        }),
        ("server_authentication_round_trip", |s| {
            Box::pin(async move { round_trip(&with(&s.lax, &[&s.ca("ca.pem")])).await })
        }),
        ("unknown_ca_refused", |s| {
            Box::pin(async move {
                let url = with(&s.lax, &[&s.ca("other-ca.pem")]);
                refused(
                    &s,
                    &url,
                    ErrorKind::Tls,
                    verify_says(&url, "not signed by a trusted CA"),
                )
                .await
            })
        }),
        ("system_roots_refuse_a_private_ca", |s| {
            Box::pin(async move {
                // PostgreSQL, like libpq, verifies nothing unless asked.
                let verify: &[&str] = if s.lax.starts_with("postgres") {
                    &["sslmode=verify-full"]
                } else {
                    &[]
                };
                let url = with(&s.lax, verify);
                refused(
                    &s,
                    &url,
                    ErrorKind::Tls,
                    verify_says(&url, "not signed by a trusted CA"),
                )
                .await
            })
        }),
        ("expired_certificate_refused", |s| {
            Box::pin(async move {
                let url = with(&s.expired, &[&s.ca("ca.pem")]);
                refused(&s, &url, ErrorKind::Tls, verify_says(&url, "has expired")).await
            })
        }),
        ("wrong_host_name_refused", |s| {
            Box::pin(async move {
                // The certificate names 127.0.0.1 only.
                let url = with(&s.lax.replace("127.0.0.1", "localhost"), &[&s.ca("ca.pem")]);
                refused(
                    &s,
                    &url,
                    ErrorKind::Tls,
                    verify_says(&url, "not valid for the host name"),
                )
                .await
            })
        }),
        ("missing_client_certificate_refused", |s| {
            Box::pin(async move {
                let bare = s.mutual_without_options();
                let url = with(&bare, &[&s.ca("ca.pem")]);
                client_certificate_refused(&s, &url).await
            })
        }),
        ("untrusted_client_certificate_refused", |s| {
            Box::pin(async move {
                let bare = s.mutual_without_options();
                let url = with(&bare, &[&s.ca("ca.pem"), &s.client("rogue")]);
                client_certificate_refused(&s, &url).await
            })
        }),
        ("tls_to_a_plain_port_refused", |s| {
            Box::pin(async move {
                let url = with(&s.plain, &[&s.ca("ca.pem")]);
                if url.starts_with("rediss") {
                    // A plain Redis reads the ClientHello as the start of a
                    // command and waits for its end: the handshake times out.
                    let e = refusal(&s, &url).await?;
                    ensure!(e.kind() == ErrorKind::Timeout, "expected a timeout, got {e}");
                    return Ok(());
                }
                if url.starts_with("kafka") {
                    // Tansu waits the same way; librdkafka's connection
                    // setup and its metadata request time out together, and
                    // either may be reported: bounded is what holds.
                    return refusal(&s, &url).await.map(drop);
                }
                let says = if url.starts_with("postgres") {
                    // Not the "database TLS:" every PostgreSQL TLS error starts with.
                    "does not support TLS"
                } else {
                    "TLS"
                };
                refused(&s, &url, ErrorKind::Tls, says).await
            })
        }),
        ("plain_text_to_a_tls_port_refused", |s| {
            Box::pin(async move {
                let bare = plain_scheme(&s.lax);
                let url = with(&bare, &[]);
                if bare.starts_with("nats") {
                    // The server announces TLS and the client upgrades; then
                    // it does not trust the private CA.
                    return refused(
                        &s,
                        &url,
                        ErrorKind::Tls,
                        verify_says(&url, "not signed by a trusted CA"),
                    )
                    .await;
                }
                // Redis and RabbitMQ just close the connection, which a
                // plain client cannot tell from a lost one: bounded is what
                // holds.
                refusal(&s, &url).await.map(drop)
            })
        }),
        ("missing_certificate_file_is_a_configuration_error", |s| {
            Box::pin(async move {
                let url = with(&s.lax, &["tls_ca=/nonexistent/ca.pem"]);
                let start = Instant::now();
                refused(&s, &url, ErrorKind::InvalidArgument, "/nonexistent/ca.pem").await?;
                ensure!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
                Ok(())
            })
        }),
        ("tls_options_on_a_plain_url_refused", |s| {
            Box::pin(async move {
                let plain = plain_scheme(&s.lax);
                let url = with(&plain, &[&s.ca("ca.pem")]);
                refused(&s, &url, ErrorKind::InvalidArgument, "tls_ca").await
            })
        }),
    ]
}

fn brokers(args: &[&str]) -> Option<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/brokers");
    let out = std::process::Command::new(script).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether something listens at the URL's first `host:port`.
fn listening(url: &str) -> bool {
    // SQS URLs name the server in their endpoint option.
    let url = url.split_once("endpoint=").map_or(url, |(_, e)| e);
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['?', '/', ',', '&']).next().unwrap_or_default();
    let addr = authority.rsplit('@').next().unwrap_or_default();
    std::net::TcpStream::connect_timeout(
        &match addr.parse() {
            Ok(a) => a,
            Err(_) => return false,
        },
        Duration::from_secs(1),
    )
    .is_ok()
}

fn main() {
    let args = Arguments::from_args();
    let Ok(backend) = std::env::var("TLS_BACKEND") else {
        eprintln!("tls: TLS_BACKEND names no backend, so no trials (scripts/test runs one per backend)");
        libtest_mimic::run(&args, vec![]).exit();
    };
    let url = |suffix: &str| brokers(&["url", &format!("{backend}-tls{suffix}")]).unwrap_or_default();
    let servers = Servers {
        mutual: url(""),
        lax: url("-lax"),
        expired: url("-expired"),
        plain: url("-plain"),
        certs: brokers(&["tls-dir"]).unwrap_or_default().into(),
    };
    let all = [&servers.mutual, &servers.lax, &servers.expired, &servers.plain];
    let missing = (!all.iter().all(|u| listening(u)))
        .then(|| format!("the TLS servers are not running: scripts/brokers up {backend}-tls {backend}"));
    if let Some(why) = &missing {
        eprintln!("tls: {why}");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("CI=true: a test that cannot run fails");
            std::process::exit(2);
        }
    }
    let runtime = conformance_tests::test_runtime();
    let trials = cases()
        .into_iter()
        .map(|(name, case)| {
            let servers = servers.clone();
            let skip = match (backend.as_str(), name) {
                ("kafka", "mutual_tls_round_trip" | "server_authentication_round_trip") => Some(
                    "no Kafka broker here speaks TLS (Tansu 0.6's listener does not); the handshake cases run against TLS servers of another protocol"
                        .to_owned(),
                ),
                (
                    "sqs",
                    "mutual_tls_round_trip"
                    | "missing_client_certificate_refused"
                    | "untrusted_client_certificate_refused",
                ) => Some("SQS and SNS endpoints do not authenticate clients by certificate".to_owned()),
                _ => missing.clone(),
            };
            async_case(name, runtime.clone(), Duration::from_secs(60), skip, move || {
                case(servers)
            })
        })
        .collect();
    run_trials(&args, &backend, &format!("tls-failures-{backend}"), trials).exit();
}
