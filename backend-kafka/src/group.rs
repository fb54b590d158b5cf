//! A subscription's group membership: a dedicated thread polls librdkafka
//! (so rebalances are served even while the application is busy), fills
//! the per-partition bookkeeping, and commits each partition's contiguous
//! acked prefix (plus the progress metadata, see [`crate::partition`])
//! every [`COMMIT_INTERVAL`], on revoke and on close.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Message as _;
use tokio::sync::{watch, Notify};
use transport_core::backend::{InFlightLimit, SubscribeRequest};
use transport_core::{Error, ErrorKind, Result, StartFrom, SubscribeOptions};

use crate::core::Kafka;
use crate::core::{self, err, kafka};
use crate::partition::{self, Partition, Progress};

/// How often acked progress is committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// How long one librdkafka poll blocks.
const POLL: Duration = Duration::from_millis(20);

/// State shared by the polling thread, the stream and the settlers.
pub(crate) struct Shared {
    pub(crate) kafka: Kafka,
    pub(crate) request: SubscribeRequest,
    pub(crate) topic: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) dlq_topic: String,
    pub(crate) options: SubscribeOptions,
    state: Mutex<State>,
    /// Wakes the stream: records arrived, a delivery came back, an error.
    pub(crate) wake: Notify,
    pub(crate) in_flight: InFlightLimit,
    pub(crate) next_token: AtomicU64,
    /// Leave now (the transport closed, or subscribing failed).
    stop: AtomicBool,
    /// The stream was dropped: hand nothing out, and leave once the
    /// deliveries already handed out are settled or expired.
    draining: AtomicBool,
    /// The application is waiting in the stream for a delivery.
    pub(crate) app_waiting: AtomicBool,
    /// `Some(Ok)` once the first assignment is done, `Some(Err)` when joining failed.
    joined: watch::Sender<Option<std::result::Result<(), (ErrorKind, String)>>>,
}

pub(crate) struct State {
    pub(crate) partitions: BTreeMap<i32, Partition>,
    /// When the application last asked for a delivery.
    pub(crate) last_app_poll: Instant,
    /// The member left the group because the application stopped taking
    /// deliveries (see [`Shared::stalled`]).
    pub(crate) left: bool,
    /// The application asked again after leaving: join again.
    pub(crate) rejoin: bool,
    /// Round-robin start among partitions.
    pub(crate) cursor: usize,
    /// An error for the application (surfaced once).
    pub(crate) error: Option<Error>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed(&self) -> bool {
        self.stop.load(AtomicOrdering::Acquire) || self.request.is_closed()
    }

    /// The member may leave: closed, or drained (the stream is gone and no
    /// delivery is in flight; expiry ends the wait after the ack timeout).
    fn finished(&self) -> bool {
        self.closed()
            || (self.draining.load(AtomicOrdering::Acquire) && self.in_flight.free() >= self.options.max_in_flight)
    }

    /// The application holds deliveries past their ack timeout and is not
    /// asking for more while records wait: like Kafka's
    /// `max.poll.interval.ms`, the member gives its partitions to the rest of
    /// the group, and joins again when the application asks.
    fn stalled(&self, state: &State, now: Instant) -> bool {
        !state.left
            && !self.app_waiting.load(AtomicOrdering::Acquire)
            && now.duration_since(state.last_app_poll) > self.options.ack_timeout
            && state.partitions.values().any(|p| p.has_ready(now))
    }
}

/// The consumer context: serves rebalances for the subscription.
pub(crate) struct GroupContext {
    base: core::Context,
    shared: Arc<Shared>,
}

impl rdkafka::client::ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.base.log(level, fac, log_message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.note_error(&error, reason);
        if self.base.auth_failure().is_some() {
            let mut state = self.shared.lock();
            state.error = Some(err(ErrorKind::Unauthorized, reason));
            drop(state);
            self.shared.wake.notify_one();
            let _ = self.shared.joined.send(Some(Err((
                ErrorKind::Unauthorized,
                format!("authentication failed: {reason}"),
            ))));
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer),
            other => {
                tracing::warn!(topic = %self.shared.topic, group = %self.shared.group, "rebalance error {other:?}");
                self.revoke(consumer);
            }
        }
    }
}

