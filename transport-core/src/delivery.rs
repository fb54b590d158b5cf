//! A received message and the one settlement it allows.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::dead_letter::dead_letter_message;
use crate::delivery_info::DeliveryInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::operation::Operation;
use crate::received::Received;
use crate::settle::{decide, Action, Outcome, Settlement};

/// How a backend settles one delivery. Implemented by each backend; users
/// settle through [`Delivery`].
///
/// Dropping a settler without calling a method means "not acked": the
/// backend redelivers the message (at once or after the ack timeout).
#[async_trait]
pub trait Settler: Send + Sync + 'static {
    /// The message was handled: never deliver it again to this group.
    async fn ack(self: Box<Self>) -> Result<()>;

    /// Deliver it again, not before `delay` when given.
    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<()>;

    /// Move it to the group's dead-letter topic as `dead` (the original
    /// content plus the dead-letter headers), then remove the original, in an
    /// order that never loses it.
    async fn dead_letter(self: Box<Self>, dead: Message) -> Result<()>;

    /// Give this handle up without telling the broker, because a newer
    /// delivery of the same message owns it now (see
    /// [`StaleGuard`](crate::backend::StaleGuard)): free what the handle
    /// holds locally (an in-flight slot) and nothing else. The default drops
    /// it; a settler whose drop hands the message back must override this.
    fn abandon(self: Box<Self>) {
        drop(self);
    }

    /// Make sure the delivery is not redelivered before `by` from now (a
    /// lease for a long handler). [`Delivery::extend`] has checked that `by`
    /// is positive and at most the subscription's ack timeout. Brokers that can
    /// only restart their ack timer (NATS `+WPI`) may give more, never less.
    async fn extend(&self, by: Duration) -> Result<()> {
        let _ = by;
        Err(Error::new(
            ErrorKind::Unsupported,
            "extending an ack deadline is not supported",
        ))
    }
}

/// A received message. Settle it exactly once with [`ack`](Self::ack),
/// [`nack`](Self::nack) or [`dead_letter`](Self::dead_letter); dropping it
/// unsettled counts as not acked and it comes back.
///
/// Its message and delivery facts are the [`Received`] it derefs to
/// (`delivery.id()`, `delivery.attempt()`, ...), the same the consumer
/// runtime's `Context` has.
pub struct Delivery {
    received: Received,
    settler: Option<Box<dyn Settler>>,
    /// Names the backend in settlement errors; set by the subscription that
    /// hands the delivery out.
    backend: &'static str,
    /// What the backend's capabilities allow; set with `backend`.
    allowed: Allowed,
}

/// The capabilities a settlement depends on, enforced here once for every
/// backend (a settler is never asked for what its backend declared away).
#[derive(Debug, Clone, Copy)]
struct Allowed {
    nack_delay: bool,
    max_nack_delay: Option<Duration>,
    extend: bool,
}

impl Allowed {
    /// Before a subscription binds the delivery (a backend's own tests):
    /// everything is passed to the settler.
    const ALL: Allowed = Allowed {
        nack_delay: true,
        max_nack_delay: None,
        extend: true,
    };
}

impl Delivery {
    /// Backends build deliveries with [`backend::delivery`](crate::backend::delivery).
    pub(crate) fn new(message: Arc<Message>, info: DeliveryInfo, settler: Box<dyn Settler>) -> Self {
        Delivery {
            received: Received::new(message, info),
            settler: Some(settler),
            backend: "",
            allowed: Allowed::ALL,
        }
    }

    /// The backend that handed it out, and what its capabilities allow.
    pub(crate) fn bind(&mut self, backend: &'static str, capabilities: &Capabilities) {
        self.backend = backend;
        self.allowed = Allowed {
            nack_delay: capabilities.nack_delay,
            max_nack_delay: capabilities.max_nack_delay,
            extend: capabilities.extend,
        };
    }

    fn take_settler(&mut self, op: Operation) -> Result<Box<dyn Settler>> {
        self.settler.take().ok_or_else(|| self.error(op, already_settled()))
    }

    fn error(&self, op: Operation, e: Error) -> Error {
        e.in_context(self.backend, op)
    }

