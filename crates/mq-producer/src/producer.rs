//! [`Producer`] (the facade, Java `DefaultMQProducer`) over its engine (Java
//! `DefaultMQProducerImpl`): one send path for every mode, one deadline per send.

use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mq_client_api::body::TopicRouteData;
use mq_client_api::header::{
    CheckTransactionStateRequestHeader, CreateTopicRequestHeader, SendMessageRequestHeader,
};
use mq_client_api::message::{
    MessageExt, SendTraits, UniqueIdGenerator, decode_offset_msg_id, encode_batch, property,
    sys_flag,
};
use mq_client_api::validate::{validate_body, validate_message, validate_topic};
use mq_client_api::{ClientApiError, Message, MessageQueue, ResponseCode, SendRequest, SendResult};
use mq_client_instance::{
    ClientInstance, ClientManager, InstanceError, ProducerMember, ServiceState, StateMachine,
};
use mq_remoting::{PAIR_MAX_HIGH, PAIR_MAX_LOW, Permits, RequestGroup};
use parking_lot::RwLock;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::attempt::{AttemptTo, Next, RetryPolicy};
use crate::config::ProducerConfig;
use crate::error::{ProducerError, SendError};
use crate::hook::{CommunicationMode, SendHook};
use crate::select::{LatencyFaultTolerance, QueueSelector, SelectArg, TopicPublishInfo};

/// A producer. Cheap to clone; clones share the engine.
///
/// Every send mode runs the same path: validate, look the route up (falling back to the
/// TBW102 template for topics the broker will auto-create), choose a queue, attempt, and retry
/// on another broker where the failure allows, all under one deadline fixed when the call is
/// made. The async forms are plain futures (the I/O is the async path: no thread pool).
///
/// Dropping the last clone without [`Producer::shutdown`] stops the producer once every send
/// made through it has its outcome (the futures of [`Producer::send_async`], pending callbacks
/// and an [`OrderedSender`] keep it running): its tasks end, and the client instance stops when
/// no other member uses it. Work nobody waits for any more (a transaction check, a send whose
/// future was dropped) ends with [`ProducerError::ShutDown`]. Brokers are not told; they forget
/// the group when the connection closes. [`Producer::shutdown`] tells them.
///
/// ```no_run
/// # async fn demo() -> Result<(), mq_producer::ProducerError> {
/// use mq_client_api::Message;
/// use mq_producer::{Producer, ProducerConfig};
///
/// let producer = Producer::new(ProducerConfig::new("orders_producer", "127.0.0.1:9876"));
/// producer.start().await?;
/// // Awaited: the broker's answer, retried on another broker where the failure allows.
/// let r = producer.send(Message::new("Orders", "created").with_keys(["order-42"])).await?;
/// println!("{} at {} offset {}", r.msg_id, r.message_queue, r.queue_offset);
/// // A plain future: start many, await them as they come.
/// let pending = producer.send_async(Message::new("Orders", "paid"));
/// pending.await?;
/// producer.shutdown().await;
/// # Ok(()) }
/// ```
///
/// [`OrderedSender`]: crate::OrderedSender
#[derive(Clone, Debug)]
pub struct Producer {
    pub(crate) inner: Arc<Engine>,
    /// Shared by the clones the user holds and the sends they made; the engine's own tasks
    /// hold none.
    pub(crate) owner: Option<Arc<Owner>>,
}

/// A value on cache lines of its own: counters that every send writes, kept apart from each
/// other and from the fields sends only read. When two worker threads send at once, a line
/// that both write moves between their cores on every write, and fields beside it with it.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Stops the engine when the last user handle goes. Holds the engine itself: a producer's
/// fields drop in order, so its own reference may already be gone.
#[derive(Debug)]
pub(crate) struct Owner(Arc<Engine>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// What to send: one message, or a pre-encoded batch.
pub(crate) enum Payload {
    Single(Message),
    Batch {
        topic: String,
        body: Bytes,
        ids: String,
        wait: bool,
    },
}

impl Payload {
    /// The single message (a batch's messages stay with its sender).
    pub(crate) fn into_message(self) -> Message {
        match self {
            Self::Single(m) => m,
            // Built only by `send_batch` and the accumulator, which keep their messages.
            Self::Batch { topic, body, .. } => Message::new(topic, body),
        }
    }

    pub(crate) fn topic(&self) -> &str {
        match self {
            Self::Single(m) => &m.topic,
            Self::Batch { topic, .. } => topic,
        }
    }
}

pub(crate) enum Target<'a> {
    Auto,
    Queue(MessageQueue),
    Selector(&'a dyn QueueSelector, &'a SelectArg),
}

/// The engine behind [`Producer`]. Java: `DefaultMQProducerImpl`.
pub(crate) struct Engine {
    pub(crate) config: ProducerConfig,
    state: StateMachine,
    instance: RwLock<Option<Arc<ClientInstance>>>,
    /// The group as sent (namespace-wrapped), set once at start and shared by every send's
    /// header.
    wire_group: std::sync::OnceLock<Arc<str>>,
    /// `create_topic_key`, shared by every send's header.
    default_topic: Arc<str>,
    publish: RwLock<HashMap<String, Arc<TopicPublishInfo>, foldhash::fast::RandomState>>,
    pub(crate) faults: LatencyFaultTolerance,
    hooks: RwLock<Vec<Arc<dyn SendHook>>>,
    /// Whether `hooks` has ever had one: sends look at the list only then.
    has_hooks: std::sync::atomic::AtomicBool,
    pub(crate) ids: Padded<UniqueIdGenerator>,
    transaction_listener: RwLock<Option<Arc<dyn crate::transaction::TransactionListener>>>,
    pub(crate) accumulator: crate::batching::Accumulator,
    /// The in-flight bounds, messages and bytes, in one word ([`Permits::pair`]): a send
    /// takes and gives back both with one atomic operation each. The sends in flight are the
    /// message permits taken.
    inflight: Padded<Permits>,
    /// Callback sends accepted but not yet called back.
    pending_callbacks: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
    /// Cancelled when the sends in flight are cut short (dropped without shutdown, or past
    /// the shutdown's grace): the waits of a send that are not its request (room, routes).
    abort: tokio_util::sync::CancellationToken,
    /// The group of this producer's requests, aborted with `abort`: a request waiting for its
    /// answer ends then without a second wait beside it.
    group: RequestGroup,
    pub(crate) tasks: TaskTracker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerEngine")
            .field("group", &self.config.group)
            .field("state", &self.state.get())
            .finish_non_exhaustive()
    }
}

/// Registers the engine with its instance without keeping it alive from there.
struct Member(Weak<Engine>, String);

impl ProducerMember for Member {
    fn group(&self) -> String {
        self.1.clone()
    }

    fn topics(&self) -> Vec<String> {
        self.0
            .upgrade()
            .map(|e| e.publish.read().keys().cloned().collect())
            .unwrap_or_default()
    }

    fn route_updated(&self, topic: &str, route: &TopicRouteData) {
        if let Some(e) = self.0.upgrade()
            && e.publish.read().contains_key(topic)
        {
            e.publish.write().insert(
                topic.to_owned(),
                Arc::new(TopicPublishInfo::from_route(topic, route)),
            );
        }
    }

