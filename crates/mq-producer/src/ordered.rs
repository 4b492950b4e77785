//! [`OrderedSender`]: strict per-key order with many sends in flight.
//!
//! Every message of a key goes to the key's queue (Java-compatible hash) and gets the next
//! sequence number of that queue in the [`SEQUENCE_PROPERTY`] property. Up to `window` sends per
//! queue are written back to back on the queue's connection. When send *k* fails, the sender
//! waits for the sends written after it, then writes *k* and everything after it again, in order,
//! so that the log holds every sequence from *k* on contiguously. The caller sees one outcome per
//! message, in sequence order.
//!
//! Pipelining keeps order only on a broker that stores one connection's sends in arrival order:
//! ours, and Apache RocketMQ with one send thread (4.5.x; later versions default to
//! `sendMessageThreadPoolNums` = min(cores, 4)). The sender checks every result: a sequence
//! stored at a lower queue offset than the one before it overtook it, so it is handled like a
//! failure (written again with everything after it, one at a time), the sender goes on with one
//! send in flight per queue ([`OrderedSender::window`] drops to 1), and
//! [`OrderedSender::reordered`] counts it.
//!
//! The guarantee and its limit: messages written after a failed or overtaken one may be stored
//! twice (once early, once in the rewrite). A consumer keeps order and drops duplicates by
//! accepting, per queue, only the next expected sequence number; the early copies are then
//! skipped. Consumers must therefore be idempotent, or track the sequence property.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use mq_client_api::{ClientApiError, Message, MessageQueue, SendResult};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::attempt::AttemptOutcome;
use crate::error::ProducerError;
use crate::producer::{Payload, Producer, Room};
use crate::select::{HashSelector, QueueSelector, SelectArg};

/// The property carrying a message's per-queue sequence number.
pub const SEQUENCE_PROPERTY: &str = "__MQ_ORDER_SEQ";

type Reply = oneshot::Sender<Result<SendResult, ProducerError>>;

struct Item {
    msg: Message,
    reply: Reply,
}

struct Lane {
    tx: mpsc::UnboundedSender<Item>,
}

/// Ordered, pipelined sends to one topic.
///
/// ```no_run
/// # async fn demo() -> Result<(), mq_producer::ProducerError> {
/// use mq_client_api::Message;
/// use mq_producer::{OrderedSender, Producer, ProducerConfig, SelectArg};
///
/// let producer = Producer::new(ProducerConfig::new("orders_producer", "127.0.0.1:9876"));
/// producer.start().await?;
/// let sender = OrderedSender::new(producer.clone(), "Orders", 8).await?;
/// // Sent in call order per key; up to 8 in flight per queue.
/// let created = sender.send(&SelectArg::Str("order-42".into()), Message::new("Orders", "created"));
/// let paid = sender.send(&SelectArg::Str("order-42".into()), Message::new("Orders", "paid"));
/// let (created, paid) = (created.await?, paid.await?);
/// assert!(created.queue_offset < paid.queue_offset);
/// sender.close().await;
/// producer.shutdown().await;
/// # Ok(()) }
/// ```
///
/// Dropping the last clone lets the messages already queued go out (their futures resolve as
/// usual); the queue workers then end.
#[derive(Clone)]
pub struct OrderedSender {
    inner: Arc<Inner>,
    _owner: Arc<SenderOwner>,
}

/// Closes the lanes when the last handle goes: the workers hold the sender's state, so they
/// would otherwise wait for messages forever.
struct SenderOwner(Arc<Inner>);

impl Drop for SenderOwner {
    fn drop(&mut self) {
        self.0.lanes.lock().clear();
        self.0.tasks.close();
    }
}

struct Inner {
    queues: Vec<MessageQueue>,
    producer: Producer,
    topic: String,
    /// Sends in flight per queue: the caller's window, 1 once a broker reordered.
    window: AtomicUsize,
    lanes: Mutex<HashMap<MessageQueue, Lane>>,
    resent: AtomicU64,
    reordered: AtomicU64,
    tasks: TaskTracker,
}

