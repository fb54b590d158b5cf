//! Reading a group (the next due delivery of the topic's log for this
//! group) and settling: ack, nack with delay, dead-letter, extend.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use transport_core::backend::Lifecycle;
use transport_core::backend::Settler;
use transport_core::{Delivery, DeliveryInfo, Error, Message, Result, SubscribeOptions, Subscriber, Subscription};

use crate::backend::MemoryTransport;
use crate::core::{Fetched, Requeue, Topic};
use crate::SCHEME;

#[async_trait]
impl Subscriber for MemoryTransport {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        self.check_open("subscribe")?;
        options
            .validate(topic)
            .map_err(|e| e.with_backend(SCHEME).with_operation("subscribe"))?;
        let source = self.broker.topic(topic);
        source.join(&options.group, options.start);
        let dlq = self.broker.topic(&options.dlq_topic(topic));
        dlq.mark_dead_letter_topic();
        let group = options.group.clone();
        let consumer = Arc::new(Consumer {
            source,
            dlq,
            topic: Arc::from(topic),
            group: Arc::from(options.group.as_str()),
            options,
            outstanding: AtomicUsize::new(0),
            lifecycle: self.lifecycle.clone(),
            replay_window: self.config.replay_window,
        });
        let deliveries = stream::unfold((consumer, Vec::new()), |(consumer, mut buf)| async move {
            let delivery = consumer.next(&mut buf).await?;
            Some((Ok(delivery), (consumer, buf)))
        });
        Ok(transport_core::backend::subscription(topic, group, deliveries.boxed()))
    }
}

/// One subscription's view of a group.
pub(crate) struct Consumer {
    pub(crate) source: Arc<Topic>,
    pub(crate) dlq: Arc<Topic>,
    pub(crate) topic: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) options: SubscribeOptions,
    /// Deliveries handed out (or buffered) and not settled yet.
    pub(crate) outstanding: AtomicUsize,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) replay_window: usize,
}

impl Consumer {
    /// The next delivery; `None` once the transport is closed. `buf` holds
    /// fetched messages in reverse order.
    async fn next(self: &Arc<Self>, buf: &mut Vec<Fetched>) -> Option<Delivery> {
        loop {
            if self.lifecycle.is_closed() {
                return None;
            }
            if let Some(f) = buf.pop() {
                return Some(self.delivery(f));
            }
            // Register for wake-ups before looking, so none is missed.
            let watch = self.source.watch();
            let notified = watch.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let capacity = self
                .options
                .max_in_flight
                .saturating_sub(self.outstanding.load(AtomicOrdering::Acquire));
            let mut wake_at = None;
            if capacity > 0 {
                wake_at = self.source.fetch(&self.group, capacity, self.options.ack_timeout, buf);
                if !buf.is_empty() {
                    self.outstanding.fetch_add(buf.len(), AtomicOrdering::AcqRel);
                    buf.reverse();
                    continue;
                }
            }
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn delivery(self: &Arc<Self>, f: Fetched) -> Delivery {
        let info = DeliveryInfo {
            topic: self.topic.clone(),
            group: self.group.clone(),
            attempt: f.attempt,
            max_attempts: self.options.dead_letter.max_attempts,
            ack_timeout: self.options.ack_timeout,
            first_failure: f.first_failure,
            stable_id: true,
        };
        let settler = MemorySettler {
            consumer: self.clone(),
            seq: f.seq,
            token: f.token,
            settled: false,
        };
        transport_core::backend::delivery(f.message, info, Box::new(settler))
    }

    fn slot_freed(&self) {
        self.outstanding.fetch_sub(1, AtomicOrdering::AcqRel);
    }
}

pub(crate) struct MemorySettler {
    pub(crate) consumer: Arc<Consumer>,
    pub(crate) seq: u64,
    pub(crate) token: u64,
    pub(crate) settled: bool,
}

impl MemorySettler {
    fn begin(&mut self) -> &Consumer {
        self.settled = true;
        self.consumer.slot_freed();
        &self.consumer
    }
}

pub(crate) fn tag(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| e.with_backend(SCHEME).with_operation(op)
}

#[async_trait]
impl Settler for MemorySettler {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        let (seq, token) = (self.seq, self.token);
        let c = self.begin();
        c.source.complete(&c.group, seq, token).map(drop).map_err(tag("ack"))
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let (seq, token) = (self.seq, self.token);
        let c = self.begin();
        let how = match delay {
            Some(d) if !d.is_zero() => Requeue::After(d),
            _ => Requeue::Now,
        };
        c.source.requeue(&c.group, seq, token, how).map_err(tag("nack"))
    }

    async fn dead_letter(mut self: Box<Self>, dead: Message) -> Result<()> {
        let (seq, token) = (self.seq, self.token);
        let c = self.begin();
        c.source
            .dead_letter(&c.group, seq, token, &c.dlq, dead, c.replay_window)
            .map_err(tag("dead_letter"))
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        let c = &self.consumer;
        c.source
            .extend(&c.group, self.seq, self.token, by)
            .map_err(tag("extend"))
    }
}

impl Drop for MemorySettler {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped unsettled: not acked, so it goes back to the group now.
            self.consumer.slot_freed();
            let c = &self.consumer;
            let _ = c.source.requeue(&c.group, self.seq, self.token, Requeue::Now);
        }
    }
}