impl GroupContext {
    /// Take over `tpl`: read the committed offsets and progress metadata,
    /// choose the start of partitions the group never committed (latest or
    /// earliest, pinned by a commit so every later owner starts there too),
    /// and assign with explicit offsets.
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let s = &self.shared;
        let timeout = s.kafka.config().request_timeout;
        let committed = (0..3).find_map(|_| match consumer.committed_offsets(tpl.clone(), timeout) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, group = %s.group, "reading committed offsets failed; retrying");
                None
            }
        });
        let mut assignment = TopicPartitionList::new();
        let mut pin = TopicPartitionList::new();
        let mut partitions = BTreeMap::new();
        for elem in tpl.elements() {
            let p = elem.partition();
            let known = committed
                .as_ref()
                .and_then(|c| c.find_partition(elem.topic(), p))
                .map(|e| (e.offset(), e.metadata().to_owned()));
            let (start, progress, metadata) = match known {
                Some((Offset::Offset(o), meta)) => (Some(o), partition::decode(o, &meta), Some(meta)),
                Some(_) if committed.is_some() => {
                    let start = match consumer.fetch_watermarks(elem.topic(), p, timeout) {
                        Ok((low, high)) => Some(match s.options.start {
                            StartFrom::Latest => high,
                            StartFrom::Earliest => low,
                        }),
                        Err(e) => {
                            tracing::warn!(error = %e, partition = p, "reading watermarks failed");
                            None
                        }
                    };
                    if let Some(o) = start {
                        let _ = pin.add_partition_offset(elem.topic(), p, Offset::Offset(o));
                    }
                    (start, Progress::default(), None)
                }
                _ => (None, Progress::default(), None),
            };
            let offset = match (start, s.options.start) {
                (Some(o), _) => Offset::Offset(o),
                // Offsets unknown (the broker did not answer): let librdkafka
                // resolve them; progress metadata is lost for this partition.
                (None, StartFrom::Earliest) => Offset::Beginning,
                (None, StartFrom::Latest) => Offset::Stored,
            };
            let _ = assignment.add_partition_offset(elem.topic(), p, offset);
            partitions.insert(p, Partition::new(start.unwrap_or(-1), progress, metadata));
        }
        if let Err(e) = consumer.assign(&assignment) {
            tracing::error!(error = %e, group = %s.group, "assigning partitions failed");
        }
        if pin.count() > 0 {
            if let Err(e) = consumer.commit(&pin, CommitMode::Sync) {
                tracing::warn!(error = %e, group = %s.group, "pinning the start offsets failed");
            }
        }
        tracing::debug!(topic = %s.topic, group = %s.group, partitions = ?partitions.keys().collect::<Vec<_>>(), "assigned");
        s.lock().partitions = partitions;
        let _ = s.joined.send(Some(Ok(())));
        s.wake.notify_one();
    }

    /// Give the partitions up: in-flight deliveries count as failed, the
    /// progress is committed, the bookkeeping is dropped (its settlers get
    /// `DeliveryExpired`; the next owner redelivers).
    fn revoke(&self, consumer: &BaseConsumer<Self>) {
        let s = &self.shared;
        let wall = SystemTime::now();
        let mut state = s.lock();
        for p in state.partitions.values_mut() {
            for _ in 0..p.revoke(wall) {
                s.in_flight.release();
            }
        }
        let partitions = std::mem::take(&mut state.partitions);
        drop(state);
        if !consumer.assignment_lost() {
            commit(consumer, s, &pending_commits(&partitions));
        }
        if let Err(e) = consumer.unassign() {
            tracing::warn!(error = %e, "unassigning failed");
        }
        tracing::debug!(topic = %s.topic, group = %s.group, "revoked");
        s.wake.notify_one();
    }
}

/// What each partition would commit now.
fn pending_commits(partitions: &BTreeMap<i32, Partition>) -> Vec<(i32, i64, String)> {
    partitions
        .iter()
        .filter_map(|(p, part)| part.to_commit().map(|(o, m)| (*p, o, m)))
        .filter(|(_, o, _)| *o >= 0)
        .collect()
}

/// Commit `commits` synchronously; returns whether the broker took them.
fn commit(consumer: &BaseConsumer<GroupContext>, s: &Shared, commits: &[(i32, i64, String)]) -> bool {
    if commits.is_empty() {
        return true;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, offset, metadata) in commits {
        let mut elem = tpl.add_partition(&s.topic, *p);
        let _ = elem.set_offset(Offset::Offset(*offset));
        elem.set_metadata(metadata.clone());
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, topic = %s.topic, group = %s.group, "commit failed; retrying later");
            false
        }
    }
}