    /// Settle according to `outcome`. This is the one place where an outcome
    /// becomes a broker operation: a retry on the last allowed attempt
    /// dead-letters (with the attempts and the reason), anything else does
    /// what it says. Returns what was done.
    pub async fn settle(mut self, outcome: Outcome) -> Result<Settlement> {
        match decide(outcome, self.received.info()) {
            Action::Ack => {
                let op = Operation::Ack;
                let settler = self.take_settler(op)?;
                settler.ack().await.map_err(|e| self.error(op, e))?;
                Ok(Settlement::Acked)
            }
            Action::Nack(delay) => {
                let op = Operation::Nack;
                let delay = match delay {
                    // Redelivering at once instead would turn a backoff
                    // into a hot loop.
                    Some(_) if !self.allowed.nack_delay => {
                        return Err(self.error(
                            op,
                            Error::new(
                                ErrorKind::Unsupported,
                                "this backend cannot delay a redelivery: nack without a delay \
                                 (the consumer runtime holds the message for the delay instead)",
                            )
                            .with_retryable(false),
                        ))
                    }
                    // Longer than the broker can delay: the longest it can.
                    Some(d) => Some(self.allowed.max_nack_delay.map_or(d, |max| d.min(max))),
                    None => None,
                };
                let settler = self.take_settler(op)?;
                settler.nack(delay).await.map_err(|e| self.error(op, e))?;
                Ok(Settlement::Retried)
            }
            Action::DeadLetter(reason) => {
                let op = Operation::DeadLetter;
                let settler = self.take_settler(op)?;
                let dead = dead_letter_message(
                    self.received.message(),
                    self.received.info(),
                    &reason,
                    SystemTime::now(),
                );
                settler.dead_letter(dead).await.map_err(|e| self.error(op, e))?;
                Ok(Settlement::DeadLettered)
            }
        }
    }

    /// Acknowledge: the group never receives this message again.
    pub async fn ack(self) -> Result<()> {
        self.settle(Outcome::Ack).await.map(drop)
    }

    /// Redeliver, after `delay` when given. When this was the last allowed
    /// attempt, the message goes to the dead-letter queue instead.
    pub async fn nack(self, delay: Option<Duration>) -> Result<()> {
        self.settle(Outcome::Retry {
            delay,
            reason: String::new(),
        })
        .await
        .map(drop)
    }

    /// Send to the dead-letter queue now, with `reason`.
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<()> {
        self.settle(Outcome::DeadLetter { reason: reason.into() })
            .await
            .map(drop)
    }

    /// Keep the delivery from being redelivered for `by` from now, for a
    /// long-running handler. Means the same on every backend: `by` must be
    /// positive and at most the ack timeout (`InvalidArgument` otherwise; call
    /// it again later to hold longer); the delivery is not redelivered before
    /// `now + by`, and (where the broker can only restart its ack timer) at
    /// the latest one ack timeout from now. `DeliveryExpired` when the lease
    /// was already lost.
    pub async fn extend(&self, by: Duration) -> Result<()> {
        let op = Operation::Extend;
        if by.is_zero() || by > self.received.info().ack_timeout {
            return Err(self.error(
                op,
                Error::invalid(format!(
                    "extend by {by:?}: must be positive and at most the ack timeout ({:?})",
                    self.received.info().ack_timeout
                )),
            ));
        }
        if !self.allowed.extend {
            return Err(self.error(
                op,
                Error::new(ErrorKind::Unsupported, "this backend cannot extend a delivery").with_retryable(false),
            ));
        }
        match &self.settler {
            Some(s) => s.extend(by).await.map_err(|e| self.error(op, e)),
            None => Err(self.error(op, already_settled())),
        }
    }
}

fn already_settled() -> Error {
    Error::new(ErrorKind::InvalidArgument, "delivery already settled")
}

impl Deref for Delivery {
    type Target = Received;

