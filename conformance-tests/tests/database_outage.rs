//! The SQL stores against a PostgreSQL that goes away or stops answering,
//! through a TCP proxy the test controls: the relay keeps retrying with
//! backoff and resumes, nothing committed is lost; a store that gets no
//! answer fails within its statement timeout, typed and retryable; an
//! unknown database is a typed, non-retryable error.
//!
//! Needs `POSTGRES_URL` and `POSTGRES_AUTH_URL` (a role that logs in with
//! its password; scripts/test sets both); skipped without them, a failure
//! under `CI=true`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend_memory::MemoryTransport;
use conformance_tests::{live_env, unique};
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use transport_core::runtime::IdempotencyStore;
use transport_core::{ErrorKind, Message, SubscribeOptions, Subscription, Transport};
use transport_sql::sqlx::Postgres;
use transport_sql::{Outbox, SqlIdempotencyStore};

fn live() -> Option<url::Url> {
    live_var("POSTGRES_URL")
}

fn live_var(var: &str) -> Option<url::Url> {
    live_env(var).map(|u| url::Url::parse(&u).unwrap_or_else(|_| panic!("{var} is a URL")))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Forward to the database.
    Open,
    /// Close every connection and refuse new ones: the database is gone.
    Down,
    /// Accept connections and never answer: the database hangs.
    Silent,
}

/// A TCP proxy in front of the database.
struct Proxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Mode::Open));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (m, l) = (mode.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mode = *m.lock().unwrap();
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    match mode {
                        Mode::Down => drop(client),
                        Mode::Silent => std::future::pending::<()>().await,
                        Mode::Open => {
                            if let Ok(mut server) = TcpStream::connect(&upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        }
                    }
                });
                l.lock().unwrap().push(link);
            }
        });
        Proxy { port, mode, links }
    }

    /// Switch mode; leaving `Open` cuts the connections made so far.
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        if mode != Mode::Open {
            for link in self.links.lock().unwrap().drain(..) {
                link.abort();
            }
        }
    }

    fn url(&self, db: &url::Url) -> String {
        let mut u = db.clone();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }
}

fn upstream(db: &url::Url) -> String {
    format!("{}:{}", db.host_str().unwrap(), db.port().unwrap_or(5432))
}

/// `n` payloads (acked) into `received`, failing after `within`.
async fn receive(sub: &mut Subscription, received: &mut Vec<String>, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, sub.next())
            .await
            .expect("published in time")
            .unwrap()
            .unwrap();
        received.push(String::from_utf8_lossy(d.payload()).into_owned());
        d.ack().await.unwrap();
    }
}

