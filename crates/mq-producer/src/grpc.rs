//! [`GrpcProducer`]: sends through a RocketMQ 5 proxy over gRPC (`mq serve --grpc-port`, or
//! Apache RocketMQ's proxy), for clusters reached only that way.
//!
//! The rules are the remoting producer's: a message is validated and gets its `UNIQ_KEY`
//! before the first attempt; each send has one deadline (the send timeout) that every attempt
//! and wait sits inside; a failed attempt is tried again on another queue, preferring another
//! broker, up to `1 + retry_times` attempts, unless the failure says a retry cannot help (a
//! bad message, a forbidden topic); a failed send hands the message back.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mq_client_api::message::property;
use mq_client_api::message::{BatchError, Message, UniqueIdGenerator, check_batch};
use mq_client_api::validate::{ValidationError, validate_message, validate_topic};
use mq_client_api::{MessageQueue, SendResult, SendStatus};
use mq_grpc::convert::{SHARDING_KEY, from_message, group_hash, to_message_ext};
use mq_grpc::{GrpcClientConfig, GrpcError, GrpcSession, v2};
use mq_remoting::ClientTls;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BatchingConfig;
use crate::error::{ProducerError, SendError};
use crate::transaction::{LocalTransactionState, TransactionListener, TransactionSendResult};

/// How a [`GrpcProducer`] reaches its proxy and sends.
#[derive(Clone, Debug)]
pub struct GrpcProducerConfig {
    /// The proxy, `host:port`.
    pub endpoint: String,
    /// Topics announced in the producer's settings (others may be sent to as well).
    pub topics: Vec<String>,
    /// The deadline of one send, every attempt included.
    pub send_timeout: Duration,
    /// Attempts after the first one.
    pub retry_times: u32,
    /// The largest body accepted.
    pub max_message_size: usize,
    /// Namespace; empty for none.
    pub namespace: String,
    /// TLS to the proxy (its roots and name); none: plain.
    pub tls: Option<ClientTls>,
    /// The ACL account every call is signed with, for a proxy that checks ACL; none: calls
    /// are not signed.
    pub credentials: Option<mq_client_api::acl::Credentials>,
    /// Auto-batching of [`GrpcProducer::send`]: sends to one topic made at about the same
    /// time go to the proxy in one request. None (the default): one request per send.
    pub batching: Option<BatchingConfig>,
}

