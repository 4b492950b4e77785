//! Auto-batching (opt-in, [`crate::config::BatchingConfig`]): async sends to one topic are
//! gathered for up to the linger time, a byte size or a message count, and sent as one
//! SEND_BATCH_MESSAGE. Each message keeps its own future and its own result: its id, its
//! offset message id, and its queue offset inside the batch.

use std::collections::HashMap;
use std::sync::Arc;

use mq_client_api::{Message, SendResult};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::BatchingConfig;
use crate::error::{ProducerError, SendError};
use crate::hook::CommunicationMode;
use crate::producer::{Engine, Target};

type Waiter = oneshot::Sender<Result<SendResult, SendError>>;

#[derive(Debug)]
struct Open {
    id: u64,
    msgs: Vec<Message>,
    waiters: Vec<Waiter>,
    bytes: usize,
    deadline: Instant,
}

/// Open batches by (topic, wait-store flag): messages of one batch must agree on both.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    open: Mutex<HashMap<(String, bool), Open>>,
    next_id: Mutex<u64>,
}

/// Adds `msg` to its topic's open batch (opening one, with a linger timer, if needed) and
/// returns the receiver of its own outcome.
pub(crate) fn enqueue(
    engine: &Arc<Engine>,
    config: BatchingConfig,
    msg: Message,
    deadline: Instant,
) -> oneshot::Receiver<Result<SendResult, SendError>> {
    let (tx, rx) = oneshot::channel();
    if let Err(e) = engine.ensure_running() {
        let _ = tx.send(Err(SendError::new(e, msg)));
        return rx;
    }
    let key = (msg.topic.clone(), msg.wait_store_msg_ok());
    let acc = &engine.accumulator;
    let (full, opened) = {
        let mut open = acc.open.lock();
        let mut opened = None;
        let batch = open.entry(key.clone()).or_insert_with(|| {
            let mut id = acc.next_id.lock();
            *id += 1;
            opened = Some(*id);
            Open {
                id: *id,
                msgs: Vec::new(),
                waiters: Vec::new(),
                bytes: 0,
                deadline,
            }
        });
        batch.bytes += msg.body.len();
        batch.deadline = batch.deadline.min(deadline);
        batch.msgs.push(msg);
        batch.waiters.push(tx);
        let full = (batch.bytes >= config.max_bytes || batch.msgs.len() >= config.max_messages)
            .then(|| open.remove(&key))
            .flatten();
        (full, opened)
    };
    if let Some(batch) = full {
        let e = Arc::clone(engine);
        engine.tasks.spawn(async move { flush(&e, batch).await });
    } else if let Some(id) = opened {
        // The linger timer of a new batch: send it when the time is up, unless it filled first.
        let e = Arc::clone(engine);
        engine.tasks.spawn(async move {
            tokio::time::sleep(config.linger).await;
            let batch = {
                let mut open = e.accumulator.open.lock();
                match open.get(&key) {
                    Some(b) if b.id == id => open.remove(&key),
                    _ => None,
                }
            };
            if let Some(batch) = batch {
                flush(&e, batch).await;
            }
        });
    }
    rx
}

/// What a waiting async send gets: its outcome, or [`ProducerError::ShutDown`] when the
/// accumulator went away with its runtime, and the message with it.
pub(crate) fn outcome(
    received: Result<Result<SendResult, SendError>, oneshot::error::RecvError>,
) -> Result<SendResult, SendError> {
    received.unwrap_or_else(|_| Err(SendError::lost(ProducerError::ShutDown)))
}

async fn flush(engine: &Arc<Engine>, mut batch: Open) {
    let topic = batch
        .msgs
        .first()
        .map(|m| m.topic.clone())
        .unwrap_or_default();
    let size = batch.msgs.len();
    let outcome = match engine.batch_payload(&mut batch.msgs) {
        Ok(mut payload) => engine
            .send_core(
                &mut payload,
                &Target::Auto,
                CommunicationMode::Async,
                batch.deadline,
            )
            .await
            .and_then(|r| r.ok_or(ProducerError::ShutDown)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(r) => {
            let mut ids = Commas(&r.msg_id);
            let mut offsets = Commas(&r.offset_msg_id);
            for (i, waiter) in batch.waiters.into_iter().enumerate() {
                // Each message's own ids, not a copy of the batch's joined lists: cloning the
                // whole result per message cost time in the square of the batch's size.
                let one = SendResult {
                    status: r.status,
                    msg_id: ids.next().unwrap_or_default().to_owned(),
                    offset_msg_id: offsets.next().unwrap_or_default().to_owned(),
                    message_queue: r.message_queue.clone(),
                    queue_offset: r.queue_offset + i as i64,
                    transaction_id: r.transaction_id.clone(),
                    region_id: r.region_id.clone(),
                    trace_on: r.trace_on,
                    // Only single timer messages have one.
                    recall_handle: None,
                };
                // The caller may have stopped waiting; nothing to tell it then.
                let _ = waiter.send(Ok(one));
            }
        }
        Err(e) => {
            // Each message goes back to its own sender with the batch's cause.
            let cause = Arc::new(e);
            for (waiter, msg) in batch.waiters.into_iter().zip(batch.msgs) {
                let e = ProducerError::BatchFailed {
                    topic: topic.clone(),
                    size,
                    cause: Arc::clone(&cause),
                };
                let _ = waiter.send(Err(SendError::new(e, msg)));
            }
        }
    }
}

/// The items of a comma-joined list, found with `memchr` (a batch's answer lists hundreds of
/// ids; `str::split` cost hundreds of instructions an item).
struct Commas<'a>(&'a str);

impl<'a> Iterator for Commas<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.0.is_empty() {
            return None;
        }
        // Cut at an ASCII comma: a char boundary.
        let (item, rest) = match memchr::memchr(b',', self.0.as_bytes()) {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (self.0, ""),
        };
        self.0 = rest;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::Commas;

    /// Each message of a batch takes its own item of the answer's lists, empty ones
    /// included; past the end there is none (a waiter then reads an empty id).
    #[test]
    fn a_batch_answer_list_is_cut_at_its_commas() {
        let cases: [(&str, &[&str]); 5] = [
            ("A,B,C", &["A", "B", "C"]),
            ("A,,C", &["A", "", "C"]),
            ("A", &["A"]),
            ("A,B,", &["A", "B"]),
            ("", &[]),
        ];
        for (list, items) in cases {
            assert_eq!(Commas(list).collect::<Vec<_>>(), items, "{list:?}");
        }
    }
}
