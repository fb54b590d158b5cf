//! Behaviour specific to NATS, against nats-server processes this test starts
//! itself (with auth, and restarted mid-test). Needs `nats-server` on PATH
//! (`scripts/brokers up nats` installs it); skipped with a message otherwise,
//! except under CI where it fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_nats::NatsTransport;
use futures::StreamExt;
use transport_core::{ErrorKind, Message, SubscribeOptions};

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Server {
    fn start(extra: &[&str]) -> Option<Server> {
        if Command::new("nats-server").arg("--version").output().is_err() {
            assert!(std::env::var("CI").is_err(), "nats-server is not installed");
            eprintln!("skipped: nats-server is not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("nats-it-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            dir.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn(&args);
        let s = Server { child, port, dir, args };
        s.wait_ready();
        Some(s)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.args);
        self.wait_ready();
    }

    fn url(&self, auth: &str) -> String {
        format!("nats://{auth}127.0.0.1:{}", self.port)
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new("nats-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_quickly() {
    let Some(server) = Server::start(&["--user", "app", "--pass", "right-password"]) else {
        return;
    };
    let start = Instant::now();
    let err = NatsTransport::connect(&server.url("app:wrong-password@"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(!err.to_string().contains("wrong-password"), "{err}");
    let t = NatsTransport::connect(&server.url("app:right-password@"))
        .await
        .unwrap();
    assert!(!format!("{t:?}").contains("right-password"));
}

#[tokio::test]
async fn survives_a_server_restart() {
    let Some(mut server) = Server::start(&[]) else { return };
    let t = NatsTransport::connect(&server.url("")).await.unwrap();
    let options = SubscribeOptions::new("g").ack_timeout(Duration::from_secs(2));
    let mut sub = t.subscribe("restart", options).await.unwrap();
    t.publish("restart", Message::new("before")).await.unwrap();
    let held = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    std::mem::forget(held);

    server.restart();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match t.publish("restart", Message::new("after")).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "publish never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Until both were seen: a publish retried across the restart may store
    // "after" twice, which must not end the wait for "before".
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            Ok(Some(Ok(d))) => {
                seen.insert(String::from_utf8_lossy(d.payload()).into_owned());
                d.ack().await.unwrap();
            }
            Ok(Some(Err(e))) => assert!(e.is_retryable(), "{e}"),
            _ => {}
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["after", "before"]);
}

#[tokio::test]
async fn duplicate_publishes_are_stored_once() {
    let Some(server) = Server::start(&[]) else { return };
    let t = NatsTransport::connect(&server.url("")).await.unwrap();
    let mut sub = t.subscribe("dedup", SubscribeOptions::new("g")).await.unwrap();
    let m = Message::new("once");
    t.publish("dedup", m.clone()).await.unwrap();
    t.publish("dedup", m.clone()).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.id(), m.id);
    d.ack().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(1500), sub.next())
        .await
        .is_err());
}

#[tokio::test]
async fn without_dedup_a_republished_message_is_stored_twice() {
    let Some(server) = Server::start(&[]) else { return };
    let t = NatsTransport::connect(&format!("{}?dedup=false", server.url("")))
        .await
        .unwrap();
    assert!(!t.capabilities().publish_dedup, "declared off");
    let mut sub = t.subscribe("twice", SubscribeOptions::new("g")).await.unwrap();
    let m = Message::new("twice");
    t.publish("twice", m.clone()).await.unwrap();
    t.publish_batch("twice", vec![m.clone()]).await.unwrap();
    for copy in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("copy {copy} not delivered"))
            .unwrap()
            .unwrap();
        assert_eq!(d.id(), m.id);
        d.ack().await.unwrap();
    }
}
