//! A fault-injecting transport for the outbox checks: publishes of chosen
//! message ids fail (a retryable `Timeout`, a set number of times), or it
//! hangs forever after its first successful batch (a relay killed between
//! publishing and marking).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use transport_core::{
    Backlog, Capabilities, DeadLetterQueue, Error, ErrorKind, Message, Publisher, Result, SubscribeOptions, Subscriber,
    Subscription, Transport,
};

/// A transport that fails publishes of chosen message ids (a retryable
/// `Timeout`, a set number of times), or hangs forever after its first
/// successful batch (a relay killed between publishing and marking).
pub struct Faulty {
    inner: Arc<dyn Transport>,
    failures: Mutex<HashMap<String, (u32, ErrorKind)>>,
    jitter: Mutex<Duration>,
    /// Hang after the next successful `publish_batch`.
    pub halt_after_publish: AtomicBool,
    /// Notified when it hangs.
    pub halted: Notify,
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Faulty {
    /// Around `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> Arc<Self> {
        Arc::new(Faulty {
            inner,
            failures: Mutex::default(),
            jitter: Mutex::default(),
            halt_after_publish: AtomicBool::new(false),
            halted: Notify::new(),
        })
    }

    /// Fail the next `times` publishes of message `id`.
    pub fn fail(&self, id: &str, times: u32) {
        self.fail_with(id, times, ErrorKind::Timeout);
    }

    /// Fail the next `times` publishes of message `id` with an error of
    /// `kind` (retryable as that kind is by default).
    pub fn fail_with(&self, id: &str, times: u32, kind: ErrorKind) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), (times, kind));
    }

    /// Delay every `publish_batch` by a random time up to `max`.
    pub fn jitter(&self, max: Duration) {
        *self.jitter.lock().unwrap_or_else(|e| e.into_inner()) = max;
    }

    fn should_fail(&self, id: &str) -> Option<ErrorKind> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get_mut(id) {
            Some((n, kind)) if *n > 0 => {
                *n -= 1;
                Some(*kind)
            }
            _ => None,
        }
    }

    fn failure(id: &str, kind: ErrorKind) -> Error {
        Error::new(kind, format!("injected publish failure of {id}"))
    }
}

#[async_trait]
impl Publisher for Faulty {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        if let Some(kind) = self.should_fail(&message.id) {
            return Err(Faulty::failure(&message.id, kind));
        }
        self.inner.publish(topic, message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let failing = {
            let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            messages.iter().find_map(|m| match failures.get(&m.id) {
                Some((n, kind)) if *n > 0 => Some((m.id.clone(), *kind)),
                _ => None,
            })
        };
        if let Some((id, kind)) = failing {
            return Err(Faulty::failure(&id, kind));
        }
        let max = *self.jitter.lock().unwrap_or_else(|e| e.into_inner());
        if !max.is_zero() {
            // A UUIDv7's last bytes are random.
            let random = u16::from_le_bytes([uuid::Uuid::now_v7().as_bytes()[14], uuid::Uuid::now_v7().as_bytes()[15]]);
            tokio::time::sleep(max.mul_f64(f64::from(random) / f64::from(u16::MAX))).await;
        }
        self.inner.publish_batch(topic, messages).await?;
        if self.halt_after_publish.swap(false, Ordering::SeqCst) {
            self.halted.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[async_trait]
impl Subscriber for Faulty {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        self.inner.subscribe(topic, options).await
    }
}

#[async_trait]
impl Transport for Faulty {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn dead_letters(&self, topic: &str, options: &SubscribeOptions) -> Result<Box<dyn DeadLetterQueue>> {
        self.inner.dead_letters(topic, options).await
    }
    fn topology(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<transport_core::Topology> {
        self.inner.topology(topic, group)
    }
    async fn provision(&self, topic: &str, group: Option<&SubscribeOptions>) -> Result<transport_core::Topology> {
        self.inner.provision(topic, group).await
    }
    async fn backlog(&self, topic: &str, options: &SubscribeOptions) -> Result<Backlog> {
        self.inner.backlog(topic, options).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
