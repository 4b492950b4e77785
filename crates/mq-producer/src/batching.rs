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

/// A batched message's own outcome: its place in its batch's answer, or its failure.
pub(crate) type Outcome = Result<Stored, SendError>;

/// A batch's answer, shared by its messages.
#[derive(Debug)]
struct Answer {
    /// The batch's result: its ids comma-joined, the queue offset of its first message.
    result: SendResult,
    /// Each message's id and offset id: byte ranges of the joined lists.
    spans: Vec<[(u32, u32); 2]>,
}

/// A batched message stored: the `index`th of its batch's answer.
///
/// Its own [`SendResult`] is made from the answer by the task that awaits it, not by the
/// batch's task: the result's strings are then allocated on the thread that frees them. Made
/// by the batch's task and freed on another worker thread, they went through the
/// allocator's cross-thread free path, which led a profile of a run where the client cost
/// twice the CPU per message.
#[derive(Debug)]
pub(crate) struct Stored {
    answer: Arc<Answer>,
    index: usize,
}

impl Stored {
    /// This message's own result: its ids, its queue offset inside the batch.
    fn result(&self) -> SendResult {
        let r = &self.answer.result;
        let [id, offset] = self
            .answer
            .spans
            .get(self.index)
            .copied()
            .unwrap_or_default();
        // Spans are cut at ASCII commas: char boundaries. A list shorter than the batch
        // leaves its last messages an empty id.
        let text = |list: &str, (start, end): (u32, u32)| {
            list.get(start as usize..end as usize)
                .unwrap_or_default()
                .to_owned()
        };
        SendResult {
            status: r.status,
            msg_id: text(&r.msg_id, id),
            offset_msg_id: text(&r.offset_msg_id, offset),
            message_queue: r.message_queue.clone(),
            queue_offset: r.queue_offset + self.index as i64,
            transaction_id: r.transaction_id.clone(),
            region_id: r.region_id.clone(),
            trace_on: r.trace_on,
            // Only single timer messages have one.
            recall_handle: None,
        }
    }
}

/// The byte ranges of the first `n` items of the comma-joined `ids` and `offsets`: found
/// once for the batch (with `memchr`; `str::split` cost hundreds of instructions an item).
fn spans(ids: &str, offsets: &str, n: usize) -> Vec<[(u32, u32); 2]> {
    let mut ids = ranges(ids);
    let mut offsets = ranges(offsets);
    (0..n)
        .map(|_| {
            [
                ids.next().unwrap_or_default(),
                offsets.next().unwrap_or_default(),
            ]
        })
        .collect()
}

type Waiter = oneshot::Sender<Outcome>;

#[derive(Debug)]
struct Open {
    id: u64,
    msgs: Vec<Message>,
    waiters: Vec<Waiter>,
    bytes: usize,
    deadline: Instant,
}

impl Open {
    /// Adds a message; whether the batch is full with it.
    fn add(
        &mut self,
        msg: Message,
        waiter: Waiter,
        deadline: Instant,
        config: &BatchingConfig,
    ) -> bool {
        self.bytes += msg.body.len();
        self.deadline = self.deadline.min(deadline);
        self.msgs.push(msg);
        self.waiters.push(waiter);
        self.bytes >= config.max_bytes || self.msgs.len() >= config.max_messages
    }
}

/// The open batches: messages of one batch agree on their topic and on their wait-store flag.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    batches: Mutex<Batches>,
}

#[derive(Debug, Default)]
struct Batches {
    /// By topic, found with the message's own topic (no key is made per message); a topic
    /// stays only while it has an open batch.
    by_topic: HashMap<String, Slots, foldhash::fast::RandomState>,
    next_id: u64,
    /// How many messages the last closed batch held: a new batch has room for as many, so
    /// that its lists do not grow (and copy what they hold) as messages join.
    last_len: usize,
}

/// A topic's open batches, one per wait-store flag (`false`, `true`).
#[derive(Debug, Default)]
struct Slots([Option<Open>; 2]);

impl Batches {
    /// A new, empty batch.
    fn open(&mut self, deadline: Instant, config: &BatchingConfig) -> Open {
        self.next_id += 1;
        let room = self.last_len.min(config.max_messages);
        Open {
            id: self.next_id,
            msgs: Vec::with_capacity(room),
            waiters: Vec::with_capacity(room),
            bytes: 0,
            deadline,
        }
    }

    /// Takes `topic`'s open batch for `wait` when it is batch `id` (its linger timer: the
    /// batch may have filled and left already).
    fn take(&mut self, topic: &str, wait: bool, id: u64) -> Option<Open> {
        let slots = self.by_topic.get_mut(topic)?;
        let slot = &mut slots.0[usize::from(wait)];
        let batch = slot.take_if(|b| b.id == id)?;
        self.closed(topic, &batch);
        Some(batch)
    }

    /// Bookkeeping for `batch`, just taken out of `topic`'s slots: the topic is forgotten
    /// when it has no open batch left.
    fn closed(&mut self, topic: &str, batch: &Open) {
        if self
            .by_topic
            .get(topic)
            .is_some_and(|s| s.0.iter().all(Option::is_none))
        {
            self.by_topic.remove(topic);
        }
        self.last_len = batch.msgs.len();
    }
}

