//! Auto-batching (opt-in, [`crate::config::BatchingConfig`]): async sends to one topic are
//! gathered for up to the linger time, a byte size or a message count, and sent as one
//! SEND_BATCH_MESSAGE. Each message keeps its own future and its own result: its id, its
//! offset message id, and its queue offset inside the batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use mq_client_api::message::{
    BatchError, IdClock, SendTraits, UniqueIdGenerator, put_batch_record,
};
use mq_client_api::validate::{ValidationError, validate_body, validate_topic};
use mq_client_api::{Message, SendResult};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::BatchingConfig;
use crate::error::{ProducerError, SendError};
use crate::hook::CommunicationMode;
use crate::producer::{Engine, Padded, Payload, Target};

/// A batched message's own outcome: its place in its batch's answer, or its failure.
pub(crate) type Outcome = Result<Stored, Failed>;

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
    pub(crate) fn result(&self) -> SendResult {
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

/// Why a batch failed, told to each of its messages: each sender hands its own message back
/// with it.
#[derive(Debug)]
pub(crate) struct Failed {
    /// Messages in the batch.
    size: usize,
    cause: Arc<ProducerError>,
}

/// An open batch: its body and its ids, written as messages join. The messages stay with
/// their senders, which free them (or hand them back) on their own threads; the batch's
/// task, often on another worker thread, never touches them.
#[derive(Debug)]
struct Open {
    id: u64,
    topic: String,
    wait: bool,
    /// The batch's records, one per message.
    body: BytesMut,
    /// The messages' ids, comma-joined as the batch's send result gives them.
    ids: String,
    waiters: Vec<Waiter>,
    /// The messages' bodies, in bytes (what `max_bytes` bounds).
    bytes: usize,
    deadline: Instant,
    /// The time part of the ids made for the batch's messages: read when it opens, and again
    /// for a message that comes [`CLOCK_FOR`] later or more.
    clock: IdClock,
    /// The deadline of the message the clock was read for: a deadline is the send's start
    /// plus the producer's one send timeout, so later deadlines come from later sends. (A send
    /// that waited for room joins late with an early deadline; the batch's linger still bounds
    /// how long its clock serves.)
    clock_at: Instant,
}

/// How long a batch's clock serves its ids. An id is its time and a 16-bit counter: an old
/// time used while the counter goes round would make an id again, and that takes 65 536
/// sends, some 65 ms at a million a second.
const CLOCK_FOR: std::time::Duration = std::time::Duration::from_millis(1);

/// Why a message did not join a batch.
enum Refused {
    /// Its record, of `size` bytes, would take the batch's body past the largest message.
    Full { size: usize },
    /// The message itself broke a batch rule.
    Rule(BatchError),
}

impl Open {
    /// Adds `msg`'s record and id (giving it an id first if it has none); whether the batch
    /// is full with it. A refused message leaves the batch as it was.
    fn add(
        &mut self,
        rules: &Rules<'_>,
        msg: &mut Message,
        has_id: bool,
        waiter: Waiter,
        deadline: Instant,
    ) -> Result<bool, (Refused, Waiter)> {
        let (body_at, ids_at) = (self.body.len(), self.ids.len());
        if !self.ids.is_empty() {
            self.ids.push(',');
        }
        if deadline >= self.clock_at + CLOCK_FOR {
            self.clock = rules.ids.clock(SystemTime::now());
            self.clock_at = deadline;
        }
        let ids = &mut self.ids;
        // Looked up only when the sender's one pass over the properties saw it.
        let known = if has_id { msg.uniq_key() } else { None };
        match known {
            Some(id) => ids.push_str(id),
            // Made on the stack, copied into the list and the properties.
            None => rules.ids.next_id_on(self.clock, |id| {
                ids.push_str(id);
                msg.set_uniq_key(id);
            }),
        }
        let refused = match put_batch_record(msg, &mut self.body) {
            Ok(_) if self.body.len() <= rules.max_message_size => None,
            Ok(size) => Some(Refused::Full { size }),
            Err(e) => Some(Refused::Rule(e)),
        };
        if let Some(refused) = refused {
            self.body.truncate(body_at);
            self.ids.truncate(ids_at);
            return Err((refused, waiter));
        }
        self.bytes += msg.body.len();
        self.deadline = self.deadline.min(deadline);
        self.waiters.push(waiter);
        Ok(self.bytes >= rules.config.max_bytes || self.waiters.len() >= rules.config.max_messages)
    }
}

/// What a batch is made by: the producer's id generator and largest message, and the
/// batching settings.
struct Rules<'a> {
    ids: &'a UniqueIdGenerator,
    max_message_size: usize,
    config: BatchingConfig,
}