/// Commit what the partitions in `state` would commit, outside the lock,
/// then record it as committed.
fn commit_state(consumer: &BaseConsumer<GroupContext>, s: &Shared) {
    let commits = pending_commits(&s.lock().partitions);
    if commit(consumer, s, &commits) {
        let mut state = s.lock();
        for (p, offset, metadata) in commits {
            if let Some(part) = state.partitions.get_mut(&p) {
                part.committed(offset, metadata);
            }
        }
    }
}

/// Start a member of the request's group and return its shared state once
/// it has its first assignment (so what is published next is seen).
pub(crate) async fn join(backend: Kafka, request: SubscribeRequest) -> Result<Arc<Shared>> {
    let topic = request.topic();
    let options = request.options().clone();
    backend.probe(topic).await?;
    let config = backend.config().clone();
    let (joined_tx, mut joined_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        kafka: backend.clone(),
        request: request.clone(),
        topic: Arc::from(topic),
        group: Arc::from(options.group.as_str()),
        dlq_topic: options.dlq_topic(topic),
        options: options.clone(),
        state: Mutex::new(State {
            partitions: BTreeMap::new(),
            last_app_poll: Instant::now(),
            left: false,
            rejoin: false,
            cursor: 0,
            error: None,
        }),
        wake: Notify::new(),
        in_flight: InFlightLimit::new(options.max_in_flight),
        next_token: AtomicU64::new(1),
        stop: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        app_waiting: AtomicBool::new(false),
        joined: joined_tx,
    });
    let mut cc: ClientConfig = config.client_config();
    let session = config.session_timeout.as_millis() as u64;
    cc.set("group.id", config.group_id(topic, &options.group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 4).max(100).to_string())
        .set("max.poll.interval.ms", session.max(300_000).to_string())
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set("partition.assignment.strategy", config.assignment.join(","));
    let context = GroupContext {
        base: backend.context(),
        shared: shared.clone(),
    };
    let consumer: BaseConsumer<GroupContext> = cc.create_with_context(context).map_err(kafka)?;
    consumer.subscribe(&[topic]).map_err(kafka)?;
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("kafka-{}", options.group))
        .spawn(move || run(consumer, thread_shared))
        .map_err(|e| err(ErrorKind::Backend, format!("starting the consumer thread: {e}")))?;

    let patience = config.session_timeout * 3 + config.request_timeout;
    let waited = tokio::time::timeout(patience, joined_rx.wait_for(|j| j.is_some())).await;
    let outcome = match waited {
        Ok(Ok(j)) => j.clone(),
        _ => None,
    };
    match outcome {
        Some(Ok(())) => {}
        Some(Err((kind, why))) => {
            shared.stop.store(true, AtomicOrdering::Release);
            return Err(err(kind, why));
        }
        None => {
            shared.stop.store(true, AtomicOrdering::Release);
            return Err(err(
                ErrorKind::Timeout,
                format!(
                    "consumer group {} did not assign partitions within {patience:?}",
                    config.group_id(topic, &options.group)
                ),
            ));
        }
    }
    Ok(shared)
}

/// Why the group refuses this member, when `e` says it does for good: its
/// other members offer no assignment strategy in common with this one
/// (`INCONSISTENT_GROUP_PROTOCOL`), as a kafkajs member with its default
/// `RoundRobinAssigner` does.
fn join_refused(e: &KafkaError, s: &Shared) -> Option<String> {
    let code = e.rdkafka_error_code()?;
    (code == RDKafkaErrorCode::InconsistentGroupProtocol).then(|| {
        let config = s.kafka.config();
        format!(
            "consumer group {} refused this member: its other members use a partition assignment strategy \
             this one does not offer ({}); set the URL option assignment= (range, roundrobin) to one they \
             offer, or configure them to offer range or roundrobin (kafkajs: an assigner named \"roundrobin\")",
            config.group_id(&s.topic, &s.group),
            config.assignment.join(",")
        )
    })
}

