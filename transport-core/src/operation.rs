//! The operations of the public API, named once: errors carry one, spans and
//! metrics are labelled with it.

use std::fmt;

/// What was being done when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Opening a transport (parsing its URL, reaching the broker).
    Connect,
    /// [`Publisher::publish`](crate::Publisher::publish).
    Publish,
    /// [`Publisher::publish_batch`](crate::Publisher::publish_batch).
    PublishBatch,
    /// [`Subscriber::subscribe`](crate::Subscriber::subscribe), provisioning included.
    Subscribe,
    /// Reading deliveries from an open subscription.
    Receive,
    /// Acknowledging a delivery.
    Ack,
    /// Handing a delivery back for redelivery.
    Nack,
    /// Moving a delivery to the dead-letter queue.
    DeadLetter,
    /// Extending a delivery's lease.
    Extend,
    /// Opening a dead-letter queue ([`Transport::dead_letters`](crate::Transport::dead_letters)).
    DeadLetters,
    /// [`DeadLetterQueue::depth`](crate::DeadLetterQueue::depth).
    Depth,
    /// [`DeadLetterQueue::peek`](crate::DeadLetterQueue::peek).
    Peek,
    /// [`DeadLetterQueue::redrive`](crate::DeadLetterQueue::redrive).
    Redrive,
    /// [`DeadLetterQueue::discard`](crate::DeadLetterQueue::discard).
    Discard,
    /// [`Transport::backlog`](crate::Transport::backlog).
    Backlog,
    /// [`Transport::close`](crate::Transport::close).
    Close,
    /// [`Transport::provision`](crate::Transport::provision), and the
    /// checks of a transport that does not provision.
    Provision,
    /// Registering a URL scheme.
    Register,
    /// Writing a message to an outbox.
    Enqueue,
    /// A step of an outbox or idempotency store on its database (claim,
    /// release, migrate, ...; the error's message names the step).
    Store,
    /// Decoding a typed event from a message.
    Decode,
}

impl Operation {
    /// The name in errors, spans and metric labels (`"publish"`, `"ack"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Connect => "connect",
            Operation::Publish => "publish",
            Operation::PublishBatch => "publish_batch",
            Operation::Subscribe => "subscribe",
            Operation::Receive => "receive",
            Operation::Ack => "ack",
            Operation::Nack => "nack",
            Operation::DeadLetter => "dead_letter",
            Operation::Extend => "extend",
            Operation::DeadLetters => "dead_letters",
            Operation::Depth => "depth",
            Operation::Peek => "peek",
            Operation::Redrive => "redrive",
            Operation::Discard => "discard",
            Operation::Backlog => "backlog",
            Operation::Close => "close",
            Operation::Provision => "provision",
            Operation::Register => "register",
            Operation::Enqueue => "enqueue",
            Operation::Store => "store",
            Operation::Decode => "decode event",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