impl std::fmt::Debug for OrderedSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderedSender")
            .field("topic", &self.inner.topic)
            .field("window", &self.inner.window.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl OrderedSender {
    /// A sender of `topic` through a started `producer`, with up to `window` sends in flight per
    /// queue. Looks the topic's queues up once (creating the topic from TBW102 if the broker
    /// allows it); the key → queue mapping stays fixed for the sender's life.
    ///
    /// # Errors
    /// As for the route lookup of [`Producer::send`].
    pub async fn new(
        producer: Producer,
        topic: impl Into<String>,
        window: usize,
    ) -> Result<Self, ProducerError> {
        let topic = topic.into();
        let engine = producer.engine();
        let instance = engine.running_instance()?;
        let wrapped = instance.config().wrap(&topic);
        let deadline = Instant::now() + engine.config.send_timeout;
        let info = engine.publish_info(&instance, &wrapped, deadline).await?;
        let inner = Arc::new(Inner {
            queues: info.queues.clone(),
            producer,
            topic,
            window: AtomicUsize::new(window.max(1)),
            lanes: Mutex::new(HashMap::new()),
            resent: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            tasks: TaskTracker::new(),
        });
        Ok(Self {
            _owner: Arc::new(SenderOwner(Arc::clone(&inner))),
            inner,
        })
    }

    /// How many times a broker stored a pipelined send after the one behind it (each time the
    /// sender wrote again from the overtaken sequence and went on one send at a time).
    pub fn reordered(&self) -> u64 {
        self.inner.reordered.load(Ordering::Relaxed)
    }

    /// Sends in flight per queue now: the window asked for, or 1 once a broker reordered.
    pub fn window(&self) -> usize {
        self.inner.window.load(Ordering::Relaxed)
    }

    /// How many messages were written again after a failure (each may be a duplicate).
    pub fn resent(&self) -> u64 {
        self.inner.resent.load(Ordering::Relaxed)
    }

    /// Queues `msg` for the key's queue now — the order of calls is the order of sequence
    /// numbers — and returns a future of its outcome. Messages of one key resolve in order.
    /// The message is checked and given its `UNIQ_KEY` now, as by [`Producer::send`]; each
    /// write takes room in the producer's in-flight bounds, runs its send hooks and counts in
    /// its latency statistics.
    ///
    /// # Errors
    /// The future yields what [`Producer::send`] would; [`ProducerError::TopicMismatch`] for a
    /// message of another topic than the sender's; a message whose predecessor on the queue
    /// failed for good yields [`ProducerError::PredecessorFailed`].
    pub fn send(
        &self,
        key: &SelectArg,
        mut msg: Message,
    ) -> impl Future<Output = Result<SendResult, ProducerError>> + Send + 'static + use<> {
        let (reply, rx) = oneshot::channel();
        match self.enqueue(key, &mut msg) {
            Ok(mq) => {
                let mut lanes = self.inner.lanes.lock();
                let lane = lanes.entry(mq.clone()).or_insert_with(|| {
                    let (tx, items) = mpsc::unbounded_channel();
                    let inner = Arc::clone(&self.inner);
                    self.inner.tasks.spawn(lane_worker(inner, mq, items));
                    Lane { tx }
                });
                if let Err(e) = lane.tx.send(Item { msg, reply }) {
                    let _ = e.0.reply.send(Err(ProducerError::ShutDown));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
        async move { rx.await.unwrap_or(Err(ProducerError::ShutDown)) }
    }

    /// Checks `msg` and picks the key's queue.
    fn enqueue(&self, key: &SelectArg, msg: &mut Message) -> Result<MessageQueue, ProducerError> {
        if msg.topic != self.inner.topic {
            return Err(ProducerError::TopicMismatch {
                message_topic: msg.topic.clone(),
                queue_topic: self.inner.topic.clone(),
            });
        }
        self.inner.producer.engine().prepare(msg)?;
        HashSelector
            .select(&self.inner.queues, msg, key)
            .ok_or_else(|| ProducerError::NoQueueSelected {
                topic: self.inner.topic.clone(),
            })
    }

    /// Stops taking messages and waits until every queued one has an outcome.
    pub async fn close(&self) {
        self.inner.lanes.lock().clear();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

struct InFlight {
    /// The message, numbered, as every write of it sends it.
    payload: Payload,
    reply: Reply,
    outcome: oneshot::Receiver<AttemptOutcome>,
    /// Room in the producer's in-flight bounds, until the outcome is handed out.
    _room: Room,
}

/// Writes `payload` to `mq` now (in call order on the connection) through the producer's
/// attempt path, and returns where its outcome will arrive.
async fn write(
    inner: &Inner,
    mq: &MessageQueue,
    payload: &Payload,
    attempt: u32,
    timeout: Duration,
) -> oneshot::Receiver<AttemptOutcome> {
    let engine = inner.producer.engine();
    let deadline = Instant::now() + timeout;
    let written = match engine.running_instance() {
        Ok(instance) => {
            engine
                .begin_attempt(&instance, payload, mq, attempt, deadline)
                .await
        }
        Err(_) => Err(ClientApiError::Remoting(
            mq_remoting::RemotingError::Shutdown,
        )),
    };
    written.unwrap_or_else(|e| {
        // Not written: the failure comes through the same channel.
        debug!(queue = %mq, cause = %e, "ordered send not written");
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(e));
        rx
    })
}

/// What a write's receiver yields once the write is over.
fn outcome_of(
    received: Result<AttemptOutcome, oneshot::error::RecvError>,
) -> Result<SendResult, ClientApiError> {
    match received {
        Ok(Ok(Some(r))) => Ok(r),
        // A callback dropped unrun, or a oneway answer (never asked for here).
        Ok(Ok(None)) | Err(_) => Err(ClientApiError::Remoting(
            mq_remoting::RemotingError::Shutdown,
        )),
        Ok(Err(e)) => Err(e),
    }
}

async fn lane_worker(
    inner: Arc<Inner>,
    mq: MessageQueue,
    mut items: mpsc::UnboundedReceiver<Item>,
) {
    let timeout = inner.producer.config().send_timeout;
    let retries = inner.producer.config().retries;
    let mut seq: u64 = 0;
    let mut window: VecDeque<InFlight> = VecDeque::new();
    let mut attempts_of_front = 0u32;
    let mut front_deadline = Instant::now() + timeout;
    let mut open = true;
    // The queue offset of the last sequence whose outcome was handed out.
    let mut last_offset: Option<i64> = None;
    loop {
        // Fill the window, in order.
        while open && window.len() < inner.window.load(Ordering::Relaxed) {
            let next = if window.is_empty() {
                items.recv().await
            } else {
                match items.try_recv() {
                    Ok(i) => Some(i),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(Item { mut msg, reply }) = next else {
                open = false;
                break;
            };
            // Room first: a message that gets none fails alone, before it has a sequence.
            let engine = inner.producer.engine();
            let admitted = engine
                .admit(&msg.topic, msg.body.len(), Instant::now() + timeout)
                .await;
            let room = match admitted {
                Ok(room) => room,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            };
            seq += 1;
            msg.set_property(SEQUENCE_PROPERTY, seq.to_string());
            if window.is_empty() {
                attempts_of_front = 0;
                front_deadline = Instant::now() + timeout;
            }
            let payload = Payload::Single(msg);
            let outcome = write(&inner, &mq, &payload, 1, timeout).await;
            window.push_back(InFlight {
                payload,
                reply,
                outcome,
                _room: room,
            });
        }
        let Some(front) = window.front_mut() else {
            if open {
                continue;
            }
            return;
        };
        let result = outcome_of((&mut front.outcome).await);
        match result {
            // Stored before its predecessor: the broker does not keep one connection's sends
            // in order. Write it and everything after it again, each only once the one before
            // it is stored, and keep one send in flight from now on.
            Ok(r) if last_offset.is_some_and(|last| r.queue_offset < last) => {
                inner.window.store(1, Ordering::Relaxed);
                if inner.reordered.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(
                        queue = %mq,
                        "the broker stored pipelined sends out of order (Apache RocketMQ with \
                         several send threads); writing again from the one that overtook and \
                         sending one at a time from now on"
                    );
                }
                for later in window.iter_mut().skip(1) {
                    let _ = (&mut later.outcome).await;
                }
                inner
                    .resent
                    .fetch_add(window.len() as u64, Ordering::Relaxed);
                for w in window.iter_mut() {
                    let stored = write(&inner, &mq, &w.payload, 2, timeout).await.await;
                    let (done, outcome) = oneshot::channel();
                    let _ = done.send(stored.unwrap_or(Err(ClientApiError::Remoting(
                        mq_remoting::RemotingError::Shutdown,
                    ))));
                    w.outcome = outcome;
                }
            }
            Ok(r) => {
                last_offset = Some(r.queue_offset);
                if let Some(done) = window.pop_front() {
                    let _ = done.reply.send(Ok(r));
                }
                attempts_of_front = 0;
                front_deadline = Instant::now() + timeout;
            }
            Err(e) => {
                attempts_of_front += 1;
                // Let every later send finish: each either failed or was stored early.
                for later in window.iter_mut().skip(1) {
                    let _ = (&mut later.outcome).await;
                }
                if attempts_of_front > retries
                    || Instant::now() >= front_deadline
                    || !e.is_retryable()
                {
                    // The front failed for good: the ones after it cannot be stored in order.
                    let mut rest = window.drain(..);
                    if let Some(failed) = rest.next() {
                        let _ = failed.reply.send(Err(ProducerError::SendFailed {
                            topic: inner.topic.clone(),
                            attempts: attempts_of_front,
                            brokers: vec![mq.broker_name.clone()],
                            elapsed: timeout.saturating_sub(
                                front_deadline.saturating_duration_since(Instant::now()),
                            ),
                            source: Box::new(e),
                        }));
                    }
                    for failed in rest {
                        let _ = failed.reply.send(Err(ProducerError::PredecessorFailed {
                            topic: inner.topic.clone(),
                            queue: mq.to_string(),
                        }));
                    }
                    attempts_of_front = 0;
                    continue;
                }
                // Write the failed one and everything after it again, in order.
                debug!(queue = %mq, cause = %e, pending = window.len(), "resending from the first failed sequence");
                inner
                    .resent
                    .fetch_add(window.len() as u64 - 1, Ordering::Relaxed);
                for w in window.iter_mut() {
                    w.outcome =
                        write(&inner, &mq, &w.payload, attempts_of_front + 1, timeout).await;
                }
            }
        }
    }
}
