//! Batched `DeleteMessage`: a subscription's acks go out as
//! `DeleteMessageBatch` requests of up to 10 receipts.
//!
//! No ack waits for a batch to fill: the first ack is sent at once, and the
//! acks that arrive while requests are in flight are collected into the next
//! request. Under load that makes batches of 10 (a tenth of the requests, and
//! of the SQS bill), with no added latency when acks are rare. Each ack still
//! returns only once SQS answered for its own entry.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use transport_core::{Error, ErrorKind, Result};

use crate::core::{err, kind_of_code, map_sdk};

/// SQS takes at most 10 entries per batch request.
pub(crate) const MAX_BATCH: usize = 10;
/// Batch requests in flight at once per queue.
const CONCURRENT_BATCHES: usize = 4;

struct Pending {
    receipt: String,
    done: oneshot::Sender<Result<()>>,
}

/// Deletes for one queue. Dropping it (with the subscription and its
/// deliveries) ends its task once the queued deletes are sent.
pub(crate) struct Deleter {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Deleter {
    /// Start the batching task on the current runtime.
    pub(crate) fn start(sqs: aws_sdk_sqs::Client, queue_url: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(sqs, queue_url, rx));
        Deleter { tx }
    }

    /// Delete the message of `receipt`; returns once SQS answered for it.
    pub(crate) async fn delete(&self, receipt: String) -> Result<()> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Pending { receipt, done })
            .map_err(|_| err(ErrorKind::Closed, "the subscription's delete task stopped"))?;
        answer
            .await
            .map_err(|_| err(ErrorKind::ConnectionLost, "the delete request was abandoned"))?
    }
}

async fn run(sqs: aws_sdk_sqs::Client, url: String, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
    loop {
        // Wait for a free request slot first: acks arriving meanwhile queue
        // up and leave together.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (sqs, url) = (sqs.clone(), url.clone());
        tokio::spawn(async move {
            let receipts: Vec<&str> = batch.iter().map(|p| p.receipt.as_str()).collect();
            let results = delete_batch(&sqs, &url, &receipts).await;
            for (p, r) in batch.into_iter().zip(results) {
                let r = r.map_err(|e| copy(&e));
                let _ = p.done.send(r);
            }
            drop(slot);
        });
    }
}

/// Delete up to [`MAX_BATCH`] receipts in one request; one result per
/// receipt, in order.
pub(crate) async fn delete_batch(sqs: &aws_sdk_sqs::Client, url: &str, receipts: &[&str]) -> Vec<Result<()>> {
    debug_assert!(receipts.len() <= MAX_BATCH);
    let entries = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(*r)
                .build()
        })
        .collect::<std::result::Result<Vec<_>, _>>();
    let entries = match entries {
        Ok(e) => e,
        Err(e) => {
            return receipts
                .iter()
                .map(|_| Err(err(ErrorKind::InvalidArgument, &e)))
                .collect()
        }
    };
    let out = match sqs
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            let e = map_sdk(e);
            return receipts.iter().map(|_| Err(copy(&e))).collect();
        }
    };
    let mut results: Vec<Result<()>> = receipts
        .iter()
        .map(|_| Err(err(ErrorKind::Backend, "SQS did not answer for this entry")))
        .collect();
    for ok in out.successful() {
        if let Some(r) = ok.id().parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            *r = Ok(());
        }
    }
    for failed in out.failed() {
        if let Some(r) = failed.id().parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            let why = format!("{}: {}", failed.code(), failed.message().unwrap_or(""));
            *r = Err(err(kind_of_code(failed.code()), why).with_retryable(!failed.sender_fault()));
        }
    }
    results
}

/// Delete any number of receipts, [`MAX_BATCH`] per request; the first error.
pub(crate) async fn delete_all(sqs: &aws_sdk_sqs::Client, url: &str, receipts: &[&str]) -> Result<()> {
    for chunk in receipts.chunks(MAX_BATCH) {
        if let Some(e) = delete_batch(sqs, url, chunk).await.into_iter().find_map(|r| r.err()) {
            return Err(e);
        }
    }
    Ok(())
}

/// The same error for another entry (`Error` is not `Clone`:
/// it may hold a source).
fn copy(e: &Error) -> Error {
    err(e.kind(), e.message()).with_retryable(e.is_retryable())
}
