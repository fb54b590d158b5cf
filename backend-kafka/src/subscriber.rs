//! The read side of a subscription: the stream the application reads, which
//! hands out the next ready record of the group's partitions (round robin)
//! with its settler (`settle`); the membership itself is `group`.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self as fstream, StreamExt};
use transport_core::backend::{Deliveries, RawSubscribe, SubscribeRequest};
use transport_core::{Delivery, Result};

use crate::core::Kafka;
use crate::group::{self, DrainOnDrop, Shared};
use crate::partition::Next;
use crate::settle::KafkaSettler;

#[async_trait]
impl RawSubscribe for Kafka {
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Deliveries> {
        let config = self.config();
        self.ensure_topic(request.topic(), config.partitions).await?;
        self.ensure_topic(&request.dlq_topic(), config.dlq_partitions).await?;
        let shared = group::join(self.clone(), request).await?;
        let stream = ReadLoop {
            shared: shared.clone(),
            _guard: DrainOnDrop(shared),
        };
        Ok(fstream::unfold(stream, |mut st| async move {
            let item = st.next().await?;
            Some((item, st))
        })
        .boxed())
    }
}

struct ReadLoop {
    shared: Arc<Shared>,
    _guard: DrainOnDrop,
}

impl ReadLoop {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        let s = self.shared.clone();
        s.app_waiting.store(true, AtomicOrdering::Release);
        let out = self.wait_next(&s).await;
        s.lock().last_app_poll = Instant::now();
        s.app_waiting.store(false, AtomicOrdering::Release);
        out
    }

    async fn wait_next(&mut self, s: &Arc<Shared>) -> Option<Result<Delivery>> {
        loop {
            if s.request.is_closed() {
                return None;
            }
            if s.in_flight.free() == 0 {
                s.in_flight.wait_for_slot(Duration::from_millis(200)).await;
                continue;
            }
            let now = Instant::now();
            let mut wake_at = now + Duration::from_millis(200);
            {
                let mut state = s.lock();
                state.last_app_poll = now;
                if let Some(e) = state.error.take() {
                    return Some(Err(e));
                }
                if state.left {
                    state.rejoin = true;
                }
                let keys: Vec<i32> = state.partitions.keys().copied().collect();
                for i in 0..keys.len() {
                    let idx = (state.cursor + i) % keys.len();
                    let p = keys[idx];
                    let Some(part) = state.partitions.get_mut(&p) else {
                        continue;
                    };
                    match part.next(now) {
                        Next::Ready(offset) => {
                            let token = s.next_token.fetch_add(1, AtomicOrdering::Relaxed);
                            let Some(taken) = part.take(offset, token, now + s.options.ack_timeout) else {
                                continue;
                            };
                            state.cursor = idx + 1;
                            s.in_flight.taken(1);
                            let info = s.request.info(taken.attempt, taken.first_failure);
                            let settler = KafkaSettler {
                                shared: s.clone(),
                                partition: p,
                                offset,
                                token,
                                settled: false,
                            };
                            return Some(Ok(transport_core::backend::delivery(
                                taken.message,
                                info,
                                Box::new(settler),
                            )));
                        }
                        Next::Until(t) => wake_at = wake_at.min(t),
                        Next::Empty => {}
                    }
                }
            }
            let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(wake_at), s.wake.notified()).await;
        }
    }
}