/// Adds `msg` to its topic's open batch (opening one, with a linger timer, if needed) and
/// returns the receiver of its own outcome.
pub(crate) fn enqueue(
    engine: &Arc<Engine>,
    config: BatchingConfig,
    msg: Message,
    deadline: Instant,
) -> oneshot::Receiver<Outcome> {
    let (tx, rx) = oneshot::channel();
    if let Err(e) = engine.ensure_running() {
        let _ = tx.send(Err(SendError::new(e, msg)));
        return rx;
    }
    let wait = msg.wait_store_msg_ok();
    let slot = usize::from(wait);
    // The batch to send now (it is full), and the linger timer to start (a new batch).
    let (full, opened) = {
        let mut batches = engine.accumulator.batches.lock();
        let b = &mut *batches;
        let joined = match b.by_topic.get_mut(msg.topic.as_str()) {
            Some(slots) => match &mut slots.0[slot] {
                Some(batch) => Ok(batch
                    .add(msg, tx, deadline, &config)
                    .then(|| slots.0[slot].take())
                    .flatten()),
                None => Err((msg, tx)),
            },
            None => Err((msg, tx)),
        };
        match joined {
            Ok(full) => {
                if let Some(batch) = &full
                    && let Some(first) = batch.msgs.first()
                {
                    b.closed(&first.topic, batch);
                }
                (full, None)
            }
            Err((msg, tx)) => {
                // A new batch: its topic is copied once, for its linger timer.
                let topic = msg.topic.clone();
                let mut batch = b.open(deadline, &config);
                if batch.add(msg, tx, deadline, &config) {
                    b.last_len = batch.msgs.len();
                    (Some(batch), None)
                } else {
                    let id = batch.id;
                    b.by_topic.entry(topic.clone()).or_default().0[slot] = Some(batch);
                    (None, Some((topic, id)))
                }
            }
        }
    };
    if let Some(batch) = full {
        let e = Arc::clone(engine);
        engine.tasks.spawn(async move { flush(&e, batch).await });
    } else if let Some((topic, id)) = opened {
        // The linger timer of a new batch: send it when the time is up, unless it filled first.
        let e = Arc::clone(engine);
        engine.tasks.spawn(async move {
            tokio::time::sleep(config.linger).await;
            let batch = e.accumulator.batches.lock().take(&topic, wait, id);
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
    received: Result<Outcome, oneshot::error::RecvError>,
) -> Result<SendResult, SendError> {
    match received {
        Ok(Ok(stored)) => Ok(stored.result()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SendError::lost(ProducerError::ShutDown)),
    }
}

async fn flush(engine: &Arc<Engine>, mut batch: Open) {
    let topic = batch
        .msgs
        .first()
        .map(|m| m.topic.clone())
        .unwrap_or_default();
    let size = batch.msgs.len();
    let outcome = match engine.batch_payload(&mut batch.msgs) {
        // Each message took its room in the in-flight bounds when it joined: the batch is
        // not admitted again (with room for one more message than it holds, or none left, it
        // would wait for its own messages' room until its deadline).
        Ok(mut payload) => engine
            .run(
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
            let spans = spans(&r.msg_id, &r.offset_msg_id, batch.waiters.len());
            let answer = Arc::new(Answer { result: r, spans });
            for (index, waiter) in batch.waiters.into_iter().enumerate() {
                let stored = Stored {
                    answer: Arc::clone(&answer),
                    index,
                };
                // The caller may have stopped waiting; nothing to tell it then.
                let _ = waiter.send(Ok(stored));
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

/// The byte ranges of the items of the comma-joined `list`.
fn ranges(list: &str) -> impl Iterator<Item = (u32, u32)> + '_ {
    let at = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    let mut start = 0;
    Commas(list).map(move |item| {
        let range = (at(start), at(start + item.len()));
        // The next item starts after this one's comma.
        start += item.len() + 1;
        range
    })
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
    use std::time::Duration;

    use super::*;

    /// A topic is kept while one of its two batches is open and forgotten after: a producer
    /// that sends to ever new topics does not grow. A linger timer whose batch already left
    /// (the id is another batch's now) takes nothing.
    #[test]
    fn a_topic_is_forgotten_when_its_last_open_batch_closes() {
        let config = BatchingConfig::new(Duration::from_millis(5), 1 << 20, 8);
        let deadline = Instant::now();
        let mut b = Batches::default();
        let mut ids = Vec::new();
        for wait in [false, true] {
            let mut batch = b.open(deadline, &config);
            for i in 0..3 {
                let (tx, _rx) = oneshot::channel();
                let msg = Message::new("T", format!("m{i}")).with_wait_store_msg_ok(wait);
                assert!(!batch.add(msg, tx, deadline, &config));
            }
            ids.push(batch.id);
            b.by_topic.entry("T".into()).or_default().0[usize::from(wait)] = Some(batch);
        }
        assert!(
            b.take("T", false, ids[1]).is_none(),
            "another batch's timer"
        );
        let first = b.take("T", false, ids[0]).map(|b| b.msgs.len());
        assert_eq!(first, Some(3));
        assert!(
            b.by_topic.contains_key("T"),
            "its other batch is still open"
        );
        assert!(b.take("T", false, ids[0]).is_none(), "taken already");
        assert!(b.take("T", true, ids[1]).is_some());
        assert!(b.by_topic.is_empty());
        // The next batch has room for as many messages as the last one held.
        assert_eq!(b.open(deadline, &config).msgs.capacity(), 3);
    }

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
            // The spans a batch's messages read their ids by: the same items, then none.
            let cut: Vec<&str> = spans(list, list, items.len() + 1)
                .iter()
                .map(|[(start, end), offset]| {
                    assert_eq!((*start, *end), *offset);
                    &list[*start as usize..*end as usize]
                })
                .collect();
            assert_eq!(cut[..items.len()], *items, "{list:?}");
            assert_eq!(cut[items.len()], "", "{list:?}: past the end");
        }
    }
}