/// The member's thread: poll, and every poll interval expire, pause/resume,
/// commit, leave/rejoin.
fn run(consumer: BaseConsumer<GroupContext>, s: Arc<Shared>) {
    let buffer = (s.options.max_in_flight * 2).max(500);
    let mut last_commit = Instant::now();
    let mut last_upkeep = Instant::now();
    while !s.finished() {
        {
            let mut state = s.lock();
            if state.left && state.rejoin {
                state.left = false;
                state.rejoin = false;
                drop(state);
                tracing::info!(topic = %s.topic, group = %s.group, "joining the group again");
                if let Err(e) = consumer.subscribe(&[&s.topic]) {
                    tracing::error!(error = %e, "subscribing again failed");
                }
            }
        }
        match consumer.poll(POLL) {
            Some(Ok(record)) => {
                let message = Arc::new(core::decode(&record));
                let mut state = s.lock();
                if let Some(p) = state.partitions.get_mut(&record.partition()) {
                    if p.push(record.offset(), message, Instant::now()) {
                        drop(state);
                        s.wake.notify_one();
                    }
                }
            }
            Some(Err(e)) => {
                if let Some(why) = join_refused(&e, &s) {
                    // Nothing to wait for: the group will not take this
                    // member until its other members change.
                    tracing::error!(topic = %s.topic, group = %s.group, "{why}");
                    let _ = s.joined.send(Some(Err((ErrorKind::InvalidArgument, why))));
                    s.stop.store(true, AtomicOrdering::Release);
                } else if e.rdkafka_error_code().map(core::kind_of) == Some(ErrorKind::Forbidden) {
                    // An ACL the principal lacks (the topic, the group):
                    // no retry grants it; the subscription ends with it.
                    let why = format!("{e}; the principal lacks an ACL this library needs (backend-kafka/docs.md)");
                    tracing::error!(topic = %s.topic, group = %s.group, "{why}");
                    let mut state = s.lock();
                    state.error = Some(err(ErrorKind::Forbidden, &why));
                    drop(state);
                    s.wake.notify_one();
                    let _ = s.joined.send(Some(Err((ErrorKind::Forbidden, why))));
                    s.stop.store(true, AtomicOrdering::Release);
                } else {
                    tracing::warn!(error = %e, topic = %s.topic, group = %s.group, "receive failed");
                }
            }
            None => {}
        }
        // Upkeep scans every record held, so it runs once per poll interval,
        // not after each record fetched.
        let now = Instant::now();
        if now.duration_since(last_upkeep) < POLL {
            continue;
        }
        last_upkeep = now;
        let wall = SystemTime::now();
        let mut state = s.lock();
        let mut expired = 0;
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for (p, part) in state.partitions.iter_mut() {
            expired += part.expire(now, wall);
            let pending = part.pending();
            if !part.paused && pending >= buffer {
                part.paused = true;
                pause.add_partition(&s.topic, *p);
            } else if part.paused && pending < buffer / 2 {
                part.paused = false;
                resume.add_partition(&s.topic, *p);
            }
        }
        for _ in 0..expired {
            s.in_flight.release();
        }
        let stalled = s.stalled(&state, now);
        if stalled {
            state.left = true;
        }
        drop(state);
        if expired > 0 {
            s.wake.notify_one();
        }
        if pause.count() > 0 {
            let _ = consumer.pause(&pause);
        }
        if resume.count() > 0 {
            let _ = consumer.resume(&resume);
        }
        if now.duration_since(last_commit) >= COMMIT_INTERVAL {
            commit_state(&consumer, &s);
            last_commit = now;
        }
        if stalled {
            tracing::warn!(
                topic = %s.topic,
                group = %s.group,
                "the application took no delivery for longer than the ack timeout; leaving the group so others take over"
            );
            consumer.unsubscribe();
        }
    }
    // Closing: commit what was acked, then leave (the revoke commits again,
    // a no-op unless something changed).
    commit_state(&consumer, &s);
    consumer.unsubscribe();
    drop(consumer);
    tracing::debug!(topic = %s.topic, group = %s.group, "consumer closed");
}

/// Drains the member when the stream is dropped: deliveries already handed
/// out can still be settled (a consumer runtime drops the stream first to
/// stop fetching, then lets its handlers finish).
pub(crate) struct DrainOnDrop(pub(crate) Arc<Shared>);

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        self.0.draining.store(true, AtomicOrdering::Release);
    }
}
