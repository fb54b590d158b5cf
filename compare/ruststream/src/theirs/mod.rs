//! RustStream's side (crates.io `ruststream` 0.7.7, `ruststream-nats` 0.7.1),
//! written without its macros. Every call below was read in the crate
//! sources of those versions (paths relative to each crate's root in
//! ~/.cargo/registry/src/*/), never guessed:
//!
//! - the handler: `Handle<In>` (ruststream-runtime 0.7.7,
//!   src/handle/mod.rs:122), `fn handle(&self, input: &In, outs: &O,
//!   ctx: &mut Context<'_, C, S>) -> impl Future<Output = Verdict<In, R>>`,
//!   `Ok(())` acking the delivery and `Err(HandlerOutcome)` settling it
//!   otherwise;
//! - the raw-bytes input, no codec: a `Deserialized` view plus its `Input`
//!   spelling (src/handle/axis.rs:149 and :198), exactly as
//!   ruststream 0.7.7 examples/manual/byte_lanes.rs writes `Frame`;
//! - the bare loop: `Subscriber::stream` (ruststream-core 0.7.7,
//!   src/subscriber.rs) and `IncomingMessage::payload` / `ack`
//!   (src/message.rs:547, :706);
//! - publishing: `Publisher::publish(OutgoingMessage, Option<&Options>)`
//!   (ruststream-core 0.7.7, src/publisher.rs:502; the future is `Send`),
//!   with `OutgoingMessage::produced(name, BytesMut)` (src/message.rs:481)
//!   handing over the buffer, which both brokers' publishers take
//!   (`type Payload = Take`).
//!
//! RustStream has no batch publish: neither `Publisher` nor either broker's
//! publisher has one (its batch support is on the consuming side, and for
//! replies a handler returns). A batch of 100 is therefore 100 `publish`
//! calls driven at once (`try_join_all`) and awaited together, the nearest
//! equivalent of ours (on NATS: 100 messages on the wire, then 100 PubAcks).

pub mod memory;
pub mod nats;

use std::convert::Infallible;
use std::future::{ready, Future};
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt;
use ruststream::prelude::{
    Context, Deserialized, Handle, HandlerOutcome, IncomingMessage, Input, Publisher, SoloDeserialized,
};
use ruststream::{OutgoingMessage, Subscriber, Take};

use crate::probe::Probe;

/// The delivery's bytes, borrowed from the broker's buffer: the byte lane,
/// on which no codec runs (ruststream 0.7.7 examples/manual/byte_lanes.rs).
pub struct Frame<'a>(&'a [u8]);

impl Deserialized for Frame<'_> {
    type Output<'a> = Frame<'a>;
    type Error = Infallible;

    fn from_payload(payload: &[u8]) -> Result<Frame<'_>, Self::Error> {
        Ok(Frame(payload))
    }
}

impl Input for Frame<'_> {
    type Axis = SoloDeserialized<Frame<'static>>;
}

/// The handler: records the message and acks it (`Ok(())`), as ours does
/// by returning `Ok(())` from its `run_fn` closure.
pub struct Record(pub Arc<Probe>);

impl<'p> Handle<Frame<'p>> for Record {
    fn handle(
        &self,
        frame: &Frame<'p>,
        _outs: &(),
        _ctx: &mut Context<'_>,
    ) -> impl Future<Output = Result<(), HandlerOutcome>> {
        self.0.received(frame.0);
        ready(Ok(()))
    }
}

/// The worker policy for `concurrency` handler calls at once: `None` keeps
/// RustStream's default, sequential dispatch (one call at a time,
/// ruststream-runtime 0.7.7 src/settings.rs:128), `Some(n)` is
/// `.workers(n)` (src/settings.rs:586, a pool of n).
pub fn workers(concurrency: usize) -> Option<NonZeroUsize> {
    NonZeroUsize::new(concurrency).filter(|n| n.get() > 1)
}

/// Publishes the run's messages to `name`, one at a time or `batch` at once
/// (see the module notes), held back by the probe's window like ours;
/// `options(seq)` gives each publish its options (on NATS: the
/// `Nats-Msg-Id` ours always sends).
pub async fn publish_all<P, O>(publisher: P, name: String, probe: Arc<Probe>, batch: usize, options: O)
where
    P: Publisher<Payload = Take> + 'static,
    O: Fn(u64) -> Option<P::Options>,
{
    let n = probe.n();
    let mut sent = 0;
    while sent < n {
        let k = (batch as u64).min(n - sent);
        if k == 1 {
            let message = OutgoingMessage::produced(&name, probe.payload(sent));
            let opts = options(sent);
            publisher.publish(message, opts.as_ref()).await.expect("published");
        } else {
            let opts: Vec<Option<P::Options>> = (sent..sent + k).map(&options).collect();
            let publishes = (sent..sent + k)
                .zip(&opts)
                .map(|(seq, o)| publisher.publish(OutgoingMessage::produced(&name, probe.payload(seq)), o.as_ref()));
            futures::future::try_join_all(publishes).await.expect("published");
        }
        sent += k;
        probe.hold(sent).await;
    }
}

/// The bare loop: receive, record, ack, `n` times.
pub async fn consume<S: Subscriber>(subscriber: &mut S, probe: &Probe) {
    let mut stream = pin!(subscriber.stream());
    for _ in 0..probe.n() {
        let message = stream
            .next()
            .await
            .expect("the subscription ends only at shutdown")
            .expect("received");
        probe.received(message.payload());
        message.ack().await.expect("acked");
    }
}
