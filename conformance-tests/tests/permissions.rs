//! Least privilege, against the real servers: users with exactly the
//! rights each backend's docs list ("Permissions") do their work, and a
//! right taken away is refused as `Forbidden` (not retried) naming what was
//! refused, within a bound.
//!
//! - PostgreSQL (the stores): a role with the documented grants on the
//!   outbox and processed tables enqueues, relays, claims; it cannot
//!   migrate, and a role without the grants is refused naming the table.
//! - Redis: ACL users with the documented commands on `~<key_prefix>*`
//!   publish, consume, nack with delay, dead-letter and redrive; a command
//!   or a key outside them is refused naming it.
//! - RabbitMQ: a service user with the documented configure/write/read
//!   patterns publishes, consumes, retries, dead-letters and redrives; a
//!   publisher-only user publishes and may not consume; without write, or
//!   on another topic, a publish is refused naming the exchange.
//!
//! - NATS: a user held to its subjects publishes, consumes, dead-letters and
//!   redrives; a subject outside them (a publish, a pull consumer it may not
//!   create) is refused as `Forbidden` naming it, at once rather than after
//!   the request timeout.
//!
//! Needs `POSTGRES_URL`, `REDIS_URL`, `RABBITMQ_URL`, `NATS_AUTH_URL`
//! (scripts/test sets them; the users are made here through the admin
//! connection or `rabbitmqctl`, or are in the `nats-auth` server's
//! configuration); each test is skipped without its URL, and fails under
//! `CI=true`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_memory::MemoryTransport;
use conformance_tests::unique;
use futures::StreamExt;
use transport_core::runtime::IdempotencyStore;
use transport_core::{ErrorKind, Message, SubscribeOptions, Transport};
use transport_sql::sqlx::{self, Postgres};
use transport_sql::{Outbox, Relay, SqlIdempotencyStore};

/// A refusal comes within this (no retry loop).
const REFUSED_WITHIN: Duration = Duration::from_secs(15);

fn live(var: &str) -> Option<url::Url> {
    conformance_tests::live_env(var).map(|u| url::Url::parse(&u).unwrap_or_else(|_| panic!("{var} is a URL")))
}

/// `url` as `user` with the tests' password.
fn as_user(url: &url::Url, user: &str) -> url::Url {
    let mut u = url.clone();
    u.set_username(user).unwrap();
    u.set_password(Some("pw")).unwrap();
    u
}

fn forbidden(e: &transport_core::Error, names: &str) {
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");
    assert!(!e.is_retryable(), "a missing permission is not retried: {e}");
    assert!(e.to_string().contains(names), "the error does not name {names:?}: {e}");
}

// ------------------------------------------------------------- PostgreSQL

/// The grants `transport-sql/docs.md` lists for an application role.
fn app_grants(outbox: &str, processed: &str, role: &str) -> Vec<String> {
    vec![
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {outbox} TO {role}"),
        format!("GRANT USAGE ON SEQUENCE {outbox}_seq_seq TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {processed} TO {role}"),
    ]
}