    fn check_transaction_state(
        &self,
        broker_addr: String,
        message: MessageExt,
        header: CheckTransactionStateRequestHeader,
    ) {
        let Some(engine) = self.0.upgrade() else {
            return;
        };
        let listener = engine.transaction_listener.read().clone();
        match listener {
            Some(listener) => {
                // Not a user handle: the task does not keep the producer running.
                let producer = Producer {
                    inner: Arc::clone(&engine),
                    owner: None,
                };
                engine.tasks.spawn(crate::transaction::answer_check(
                    producer,
                    listener,
                    broker_addr,
                    message,
                    header,
                ));
            }
            // A plain producer has no listener; the broker asks again later and rolls back
            // after its maximum number of checks.
            None => {
                debug!(broker = %broker_addr, msg_id = %message.msg_id(), "transaction check for a producer without a listener")
            }
        }
    }
}

impl Producer {
    /// A producer with `config` (state CREATED). Call [`Producer::start`] before sending.
    pub fn new(config: ProducerConfig) -> Self {
        let ids = UniqueIdGenerator::new(Some(config.client.client_ip));
        let inflight = Permits::pair(config.max_in_flight_messages, config.max_in_flight_bytes);
        let inner = Arc::new(Engine {
            default_topic: config.create_topic_key.as_str().into(),
            config,
            state: StateMachine::default(),
            instance: RwLock::new(None),
            wire_group: std::sync::OnceLock::new(),
            publish: RwLock::new(HashMap::default()),
            faults: LatencyFaultTolerance::default(),
            hooks: RwLock::new(Vec::new()),
            has_hooks: std::sync::atomic::AtomicBool::new(false),
            ids: Padded(ids),
            transaction_listener: RwLock::new(None),
            accumulator: crate::batching::Accumulator::default(),
            inflight: Padded(inflight),
            pending_callbacks: std::sync::atomic::AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
            abort: tokio_util::sync::CancellationToken::new(),
            group: RequestGroup::new(),
            tasks: TaskTracker::new(),
        });
        let owner = Some(Arc::new(Owner(Arc::clone(&inner))));
        Self { inner, owner }
    }

    /// The configuration.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// The lifecycle state.
    pub fn state(&self) -> ServiceState {
        self.inner.state.get()
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.inner
    }

    /// The shared client instance (after start).
    pub fn instance(&self) -> Option<Arc<ClientInstance>> {
        self.inner.instance.read().clone()
    }

    pub(crate) fn set_transaction_listener(
        &self,
        listener: Arc<dyn crate::transaction::TransactionListener>,
    ) {
        *self.inner.transaction_listener.write() = Some(listener);
    }

    pub(crate) fn transaction_listener(
        &self,
    ) -> Option<Arc<dyn crate::transaction::TransactionListener>> {
        self.inner.transaction_listener.read().clone()
    }

    /// Adds a send hook.
    pub fn add_hook(&self, hook: Arc<dyn SendHook>) {
        self.inner.hooks.write().push(hook);
        self.inner
            .has_hooks
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Starts: validates the configuration, joins (or creates) the client instance of this
    /// client id, registers the group, starts the instance, heartbeats.
    ///
    /// # Errors
    /// [`ProducerError::State`] when not CREATED (started twice, or after a failed start or a
    /// shutdown); [`ProducerError::Config`]; [`ProducerError::Instance`] for a duplicate group.
    /// A failed start leaves the producer START_FAILED.
    pub async fn start(&self) -> Result<(), ProducerError> {
        let e = &self.inner;
        e.state
            .transition(ServiceState::Created, ServiceState::StartFailed)
            .map_err(|s| ProducerError::State(s.found))?;
        e.config.validate()?;
        let instance = ClientManager::global().get_or_create(&e.config.client)?;
        let group = instance.config().wrap(&e.config.group);
        // A producer starts once: a second start fails above.
        let _ = e.wire_group.set(group.as_str().into());
        instance.register_producer(Arc::new(Member(Arc::downgrade(e), group.clone())))?;
        if let Err(err) = instance.start() {
            instance
                .unregister_producer(&group, e.config.send_timeout)
                .await;
            return Err(err.into());
        }
        *e.instance.write() = Some(Arc::clone(&instance));
        e.state
            .transition(ServiceState::StartFailed, ServiceState::Running)
            .map_err(|s| ProducerError::State(s.found))?;
        instance.heartbeat_all().await;
        info!(group = %e.config.group, client_id = %instance.client_id(), "producer started");
        Ok(())
    }

    /// Shuts down: new sends fail with [`ProducerError::State`], sends in flight finish (or
    /// fail when their deadline passes), the group is unregistered from the brokers, and the
    /// client instance stops when no other member uses it.
    pub async fn shutdown(&self) {
        self.shutdown_with_deadline(self.inner.config.send_timeout)
            .await;
    }

    /// Shuts down: new sends fail with [`ProducerError::State`]; sends in flight get up to
    /// `grace` to finish; then the rest end with [`ProducerError::ShutDown`] — every callback
    /// still runs, none is dropped. The group is then unregistered and the client instance
    /// stops when no other member uses it. Returns how many sends were ended early.
    pub async fn shutdown_with_deadline(&self, grace: Duration) -> usize {
        let e = &self.inner;
        if e.state
            .transition(ServiceState::Running, ServiceState::ShutdownAlready)
            .is_err()
        {
            e.state.force(ServiceState::ShutdownAlready);
            return 0;
        }
        let deadline = Instant::now() + grace;
        let cut_short = match self.wait_idle(deadline).await {
            Ok(()) => 0,
            Err(in_flight) => {
                e.abort_sends();
                in_flight
            }
        };
        e.tasks.close();
        e.tasks.wait().await;
        let instance = e.instance.write().take();
        if let Some(instance) = instance {
            let group = instance.config().wrap(&e.config.group);
            // Unregistration gets what is left of the grace: the whole shutdown ends by then.
            instance.unregister_producer(&group, left(deadline)).await;
        }
        info!(group = %e.config.group, cut_short, "producer shut down");
        cut_short
    }

    /// Waits until every send made so far has an outcome (sends made meanwhile count too).
    ///
    /// # Errors
    /// [`ProducerError::FlushTimedOut`] when sends are still in flight at `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), ProducerError> {
        self.wait_idle(Instant::now() + timeout)
            .await
            .map_err(|in_flight| ProducerError::FlushTimedOut { in_flight })
    }