/// Until the relay deleted every row it published (within 10 s).
async fn settled(outbox: &Outbox<Postgres>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox.status().await.unwrap().pending > 0 {
        assert!(Instant::now() < deadline, "published rows not deleted within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_rides_out_a_database_outage() {
    let Some(db) = live() else { return };
    let proxy = Proxy::start(upstream(&db)).await;
    let table = unique("outage").replace('-', "_");
    // The test's own connection goes straight to the database.
    let direct = Outbox::<Postgres>::connect(db.as_str())
        .await
        .unwrap()
        .with_table(&table)
        .unwrap();
    direct.migrate().await.unwrap();
    let relayed = Outbox::<Postgres>::connect(&proxy.url(&db))
        .await
        .unwrap()
        .with_table(&table)
        .unwrap()
        .statement_timeout(Duration::from_secs(2));
    let broker: Arc<dyn Transport> = MemoryTransport::new();
    let topic = unique("orders");
    let mut sub = broker.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap();
    let relay = relayed
        .relay(broker.clone())
        .poll_interval(Duration::from_millis(20))
        .spawn();

    let enqueue = |n: usize, tag: &'static str| {
        let direct = direct.clone();
        let topic = topic.clone();
        async move {
            let mut tx = direct.pool().begin().await.unwrap();
            for i in 0..n {
                direct
                    .enqueue(&mut tx, &topic, Message::new(format!("{tag}-{i}")))
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    };
    let mut received = Vec::new();

    enqueue(10, "before").await;
    receive(&mut sub, &mut received, 10, Duration::from_secs(10)).await;
    settled(&direct).await;
    proxy.set(Mode::Down);
    enqueue(10, "during").await;
    // The relay cannot reach the database: it keeps trying, publishes
    // nothing, and does not give up.
    let quiet = tokio::time::timeout(Duration::from_secs(3), sub.next()).await;
    assert!(quiet.is_err(), "published while the database was unreachable");
    assert!(
        !relay.is_finished(),
        "the relay stopped during the outage: {:?}",
        relay.stop().await
    );
    proxy.set(Mode::Open);
    let back = Instant::now();
    // The backoff is at most 10 s, plus a 5 s pool acquire timeout.
    receive(&mut sub, &mut received, 10, Duration::from_secs(30)).await;
    eprintln!("resumed {:?} after the database came back", back.elapsed());
    settled(&direct).await;
    relay.stop().await.expect("the relay ends cleanly");
    let mut expected: Vec<String> = (0..10)
        .map(|i| format!("before-{i}"))
        .chain((0..10).map(|i| format!("during-{i}")))
        .collect();
    expected.sort();
    received.sort();
    assert_eq!(received, expected, "rows lost or duplicated across the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_is_a_bounded_timeout() {
    let Some(db) = live() else { return };
    let proxy = Proxy::start(upstream(&db)).await;
    let table = unique("silent").replace('-', "_");
    let store = SqlIdempotencyStore::<Postgres>::connect(&proxy.url(&db))
        .await
        .unwrap()
        .with_table(&table)
        .unwrap()
        .statement_timeout(Duration::from_secs(1));
    store.migrate().await.unwrap();
    proxy.set(Mode::Silent);
    let start = Instant::now();
    let err = store
        .claim("g", "m", Duration::from_secs(60))
        .await
        .expect_err("no answer, no claim");
    let took = start.elapsed();
    assert!(
        matches!(err.kind(), ErrorKind::Timeout | ErrorKind::ConnectionLost) && err.is_retryable(),
        "{err} ({:?})",
        err.kind()
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "failed after {took:?}"
    );
    proxy.set(Mode::Open);
    // Back to normal once the database answers again (the cut connection is replaced).
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.claim("g", "m", Duration::from_secs(60)).await.is_err() {
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = transport_sql::sqlx::query(&format!("DROP TABLE {table}"))
        .execute(store.pool())
        .await;
}

#[tokio::test]
async fn an_unknown_database_is_not_retryable() {
    let Some(mut db) = live() else { return };
    db.set_path("/no_such_database_here");
    let start = Instant::now();
    let err = Outbox::<Postgres>::connect(db.as_str())
        .await
        .expect_err("unknown database");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(start.elapsed() < Duration::from_secs(6), "took {:?}", start.elapsed());
    assert!(
        !err.to_string().contains("postgres://"),
        "the URL (and its password) leaked: {err}"
    );
}

#[tokio::test]
async fn refused_credentials_are_unauthorized_and_not_shown() {
    let Some(right) = live_var("POSTGRES_AUTH_URL") else {
        return;
    };
    let password = right.password().expect("POSTGRES_AUTH_URL has a password").to_owned();
    let mut wrong = right.clone();
    wrong.set_password(Some("not-the-password")).unwrap();
    let start = Instant::now();
    let err = SqlIdempotencyStore::<Postgres>::connect(wrong.as_str())
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(start.elapsed() < Duration::from_secs(6), "took {:?}", start.elapsed());
    for shown in [format!("{err}"), format!("{err:?}")] {
        assert!(
            !shown.contains("not-the-password") && !shown.contains(&password),
            "a password leaked: {shown}"
        );
    }
    let store = SqlIdempotencyStore::<Postgres>::connect(right.as_str())
        .await
        .expect("the right password");
    assert!(!format!("{store:?}").contains(&password), "{store:?}");
}
