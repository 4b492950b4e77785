//! [`GrpcProducer`]: sends through a RocketMQ 5 proxy over gRPC (`mq serve --grpc-port`, or
//! Apache RocketMQ's proxy), for clusters reached only that way.
//!
//! The rules are the remoting producer's: a message is validated and gets its `UNIQ_KEY`
//! before the first attempt; each send has one deadline (the send timeout) that every attempt
//! and wait sits inside; a failed attempt is tried again on another queue, preferring another
//! broker, up to `1 + retry_times` attempts, unless the failure says a retry cannot help (a
//! bad message, a forbidden topic); a failed send hands the message back.

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
        }
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
    session: GrpcSession,
    /// Runs local transactions and answers the proxy's checks (a transactional producer).
    listener: Option<Arc<dyn TransactionListener>>,
    config: GrpcProducerConfig,
    ids: UniqueIdGenerator,
    born_host: String,
    /// Writable queues by topic, until a send to the topic fails.
    routes: Mutex<HashMap<String, Arc<[v2::MessageQueue]>>>,
    turn: AtomicUsize,
}

impl std::fmt::Debug for GrpcProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcProducer")
            .field("session", &self.session)
            .field("config", &self.config)
            .field("transactional", &self.listener.is_some())
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
        let producer = Self {
            session,
            listener,
            born_host: ip.map(|ip| ip.to_string()).unwrap_or_default(),
            ids: UniqueIdGenerator::new(ip),
            config,
            routes: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
        };
        for t in &producer.config.topics {
            producer.queues(t, deadline).await?;
        }
        Ok(producer)
    }

    /// The producer's configuration.
    pub fn config(&self) -> &GrpcProducerConfig {
        &self.config
    }

    /// Sends `msg` and waits for the proxy's answer, within the send timeout.
    ///
    /// # Errors
    /// With the message handed back: [`ProducerError::Validation`] before any attempt;
    /// [`ProducerError::GrpcSendFailed`] naming the proxy, the attempts and the last error
    /// once no attempt is left or the deadline passed.
    pub async fn send(&self, mut msg: Message) -> Result<SendResult, SendError> {
        match self
            .send_attempts(std::slice::from_mut(&mut msg), 1 + self.config.retry_times)
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
        let checked = check_batch(&msgs)
            .map_err(ProducerError::from)
            .and_then(|size| {
                if size > self.config.max_message_size {
                    return Err(ValidationError::BodyTooLarge {
                        size,
                        max: self.config.max_message_size,
                    }
                    .into());
                }
                Ok(())
            });
        if let Err(e) = checked {
            return Err(SendError::new(e, msgs));
        }
        match self
            .send_attempts(&mut msgs, 1 + self.config.retry_times)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => Err(SendError::new(e, msgs)),
        }
    }

    /// Validates `msgs` (one message, or a checked batch of one topic), gives each its
    /// `UNIQ_KEY`, and sends them in one request in up to `max_attempts` attempts within the
    /// send timeout, another queue after a failure that a retry may help.
    async fn send_attempts(
        &self,
        msgs: &mut [Message],
        max_attempts: u32,
    ) -> Result<Vec<SendResult>, ProducerError> {
        let started = Instant::now();
        let deadline = started + self.config.send_timeout;
        for msg in msgs.iter_mut() {
            validate_message(msg, self.config.max_message_size)?;
            if msg.uniq_key().is_none() {
                msg.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, self.ids.next_id());
            }
        }
        // Callers pass one message or a checked (non-empty) batch.
        let Some(first) = msgs.first() else {
            return Err(BatchError::Empty.into());
        };
        let mut attempts = 0;
        let mut failed_broker: Option<String> = None;
        let mut last: Option<GrpcError> = None;
        while attempts < max_attempts && Instant::now() < deadline {
            attempts += 1;
            let outcome = match self.queue(first, failed_broker.as_deref(), deadline).await {
                Ok(queue) => self.attempt(msgs, &queue, deadline).await.inspect_err(|_| {
                    failed_broker = broker_of(&queue).map(str::to_owned);
                }),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.routes.lock().remove(&first.topic);
                    let retry = e.is_retriable();
                    tracing::debug!(topic = %first.topic, attempt = attempts, error = %e, retry, "gRPC send attempt failed");
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(ProducerError::GrpcSendFailed {
            topic: first.topic.clone(),
            endpoint: self.config.endpoint.clone(),
            attempts,
            elapsed: started.elapsed(),
            source: last.map(Box::new),
        })
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
        let send = match self.send_attempts(std::slice::from_mut(&mut msg), 1).await {
            // One result per message sent: `attempt` checked the count.
            Ok(mut r) => r.remove(0),
            Err(e) => return Err(SendError::new(e, msg)),
        };
        msg.transaction_id.clone_from(&send.transaction_id);
        let local_state = match &self.listener {
            Some(l) => l.execute(&msg, arg),
            None => LocalTransactionState::Unknown,
        };
        if let Some(resolution) = resolution(local_state) {
            let ended = self
                .session
                .end_transaction(
                    &msg.topic,
                    &send.msg_id,
                    send.transaction_id.as_deref().unwrap_or_default(),
                    resolution,
                    v2::TransactionSource::SourceClient,
                    Instant::now() + self.config.send_timeout,
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
        let deadline = Instant::now() + self.config.send_timeout;
        Ok(self
            .session
            .recall_message(topic, recall_handle, deadline)
            .await?)
    }

    /// One attempt of `msgs` (one request) to `queue`: a result per message, or the first
    /// refusal. A batch may be answered with an entry per message, or, as Apache RocketMQ's
    /// proxy answers, with one entry for the whole batch (its first offset); each result then
    /// carries its message's own id.
    async fn attempt(
        &self,
        msgs: &[Message],
        queue: &v2::MessageQueue,
        deadline: Instant,
    ) -> Result<Vec<SendResult>, GrpcError> {
        let delays = mq_client_api::names::default_delay_levels();
        let sent = msgs
            .iter()
            .map(|msg| {
                let mut m = from_message(msg, &self.born_host, &delays);
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
        let per_message = entries.len() == msgs.len();
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
                    "the answer holds {} entries for {} messages",
                    entries.len(),
                    msgs.len()
                ),
            });
        };
        let broker = broker_of(queue).unwrap_or("");
        let text = |t: &str| Some(t.to_owned()).filter(|t| !t.is_empty());
        let result = |msg: &Message, msg_id: String, offset: i64| SendResult {
            status: SendStatus::SendOk,
            msg_id,
            offset_msg_id: String::new(),
            message_queue: MessageQueue::new(&msg.topic, broker, queue.id),
            queue_offset: offset,
            transaction_id: None,
            region_id: "DefaultRegion".into(),
            trace_on: false,
            recall_handle: None,
        };
        if per_message {
            return Ok(msgs
                .iter()
                .zip(&entries)
                .map(|(msg, e)| SendResult {
                    transaction_id: text(&e.transaction_id),
                    recall_handle: text(&e.recall_handle),
                    ..result(msg, e.message_id.clone(), e.offset)
                })
                .collect());
        }
        Ok(msgs
            .iter()
            .zip(first.offset..)
            .map(|(msg, offset)| result(msg, msg.uniq_key().unwrap_or_default().to_owned(), offset))
            .collect())
    }

    /// The queue of this attempt: by the message group's hash for a FIFO message (so a group
    /// keeps one queue), otherwise in turn, avoiding `avoid`'s queues while others exist.
    async fn queue(
        &self,
        msg: &Message,
        avoid: Option<&str>,
        deadline: Instant,
    ) -> Result<v2::MessageQueue, GrpcError> {
        let queues = self.queues(&msg.topic, deadline).await?;
        if let Some(group) = msg.property(SHARDING_KEY) {
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

    /// Tells the proxy the producer leaves and stops its session. Dropping the producer stops
    /// the session too, without telling the proxy.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.config.send_timeout;
        if let Err(e) = self.session.terminate(None, deadline).await {
            tracing::debug!(error = %e, "the proxy did not take the termination notice");
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
