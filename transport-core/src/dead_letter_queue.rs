//! The operations on one subscription's dead-letter queue, by selection.

use async_trait::async_trait;

use crate::dead_letter::DeadLetter;
use crate::error::Result;
use crate::selection::Selection;

/// Operations on one subscription's dead-letter queue, each on the dead
/// letters a [`Selection`] picks, oldest first.
///
/// Redrive publishes each message back to its original topic before removing
/// it from the queue: a crash in between can duplicate a message, never lose
/// one.
///
/// ```no_run
/// # async fn demo(queue: Box<dyn transport_core::DeadLetterQueue>) -> transport_core::Result<()> {
/// use transport_core::Selection;
///
/// queue.redrive(&Selection::all().oldest(10)).await?; // the ten oldest
/// queue.redrive(&Selection::all().reason_contains("timeout")).await?;
/// queue.discard(&Selection::ids(["order-17"])).await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    /// The dead-letter topic's name.
    fn topic(&self) -> &str;
    /// Messages in the queue.
    async fn depth(&self) -> Result<u64>;
    /// The oldest `n` messages, left in place.
    async fn peek(&self, n: usize) -> Result<Vec<DeadLetter>>;
    /// Move the dead letters `selection` picks back to their original topic,
    /// for the group that dead-lettered them, with attempts starting again
    /// at 1, one by one, leaving the others in the queue in their order.
    /// Returns how many moved. Where a broker cannot take one message out
    /// of the middle of a queue (RabbitMQ, Kafka) the others are moved
    /// aside: the backend's docs say what that costs.
    async fn redrive(&self, selection: &Selection) -> Result<u64>;
    /// Delete the dead letters `selection` picks, leaving the others;
    /// returns how many.
    async fn discard(&self, selection: &Selection) -> Result<u64>;
    /// Redrive every dead letter ([`redrive`](Self::redrive) of
    /// [`Selection::all`]).
    async fn redrive_all(&self) -> Result<u64> {
        self.redrive(&Selection::all()).await
    }
    /// Delete every dead letter ([`discard`](Self::discard) of
    /// [`Selection::all`]); returns how many.
    async fn purge(&self) -> Result<u64> {
        self.discard(&Selection::all()).await
    }
}