impl GrpcProducerConfig {
    /// A producer through the proxy at `endpoint`: 3 s per send, 2 retries, 4 MiB bodies.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            topics: Vec::new(),
            send_timeout: Duration::from_secs(3),
            retry_times: 2,
            max_message_size: 4 * 1024 * 1024,
            namespace: String::new(),
            tls: None,
            credentials: None,
            batching: None,
        }
    }

    /// Gathers sends to one topic into one request ([`GrpcProducerConfig::batching`]).
    #[must_use]
    pub fn with_batching(mut self, batching: BatchingConfig) -> Self {
        self.batching = Some(batching);
        self
    }

    /// Signs every call with `credentials` (an account of the proxy's ACL).
    #[must_use]
    pub fn with_credentials(mut self, credentials: mq_client_api::acl::Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Connects to the proxy with TLS by `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Announces `topic` in the producer's settings (its route is looked up at start).
    #[must_use]
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topics.push(topic.into());
        self
    }

    /// Sets the deadline of one send.
    #[must_use]
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Sets the attempts after the first one.
    #[must_use]
    pub fn with_retry_times(mut self, retries: u32) -> Self {
        self.retry_times = retries;
        self
    }

    /// Sets the namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

/// A producer that sends through a RocketMQ 5 proxy over gRPC.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), mq_producer::ProducerError> {
/// use mq_client_api::Message;
/// use mq_producer::{GrpcProducer, GrpcProducerConfig};
///
/// let producer =
///     GrpcProducer::start(GrpcProducerConfig::new("127.0.0.1:8081").with_topic("TopicTest"))
///         .await?;
/// let r = producer.send(Message::new("TopicTest", "hello")).await?;
/// println!("{} at offset {}", r.msg_id, r.queue_offset);
/// producer.shutdown().await;
/// # Ok(()) }
/// ```
pub struct GrpcProducer {
    core: Arc<Core>,
    /// The open batches of auto-batched sends, when batching is on.
    gather: Option<Arc<Gather>>,
}

/// What a producer's sends share, with the tasks that send its gathered batches.
struct Core {
    session: GrpcSession,
    /// Runs local transactions and answers the proxy's checks (a transactional producer).
    listener: Option<Arc<dyn TransactionListener>>,
    config: GrpcProducerConfig,
    ids: UniqueIdGenerator,
    born_host: String,
    /// The delay of each delay level (a delayed message's delivery time).
    delays: Vec<Duration>,
    /// Writable queues by topic, until a send to the topic fails.
    routes: Mutex<HashMap<String, Arc<[v2::MessageQueue]>>>,
    turn: AtomicUsize,
}

impl std::fmt::Debug for GrpcProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcProducer")
            .field("session", &self.core.session)
            .field("config", &self.core.config)
            .field("transactional", &self.core.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl GrpcProducer {
    /// Checks the configuration, connects to the proxy, announces the producer and looks up
    /// the routes of its topics, within the send timeout.
    ///
    /// # Errors
    /// [`ProducerError::Validation`] for a bad topic; [`ProducerError::Grpc`] when the proxy
    /// cannot be reached, refuses the settings or knows no such topic.
    pub async fn start(config: GrpcProducerConfig) -> Result<Self, ProducerError> {
        Self::start_with(config, None).await
    }

    /// As [`GrpcProducer::start`], for a producer that also sends in transactions
    /// ([`GrpcProducer::send_in_transaction`]): `listener` runs the local transactions and
    /// answers the proxy when it asks about one left undecided (on the Telemetry stream, for
    /// the topics this producer announced).
    ///
    /// # Errors
    /// As for [`GrpcProducer::start`].
    pub async fn start_transactional(
        config: GrpcProducerConfig,
        listener: Arc<dyn TransactionListener>,
    ) -> Result<Self, ProducerError> {
        Self::start_with(config, Some(listener)).await
    }

    async fn start_with(
        config: GrpcProducerConfig,
        listener: Option<Arc<dyn TransactionListener>>,
    ) -> Result<Self, ProducerError> {
        for t in &config.topics {
            validate_topic(t)?;
        }
        let settings = v2::Settings {
            client_type: Some(v2::ClientType::Producer as i32),
            pub_sub: Some(v2::settings::PubSub::Publishing(v2::Publishing {
                topics: config
                    .topics
                    .iter()
                    .map(|t| v2::Resource {
                        resource_namespace: config.namespace.clone(),
                        name: t.clone(),
                    })
                    .collect(),
                max_body_size: i32::try_from(config.max_message_size).unwrap_or(i32::MAX),
                validate_message_type: false,
            })),
            ..Default::default()
        };
        let mut grpc = GrpcClientConfig::new(&config.endpoint)
            .with_namespace(&config.namespace)
            .with_request_timeout(config.send_timeout);
        grpc.tls.clone_from(&config.tls);
        grpc.credentials.clone_from(&config.credentials);
        let deadline = Instant::now() + config.send_timeout;
        let orphans = listener.clone().map(|l| orphan_handler(l, &config));
        let session = GrpcSession::connect_with(grpc, settings, orphans, deadline).await?;
        let ip = tokio::time::timeout_at(deadline.into(), local_ip(&config.endpoint))
            .await
            .ok()
            .flatten();
        let gather = config
            .batching
            .map(|batching| Arc::new(Gather::new(batching)));
        let core = Core {
            session,
            listener,
            born_host: ip.map(|ip| ip.to_string()).unwrap_or_default(),
            delays: mq_client_api::names::default_delay_levels(),
            ids: UniqueIdGenerator::new(ip),
            config,
            routes: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
        };
        for t in &core.config.topics {
            core.queues(t, deadline).await?;
        }
        Ok(Self {
            core: Arc::new(core),
            gather,
        })
    }

    /// The producer's configuration.
    pub fn config(&self) -> &GrpcProducerConfig {
        &self.core.config
    }

    /// Sends `msg` and waits for the proxy's answer, within the send timeout.
    ///
    /// With [batching](GrpcProducerConfig::with_batching), a message that may go in a batch
    /// (no delay or delivery time, no message group, not a retry topic) waits up to the
    /// linger time for other sends to its topic, and goes with them in one request; its
    /// result is its own (its id, its queue offset).
    ///
    /// # Errors
    /// With the message handed back: [`ProducerError::Validation`] before any attempt;
    /// [`ProducerError::GrpcSendFailed`] naming the proxy, the attempts and the last error
    /// once no attempt is left or the deadline passed; for a batched message,
    /// [`ProducerError::BatchFailed`] with that error as its cause.
    pub async fn send(&self, mut msg: Message) -> Result<SendResult, SendError> {
        if let Some(gather) = &self.gather
            && may_join(&msg)
        {
            // Checked and given its id first: its size in a batch counts the id.
            if let Err(e) = self.core.ready(&mut msg) {
                return Err(SendError::new(e, msg));
            }
            if let Ok(size) = check_batch(std::slice::from_ref(&msg)) {
                return self.send_gathered(gather, msg, size).await;
            }
        }
        match self
            .core
            .send_attempts(
                std::slice::from_mut(&mut msg),
                1 + self.core.config.retry_times,
            )
            .await
        {
            // One result per message sent: `attempt` checked the count.
            Ok(mut r) => Ok(r.remove(0)),
            Err(e) => Err(SendError::new(e, msg)),
        }
    }

    /// Sends messages of one topic in one request, which the proxy stores together or not at
    /// all, in one queue (the first message's group's, or the next in turn), with the rules
    /// and retries of [`GrpcProducer::send`]. One result per message, in order, at consecutive
    /// queue offsets.
    ///
    /// # Errors
    /// With the messages handed back: [`ProducerError::Batch`] for an empty or mixed batch (or
    /// one with a delay), [`ProducerError::Validation`] for a bad message or a batch over the
    /// size limit; as for [`GrpcProducer::send`] otherwise.
    pub async fn send_batch(
        &self,
        mut msgs: Vec<Message>,
    ) -> Result<Vec<SendResult>, SendError<Vec<Message>>> {
        let max = self.core.config.max_message_size;
        let checked = check_batch(&msgs)
            .map_err(ProducerError::from)
            .and_then(|size| {
                if size > max {
                    return Err(ValidationError::BodyTooLarge { size, max }.into());
                }
                Ok(())
            });
        if let Err(e) = checked {
            return Err(SendError::new(e, msgs));
        }
        match self
            .core
            .send_attempts(&mut msgs, 1 + self.core.config.retry_times)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => Err(SendError::new(e, msgs)),
        }
    }

    /// [`GrpcProducer::send`] of a message ready to send (checked, with its id) that may go in
    /// a batch, of `size` bytes as a batch counts them: it joins its topic's open batch, shared
    /// with it, and waits for that batch's answer; handed back if the batch fails.
    async fn send_gathered(
        &self,
        gather: &Arc<Gather>,
        msg: Message,
        size: usize,
    ) -> Result<SendResult, SendError> {
        let started = Instant::now();
        let deadline = started + self.core.config.send_timeout;
        // Shared with the batch until it is answered (the batch lets go of it first).
        let msg = Arc::new(msg);
        let (tx, rx) = oneshot::channel();
        let joined = gather.join(
            &msg.topic,
            Member {
                msg: Arc::clone(&msg),
                size,
                waiter: tx,
                started,
                deadline,
            },
            self.core.config.max_message_size,
        );
        for batch in [joined.before, joined.full].into_iter().flatten() {
            gather.tasks.spawn(flush(Arc::clone(&self.core), batch));
        }
        if let Some(id) = joined.opened {
            // The new batch's linger: sent when the time is up, unless it filled first.
            let (core, g) = (Arc::clone(&self.core), Arc::clone(gather));
            let topic = msg.topic.clone();
            gather.tasks.spawn(async move {
                // Cut short by shutdown (which sends every open batch itself) and by drop.
                tokio::select! {
                    () = tokio::time::sleep(g.config.linger) => {}
                    () = g.closing.cancelled() => {}
                }
                let batch = g.take(&topic, id);
                if let Some(batch) = batch {
                    flush(core, batch).await;
                }
            });
        }
        let error = match rx.await {
            Ok(Ok(result)) => return Ok(result),
            Ok(Err((size, cause))) => {
                let topic = msg.topic.clone();
                ProducerError::BatchFailed { topic, size, cause }
            }
            // The batch's task was stopped with its runtime.
            Err(_) => ProducerError::ShutDown,
        };
        // The batch has let go of the message: it comes back without a copy.
        Err(SendError::new(error, Arc::unwrap_or_clone(msg)))
    }

    /// Sends `msg` as a half message (one attempt: a second could leave two), runs the local
    /// transaction with `arg`, then commits or rolls back (EndTransaction). `Unknown` leaves
    /// the decision to the proxy's later question, which the listener's `check` answers. A
    /// producer started without a listener leaves every transaction `Unknown`.
    ///
    /// # Errors
    /// As for [`GrpcProducer::send`] for the half message. A failure to end the transaction
    /// is only logged: the proxy asks again.
    pub async fn send_in_transaction(
        &self,
        mut msg: Message,
        arg: &str,
    ) -> Result<TransactionSendResult, SendError> {
        msg.set_property(property::TRANSACTION_PREPARED, "true");
        let send = match self
            .core
            .send_attempts(std::slice::from_mut(&mut msg), 1)
            .await
        {
            // One result per message sent: `attempt` checked the count.
            Ok(mut r) => r.remove(0),
            Err(e) => return Err(SendError::new(e, msg)),
        };
        msg.transaction_id.clone_from(&send.transaction_id);
        let local_state = match &self.core.listener {
            Some(l) => l.execute(&msg, arg),
            None => LocalTransactionState::Unknown,
        };
        if let Some(resolution) = resolution(local_state) {
            let ended = self
                .core
                .session
                .end_transaction(
                    &msg.topic,
                    &send.msg_id,
                    send.transaction_id.as_deref().unwrap_or_default(),
                    resolution,
                    v2::TransactionSource::SourceClient,
                    Instant::now() + self.core.config.send_timeout,
                )
                .await;
            if let Err(e) = ended {
                tracing::warn!(topic = %msg.topic, error = %e, "EndTransaction failed; the proxy will ask again");
            }
        }
        Ok(TransactionSendResult { send, local_state })
    }

    /// Recalls a timer message ([`Message::with_deliver_time`]) before it is delivered, by
    /// the handle its send answered with ([`SendResult::recall_handle`]); the message's unique
    /// id. Within the send timeout.
    ///
    /// # Errors
    /// [`ProducerError::Grpc`]: the proxy unreachable, or refusing the handle.
    pub async fn recall_message(
        &self,
        topic: &str,
        recall_handle: &str,
    ) -> Result<String, ProducerError> {
        let deadline = Instant::now() + self.core.config.send_timeout;
        Ok(self
            .core
            .session
            .recall_message(topic, recall_handle, deadline)
            .await?)
    }

    /// Tells the proxy the producer leaves and stops its session. Dropping the producer stops
    /// the session too, without telling the proxy.
    ///
    /// Open batches are sent first, and their sends answered.
    pub async fn shutdown(self) {
        if let Some(gather) = &self.gather {
            for batch in gather.take_all() {
                gather.tasks.spawn(flush(Arc::clone(&self.core), batch));
            }
            gather.closing.cancel();
            gather.tasks.close();
            gather.tasks.wait().await;
        }
        let deadline = Instant::now() + self.core.config.send_timeout;
        if let Err(e) = self.core.session.terminate(None, deadline).await {
            tracing::debug!(error = %e, "the proxy did not take the termination notice");
        }
    }
}

impl Core {
    /// Checks `msg` and gives it its `UNIQ_KEY` when it has none.
    fn ready(&self, msg: &mut Message) -> Result<(), ProducerError> {
        validate_message(msg, self.config.max_message_size)?;
        if msg.uniq_key().is_none() {
            msg.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, self.ids.next_id());
        }
        Ok(())
    }

    /// Checks `msgs` (one message, or a checked batch of one topic), gives each its
    /// `UNIQ_KEY`, and sends them in one request ([`Core::send_prepared`]).
    async fn send_attempts(
        &self,
        msgs: &mut [Message],
        max_attempts: u32,
    ) -> Result<Vec<SendResult>, ProducerError> {
        let started = Instant::now();
        let deadline = started + self.config.send_timeout;
        for msg in msgs.iter_mut() {
            self.ready(msg)?;
        }
        // Callers pass one message or a checked (non-empty) batch.
        let Some(first) = msgs.first() else {
            return Err(BatchError::Empty.into());
        };
        let batch = Prepared {
            topic: &first.topic,
            group: first.property(SHARDING_KEY),
            msgs,
        };
        self.send_prepared(&batch, max_attempts, started, deadline)
            .await
    }

    /// Sends `batch` in one request in up to `max_attempts` attempts before `deadline`,
    /// another queue after a failure that a retry may help.
    async fn send_prepared(
        &self,
        batch: &Prepared<'_, impl Borrow<Message> + Sync>,
        max_attempts: u32,
        started: Instant,
        deadline: Instant,
    ) -> Result<Vec<SendResult>, ProducerError> {
        let topic = batch.topic;
        let mut attempts = 0;
        let mut failed_broker: Option<String> = None;
        let mut last: Option<GrpcError> = None;
        while attempts < max_attempts && Instant::now() < deadline {
            attempts += 1;
            let outcome = match self
                .queue(topic, batch.group, failed_broker.as_deref(), deadline)
                .await
            {
                Ok(queue) => self
                    .attempt(batch, &queue, deadline)
                    .await
                    .inspect_err(|_| {
                        failed_broker = broker_of(&queue).map(str::to_owned);
                    }),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.routes.lock().remove(topic);
                    let retry = e.is_retriable();
                    tracing::debug!(topic = %topic, attempt = attempts, error = %e, retry, "gRPC send attempt failed");
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(ProducerError::GrpcSendFailed {
            topic: topic.to_owned(),
            endpoint: self.config.endpoint.clone(),
            attempts,
            elapsed: started.elapsed(),
            source: last.map(Box::new),
        })
    }

    /// One attempt of `batch` (one request) to `queue`: a result per message, or the first
    /// refusal. A batch may be answered with an entry per message, or, as Apache RocketMQ's
    /// proxy answers, with one entry for the whole batch (its first offset); each result then
    /// carries its message's own id.
    async fn attempt(
        &self,
        batch: &Prepared<'_, impl Borrow<Message> + Sync>,
        queue: &v2::MessageQueue,
        deadline: Instant,
    ) -> Result<Vec<SendResult>, GrpcError> {
        let n = batch.msgs.len();
        let sent = batch
            .msgs
            .iter()
            .map(|msg| {
                let msg = msg.borrow();
                let mut m = from_message(msg, &self.born_host, &self.delays);
                if let Some(sys) = m.system_properties.as_mut() {
                    sys.queue_id = queue.id;
                }
                m.topic = Some(self.session.resource(&msg.topic));
                m
            })
            .collect();
        let entries = self.session.send(sent, deadline).await?;
        if let Some(s) = entries
            .iter()
            .filter_map(|e| e.status.as_ref())
            .find(|s| s.code != v2::Code::Ok as i32)
        {
            return Err(GrpcError::Refused {
                endpoint: self.config.endpoint.clone(),
                rpc: "SendMessage",
                code: s.code,
                message: s.message.clone(),
            });
        }
        let per_message = entries.len() == n;
        let Some(first) = entries
            .first()
            .filter(|_| per_message || entries.len() == 1)
        else {
            // Not an answer to this request: not retried (the messages may be stored).
            return Err(GrpcError::Refused {
                endpoint: self.config.endpoint.clone(),
                rpc: "SendMessage",
                code: v2::Code::Unspecified as i32,
                message: format!(
                    "the answer holds {} entries for {n} messages",
                    entries.len()
                ),
            });
        };
        let broker = broker_of(queue).unwrap_or("");
        let text = |t: &str| Some(t.to_owned()).filter(|t| !t.is_empty());
        let result = |msg_id: String, offset: i64| SendResult {
            status: SendStatus::SendOk,
            msg_id,
            offset_msg_id: String::new(),
            message_queue: MessageQueue::new(batch.topic, broker, queue.id),
            queue_offset: offset,
            transaction_id: None,
            region_id: "DefaultRegion".into(),
            trace_on: false,
            recall_handle: None,
        };
        if per_message {
            return Ok(entries
                .iter()
                .map(|e| SendResult {
                    transaction_id: text(&e.transaction_id),
                    recall_handle: text(&e.recall_handle),
                    ..result(e.message_id.clone(), e.offset)
                })
                .collect());
        }
        Ok(batch
            .msgs
            .iter()
            .zip(first.offset..)
            .map(|(msg, offset)| {
                let id = msg.borrow().uniq_key().unwrap_or_default().to_owned();
                result(id, offset)
            })
            .collect())
    }

    /// The queue of this attempt: by the message group's hash for a FIFO message (so a group
    /// keeps one queue), otherwise in turn, avoiding `avoid`'s queues while others exist.
    async fn queue(
        &self,
        topic: &str,
        group: Option<&str>,
        avoid: Option<&str>,
        deadline: Instant,
    ) -> Result<v2::MessageQueue, GrpcError> {
        let queues = self.queues(topic, deadline).await?;
        if let Some(group) = group {
            return Ok(queues[group_hash(group) as usize % queues.len()].clone());
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let pick = match avoid {
            Some(_) => {
                let others = queues.iter().filter(|q| broker_of(q) != avoid).count();
                (others > 0).then(|| {
                    queues
                        .iter()
                        .filter(|q| broker_of(q) != avoid)
                        .nth(turn % others)
                })
            }
            None => None,
        };
        Ok(pick
            .flatten()
            .unwrap_or(&queues[turn % queues.len()])
            .clone())
    }

    /// The writable queues of `topic` (never empty), asking the proxy when none is known.
    async fn queues(
        &self,
        topic: &str,
        deadline: Instant,
    ) -> Result<Arc<[v2::MessageQueue]>, GrpcError> {
        if let Some(q) = self.routes.lock().get(topic) {
            return Ok(Arc::clone(q));
        }
        let writable = |q: &v2::MessageQueue| {
            q.permission == v2::Permission::Write as i32
                || q.permission == v2::Permission::ReadWrite as i32
        };
        let queues: Arc<[v2::MessageQueue]> = self
            .session
            .query_route(topic, deadline)
            .await?
            .into_iter()
            .filter(writable)
            .collect();
        if queues.is_empty() {
            return Err(GrpcError::Refused {
                endpoint: self.config.endpoint.clone(),
                rpc: "QueryRoute",
                code: v2::Code::TopicNotFound as i32,
                message: format!("no writable queue of {topic}"),
            });
        }
        self.routes
            .lock()
            .insert(topic.to_owned(), Arc::clone(&queues));
        Ok(queues)
    }
}

/// A producer dropped without [`GrpcProducer::shutdown`] sends its open batches at once: their
/// tasks end by themselves once the batches are answered.
impl Drop for GrpcProducer {
    fn drop(&mut self) {
        if let Some(gather) = &self.gather {
            gather.closing.cancel();
        }
    }
}

/// The resolution that ends a transaction in `state`; none while it is unknown.
fn resolution(state: LocalTransactionState) -> Option<v2::TransactionResolution> {
    match state {
        LocalTransactionState::Commit => Some(v2::TransactionResolution::Commit),
        LocalTransactionState::Rollback => Some(v2::TransactionResolution::Rollback),
        _ => None,
    }
}

/// Answers the proxy's question about a transaction left undecided: the listener's `check` on
/// the half message, sent back with EndTransaction (an unknown state is not answered: the
/// proxy asks again later).
fn orphan_handler(
    listener: Arc<dyn TransactionListener>,
    config: &GrpcProducerConfig,
) -> mq_grpc::OrphanHandler {
    let timeout = config.send_timeout;
    let max_body = config.max_message_size;
    Arc::new(
        move |session: GrpcSession, asked: v2::RecoverOrphanedTransactionCommand| {
            let listener = Arc::clone(&listener);
            Box::pin(async move {
                let Some(m) = asked.message.as_ref() else {
                    return;
                };
                let ext = match to_message_ext(m, max_body) {
                    Ok(ext) => ext,
                    Err(e) => {
                        tracing::warn!(error = ?e, "an undecided transaction's message could not be read");
                        return;
                    }
                };
                let Some(resolution) = resolution(listener.check(&ext)) else {
                    return;
                };
                let id = m
                    .system_properties
                    .as_ref()
                    .map(|s| s.message_id.as_str())
                    .unwrap_or_default();
                let ended = session
                    .end_transaction(
                        &ext.message.topic,
                        id,
                        &asked.transaction_id,
                        resolution,
                        v2::TransactionSource::SourceServerCheck,
                        Instant::now() + timeout,
                    )
                    .await;
                if let Err(e) = ended {
                    tracing::warn!(error = %e, "answering the proxy's transaction check failed");
                }
            })
        },
    )
}

fn broker_of(q: &v2::MessageQueue) -> Option<&str> {
    q.broker.as_ref().map(|b| b.name.as_str())
}

/// The local address this host reaches `endpoint` from (the born host of its messages).
async fn local_ip(endpoint: &str) -> Option<std::net::IpAddr> {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.connect(endpoint).await.ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Messages ready to go in one request (checked, with their ids): of `topic`, queued by
/// `group` when they have one.
struct Prepared<'a, M> {
    topic: &'a str,
    group: Option<&'a str>,
    msgs: &'a [M],
}

/// Whether `msg` may go in a batch as far as its group and type say: not in a message group
/// (a group keeps its queue and order: its messages go one by one), not a transaction's half
/// message. The batch rules ([`check_batch`]: no delay or delivery time, not a retry topic)
/// decide the rest.
fn may_join(msg: &Message) -> bool {
    msg.property(SHARDING_KEY).is_none()
        && msg.property(property::TRANSACTION_PREPARED) != Some("true")
}

/// What a batched send's task hears: its result, or its batch's size and failure.
type Outcome = Result<SendResult, (usize, Arc<ProducerError>)>;

/// A message in a batch, and who waits for it.
struct Member {
    msg: Arc<Message>,
    /// What it counts for against the largest message (a batch is one message to the proxy).
    size: usize,
    waiter: oneshot::Sender<Outcome>,
    started: Instant,
    deadline: Instant,
}

/// An open batch of one topic.
struct Batch {
    id: u64,
    topic: String,
    msgs: Vec<Arc<Message>>,
    waiters: Vec<oneshot::Sender<Outcome>>,
    size: usize,
    bytes: usize,
    /// When its first send started (the batch's failure counts its time from there).
    started: Instant,
    /// The earliest of its sends' deadlines.
    deadline: Instant,
}

impl Batch {
    fn add(&mut self, m: Member) {
        self.size += m.size;
        self.bytes += m.msg.body.len();
        self.started = self.started.min(m.started);
        self.deadline = self.deadline.min(m.deadline);
        self.msgs.push(m.msg);
        self.waiters.push(m.waiter);
    }

    fn is_full(&self, config: &BatchingConfig) -> bool {
        self.bytes >= config.max_bytes || self.msgs.len() >= config.max_messages
    }
}

/// The open batches of a producer's sends, by topic, and the tasks that send them.
struct Gather {
    config: BatchingConfig,
    open: Mutex<Open>,
    /// Each batch's linger and its send: waited for by [`GrpcProducer::shutdown`]; after a
    /// drop they end by themselves, the batch sent and its sends answered.
    tasks: TaskTracker,
    /// Set by shutdown and drop: lingers end at once.
    closing: CancellationToken,
}

#[derive(Default)]
struct Open {
    by_topic: HashMap<String, Batch>,
    next_id: u64,
}

/// What joining a batch led to.
#[derive(Default)]
struct Joined {
    /// The batch that had no room left for the message: to send now.
    before: Option<Batch>,
    /// The batch the message joined, full with it: to send now.
    full: Option<Batch>,
    /// The id of the batch the message opened: its linger starts.
    opened: Option<u64>,
}

impl Gather {
    fn new(config: BatchingConfig) -> Self {
        Self {
            config,
            open: Mutex::new(Open::default()),
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
        }
    }

    /// Adds `m` to `topic`'s open batch, opening one when there is none, or when `m` would
    /// take the open one past `max_size`.
    fn join(&self, topic: &str, m: Member, max_size: usize) -> Joined {
        let mut joined = Joined::default();
        let mut open = self.open.lock();
        if open
            .by_topic
            .get(topic)
            .is_some_and(|b| b.size + m.size > max_size)
        {
            joined.before = open.by_topic.remove(topic);
        }
        let full = match open.by_topic.get_mut(topic) {
            Some(batch) => {
                batch.add(m);
                batch.is_full(&self.config)
            }
            None => {
                open.next_id += 1;
                let mut batch = Batch {
                    id: open.next_id,
                    topic: topic.to_owned(),
                    msgs: Vec::new(),
                    waiters: Vec::new(),
                    size: 0,
                    bytes: 0,
                    started: m.started,
                    deadline: m.deadline,
                };
                batch.add(m);
                if batch.is_full(&self.config) {
                    joined.full = Some(batch);
                } else {
                    joined.opened = Some(batch.id);
                    open.by_topic.insert(topic.to_owned(), batch);
                }
                false
            }
        };
        if full {
            joined.full = open.by_topic.remove(topic);
        }
        joined
    }

    /// Takes `topic`'s open batch when it is batch `id` (it may have filled and gone).
    fn take(&self, topic: &str, id: u64) -> Option<Batch> {
        let mut open = self.open.lock();
        if open.by_topic.get(topic)?.id != id {
            return None;
        }
        open.by_topic.remove(topic)
    }

    /// Takes every open batch.
    fn take_all(&self) -> Vec<Batch> {
        self.open.lock().by_topic.drain().map(|(_, b)| b).collect()
    }
}

/// Sends `batch` with the rules of one send, and answers each of its sends.
async fn flush(core: Arc<Core>, batch: Batch) {
    let Batch {
        topic,
        msgs,
        waiters,
        started,
        deadline,
        ..
    } = batch;
    let n = msgs.len();
    let prepared = Prepared {
        topic: &topic,
        group: None,
        msgs: &msgs,
    };
    let max_attempts = 1 + core.config.retry_times;
    let outcome = core
        .send_prepared(&prepared, max_attempts, started, deadline)
        .await;
    // Let go of the messages before the answers: a failed send takes its own back whole.
    drop(msgs);
    match outcome {
        // One result per message: `attempt` checked the count.
        Ok(results) => {
            for (waiter, result) in waiters.into_iter().zip(results) {
                // A send no longer awaited: its result has no one to go to.
                let _ = waiter.send(Ok(result));
            }
        }
        Err(e) => {
            let cause = Arc::new(e);
            for waiter in waiters {
                let _ = waiter.send(Err((n, Arc::clone(&cause))));
            }
        }
    }
}