/// The open batches: messages of one batch agree on their topic and on their wait-store flag.
///
/// Each worker thread fills batches of its own ([`SHARDS`] sets, by thread): messages sent from
/// two threads at once do not write the same lock and lists, which would move their cache
/// lines between the two cores on every message.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    shards: [Padded<Mutex<Batches>>; SHARDS],
}

/// How many sets of open batches an accumulator keeps.
const SHARDS: usize = 4;

impl Accumulator {
    /// The open batches of the calling thread.
    fn shard(&self) -> (usize, &Mutex<Batches>) {
        thread_local! {
            static SHARD: usize = {
                static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS
            };
        }
        // Below SHARDS: taken modulo it once, when the thread first asks.
        let i = SHARD.with(|s| *s);
        (i, &self.shards[i])
    }
}

#[derive(Debug, Default)]
struct Batches {
    /// By topic, found with the message's own topic (no key is made per message); a topic
    /// stays only while it has an open batch.
    by_topic: HashMap<String, Slots, foldhash::fast::RandomState>,
    next_id: u64,
    /// How many messages, and body bytes, the last closed batch held: a new batch has room
    /// for as many, so that its lists do not grow (and copy what they hold) as messages join.
    last_len: usize,
    last_bytes: usize,
}

/// A topic's open batches, one per wait-store flag (`false`, `true`).
#[derive(Debug, Default)]
struct Slots([Option<Open>; 2]);

impl Batches {
    /// A new, empty batch of `topic` for `wait`.
    fn open(&mut self, rules: &Rules<'_>, topic: &str, wait: bool, deadline: Instant) -> Open {
        self.next_id += 1;
        let room = self.last_len.min(rules.config.max_messages);
        Open {
            id: self.next_id,
            topic: topic.to_owned(),
            wait,
            body: BytesMut::with_capacity(self.last_bytes.min(rules.max_message_size)),
            ids: String::with_capacity(room * 33),
            waiters: Vec::with_capacity(room),
            bytes: 0,
            deadline,
            clock: rules.ids.clock(SystemTime::now()),
            clock_at: deadline,
        }
    }

    /// Takes `topic`'s open batch for `wait` when it is batch `id` (its linger timer: the
    /// batch may have filled and left already).
    fn take(&mut self, topic: &str, wait: bool, id: u64) -> Option<Open> {
        let slots = self.by_topic.get_mut(topic)?;
        let slot = &mut slots.0[usize::from(wait)];
        let batch = slot.take_if(|b| b.id == id)?;
        self.closed(&batch);
        Some(batch)
    }

    /// Takes `topic`'s open batch for `wait`, full.
    fn take_full(&mut self, topic: &str, wait: bool) -> Option<Open> {
        let batch = self.by_topic.get_mut(topic)?.0[usize::from(wait)].take()?;
        self.closed(&batch);
        Some(batch)
    }

    /// Bookkeeping for `batch`, just taken out of its topic's slots: the topic is forgotten
    /// when it has no open batch left.
    fn closed(&mut self, batch: &Open) {
        if self
            .by_topic
            .get(&batch.topic)
            .is_some_and(|s| s.0.iter().all(Option::is_none))
        {
            self.by_topic.remove(&batch.topic);
        }
        self.last_len = batch.waiters.len();
        self.last_bytes = batch.body.len();
    }
}

/// What joining a batch led to: batches to send now (full), a linger timer to start (for a
/// new batch, by its topic and id).
#[derive(Default)]
struct Joined {
    /// The batch the message joined, or the one it found with no room for its record.
    full: Option<Open>,
    /// The batch the message opened, when it is full at once.
    next_full: Option<Open>,
    opened: Option<(String, u64)>,
}