#[tokio::test]
async fn postgres_role_with_the_documented_grants_and_no_more() {
    let Some(admin) = live("POSTGRES_URL") else {
        return;
    };
    let name = |what: &str| unique(what).replace('-', "_");
    let (outbox_table, processed_table, role, bare) = (name("ob"), name("pr"), name("app"), name("bare"));
    let admin_outbox = Outbox::<Postgres>::connect(admin.as_str())
        .await
        .unwrap()
        .with_table(&outbox_table)
        .unwrap();
    admin_outbox.migrate().await.unwrap();
    let admin_processed = SqlIdempotencyStore::<Postgres>::connect(admin.as_str())
        .await
        .unwrap()
        .with_table(&processed_table)
        .unwrap();
    admin_processed.migrate().await.unwrap();
    let pool = admin_outbox.pool();
    for r in [&role, &bare] {
        sqlx::query(&format!("CREATE ROLE {r} LOGIN"))
            .execute(pool)
            .await
            .unwrap();
    }
    for grant in app_grants(&outbox_table, &processed_table, &role) {
        sqlx::query(&grant).execute(pool).await.unwrap();
    }
    let as_role = |r: &str| {
        let mut u = admin.clone();
        u.set_username(r).unwrap();
        u.to_string()
    };

    // Everything a service does, with the grants only.
    let outbox = Outbox::<Postgres>::connect(&as_role(&role))
        .await
        .unwrap()
        .with_table(&outbox_table)
        .unwrap();
    outbox.check().await.unwrap();
    let topic = unique("perm");
    let mut conn = outbox.pool().acquire().await.unwrap();
    outbox
        .enqueue(&mut conn, &topic, Message::new("granted"))
        .await
        .unwrap();
    drop(conn);
    let broker: Arc<dyn Transport> = MemoryTransport::new();
    let mut sub = broker.subscribe(&topic, SubscribeOptions::new("g")).await.unwrap();
    let relay = Relay::new(outbox.clone(), broker.clone());
    relay.run_once().await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("relayed within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(d.payload().as_ref(), b"granted");
    assert_eq!(outbox.status().await.unwrap().pending, 0);
    let processed = SqlIdempotencyStore::<Postgres>::connect(&as_role(&role))
        .await
        .unwrap()
        .with_table(&processed_table)
        .unwrap();
    processed.check().await.unwrap();
    processed.claim("g", "m1", Duration::from_secs(30)).await.unwrap();
    processed.complete("g", "m1", Duration::from_secs(60)).await.unwrap();

    // Creating tables is the operator's (or a migration tool's) right.
    let other = Outbox::<Postgres>::connect(&as_role(&role))
        .await
        .unwrap()
        .with_table(&name("nope"))
        .unwrap();
    let e = other.migrate().await.unwrap_err();
    forbidden(&e, "permission denied");

    // Without the grants: refused at once, naming the table.
    let start = Instant::now();
    let denied = Outbox::<Postgres>::connect(&as_role(&bare))
        .await
        .unwrap()
        .with_table(&outbox_table)
        .unwrap();
    let mut conn = denied.pool().acquire().await.unwrap();
    let e = denied
        .enqueue(&mut conn, &topic, Message::new("denied"))
        .await
        .unwrap_err();
    drop(conn);
    forbidden(&e, &outbox_table);
    assert!(start.elapsed() < REFUSED_WITHIN, "took {:?}", start.elapsed());

    outbox.pool().close().await;
    processed.pool().close().await;
    denied.pool().close().await;
    other.pool().close().await;
    for cleanup in [
        format!("DROP TABLE {outbox_table}"),
        format!("DROP TABLE {processed_table}"),
        format!("DROP ROLE {role}"),
        format!("DROP ROLE {bare}"),
    ] {
        sqlx::query(&cleanup).execute(pool).await.unwrap();
    }
}

// ------------------------------------------------------------------ Redis

/// The commands `backend-redis/docs.md` lists for a publisher.
const REDIS_PUBLISHER: &[&str] = &["ping", "xadd", "multi", "exec", "wait"];
/// ... and for a consumer (dead-letter operations included).
const REDIS_CONSUMER: &[&str] = &[
    "ping",
    "multi",
    "exec",
    "time",
    "xadd",
    "xgroup|create",
    "xreadgroup",
    "xack",
    "xclaim",
    "xautoclaim",
    "xpending",
    "xinfo|stream",
    "xinfo|groups",
    "xrange",
    "xlen",
    "xdel",
    "xtrim",
    "del",
    "get",
    "set",
    "hget",
    "hsetnx",
    "hdel",
    "pttl",
    "zadd",
    "zrange",
    "zrangebyscore",
    "zrem",
    "zscore",
    "evalsha",
    "eval",
    "script|load",
];

fn redis_cli(url: &url::Url, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", url.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &url.port().unwrap_or(6379).to_string()]);
    if !url.username().is_empty() {
        command.args(["--user", url.username()]);
    }
    if let Some(password) = url.password() {
        command.args(["--pass", password, "--no-auth-warning"]);
    }
    let out = command
        .args(args)
        .output()
        .expect("redis-cli (scripts/brokers installs it with redis-server)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn redis_user(admin: &url::Url, user: &str, keys: &str, commands: &[&str]) {
    let mut args = vec![
        "ACL".to_owned(),
        "SETUSER".into(),
        user.into(),
        "reset".into(),
        "on".into(),
        ">pw".into(),
        keys.into(),
    ];
    args.extend(commands.iter().map(|c| format!("+{c}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let answer = redis_cli(admin, &args);
    assert_eq!(answer, "OK", "ACL SETUSER {user}: {answer}");
}

async fn next(sub: &mut transport_core::Subscription) -> transport_core::Delivery {
    tokio::time::timeout(Duration::from_secs(15), sub.next())
        .await
        .expect("a delivery within 15 s")
        .expect("the subscription goes on")
        .expect("a delivery, not an error")
}

/// A subscription refused: at `subscribe`, or as its first item.
async fn subscribe_refused(t: &Arc<dyn Transport>, topic: &str, options: SubscribeOptions) -> transport_core::Error {
    match t.subscribe(topic, options).await {
        Err(e) => e,
        Ok(mut s) => tokio::time::timeout(REFUSED_WITHIN, s.next())
            .await
            .expect("refused within the bound")
            .expect("an error, not the end")
            .expect_err("this user may not read"),
    }
}

#[tokio::test]
async fn redis_users_with_the_documented_commands_and_no_more() {
    let Some(admin) = live("REDIS_URL") else {
        return;
    };
    let run = unique("p").replace('-', "");
    let prefix = format!("{run}:");
    let (publisher, consumer, stranger) = (format!("{run}pub"), format!("{run}con"), format!("{run}str"));
    redis_user(&admin, &publisher, &format!("~{prefix}*"), REDIS_PUBLISHER);
    redis_user(&admin, &consumer, &format!("~{prefix}*"), REDIS_CONSUMER);
    // The consumer's commands, on other keys only.
    redis_user(&admin, &stranger, "~elsewhere:*", REDIS_CONSUMER);
    let url_of = |user: &str| {
        let mut u = as_user(&admin, user);
        u.set_query(Some(&format!("key_prefix={prefix}&command_timeout_ms=5000")));
        u.to_string()
    };
    let topic = "orders";
    let options = SubscribeOptions::new("g").max_attempts(2);

    let consuming = transport::connect(&url_of(&consumer)).await.unwrap();
    let mut sub = consuming.subscribe(topic, options.clone()).await.unwrap();
    let publishing = transport::connect(&url_of(&publisher)).await.unwrap();
    publishing.publish(topic, Message::new("one")).await.unwrap();
    publishing
        .publish_batch(topic, vec![Message::new("two"), Message::new("three")])
        .await
        .unwrap();
    next(&mut sub)
        .await
        .nack(Some(Duration::from_millis(200)))
        .await
        .unwrap();
    next(&mut sub).await.dead_letter("poison").await.unwrap();
    next(&mut sub).await.ack().await.unwrap();
    next(&mut sub).await.ack().await.unwrap();
    let dlq = consuming.dead_letters(topic, &options).await.unwrap();
    assert_eq!(dlq.peek(10).await.unwrap().len(), 1);
    assert_eq!(dlq.redrive_all().await.unwrap(), 1);
    next(&mut sub).await.ack().await.unwrap();
    drop(sub);

    // A publisher that tries to consume is refused, naming the command.
    let start = Instant::now();
    let e = subscribe_refused(&publishing, topic, SubscribeOptions::new("other")).await;
    forbidden(&e, "no permissions to run");
    assert!(start.elapsed() < REFUSED_WITHIN, "took {:?}", start.elapsed());
    // The right commands on the wrong keys: refused, naming the keys.
    let stranger_t = transport::connect(&url_of(&stranger)).await.unwrap();
    let e = stranger_t.publish(topic, Message::new("x")).await.unwrap_err();
    forbidden(&e, "no permissions to access");
    // A batch is a MULTI/EXEC: the refusal inside it is named too.
    let e = stranger_t
        .publish_batch(topic, vec![Message::new("a"), Message::new("b")])
        .await
        .unwrap_err();
    forbidden(&e, "no permissions to access");

    for t in [&consuming, &publishing, &stranger_t] {
        let _ = t.close().await;
    }
    for user in [&publisher, &consumer, &stranger] {
        redis_cli(&admin, &["ACL", "DELUSER", user]);
    }
}

/// With `provision=false` a consumer needs no `XGROUP CREATE`, only `TYPE`
/// to check the streams (the docs' Permissions table says so).
#[tokio::test]
async fn redis_consumer_that_may_not_create_groups_runs_without_provisioning() {
    let Some(admin) = live("REDIS_URL") else {
        return;
    };
    let run = unique("np").replace('-', "");
    let prefix = format!("{run}:");
    let user = format!("{run}con");
    let mut commands: Vec<&str> = REDIS_CONSUMER
        .iter()
        .copied()
        .filter(|c| *c != "xgroup|create")
        .collect();
    commands.push("type");
    redis_user(&admin, &user, &format!("~{prefix}*"), &commands);
    let mut service_url = as_user(&admin, &user);
    service_url.set_query(Some(&format!(
        "key_prefix={prefix}&command_timeout_ms=5000&provision=false"
    )));
    let mut operator_url = admin.clone();
    operator_url.set_query(Some(&format!("key_prefix={prefix}")));
    let (topic, options) = ("orders", SubscribeOptions::new("g").max_attempts(2));

    // Without the objects: NotFound, not Forbidden (nothing was tried).
    let service = transport::connect(service_url.as_str()).await.unwrap();
    let e = subscribe_refused(&service, topic, options.clone()).await;
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let operator = transport::connect(operator_url.as_str()).await.unwrap();
    operator.provision(topic, Some(&options)).await.unwrap();

    let mut sub = service.subscribe(topic, options.clone()).await.unwrap();
    service.publish(topic, Message::new("one")).await.unwrap();
    service.publish(topic, Message::new("two")).await.unwrap();
    next(&mut sub).await.dead_letter("poison").await.unwrap();
    next(&mut sub).await.ack().await.unwrap();
    let dlq = service.dead_letters(topic, &options).await.unwrap();
    assert_eq!(dlq.redrive_all().await.unwrap(), 1);
    next(&mut sub).await.ack().await.unwrap();
    drop(sub);
    // The same user with provisioning on is refused the group creation.
    let mut creating = service_url.clone();
    creating.set_query(Some(&format!("key_prefix={prefix}&command_timeout_ms=5000")));
    let t = transport::connect(creating.as_str()).await.unwrap();
    let e = subscribe_refused(&t, topic, SubscribeOptions::new("new")).await;
    forbidden(&e, "xgroup");
    for t in [&service, &operator, &t] {
        let _ = t.close().await;
    }
    redis_cli(&admin, &["ACL", "DELUSER", &user]);
}

// --------------------------------------------------------------- RabbitMQ

fn rabbitmqctl(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/brokers");
    let out = Command::new(script)
        .args(["ctl", "rabbitmq"])
        .args(args)
        .output()
        .expect("scripts/brokers ctl rabbitmq");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The configure, write and read patterns `backend-rabbitmq/docs.md` lists
/// for a service that publishes to and consumes from `topic`: everything
/// named after the topic, and the default exchange (delayed retries and
/// redrives go through it).
fn rabbitmq_patterns(topic: &str) -> [String; 3] {
    let own = format!("^{}([/.].*)?$", regex_escape(topic));
    [own.clone(), format!("{own}|^amq\\.default$"), own]
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = ".^$|()[]{}*+?\\/".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

#[tokio::test]
async fn rabbitmq_users_with_the_documented_patterns_and_no_more() {
    let Some(admin) = live("RABBITMQ_URL") else {
        return;
    };
    let topic = unique("perm");
    let (granted, reader, publisher) = (
        unique("svc").replace('-', ""),
        unique("reader").replace('-', ""),
        unique("pub").replace('-', ""),
    );
    for user in [&granted, &reader, &publisher] {
        rabbitmqctl(&["add_user", user, "pw"]);
    }
    let [configure, write, read] = rabbitmq_patterns(&topic);
    rabbitmqctl(&["set_permissions", "-p", "/", &granted, &configure, &write, &read]);
    // The same, without write.
    rabbitmqctl(&["set_permissions", "-p", "/", &reader, &configure, "^$", &read]);
    // A publisher only: its topic's exchange, nothing to read.
    let exchange = format!("^{}$", regex_escape(&topic));
    rabbitmqctl(&["set_permissions", "-p", "/", &publisher, &exchange, &exchange, "^$"]);
    let url_of = |user: &str| as_user(&admin, user).to_string();

    let t = transport::connect(&url_of(&granted)).await.unwrap();
    let options = SubscribeOptions::new("g").max_attempts(3);
    let mut sub = t.subscribe(&topic, options.clone()).await.unwrap();
    t.publish(&topic, Message::new("one")).await.unwrap();
    t.publish(&topic, Message::new("two")).await.unwrap();
    next(&mut sub)
        .await
        .nack(Some(Duration::from_millis(200)))
        .await
        .unwrap();
    next(&mut sub).await.dead_letter("poison").await.unwrap();
    next(&mut sub).await.ack().await.unwrap();
    let dlq = t.dead_letters(&topic, &options).await.unwrap();
    assert_eq!(dlq.redrive_all().await.unwrap(), 1);
    next(&mut sub).await.ack().await.unwrap();
    // The publisher-only user publishes into the group's queue...
    let p = transport::connect(&url_of(&publisher)).await.unwrap();
    p.publish(&topic, Message::new("from the publisher")).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.payload().as_ref(), b"from the publisher");
    d.ack().await.unwrap();
    drop(sub);
    // ...and may not consume.
    let e = subscribe_refused(&p, &topic, SubscribeOptions::new("g")).await;
    forbidden(&e, "refused for user");
    // Another topic is not this service's.
    let other = unique("perm");
    let e = t.publish(&other, Message::new("x")).await.unwrap_err();
    forbidden(&e, &other);

    // Without write: refused at once, naming the exchange.
    let r = transport::connect(&url_of(&reader)).await.unwrap();
    let start = Instant::now();
    let e = r.publish(&topic, Message::new("x")).await.unwrap_err();
    forbidden(&e, &topic);
    assert!(start.elapsed() < REFUSED_WITHIN, "took {:?}", start.elapsed());

    for t in [&t, &r, &p] {
        let _ = t.close().await;
    }
    for user in [&granted, &reader, &publisher] {
        rabbitmqctl(&["delete_user", user]);
    }
}

/// With `provision=false` a service needs no configure permission at all:
/// an operator declared its topology, and passive declarations check it.
#[tokio::test]
async fn rabbitmq_service_without_configure_runs_without_provisioning() {
    let Some(admin) = live("RABBITMQ_URL") else {
        return;
    };
    let topic = unique("noprov");
    let user = unique("svc").replace('-', "");
    rabbitmqctl(&["add_user", &user, "pw"]);
    let [_, write, read] = rabbitmq_patterns(&topic);
    rabbitmqctl(&["set_permissions", "-p", "/", &user, "^$", &write, &read]);
    // The delays the service nacks with: their retry queues are the
    // operator's to create too.
    let mut service_url = as_user(&admin, &user);
    service_url.set_query(Some("provision=false&retry_delays_ms=300"));
    let mut operator_url = admin.clone();
    operator_url.set_query(Some("retry_delays_ms=300"));
    let options = SubscribeOptions::new("g").max_attempts(3);

    let service = transport::connect(service_url.as_str()).await.unwrap();
    let start = Instant::now();
    let e = service.publish(&topic, Message::new("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&topic), "{e}");
    assert!(start.elapsed() < REFUSED_WITHIN, "took {:?}", start.elapsed());
    let operator = transport::connect(operator_url.as_str()).await.unwrap();
    operator.provision(&topic, Some(&options)).await.unwrap();

    let mut sub = service.subscribe(&topic, options.clone()).await.unwrap();
    service.publish(&topic, Message::new("one")).await.unwrap();
    service.publish(&topic, Message::new("two")).await.unwrap();
    next(&mut sub).await.dead_letter("poison").await.unwrap();
    // A delayed nack parks the message in its provisioned retry queue:
    // back after the delay, one attempt further.
    let nacked = Instant::now();
    next(&mut sub)
        .await
        .nack(Some(Duration::from_millis(200)))
        .await
        .unwrap();
    let back = next(&mut sub).await;
    assert_eq!(back.attempt(), 2, "the delayed nack counts one attempt");
    assert!(
        nacked.elapsed() >= Duration::from_millis(300),
        "back after {:?}",
        nacked.elapsed()
    );
    back.ack().await.unwrap();
    let dlq = service.dead_letters(&topic, &options).await.unwrap();
    assert_eq!(dlq.redrive_all().await.unwrap(), 1);
    next(&mut sub).await.ack().await.unwrap();
    drop(sub);
    // The same user with provisioning on is refused the declaration.
    let creating = transport::connect(as_user(&admin, &user).as_str()).await.unwrap();
    let e = subscribe_refused(&creating, &topic, SubscribeOptions::new("new")).await;
    forbidden(&e, "refused for user");
    for t in [&service, &operator, &creating] {
        let _ = t.close().await;
    }
    rabbitmqctl(&["delete_user", &user]);
}

// ------------------------------------------------------------------- NATS

/// The users of `scripts/brokers up nats-auth`: `svc` may publish to
/// `perm.>` and use JetStream's API and acks, `reader` may only read
/// stream information; both read replies on `_INBOX.>`.
#[tokio::test]
async fn nats_users_held_to_their_subjects() {
    let Some(admin) = live("NATS_AUTH_URL") else {
        return;
    };
    let url_of = |user: &str| {
        let mut u = as_user(&admin, user);
        u.set_query(Some("request_timeout_ms=10000"));
        u.to_string()
    };
    let topic = format!("perm.{}", unique("n"));
    let options = SubscribeOptions::new("g").max_attempts(3);

    let svc = transport::connect(&url_of("svc")).await.unwrap();
    let mut sub = svc.subscribe(&topic, options.clone()).await.unwrap();
    svc.publish(&topic, Message::new("one")).await.unwrap();
    svc.publish(&topic, Message::new("two")).await.unwrap();
    next(&mut sub).await.dead_letter("poison").await.unwrap();
    next(&mut sub).await.ack().await.unwrap();
    let dlq = svc.dead_letters(&topic, &options).await.unwrap();
    assert_eq!(dlq.redrive_all().await.unwrap(), 1);
    next(&mut sub).await.ack().await.unwrap();
    drop(sub);

    // A subject outside `perm.>`: refused at once (well before the
    // 10 s request timeout), naming it.
    let other = format!("other.{}", unique("n"));
    let start = Instant::now();
    let e = svc.publish(&other, Message::new("x")).await.unwrap_err();
    forbidden(&e, &other);
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let e = svc
        .publish_batch(&other, vec![Message::new("a"), Message::new("b")])
        .await
        .unwrap_err();
    forbidden(&e, &other);

    // A reader may look at streams, not create a consumer or publish.
    let reader = transport::connect(&url_of("reader")).await.unwrap();
    let start = Instant::now();
    let e = subscribe_refused(&reader, &topic, SubscribeOptions::new("r")).await;
    forbidden(&e, "Permissions Violation");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let e = reader.publish(&topic, Message::new("x")).await.unwrap_err();
    forbidden(&e, &topic);
    eprintln!("nats: refused as {e}");
    for t in [&svc, &reader] {
        let _ = t.close().await;
    }
}