    fn deref(&self) -> &Received {
        &self.received
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", self.received.message())
            .field("topic", &self.received.topic())
            .field("group", &self.received.group())
            .field("attempt", &self.received.attempt())
            .field("settled", &self.settler.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    #[async_trait]
    impl Settler for Nothing {
        async fn ack(self: Box<Self>) -> Result<()> {
            Ok(())
        }
        async fn nack(self: Box<Self>, _: Option<Duration>) -> Result<()> {
            Ok(())
        }
        async fn dead_letter(self: Box<Self>, _: Message) -> Result<()> {
            Ok(())
        }
    }

    fn delivery(attempt: u32, max_attempts: u32) -> Delivery {
        let info = DeliveryInfo::for_test(attempt, max_attempts);
        Delivery::new(Arc::new(Message::new("m")), info, Box::new(Nothing))
    }

    #[test]
    fn the_last_attempt_is_the_max_attempts_th() {
        assert!(!delivery(2, 3).is_last_attempt());
        assert!(delivery(3, 3).is_last_attempt());
        assert!(delivery(1, 1).is_last_attempt());
    }

    #[tokio::test]
    async fn extend_takes_up_to_the_whole_ack_timeout() {
        let d = delivery(1, 3);
        let whole = d.info().ack_timeout;
        // A whole ack timeout is what a renewal asks; the settler here
        // cannot extend, so getting past the bounds means Unsupported.
        assert_eq!(d.extend(whole).await.unwrap_err().kind(), ErrorKind::Unsupported);
        for refused in [Duration::ZERO, whole + Duration::from_millis(1)] {
            assert_eq!(
                d.extend(refused).await.unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{refused:?}"
            );
        }
    }

    /// What the settler was asked: nack delays and extends.
    #[derive(Default)]
    struct Asked {
        nacks: std::sync::Mutex<Vec<Option<Duration>>>,
        extends: std::sync::atomic::AtomicUsize,
    }

    struct Recording(Arc<Asked>);

    #[async_trait]
    impl Settler for Recording {
        async fn ack(self: Box<Self>) -> Result<()> {
            Ok(())
        }
        async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<()> {
            self.0.nacks.lock().unwrap().push(delay);
            Ok(())
        }
        async fn dead_letter(self: Box<Self>, _: Message) -> Result<()> {
            Ok(())
        }
        async fn extend(&self, _: Duration) -> Result<()> {
            self.0.extends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    fn bound(capabilities: Capabilities) -> (Delivery, Arc<Asked>) {
        let asked = Arc::new(Asked::default());
        let info = DeliveryInfo::for_test(1, 3);
        let mut d = Delivery::new(Arc::new(Message::new("m")), info, Box::new(Recording(asked.clone())));
        d.bind("test", &capabilities);
        (d, asked)
    }

    /// A backend declaring no nack delay and no extend is never asked for
    /// either: both are a final `Unsupported` naming the backend, and a
    /// nack without a delay still reaches the settler.
    #[tokio::test]
    async fn capabilities_declared_away_never_reach_the_settler() {
        let none = Capabilities {
            nack_delay: false,
            extend: false,
            ..Capabilities::default()
        };
        let (d, asked) = bound(none);
        let e = d.extend(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(!e.is_retryable() && e.to_string().contains("test"), "{e}");
        let e = d.nack(Some(Duration::from_secs(1))).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(!e.is_retryable(), "{e}");
        assert_eq!(asked.extends.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(asked.nacks.lock().unwrap().is_empty());

        let (d, asked) = bound(none);
        d.nack(None).await.unwrap();
        assert_eq!(*asked.nacks.lock().unwrap(), [None]);
    }

    /// A delay longer than the backend's `max_nack_delay` becomes the
    /// longest it can do; shorter ones and backends without a limit pass
    /// unchanged; a declared extend reaches the settler.
    #[tokio::test]
    async fn nack_delays_are_capped_at_the_backends_longest() {
        let max = Duration::from_secs(60);
        let capped = Capabilities {
            nack_delay: true,
            extend: true,
            max_nack_delay: Some(max),
            ..Capabilities::default()
        };
        for (asked_for, sent) in [
            (Duration::from_secs(3600), max),
            (Duration::from_secs(5), Duration::from_secs(5)),
        ] {
            let (d, asked) = bound(capped);
            d.nack(Some(asked_for)).await.unwrap();
            assert_eq!(*asked.nacks.lock().unwrap(), [Some(sent)], "asked for {asked_for:?}");
        }
        let unlimited = Capabilities {
            max_nack_delay: None,
            ..capped
        };
        let (d, asked) = bound(unlimited);
        d.extend(Duration::from_secs(1)).await.unwrap();
        d.nack(Some(Duration::from_secs(3600))).await.unwrap();
        assert_eq!(*asked.nacks.lock().unwrap(), [Some(Duration::from_secs(3600))]);
        assert_eq!(asked.extends.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