/// Adds `msg`'s record to its topic's open batch (opening one, with a linger timer, if
/// needed) and returns the receiver of its outcome. The message stays with the caller: it
/// gets its id here, and is handed back if its batch fails.
///
/// # Errors
/// The producer is not running, or the message breaks a rule (validation, batch rules, size):
/// it joined no batch then.
pub(crate) fn enqueue(
    engine: &Arc<Engine>,
    config: BatchingConfig,
    msg: &mut Message,
    traits: SendTraits,
    deadline: Instant,
) -> Result<oneshot::Receiver<Outcome>, ProducerError> {
    engine.ensure_running()?;
    validate_body(msg, engine.config.max_message_size)?;
    let wait = traits.wait;
    let (tx, rx) = oneshot::channel();
    let rules = Rules {
        ids: &engine.ids,
        max_message_size: engine.config.max_message_size,
        config,
    };
    // Written in place: a batch is large to move, and most messages close none.
    let mut joined = Joined::default();
    let (shard, batches) = engine.accumulator.shard();
    join(
        &mut batches.lock(),
        &rules,
        msg,
        traits,
        tx,
        deadline,
        &mut joined,
    )?;
    let send = |batch: Open| {
        let e = Arc::clone(engine);
        engine.tasks.spawn(async move { flush(&e, batch).await });
    };
    if let Some(batch) = joined.full {
        send(batch);
    }
    if let Some(batch) = joined.next_full {
        send(batch);
    }
    if let Some((topic, id)) = joined.opened {
        // The linger timer of a new batch: send it when the time is up, unless it filled first.
        let e = Arc::clone(engine);
        engine.tasks.spawn(async move {
            tokio::time::sleep(config.linger).await;
            let batch = e.accumulator.shards[shard].lock().take(&topic, wait, id);
            if let Some(batch) = batch {
                flush(&e, batch).await;
            }
        });
    }
    Ok(rx)
}

/// [`enqueue`] under the accumulator's lock.
fn join(
    b: &mut Batches,
    rules: &Rules<'_>,
    msg: &mut Message,
    traits: SendTraits,
    tx: Waiter,
    deadline: Instant,
    joined: &mut Joined,
) -> Result<(), ProducerError> {
    let wait = traits.wait;
    let slot = usize::from(wait);
    let tx = match b
        .by_topic
        .get_mut(msg.topic.as_str())
        .and_then(|slots| slots.0[slot].as_mut())
    {
        Some(batch) => match batch.add(rules, msg, traits.has_id, tx, deadline) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                joined.full = b.take_full(&msg.topic, wait);
                return Ok(());
            }
            // The open batch has no room for this record: it goes as it is, and the message
            // opens the next one.
            Err((Refused::Full { .. }, tx)) => {
                joined.full = b.take_full(&msg.topic, wait);
                tx
            }
            Err((Refused::Rule(e), _)) => return Err(e.into()),
        },
        None => {
            // The batch's topic is checked once, when it opens.
            validate_topic(&msg.topic)?;
            tx
        }
    };
    let mut batch = b.open(rules, &msg.topic, wait, deadline);
    match batch.add(rules, msg, traits.has_id, tx, deadline) {
        Ok(true) => {
            b.last_len = batch.waiters.len();
            b.last_bytes = batch.body.len();
            joined.next_full = Some(batch);
        }
        Ok(false) => {
            let topic = batch.topic.clone();
            joined.opened = Some((topic.clone(), batch.id));
            b.by_topic.entry(topic).or_default().0[slot] = Some(batch);
        }
        // Alone in a batch, a record that overflows it is too large to send.
        Err((Refused::Full { size }, _)) => {
            let max = rules.max_message_size;
            return Err(ValidationError::BodyTooLarge { size, max }.into());
        }
        Err((Refused::Rule(e), _)) => return Err(e.into()),
    }
    Ok(())
}

/// What a waiting async send gets: its result, its batch's failure, or
/// [`ProducerError::ShutDown`] when the accumulator went away with its runtime. `msg` is the
/// sender's own message: handed back on failure, freed here otherwise.
pub(crate) fn outcome(
    received: Result<Outcome, oneshot::error::RecvError>,
    msg: Message,
) -> Result<SendResult, SendError> {
    match received {
        Ok(Ok(stored)) => Ok(stored.result()),
        Ok(Err(failed)) => {
            let e = ProducerError::BatchFailed {
                topic: msg.topic.clone(),
                size: failed.size,
                cause: failed.cause,
            };
            Err(SendError::new(e, msg))
        }
        Err(_) => Err(SendError::new(ProducerError::ShutDown, msg)),
    }
}

