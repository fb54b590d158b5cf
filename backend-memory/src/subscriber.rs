//! Reading a group: the next due delivery of the topic's log for this
//! group, handed out with its settler (`settle`).

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use transport_core::backend::{Deliveries, RawSubscribe, SubscribeRequest};
use transport_core::{Delivery, Result};

use crate::backend::Memory;
use crate::core::Fetched;
use crate::settle::{GroupSlot, MemorySettler};

#[async_trait]
impl RawSubscribe for Memory {
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        let source = self.broker.topic(request.topic());
        source.join(request.group(), request.options().start);
        let dlq = self.broker.topic(&request.dlq_topic());
        dlq.mark_dead_letter_topic();
        let consumer = Consumer {
            slot: Arc::new(GroupSlot {
                source,
                dlq,
                group: Arc::from(request.group()),
                outstanding: AtomicUsize::new(0),
                replay_window: self.config.replay_window,
            }),
            request,
        };
        Ok(
            stream::unfold((consumer, Vec::new()), |(consumer, mut buf)| async move {
                let delivery = consumer.next(&mut buf).await?;
                Some((Ok(delivery), (consumer, buf)))
            })
            .boxed(),
        )
    }
}

/// One subscription's read side; what its deliveries settle on is the
/// shared [`GroupSlot`].
struct Consumer {
    slot: Arc<GroupSlot>,
    request: SubscribeRequest,
}

impl Consumer {
    /// The next delivery; `None` once the transport is closed. `buf` holds
    /// fetched messages in reverse order.
    async fn next(&self, buf: &mut Vec<Fetched>) -> Option<Delivery> {
        loop {
            if self.request.is_closed() {
                return None;
            }
            if let Some(f) = buf.pop() {
                return Some(self.delivery(f));
            }
            // Register for wake-ups before looking, so none is missed.
            let slot = &self.slot;
            let watch = slot.source.watch();
            let notified = watch.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let options = self.request.options();
            let capacity = options
                .max_in_flight
                .saturating_sub(slot.outstanding.load(AtomicOrdering::Acquire));
            let mut wake_at = None;
            if capacity > 0 {
                wake_at = slot.source.fetch(&slot.group, capacity, options.ack_timeout, buf);
                if !buf.is_empty() {
                    slot.outstanding.fetch_add(buf.len(), AtomicOrdering::AcqRel);
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

    fn delivery(&self, f: Fetched) -> Delivery {
        let info = self.request.info(f.attempt, f.first_failure);
        let settler = MemorySettler {
            slot: self.slot.clone(),
            seq: f.seq,
            token: f.token,
            settled: false,
        };
        transport_core::backend::delivery(f.message, info, Box::new(settler))
    }
}
