//! The suite cannot be passed by declaring a capability away: a backend
//! that claims it lacks something it quietly does anyway (here the in-memory
//! backend behind a wrapper that lies about its capabilities) fails the
//! negative check for that capability.

use std::sync::Arc;

use conformance_tests::{checks, run_check, CheckStatus, RunOptions};
use transport_core::{
    async_trait, Accuracy, Backlog, Capabilities, DeadLetterQueue, Message, Publisher, Result, SubscribeOptions,
    Subscriber, Subscription, Transport,
};

/// The memory backend, declaring `caps` instead of its own.
#[derive(Debug)]
struct Lying {
    inner: Arc<dyn Transport>,
    caps: Capabilities,
    /// Added to the backlog's waiting count.
    backlog_skew: u64,
}

#[async_trait]
impl Publisher for Lying {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.inner.publish(topic, message).await
    }
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.inner.publish_batch(topic, messages).await
    }
}

#[async_trait]
impl Subscriber for Lying {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        self.inner.subscribe(topic, options).await
    }
}

#[async_trait]
impl Transport for Lying {
    fn backend(&self) -> &'static str {
        "lying-memory"
    }
    fn capabilities(&self) -> Capabilities {
        self.caps
    }
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        self.inner.dead_letters(topic, options).await
    }
    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<transport::Topology> {
        self.inner.topology(topic, group)
    }
    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<transport::Topology> {
        self.inner.provision(topic, group).await
    }
    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        let b = self.inner.backlog(topic, options).await?;
        Ok(Backlog::new(
            b.waiting.map(|w| w + self.backlog_skew),
            b.in_flight,
            b.dead_letters,
            b.oldest_waiting_age,
        ))
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

async fn outcome(check: &str, declare: impl FnOnce(&mut Capabilities)) -> (CheckStatus, String) {
    outcome_skewed(check, declare, 0).await
}

async fn outcome_skewed(
    check: &str,
    declare: impl FnOnce(&mut Capabilities),
    backlog_skew: u64,
) -> (CheckStatus, String) {
    let inner = transport::connect("memory://").await.expect("memory backend");
    let mut caps = inner.capabilities();
    declare(&mut caps);
    let lying: Arc<dyn Transport> = Arc::new(Lying {
        inner,
        caps,
        backlog_skew,
    });
    let check = checks()
        .into_iter()
        .find(|c| c.name == check)
        .unwrap_or_else(|| panic!("no check {check}"));
    let record = run_check(check, &lying, &RunOptions::new()).await;
    (record.status, record.reason.unwrap_or_default())
}

#[tokio::test]
async fn a_backlog_that_is_off_by_one_fails() {
    let (status, reason) = outcome_skewed("backlog_tracks_the_group", |_| {}, 1).await;
    assert_eq!(status, CheckStatus::Failed, "{reason}");
}

#[tokio::test]
async fn a_backlog_figure_declared_unavailable_must_be_absent() {
    let (status, reason) = outcome("backlog_tracks_the_group", |c| {
        c.backlog.in_flight = Accuracy::Unavailable
    })
    .await;
    assert_eq!(status, CheckStatus::Failed, "{reason}");
    assert!(reason.contains("in_flight"), "{reason}");
}

#[tokio::test]
async fn a_backend_that_replays_cannot_claim_it_does_not() {
    let (status, reason) = outcome("earliest_without_replay_refused", |c| c.replay = false).await;
    assert_eq!(status, CheckStatus::Failed, "{reason}");
    assert!(reason.contains("succeeded"), "{reason}");
}

#[tokio::test]
async fn a_backend_with_leases_cannot_claim_it_has_none() {
    let (status, reason) = outcome("extend_unsupported", |c| c.extend = false).await;
    assert_eq!(status, CheckStatus::Failed, "{reason}");
}

#[tokio::test]
async fn a_backend_with_delays_cannot_claim_it_has_none() {
    let (status, reason) = outcome("nack_delay_unsupported", |c| c.nack_delay = false).await;
    assert_eq!(status, CheckStatus::Failed, "{reason}");
}

#[tokio::test]
async fn a_backend_with_dead_letters_cannot_claim_it_has_none() {
    let (status, reason) = outcome("dead_letters_unsupported", |c| c.dead_letter_ops = false).await;
    assert_eq!(status, CheckStatus::Failed, "{reason}");
}

#[tokio::test]
async fn a_fan_out_backend_cannot_claim_to_be_point_to_point() {
    let (status, reason) = outcome("second_group_refused", |c| c.single_group = true).await;
    assert_eq!(status, CheckStatus::Failed, "{reason}");
}

#[tokio::test]
async fn a_backend_with_a_size_limit_cannot_hide_it() {
    let (status, reason) = outcome("large_messages_without_limit", |c| c.max_message_size = None).await;
    assert_eq!(status, CheckStatus::Failed, "{reason}");
    assert!(reason.contains("8 MiB"), "{reason}");
}

#[tokio::test]
async fn a_declared_capability_skips_its_negative_check() {
    let (status, _) = outcome("extend_unsupported", |_| {}).await;
    assert_eq!(status, CheckStatus::Skipped);
}

#[tokio::test]
async fn a_known_defect_is_not_proven_and_needs_a_reproduction() {
    assert!(RunOptions::new()
        .known_defect("ack_is_final", "the broker forgets acks", "")
        .is_err());
    assert!(RunOptions::new()
        .known_defect("no_such_check", "reason", "repro")
        .is_err());
    let options = RunOptions::new()
        .known_defect("ack_is_final", "the broker forgets acks", "see issue 1")
        .unwrap();
    let t = transport::connect("memory://").await.unwrap();
    let check = checks().into_iter().find(|c| c.name == "ack_is_final").unwrap();
    let record = run_check(check, &t, &options).await;
    assert_eq!(record.status, CheckStatus::NotProven);
    assert_eq!(record.reproduction.as_deref(), Some("see issue 1"));
}

#[tokio::test]
async fn a_hanging_check_fails_at_its_deadline() {
    let t = transport::connect("memory://").await.unwrap();
    // ack_is_final watches for silence for several seconds: far past 50 ms.
    let check = checks().into_iter().find(|c| c.name == "ack_is_final").unwrap();
    let started = std::time::Instant::now();
    let record = run_check(
        check,
        &t,
        &RunOptions::new().check_timeout(std::time::Duration::from_millis(50)),
    )
    .await;
    assert_eq!(record.status, CheckStatus::Failed);
    assert!(record.reason.unwrap().contains("did not finish"));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