async fn flush(engine: &Arc<Engine>, batch: Open) {
    let size = batch.waiters.len();
    let mut payload = Payload::Batch {
        topic: batch.topic,
        body: batch.body.freeze(),
        ids: batch.ids,
        wait: batch.wait,
    };
    // Each message took its room in the in-flight bounds when it joined: the batch is not
    // admitted again (with room for one more message than it holds, or none left, it would
    // wait for its own messages' room until its deadline).
    let outcome = engine
        .run(
            &mut payload,
            &Target::Auto,
            CommunicationMode::Async,
            batch.deadline,
        )
        .await
        .and_then(|r| r.ok_or(ProducerError::ShutDown));
    match outcome {
        Ok(r) => {
            let spans = spans(&r.msg_id, &r.offset_msg_id, size);
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
            // Each sender hands its own message back with the batch's cause.
            let cause = Arc::new(e);
            for waiter in batch.waiters {
                let cause = Arc::clone(&cause);
                let _ = waiter.send(Err(Failed { size, cause }));
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

    /// Batches of up to 8 messages and 1 MiB.
    fn rules(ids: &UniqueIdGenerator) -> Rules<'_> {
        Rules {
            ids,
            max_message_size: 1 << 20,
            config: BatchingConfig::new(Duration::from_millis(5), 1 << 20, 8),
        }
    }

    /// Adds `msg` to `batch`, which it joins without filling it.
    fn joins(batch: &mut Open, rules: &Rules<'_>, msg: &mut Message, deadline: Instant) {
        let (tx, _rx) = oneshot::channel();
        let has_id = msg.send_traits().has_id;
        assert!(matches!(
            batch.add(rules, msg, has_id, tx, deadline),
            Ok(false)
        ));
    }

    /// A topic is kept while one of its two batches is open and forgotten after: a producer
    /// that sends to ever new topics does not grow. A linger timer whose batch already left
    /// (the id is another batch's now) takes nothing.
    #[test]
    fn a_topic_is_forgotten_when_its_last_open_batch_closes() {
        let generator = UniqueIdGenerator::new(None);
        let rules = rules(&generator);
        let deadline = Instant::now();
        let mut b = Batches::default();
        let mut ids = Vec::new();
        for wait in [false, true] {
            let mut batch = b.open(&rules, "T", wait, deadline);
            for i in 0..3 {
                let mut msg = Message::new("T", format!("m{i}")).with_wait_store_msg_ok(wait);
                joins(&mut batch, &rules, &mut msg, deadline);
            }
            ids.push(batch.id);
            b.by_topic.entry("T".into()).or_default().0[usize::from(wait)] = Some(batch);
        }
        assert!(
            b.take("T", false, ids[1]).is_none(),
            "another batch's timer"
        );
        let first = b.take("T", false, ids[0]).map(|b| b.waiters.len());
        assert_eq!(first, Some(3));
        assert!(
            b.by_topic.contains_key("T"),
            "its other batch is still open"
        );
        assert!(b.take("T", false, ids[0]).is_none(), "taken already");
        assert!(b.take("T", true, ids[1]).is_some());
        assert!(b.by_topic.is_empty());
        // The next batch has room for as many messages as the last one held.
        assert_eq!(b.open(&rules, "T", false, deadline).waiters.capacity(), 3);
    }

    /// A message that has its id keeps it in the batch (a send that is tried again); one
    /// without is given one, set on the message too.
    #[test]
    fn a_message_keeps_the_id_it_has_and_gets_one_otherwise() {
        let generator = UniqueIdGenerator::new(None);
        let rules = rules(&generator);
        let deadline = Instant::now();
        let mut batch = Batches::default().open(&rules, "T", true, deadline);
        let mut sent = Message::new("T", "again");
        sent.set_uniq_key("7F0000010000000000000000000000AB");
        let mut fresh = Message::new("T", "new");
        for msg in [&mut sent, &mut fresh] {
            joins(&mut batch, &rules, msg, deadline);
        }
        let fresh_id = fresh.uniq_key().expect("a new id is set on the message");
        assert_ne!(fresh_id, "7F0000010000000000000000000000AB");
        assert_eq!(
            batch.ids,
            format!("7F0000010000000000000000000000AB,{fresh_id}")
        );
    }

    /// A batch's clock is read again for a message that comes a millisecond or more after the
    /// one it was read for: a clock kept for long would make ids again once the counter went
    /// round.
    #[test]
    fn a_batch_reads_its_clock_again_after_a_millisecond() {
        let generator = UniqueIdGenerator::new(None);
        let rules = rules(&generator);
        let opened = Instant::now();
        let mut b = Batches::default();
        let mut batch = b.open(&rules, "T", false, opened);
        for (at, read_for) in [(0, 0), (999, 0), (1000, 1000), (1500, 1000), (2100, 2100)] {
            let mut msg = Message::new("T", "m");
            joins(
                &mut batch,
                &rules,
                &mut msg,
                opened + Duration::from_micros(at),
            );
            assert_eq!(
                batch.clock_at,
                opened + Duration::from_micros(read_for),
                "message at {at} us"
            );
        }
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