    /// Sends in flight (admitted and without an outcome yet).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    async fn wait_idle(&self, deadline: Instant) -> Result<(), usize> {
        loop {
            let idle = self.inner.idle.notified();
            let busy = || {
                self.in_flight().max(
                    self.inner
                        .pending_callbacks
                        .load(std::sync::atomic::Ordering::Acquire),
                )
            };
            if busy() == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return Err(busy());
            }
        }
    }

    /// The auto-batching `msg` goes through, if any. Delayed and timer messages go alone: in
    /// a batch, brokers would not keep their time.
    fn batching_for(&self, msg: &Message) -> Option<(crate::config::BatchingConfig, SendTraits)> {
        // The properties are read only when batching is on.
        let config = self.inner.config.batching?;
        let traits = msg.send_traits();
        (traits.delay_level == 0 && !traits.timer).then_some((config, traits))
    }

    /// Like [`Producer::send_async`] (auto-batched when it is on), but fails at once with
    /// [`ProducerError::QueueFull`] instead of waiting when the in-flight bounds are reached.
    ///
    /// # Errors
    /// [`ProducerError::QueueFull`] or [`ProducerError::State`] before anything is sent, with
    /// the message handed back.
    pub fn try_send_async(&self, msg: Message) -> Result<SendFuture, SendError> {
        if let Err(e) = self.inner.ensure_running() {
            return Err(SendError::new(e, msg));
        }
        let deadline = Instant::now() + self.inner.config.send_timeout;
        // Take the room now; the future keeps it (and through it the producer running) until
        // the send has an outcome.
        let guard = match self
            .inner
            .try_admit_for(msg.body.len(), self.owner.as_ref())
        {
            Ok(g) => g,
            Err(e) => return Err(SendError::new(e, msg)),
        };
        if let Some((batching, traits)) = self.batching_for(&msg) {
            let mut msg = msg;
            return match crate::batching::enqueue(&self.inner, batching, &mut msg, traits, deadline)
            {
                Ok(rx) => Ok(SendFuture(Pending::Batched {
                    rx,
                    msg,
                    _room: guard,
                })),
                Err(e) => Err(SendError::new(e, msg)),
            };
        }
        // Made here, as in `send_async`: the block holds the message once.
        let mut payload = Payload::Single(msg);
        let engine = Arc::clone(&self.inner);
        Ok(SendFuture::boxed(async move {
            let r = engine
                .run(
                    &mut payload,
                    &Target::Auto,
                    CommunicationMode::Async,
                    deadline,
                )
                .await
                .and_then(stored);
            drop(guard);
            handed_back(r, payload)
        }))
    }

    /// Sends and waits for the broker's answer, retrying as configured.
    ///
    /// # Errors
    /// Any [`ProducerError`], with the message handed back; see
    /// [`ProducerError::possibly_delivered`] before sending it again.
    pub async fn send(&self, msg: Message) -> Result<SendResult, SendError> {
        self.send_with_timeout(msg, self.inner.config.send_timeout)
            .await
    }

    /// [`Producer::send`] with its own deadline.
    ///
    /// # Errors
    /// As for [`Producer::send`].
    pub async fn send_with_timeout(
        &self,
        msg: Message,
        timeout: Duration,
    ) -> Result<SendResult, SendError> {
        let deadline = Instant::now() + timeout;
        let mut payload = Payload::Single(msg);
        let r = self
            .inner
            .send_core(
                &mut payload,
                &Target::Auto,
                CommunicationMode::Sync,
                deadline,
            )
            .await
            .and_then(stored);
        handed_back(r, payload)
    }

    /// The async send: a future that resolves to the outcome, retried by the same rules as
    /// sync sends (async retries count against `retries_async`). The deadline starts now, not
    /// when the future is first polled. A failure hands the message back.
    pub fn send_async(&self, msg: Message) -> SendFuture {
        let deadline = Instant::now() + self.inner.config.send_timeout;
        if let Some((batching, traits)) = self.batching_for(&msg) {
            // Gathered with other async sends of the topic; the outcome comes back per message.
            // Room is taken per message before it joins a batch, so the accumulator is bounded
            // too: at once when there is room (the message joins its batch now), otherwise by
            // waiting inside the future, within the deadline.
            let mut msg = msg;
            if let Ok(room) = self
                .inner
                .try_admit_for(msg.body.len(), self.owner.as_ref())
            {
                // No future of its own to box: the send waits on its batch's answer alone, and
                // its room holds the producer running (no count of its own taken on it).
                return match crate::batching::enqueue(
                    &self.inner,
                    batching,
                    &mut msg,
                    traits,
                    deadline,
                ) {
                    Ok(rx) => SendFuture(Pending::Batched {
                        rx,
                        msg,
                        _room: room,
                    }),
                    Err(e) => SendFuture(Pending::Refused(Some(SendError::new(e, msg)))),
                };
            }
            // The send keeps the producer running until it has an outcome.
            let owner = self.owner.clone();
            let engine = Arc::clone(&self.inner);
            return SendFuture::boxed(async move {
                let _owner = owner;
                if let Err(e) = engine.ensure_running() {
                    return Err(SendError::new(e, msg));
                }
                let admission = match engine.admit(&msg.topic, msg.body.len(), deadline).await {
                    Ok(a) => a,
                    Err(e) => return Err(SendError::new(e, msg)),
                };
                let r =
                    match crate::batching::enqueue(&engine, batching, &mut msg, traits, deadline) {
                        Ok(rx) => crate::batching::outcome(rx.await, msg),
                        Err(e) => Err(SendError::new(e, msg)),
                    };
                drop(admission);
                r
            });
        }
        let owner = self.owner.clone();
        // Made here: the block then holds the message once, not also as captured.
        let mut payload = Payload::Single(msg);
        let engine = Arc::clone(&self.inner);
        SendFuture::boxed(async move {
            let _owner = owner;
            let r = engine
                .send_core(
                    &mut payload,
                    &Target::Auto,
                    CommunicationMode::Async,
                    deadline,
                )
                .await
                .and_then(stored);
            handed_back(r, payload)
        })
    }

    /// Sends in the background and calls `callback` exactly once with the outcome (a failure
    /// hands the message back). The task is owned by the producer: [`Producer::shutdown`]
    /// waits for it.
    ///
    /// # Errors
    /// [`ProducerError::State`] when the producer is not running (the callback is then not
    /// called), with the message handed back.
    pub fn send_with_callback<F>(&self, msg: Message, callback: F) -> Result<(), SendError>
    where
        F: FnOnce(Result<SendResult, SendError>) + Send + 'static,
    {
        if let Err(e) = self.inner.ensure_running() {
            return Err(SendError::new(e, msg));
        }
        self.inner.spawn_callback(self.send_async(msg), callback);
        Ok(())
    }

    /// Sends without waiting for any answer (one attempt).
    ///
    /// # Errors
    /// Failures before the request is written, with the message handed back.
    pub async fn send_oneway(&self, msg: Message) -> Result<(), SendError> {
        let deadline = Instant::now() + self.inner.config.send_timeout;
        let mut payload = Payload::Single(msg);
        let r = self
            .inner
            .send_core(
                &mut payload,
                &Target::Auto,
                CommunicationMode::Oneway,
                deadline,
            )
            .await
            .map(drop);
        handed_back(r, payload)
    }

    /// Sends to an explicit queue (one attempt: the queue is the caller's choice).
    ///
    /// # Errors
    /// [`ProducerError::TopicMismatch`] when the queue belongs to another topic; as for
    /// [`Producer::send`] otherwise. The message is handed back.
    pub async fn send_to_queue(
        &self,
        msg: Message,
        queue: MessageQueue,
    ) -> Result<SendResult, SendError> {
        let (msg, queue) = same_topic(msg, queue)?;
        let deadline = Instant::now() + self.inner.config.send_timeout;
        let mut payload = Payload::Single(msg);
        let r = self
            .inner
            .send_core(
                &mut payload,
                &Target::Queue(queue),
                CommunicationMode::Sync,
                deadline,
            )
            .await
            .and_then(stored);
        handed_back(r, payload)
    }

    /// Sends to the queue `selector` picks for `arg` (one attempt: the choice is the
    /// selector's, e.g. to keep a key's messages in order).
    ///
    /// # Errors
    /// [`ProducerError::NoQueueSelected`]; as for [`Producer::send`] otherwise. The message is
    /// handed back.
    pub async fn send_with_selector(
        &self,
        msg: Message,
        selector: &dyn QueueSelector,
        arg: &SelectArg,
    ) -> Result<SendResult, SendError> {
        let deadline = Instant::now() + self.inner.config.send_timeout;
        let mut payload = Payload::Single(msg);
        let r = self
            .inner
            .send_core(
                &mut payload,
                &Target::Selector(selector, arg),
                CommunicationMode::Sync,
                deadline,
            )
            .await
            .and_then(stored);
        handed_back(r, payload)
    }

    /// Sends messages of one topic as one SEND_BATCH_MESSAGE (never compressed). The result's
    /// `msg_id` joins every message's id with `,`.
    ///
    /// # Errors
    /// [`ProducerError::Batch`] for an empty or mixed batch, [`ProducerError::Validation`] for
    /// a bad message or an encoded batch over the size limit; as for [`Producer::send`]
    /// otherwise. The messages are handed back.
    pub async fn send_batch(
        &self,
        mut msgs: Vec<Message>,
    ) -> Result<SendResult, SendError<Vec<Message>>> {
        let deadline = Instant::now() + self.inner.config.send_timeout;
        let mut payload = match self.inner.batch_payload(&mut msgs) {
            Ok(p) => p,
            Err(e) => return Err(SendError::new(e, msgs)),
        };
        self.inner
            .send_core(
                &mut payload,
                &Target::Auto,
                CommunicationMode::Sync,
                deadline,
            )
            .await
            .and_then(stored)
            .map_err(|e| SendError::new(e, msgs))
    }

    /// Recalls a timer message ([`Message::with_deliver_time`]) before it is delivered, with
    /// the handle its send answered with ([`SendResult::recall_handle`]; 5.3 brokers and ours).
    /// Returns the message's unique id. Brokers deliver up to a second early (they keep times
    /// to the second): a recall in that second may succeed and do nothing, as on a Java
    /// broker; after the time it is refused. Within the send timeout.
    ///
    /// # Errors
    /// [`ProducerError::RecallHandle`] for a handle no broker gave;
    /// [`ProducerError::RecallFailed`] when the broker the handle names cannot be found or
    /// refuses (ILLEGAL_OPERATION for another topic or broker, or a time already past).
    pub async fn recall_message(
        &self,
        topic: &str,
        recall_handle: &str,
    ) -> Result<String, ProducerError> {
        let instance = self.inner.running_instance()?;
        let handle = mq_client_api::message::RecallHandle::decode(recall_handle)?;
        let deadline = Instant::now() + self.inner.config.send_timeout;
        // The handle names the topic as the broker knows it.
        let topic = &*instance.config().wrapped(topic);
        let failed = |source| ProducerError::RecallFailed {
            topic: topic.to_owned(),
            broker: handle.broker_name.clone(),
            source: Box::new(source),
        };
        let addr = self
            .inner
            .broker_addr(&instance, topic, &handle.broker_name, deadline)
            .await
            .map_err(failed)?;
        let header = mq_client_api::header::RecallMessageRequestHeader {
            producer_group: Some(self.inner.config.group.clone()),
            topic: topic.to_owned(),
            recall_handle: recall_handle.to_owned(),
            broker_name: Some(handle.broker_name.clone()),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        instance
            .api()
            .recall_message(&addr, &header, left)
            .await
            .map_err(failed)
    }

    // ----- admin -----

    /// Creates `topic` with `queues` queues on every broker that serves `key` (usually TBW102).
    ///
    /// # Errors
    /// Route and broker errors.
    pub async fn create_topic(
        &self,
        key: &str,
        topic: &str,
        queues: i32,
    ) -> Result<(), ProducerError> {
        self.create_topic_with_attributes(key, topic, queues, &[])
            .await
    }

    /// As [`Producer::create_topic`], with RocketMQ 5 topic attributes, such as
    /// `("message.type", "TRANSACTION")` (what a 5.x proxy checks sends against: `NORMAL`,
    /// `FIFO`, `DELAY`, `TRANSACTION`). 4.x brokers ignore them.
    ///
    /// # Errors
    /// Route and broker errors.
    pub async fn create_topic_with_attributes(
        &self,
        key: &str,
        topic: &str,
        queues: i32,
        attributes: &[(&str, &str)],
    ) -> Result<(), ProducerError> {
        validate_topic(topic)?;
        let deadline = Instant::now() + self.inner.config.send_timeout;
        let instance = self.inner.running_instance()?;
        let route = instance.update_route(key, left(deadline)).await?;
        // Java's wire form: `+key=value`, joined by commas.
        let attributes = (!attributes.is_empty()).then(|| {
            attributes
                .iter()
                .map(|(k, v)| format!("+{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        });
        let header = CreateTopicRequestHeader {
            topic: instance.config().wrap(topic),
            default_topic: key.to_owned(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: mq_client_api::body::perm::READ_WRITE,
            topic_filter_type: "SINGLE_TAG".into(),
            topic_sys_flag: Some(0),
            order: false,
            attributes,
        };
        let calls = route
            .broker_datas
            .iter()
            .filter_map(|b| b.master_addr())
            .map(|addr| instance.api().create_topic(addr, &header, left(deadline)));
        for r in futures_util::future::join_all(calls).await {
            r.map_err(InstanceError::from)?;
        }
        Ok(())
    }

    /// The instance, the master address of `mq`'s broker, and `mq` with the namespace applied;
    /// a route lookup, when needed, ends by `deadline`.
    async fn queue_broker(
        &self,
        mq: &MessageQueue,
        deadline: Instant,
    ) -> Result<(Arc<ClientInstance>, Arc<str>, MessageQueue), ProducerError> {
        let instance = self.inner.running_instance()?;
        let wrapped = MessageQueue::new(
            instance.config().wrap(&mq.topic),
            &mq.broker_name,
            mq.queue_id,
        );
        if instance.broker_master(&mq.broker_name).is_none() {
            instance
                .update_route(&wrapped.topic, left(deadline))
                .await?;
        }
        let addr =
            instance
                .broker_master(&mq.broker_name)
                .ok_or_else(|| ProducerError::NoRoute {
                    topic: mq.topic.clone(),
                    name_servers: instance.config().name_servers.clone(),
                    template: self.inner.config.create_topic_key.clone(),
                })?;
        Ok((instance, addr, wrapped))
    }

    /// The max offset of a queue.
    ///
    /// # Errors
    /// Route and broker errors.
    pub async fn max_offset(&self, mq: &MessageQueue) -> Result<i64, ProducerError> {
        let deadline = Instant::now() + self.inner.config.send_timeout;
        let (i, addr, mq) = self.queue_broker(mq, deadline).await?;
        Ok(i.api()
            .max_offset(&addr, &mq, left(deadline))
            .await
            .map_err(InstanceError::from)?)
    }

    /// The min offset of a queue.
    ///
    /// # Errors
    /// Route and broker errors.
    pub async fn min_offset(&self, mq: &MessageQueue) -> Result<i64, ProducerError> {
        let deadline = Instant::now() + self.inner.config.send_timeout;
        let (i, addr, mq) = self.queue_broker(mq, deadline).await?;
        Ok(i.api()
            .min_offset(&addr, &mq, left(deadline))
            .await
            .map_err(InstanceError::from)?)
    }

    /// The first offset stored at or after `time`.
    ///
    /// # Errors
    /// Route and broker errors.
    pub async fn search_offset(
        &self,
        mq: &MessageQueue,
        time: SystemTime,
    ) -> Result<i64, ProducerError> {
        let deadline = Instant::now() + self.inner.config.send_timeout;
        let (i, addr, mq) = self.queue_broker(mq, deadline).await?;
        Ok(i.api()
            .search_offset(&addr, &mq, time, left(deadline))
            .await
            .map_err(InstanceError::from)?)
    }

    /// Store time of a queue's earliest message.
    ///
    /// # Errors
    /// Route and broker errors.
    pub async fn earliest_msg_store_time(
        &self,
        mq: &MessageQueue,
    ) -> Result<SystemTime, ProducerError> {
        let deadline = Instant::now() + self.inner.config.send_timeout;
        let (i, addr, mq) = self.queue_broker(mq, deadline).await?;
        Ok(i.api()
            .earliest_msg_store_time(&addr, &mq, left(deadline))
            .await
            .map_err(InstanceError::from)?)
    }

    /// A stored message by its offset message id (`SendResult::offset_msg_id`).
    ///
    /// # Errors
    /// Broker errors, or a malformed id (as a validation error of the API).
    pub async fn view_message(&self, offset_msg_id: &str) -> Result<MessageExt, ProducerError> {
        let instance = self.inner.running_instance()?;
        let (addr, offset) = decode_offset_msg_id(offset_msg_id).map_err(|e| {
            ProducerError::Instance(InstanceError::Api(ClientApiError::Broker {
                code: ResponseCode::SYSTEM_ERROR,
                remark: Some(e.to_string()),
                addr: String::new(),
            }))
        })?;
        Ok(instance
            .api()
            .view_message(&addr.to_string(), offset, self.inner.config.send_timeout)
            .await
            .map_err(InstanceError::from)?)
    }
}

/// The time left until `deadline` (zero once it has passed).
pub(crate) fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The future of an async send: its outcome, a failure handing the message back.
///
/// A message taken into an auto-batch goes with its batch whether or not this future is
/// awaited; any other send is made as the future is polled, and dropping it first drops the
/// send. Like any future, it is not to be polled again once it has given its outcome.
#[must_use = "the outcome of the send comes from awaiting it"]
pub struct SendFuture(Pending);

enum Pending {
    /// A message in an auto-batch: its own outcome comes from the batch's answer. The message
    /// (handed back if the batch fails) and the room it took in the in-flight bounds (which
    /// holds the producer) are held until then.
    Batched {
        rx: oneshot::Receiver<crate::batching::Outcome>,
        msg: Message,
        _room: Room,
    },
    /// A message that could not join a batch, with why.
    Refused(Option<SendError>),
    /// Any other send.
    Boxed(mq_remoting::BoxFuture<'static, Result<SendResult, SendError>>),
    /// The outcome was given; the batched send's room is released.
    Done,
}

impl SendFuture {
    fn boxed(f: impl Future<Output = Result<SendResult, SendError>> + Send + 'static) -> Self {
        Self(Pending::Boxed(Box::pin(f)))
    }
}

impl Future for SendFuture {
    type Output = Result<SendResult, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.0 {
            Pending::Batched { rx, .. } => {
                let outcome = std::task::ready!(Pin::new(rx).poll(cx));
                // The room goes back as soon as the outcome is known, as it does for an
                // unbatched send, not when the caller drops this future. A stored message is
                // dropped where it is; only a failed one is moved out, to be handed back.
                if let Ok(Ok(stored)) = &outcome {
                    let r = stored.result();
                    this.0 = Pending::Done;
                    return Poll::Ready(Ok(r));
                }
                let Pending::Batched { msg, .. } = std::mem::replace(&mut this.0, Pending::Done)
                else {
                    // Matched just above.
                    unreachable!("SendFuture left its batched state while polled")
                };
                Poll::Ready(crate::batching::outcome(outcome, msg))
            }
            Pending::Refused(e) => {
                let e = e.take();
                this.0 = Pending::Done;
                match e {
                    Some(e) => Poll::Ready(Err(e)),
                    None => panic!("SendFuture polled after it gave its outcome"),
                }
            }
            Pending::Boxed(f) => f.as_mut().poll(cx),
            // The contract of `Future::poll`: a future that gave its outcome is not polled
            // again (an `async` block panics then too).
            Pending::Done => panic!("SendFuture polled after it gave its outcome"),
        }
    }
}

impl std::fmt::Debug for SendFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            Pending::Batched { .. } => "batched",
            Pending::Refused(_) => "refused",
            Pending::Boxed(_) => "sending",
            Pending::Done => "done",
        };
        f.debug_tuple("SendFuture").field(&state).finish()
    }
}

/// A failed send's cause with its message handed back.
pub(crate) fn handed_back<T>(
    r: Result<T, ProducerError>,
    payload: Payload,
) -> Result<T, SendError> {
    r.map_err(|e| SendError::new(e, payload.into_message()))
}

/// `msg` and `queue` when the queue belongs to the message's topic; otherwise
/// [`ProducerError::TopicMismatch`] with the message handed back.
pub(crate) fn same_topic(
    msg: Message,
    queue: MessageQueue,
) -> Result<(Message, MessageQueue), SendError> {
    if msg.topic == queue.topic {
        return Ok((msg, queue));
    }
    let e = ProducerError::TopicMismatch {
        message_topic: msg.topic.clone(),
        queue_topic: queue.topic,
    };
    Err(SendError::new(e, msg))
}

/// The result of a send that waits for the broker. `send_core` returns `Ok(None)` only in
/// oneway mode, which these callers never use; were that ever broken, the caller gets an
/// error rather than a panic.
pub(crate) fn stored(r: Option<SendResult>) -> Result<SendResult, ProducerError> {
    r.ok_or(ProducerError::ShutDown)
}

/// Room taken in the in-flight bounds; released (and `flush` woken) when dropped. Owned, so a
/// `'static` send future can hold it.
pub(crate) struct Room {
    holder: Holder,
    /// The byte permits taken (one message permit besides).
    bytes: usize,
}

/// What a [`Room`] keeps the engine by: the producer's [`Owner`] for a send made through a
/// user's handle, which so keeps the producer running with the same count (a count is a
/// shared line every send writes twice, moving between cores when two threads send).
enum Holder {
    Engine(Arc<Engine>),
    Owner(Arc<Owner>),
}

impl Room {
    fn engine(&self) -> &Engine {
        match &self.holder {
            Holder::Engine(e) => e,
            Holder::Owner(o) => &o.0,
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        let engine = self.engine();
        if engine.inflight.give_pair(1, self.bytes) {
            engine.idle.notify_waiters();
        }
    }
}

fn payload_bytes(payload: &Payload) -> usize {
    match payload {
        Payload::Single(m) => m.body.len(),
        Payload::Batch { body, .. } => body.len(),
    }
}

impl Engine {
    /// Runs `fut` as a task of the producer and calls `callback` with its outcome. Counted
    /// from the call until the callback has run, so `flush` and `shutdown` wait for it.
    pub(crate) fn spawn_callback<T, F>(
        self: &Arc<Self>,
        fut: impl Future<Output = T> + Send + 'static,
        callback: F,
    ) where
        T: Send + 'static,
        F: FnOnce(T) + Send + 'static,
    {
        self.pending_callbacks
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let engine = Arc::clone(self);
        self.tasks.spawn(async move {
            callback(fut.await);
            if engine
                .pending_callbacks
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
                == 1
            {
                engine.idle.notify_waiters();
            }
        });
    }

    fn byte_permits(&self, bytes: usize) -> usize {
        // A body larger than the whole bound takes all of it rather than waiting forever.
        bytes.clamp(1, self.config.max_in_flight_bytes.clamp(1, PAIR_MAX_HIGH))
    }

    /// Sends in flight: the message permits taken.
    fn in_flight(&self) -> usize {
        let bound = self.config.max_in_flight_messages.min(PAIR_MAX_LOW);
        bound.saturating_sub(self.inflight.available_pair().0)
    }

    /// The room of a send that took one message permit and `bytes` byte permits.
    fn room(self: &Arc<Self>, bytes: usize) -> Room {
        Room {
            holder: Holder::Engine(Arc::clone(self)),
            bytes,
        }
    }

    /// Room for one send of `bytes` now, or [`ProducerError::QueueFull`].
    pub(crate) fn try_admit(self: &Arc<Self>, bytes: usize) -> Result<Room, ProducerError> {
        self.try_admit_for(bytes, None)
    }

    /// [`Engine::try_admit`] for a send of a user's handle, whose room holds the producer's
    /// `owner` (when it has one) instead of the engine: the send keeps both with one count.
    pub(crate) fn try_admit_for(
        self: &Arc<Self>,
        bytes: usize,
        owner: Option<&Arc<Owner>>,
    ) -> Result<Room, ProducerError> {
        let bytes = self.byte_permits(bytes);
        if !self.inflight.try_take_pair(1, bytes) {
            return Err(ProducerError::QueueFull {
                messages: self.config.max_in_flight_messages,
                bytes: self.config.max_in_flight_bytes,
            });
        }
        let holder = match owner {
            Some(o) => Holder::Owner(Arc::clone(o)),
            None => Holder::Engine(Arc::clone(self)),
        };
        Ok(Room { holder, bytes })
    }

    /// Waits (until `deadline`) for room for one send of `bytes`.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        topic: &str,
        bytes: usize,
        deadline: Instant,
    ) -> Result<Room, ProducerError> {
        // Room is there almost always: take it without arming a timer.
        if let Ok(room) = self.try_admit(bytes) {
            return Ok(room);
        }
        // Boxed, so that the timers do not weigh on the future of every send.
        Box::pin(self.unless_aborted(self.wait_for_room(topic, bytes, deadline))).await
    }

    /// [`Engine::admit`] when the bounds are reached: waits for room.
    async fn wait_for_room(
        self: &Arc<Self>,
        topic: &str,
        bytes: usize,
        deadline: Instant,
    ) -> Result<Room, ProducerError> {
        let started = Instant::now();
        let timed_out = || ProducerError::DeadlineExceeded {
            topic: topic.to_owned(),
            attempts: 0,
            brokers: Vec::new(),
            elapsed: started.elapsed(),
        };
        // Both bounds at once; a wait that times out or is dropped has taken nothing.
        let bytes = self.byte_permits(bytes);
        tokio::time::timeout_at(deadline, self.inflight.take_pair(1, bytes))
            .await
            .map_err(|_| timed_out())?;
        Ok(self.room(bytes))
    }

    /// The send path with admission: waits for room in the in-flight bounds, then runs.
    pub(crate) async fn send_core(
        self: &Arc<Self>,
        payload: &mut Payload,
        target: &Target<'_>,
        mode: CommunicationMode,
        deadline: Instant,
    ) -> Result<Option<SendResult>, ProducerError> {
        self.ensure_running()?;
        let admission = self
            .admit(payload.topic(), payload_bytes(payload), deadline)
            .await?;
        let r = self.run(payload, target, mode, deadline).await;
        drop(admission);
        r
    }

    /// The send path for an already admitted send; a shutdown past its grace period ends it
    /// with [`ProducerError::ShutDown`] (its callback still runs).
    pub(crate) async fn run(
        &self,
        payload: &mut Payload,
        target: &Target<'_>,
        mode: CommunicationMode,
        deadline: Instant,
    ) -> Result<Option<SendResult>, ProducerError> {
        // Cut short, a send fails where it waits (its request with the group's abort, the
        // rarer waits by `unless_aborted`, a connection being made when its request begins):
        // whatever its error, it ended because the sends were aborted.
        let r = self.send_core_inner(payload, target, mode, deadline).await;
        if r.is_err() && self.abort.is_cancelled() {
            return Err(ProducerError::ShutDown);
        }
        r
    }

    /// `wait`, or [`ProducerError::ShutDown`] as soon as the sends in flight are cut short: for
    /// the waits of a send that are not its request (room in the bounds, a route lookup).
    pub(crate) async fn unless_aborted<T>(
        &self,
        wait: impl Future<Output = Result<T, ProducerError>>,
    ) -> Result<T, ProducerError> {
        tokio::select! {
            biased;
            r = wait => r,
            () = self.abort.cancelled() => Err(ProducerError::ShutDown),
        }
    }

    /// Cuts the sends in flight short: each ends with [`ProducerError::ShutDown`] where it
    /// waits.
    fn abort_sends(&self) {
        self.abort.cancel();
        if let Some(instance) = self.instance.read().as_ref() {
            instance.api().remoting().abort_group(self.group);
        }
    }

    /// Looks the route of `topic` up again, within the deadline and unless the sends are cut
    /// short meanwhile; what it finds is read from the instance afterwards.
    pub(crate) async fn refresh_route(
        &self,
        instance: &ClientInstance,
        topic: &str,
        deadline: Instant,
    ) {
        // Rare: boxed, so that it does not weigh on the future of every send.
        let _ = Box::pin(self.unless_aborted(async {
            let _ = instance.update_route(topic, left(deadline)).await;
            Ok(())
        }))
        .await;
    }

    /// This producer's request group.
    pub(crate) fn group(&self) -> RequestGroup {
        self.group
    }

    /// What dropping the last user handle of a running producer does: sends in flight end
    /// with [`ProducerError::ShutDown`], no task is started any more, and the group leaves its
    /// instance at once.
    fn abandon(&self) {
        if self
            .state
            .transition(ServiceState::Running, ServiceState::ShutdownAlready)
            .is_err()
        {
            return;
        }
        warn!(group = %self.config.group, in_flight = self.in_flight(), "producer dropped without shutdown; sends in flight end now");
        self.abort_sends();
        self.tasks.close();
        let instance = self.instance.write().take();
        if let Some(instance) = instance {
            instance.release_producer(&instance.config().wrap(&self.config.group));
        }
    }

    /// The send hooks now, without a lock while there have never been any.
    pub(crate) fn hooks(&self) -> Vec<Arc<dyn SendHook>> {
        if self.has_hooks.load(std::sync::atomic::Ordering::Acquire) {
            self.hooks.read().clone()
        } else {
            Vec::new()
        }
    }

    pub(crate) fn ensure_running(&self) -> Result<(), ProducerError> {
        match self.state.get() {
            ServiceState::Running => Ok(()),
            other => Err(ProducerError::State(other)),
        }
    }

    pub(crate) fn running_instance(&self) -> Result<Arc<ClientInstance>, ProducerError> {
        self.ensure_running()?;
        self.instance
            .read()
            .clone()
            .ok_or(ProducerError::State(ServiceState::ShutdownAlready))
    }

    pub(crate) fn batch_payload(&self, msgs: &mut [Message]) -> Result<Payload, ProducerError> {
        // Ids of one batch are made at one instant (the counter tells them apart): the
        // clock is read once.
        let clock = self.ids.clock(SystemTime::now());
        let mut checked_topic: Option<String> = None;
        // The batch's ids, comma-joined as its send result gives them.
        let mut ids = String::with_capacity(msgs.len() * 33);
        for m in msgs.iter_mut() {
            // A batch has one topic: its name is checked once (a second one fails below).
            if checked_topic.as_deref() == Some(m.topic.as_str()) {
                validate_body(m, self.config.max_message_size)?;
            } else {
                validate_message(m, self.config.max_message_size)?;
                checked_topic = Some(m.topic.clone());
            }
            if !ids.is_empty() {
                ids.push(',');
            }
            match m.uniq_key() {
                Some(id) => ids.push_str(id),
                // Made on the stack, copied into the list and the properties.
                None => self.ids.next_id_on(clock, |id| {
                    ids.push_str(id);
                    m.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, id);
                }),
            }
        }
        let body = encode_batch(msgs)?;
        if body.len() > self.config.max_message_size {
            return Err(mq_client_api::validate::ValidationError::BodyTooLarge {
                size: body.len(),
                max: self.config.max_message_size,
            }
            .into());
        }
        // encode_batch refused an empty batch.
        let first = &msgs[0];
        Ok(Payload::Batch {
            topic: first.topic.clone(),
            body,
            ids,
            wait: first.wait_store_msg_ok(),
        })
    }

    /// The publish queues of `topic` known now, when there are any.
    fn cached_publish_info(&self, topic: &str) -> Option<Arc<TopicPublishInfo>> {
        self.publish.read().get(topic).filter(|i| i.ok()).cloned()
    }

    /// The publish queues of `topic`, fetching the route (or the TBW102 template) when needed,
    /// all by `deadline`.
    ///
    /// A name server that does not answer is never taken for a topic that does not exist: the
    /// lookup moves on to the next name server while time is left, and otherwise fails with
    /// [`ProducerError::RouteLookup`] naming it. Only TOPIC_NOT_EXIST leads to the template.
    pub(crate) async fn publish_info(
        &self,
        instance: &ClientInstance,
        topic: &str,
        deadline: Instant,
    ) -> Result<Arc<TopicPublishInfo>, ProducerError> {
        if let Some(info) = self.cached_publish_info(topic) {
            return Ok(info);
        }
        // A lookup is rare: boxed, so that it does not weigh on the future of every send.
        Box::pin(self.unless_aborted(self.lookup_publish_info(instance, topic, deadline))).await
    }

    /// [`Engine::publish_info`] when the topic's route is not known yet.
    async fn lookup_publish_info(
        &self,
        instance: &ClientInstance,
        topic: &str,
        deadline: Instant,
    ) -> Result<Arc<TopicPublishInfo>, ProducerError> {
        let started = Instant::now();
        let user_topic = instance.config().unwrap_name(topic).to_owned();
        let failed = |source: InstanceError| ProducerError::RouteLookup {
            topic: user_topic.clone(),
            elapsed: started.elapsed(),
            source,
        };
        let no_route = || ProducerError::NoRoute {
            topic: user_topic.clone(),
            name_servers: instance.config().name_servers.clone(),
            template: self.config.create_topic_key.clone(),
        };
        let mut tries = instance.config().name_servers.len().max(1);
        let route = loop {
            tries -= 1;
            match instance.update_route(topic, left(deadline)).await {
                Ok(r) => break Some(r),
                Err(InstanceError::NoNameServer) => return Err(ProducerError::NoNameServer),
                Err(e) if topic_not_exist(&e) => break None,
                // The failed name server is forgotten: the next try asks another one.
                Err(e) if tries > 0 && !left(deadline).is_zero() => {
                    debug!(topic, cause = %e, "route lookup failed; asking the next name server");
                }
                Err(e) => return Err(failed(e)),
            }
        };
        let route = match route {
            Some(r) => r,
            None => instance
                .update_route_from_template(
                    topic,
                    &self.config.create_topic_key,
                    self.config.default_topic_queue_nums,
                    left(deadline),
                )
                .await
                .map_err(|e| {
                    if topic_not_exist(&e) {
                        no_route()
                    } else {
                        failed(e)
                    }
                })?,
        };
        let info = Arc::new(TopicPublishInfo::from_route(topic, &route));
        if !info.ok() {
            return Err(no_route());
        }
        self.publish
            .write()
            .insert(topic.to_owned(), Arc::clone(&info));
        Ok(info)
    }

    /// The request of one attempt to `mq`, whose topic is `topic`, and the message as sent
    /// (borrowed unless the namespace or a retry topic changes its properties).
    pub(crate) fn build_request<'p>(
        &self,
        instance: &ClientInstance,
        payload: &'p Payload,
        mq: &MessageQueue,
        topic: Arc<str>,
        born: SystemTime,
    ) -> (SendRequest, Cow<'p, Message>) {
        let namespace = instance.config().namespace.as_ref();
        let (mut header, body, msg_id, reply, sent) = match payload {
            Payload::Single(m) => {
                let retry = mq_client_api::names::is_retry_topic(&mq.topic);
                let mut m = Cow::Borrowed(m);
                if let Some(ns) = namespace {
                    m.to_mut().set_property(property::INSTANCE_ID, ns);
                }
                let mut sys = 0;
                let body = match self.config.compressor.maybe_compress(&m.body, false) {
                    Some((compressed, bits)) => {
                        sys |= bits;
                        Bytes::from(compressed)
                    }
                    None => m.body.clone(),
                };
                if m.is_transaction_prepared() {
                    sys |= sys_flag::TRANSACTION_PREPARED_TYPE;
                }
                let mut header = SendMessageRequestHeader {
                    sys_flag: sys,
                    flag: m.flag,
                    reconsume_times: Some(0),
                    ..Default::default()
                };
                if retry {
                    let m = m.to_mut();
                    if let Some(t) = m
                        .clear_property(property::RECONSUME_TIME)
                        .and_then(|v| v.parse().ok())
                    {
                        header.reconsume_times = Some(t);
                    }
                    header.max_reconsume_times = m
                        .clear_property(property::MAX_RECONSUME_TIMES)
                        .and_then(|v| v.parse().ok());
                }
                header.properties = Some(m.properties_string());
                let id = m.uniq_key().unwrap_or_default().to_owned();
                let reply = m.property(property::MSG_TYPE) == Some(property::REPLY_MESSAGE_FLAG);
                (header, body, id, reply, m)
            }
            Payload::Batch {
                topic,
                body,
                ids,
                wait,
            } => {
                let mut m = Message::new(topic.clone(), body.clone()).with_wait_store_msg_ok(*wait);
                if let Some(ns) = namespace {
                    m.set_property(property::INSTANCE_ID, ns);
                }
                let header = SendMessageRequestHeader {
                    batch: true,
                    reconsume_times: Some(0),
                    properties: Some(m.properties_string()),
                    ..Default::default()
                };
                (header, body.clone(), ids.clone(), false, Cow::Owned(m))
            }
        };
        header.producer_group = match self.wire_group.get() {
            Some(g) => Arc::clone(g),
            None => instance.config().wrap(&self.config.group).into(),
        };
        header.topic = topic;
        header.default_topic = Arc::clone(&self.default_topic);
        header.default_topic_queue_nums = self.config.default_topic_queue_nums;
        header.queue_id = mq.queue_id;
        header.born_timestamp = mq_client_api::wire_time::to_millis(born);
        (
            SendRequest {
                header,
                body,
                msg_id,
                broker_name: mq.broker_name.clone(),
                reply,
            },
            sent,
        )
    }

    /// The one send path.
    async fn send_core_inner(
        &self,
        payload: &mut Payload,
        target: &Target<'_>,
        mode: CommunicationMode,
        deadline: Instant,
    ) -> Result<Option<SendResult>, ProducerError> {
        let started = Instant::now();
        // Not the state: every way in checked it when it took the send, and a send taken
        // before a shutdown began (a batch whose linger ends after it) is sent within the
        // shutdown's grace, which ends by aborting it.
        let instance = self
            .instance
            .read()
            .clone()
            .ok_or(ProducerError::State(ServiceState::ShutdownAlready))?;
        let mut born = None;
        if let Payload::Single(m) = payload {
            born = self.prepare(m)?;
        }
        let payload = &*payload;
        let user_topic = payload.topic();
        let topic = instance.config().wrapped(user_topic);
        let cached = self.cached_publish_info(&topic);
        // With the route at hand, the first attempt's deadline check uses the clock reading
        // above; after a lookup, and before any later attempt, the clock is read again.
        let (info, first_check) = match cached {
            Some(info) => (info, started < deadline),
            // A lookup is rare: boxed, so that it does not weigh on the future of every send.
            None => (
                Box::pin(
                    self.unless_aborted(self.lookup_publish_info(&instance, &topic, deadline)),
                )
                .await?,
                Instant::now() < deadline,
            ),
        };
        let mut first_check = Some(first_check);
        let policy = RetryPolicy::new(&self.config, target, mode);
        let mut attempts = 0u32;
        // The brokers of attempts that did not end the send (none, when the first succeeds).
        let mut brokers: Vec<String> = Vec::new();
        // Boxed, as they are rare: the send's future, which holds them across every await,
        // stays small enough for the allocator's fast path.
        let mut last_error: Option<Box<ClientApiError>> = None;
        let mut not_stored: Option<Box<SendResult>> = None;
        while attempts < policy.max_attempts
            && first_check
                .take()
                .unwrap_or_else(|| Instant::now() < deadline)
        {
            let last = brokers.last().map(String::as_str);
            let Some(mq) = self.select_queue(target, &info, &topic, payload, last)? else {
                break;
            };
            attempts += 1;
            let addr = match self
                .broker_addr(&instance, &topic, &mq.broker_name, deadline)
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    // No master to send to: the next attempt picks another broker.
                    brokers.push(mq.broker_name.clone());
                    last_error = Some(Box::new(e));
                    continue;
                }
            };
            let to = AttemptTo {
                instance: &instance,
                queue: &mq,
                addr: &addr,
                topic: &info.topic,
                user_topic,
                mode,
                attempt: attempts,
                born: born.take(),
            };
            // Boxed: the attempt's future (the request, the connection's wait) is the largest
            // part of a send's, and every future around this one would otherwise carry it
            // and be copied with it as it is built; one allocation costs less.
            let outcome = Box::pin(self.attempt(&to, payload, deadline)).await;
            let (e, retry) = match policy.next(outcome) {
                Next::Done(r) => return Ok(r),
                Next::NotStored(r) => {
                    brokers.push(mq.broker_name.clone());
                    not_stored = Some(Box::new(r));
                    continue;
                }
                Next::Retry(e) => (e, true),
                Next::Fail(e) => (e, false),
            };
            brokers.push(mq.broker_name.clone());
            if e.response_code() == Some(ResponseCode::TOPIC_NOT_EXIST) {
                self.refresh_route(&instance, &topic, deadline).await;
            }
            debug!(topic = %user_topic, broker = %mq.broker_name, attempt = attempts, cause = %e, retry, "send attempt failed");
            if !retry {
                return Err(ProducerError::SendFailed {
                    topic: user_topic.to_owned(),
                    attempts,
                    brokers,
                    elapsed: started.elapsed(),
                    source: Box::new(e),
                });
            }
            last_error = Some(Box::new(e));
        }
        if let Some(r) = not_stored {
            return Ok(Some(*r));
        }
        let elapsed = started.elapsed();
        match last_error {
            Some(source) => {
                warn!(topic = %user_topic, attempts, ?brokers, cause = %source, "send failed");
                Err(ProducerError::SendFailed {
                    topic: user_topic.to_owned(),
                    attempts,
                    brokers,
                    elapsed,
                    source,
                })
            }
            None => Err(ProducerError::DeadlineExceeded {
                topic: user_topic.to_owned(),
                attempts,
                brokers,
                elapsed,
            }),
        }
    }

    /// Checks a single message and gives it its `UNIQ_KEY` (once: kept across retries).
    /// Returns the time the id was made of, when it made one: the first attempt's born
    /// timestamp, which then takes no clock reading of its own.
    ///
    /// # Errors
    /// [`ProducerError::Validation`].
    pub(crate) fn prepare(&self, m: &mut Message) -> Result<Option<SystemTime>, ProducerError> {
        validate_message(m, self.config.max_message_size)?;
        if m.uniq_key().is_some() {
            return Ok(None);
        }
        let now = SystemTime::now();
        self.ids.next_id_with(now, |id| {
            m.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, id);
        });
        Ok(Some(now))
    }
}

/// Whether a route lookup failed because the name server knows no such topic.
fn topic_not_exist(e: &InstanceError) -> bool {
    matches!(e, InstanceError::Api(a) if a.response_code().is_some_and(ClientInstance::is_route_error))
}
