//! Reading a group: `XREADGROUP`, due nacks and timed-out entries claimed
//! by scripts, through the toolkit's pull loop; each delivery is settled by
//! `settle`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Value;
use transport_core::backend::{pull_deliveries, Deliveries, Fetch, InFlightLimit, RawSubscribe, SubscribeRequest};
use transport_core::{Delivery, Error, ErrorKind, Result, StartFrom};

use crate::core::{self, map_err, scripts, Conn, Entry, Redis};
use crate::names::{self, Keys};
use crate::provision::ensure_group;
use crate::settle::{ConsumerShared, RedisSettler};

/// How long one `XREADGROUP` blocks. Short, so nacks without delay and
/// timed-out deliveries are picked up promptly by an idle consumer.
pub(crate) const BLOCK: Duration = Duration::from_millis(200);

/// How often nacked entries whose delay is over are claimed.
pub(crate) const DUE_INTERVAL: Duration = Duration::from_millis(100);

#[async_trait]
impl RawSubscribe for Redis {
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        let options = request.options();
        let keys = Keys::new(&self.core.config, request.topic(), options);
        let mut control = self.core.conn.clone();
        let provision = self.core.config.provision;
        ensure_group(&mut control, &keys, request.group(), options.start, provision).await?;
        // XREADGROUP BLOCK holds its connection: each subscription gets its own.
        let reader = core::connect(&self.core.config, BLOCK + self.core.config.command_timeout).await?;
        let in_flight = Arc::new(InFlightLimit::new(options.max_in_flight));
        let consumer = Arc::new(ConsumerShared {
            control,
            keys,
            group: Arc::from(request.group()),
            name: names::consumer(),
            ack_timeout: options.ack_timeout,
            in_flight: in_flight.clone(),
            provision,
        });
        let fetch = RedisFetch {
            shared: consumer,
            request: request.clone(),
            reader,
            last_due: None,
            last_reclaim: Instant::now(),
        };
        Ok(pull_deliveries(&request, in_flight, fetch))
    }
}

/// One read: due nacks, timed-out deliveries, then new entries.
pub(crate) struct RedisFetch {
    pub(crate) shared: Arc<ConsumerShared>,
    pub(crate) request: SubscribeRequest,
    pub(crate) reader: Conn,
    pub(crate) last_due: Option<Instant>,
    pub(crate) last_reclaim: Instant,
}

#[async_trait]
impl Fetch for RedisFetch {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let entries = self.fill(max).await?;
        Ok(entries.into_iter().map(|e| self.delivery(e)).collect())
    }

    async fn recover(&mut self, error: &Error) -> Result<()> {
        if error.kind() == ErrorKind::NotFound {
            // The stream or group vanished (flushed, or a restart without
            // persistence): declare it again, or without provisioning end
            // the subscription with what is missing.
            let s = &self.shared;
            let mut conn = s.control.clone();
            ensure_group(&mut conn, &s.keys, &s.group, StartFrom::Earliest, s.provision).await?;
        }
        Ok(())
    }
}

impl RedisFetch {
    /// Up to `capacity` entries: due nacks first, then timed-out
    /// deliveries, then new entries.
    async fn fill(&mut self, capacity: usize) -> Result<Vec<Entry>> {
        let mut buf = Vec::new();
        let s = self.shared.clone();
        let k = &s.keys;
        let now = Instant::now();
        if self.last_due.is_none_or(|t| now.duration_since(t) >= DUE_INTERVAL) {
            self.last_due = Some(now);
            let reply: Value = scripts()
                .claim_due
                .key(&k.stream)
                .key(&k.delayed)
                .key(&k.failures)
                .arg(&*s.group)
                .arg(&s.name)
                .arg(core::now_ms())
                .arg(capacity)
                .invoke_async(&mut self.reader)
                .await
                .map_err(map_err)?;
            buf.extend(core::parse_claimed(reply));
        }
        let reclaim_every = (s.ack_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        if buf.len() < capacity && now.duration_since(self.last_reclaim) >= reclaim_every {
            self.last_reclaim = now;
            let reply: Value = scripts()
                .reclaim
                .key(&k.stream)
                .key(&k.delayed)
                .key(&k.failures)
                .arg(&*s.group)
                .arg(&s.name)
                .arg(s.ack_timeout.as_millis() as u64)
                .arg(capacity - buf.len())
                .arg(core::now_ms())
                .invoke_async(&mut self.reader)
                .await
                .map_err(map_err)?;
            buf.extend(core::parse_claimed(reply));
        }
        if buf.is_empty() {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&*s.group)
                .arg(&s.name)
                .arg("COUNT")
                .arg(capacity)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&k.stream)
                .arg(">")
                .query_async(&mut self.reader)
                .await
                .map_err(map_err)?;
            buf.extend(core::parse_read(reply));
        }
        Ok(buf)
    }

    fn delivery(&self, entry: Entry) -> Delivery {
        let s = &self.shared;
        let info = self.request.info(entry.attempt, entry.first_failure);
        let settler = RedisSettler {
            shared: s.clone(),
            entry_id: entry.entry_id,
            count: entry.attempt,
            settled: false,
        };
        transport_core::backend::delivery(Arc::new(entry.message), info, Box::new(settler))
    }
}
