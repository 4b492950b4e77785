//! [`SimpleConsumer`]: RocketMQ 5's simple consumer, over gRPC through a proxy.
//!
//! The consumer asks for messages ([`SimpleConsumer::receive`]); each comes with a receipt
//! handle and stays invisible to the group for the time asked. What is acknowledged
//! ([`SimpleConsumer::ack`]) is done; what is not comes back after its invisible time, with its
//! delivery attempt counted up, and goes to the group's dead-letter queue after the server's
//! maximum of attempts. [`SimpleConsumer::change_invisible_duration`] buys more time or hands a
//! message back at once.
//!
//! It talks to a RocketMQ 5 proxy (or `mq serve --grpc-port`) through one
//! [`mq_grpc::GrpcSession`]: settings on the Telemetry stream first, heartbeats every 10 s.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mq_client_api::MessageExt;
use mq_client_api::validate::{validate_group, validate_topic};
use mq_grpc::convert::{duration, to_message_ext};
use mq_grpc::{GrpcClientConfig, GrpcError, GrpcSession, v2};
use mq_remoting::ClientTls;
use parking_lot::Mutex;

use crate::error::ConsumerError;

/// The largest body a received message may inflate to (4 MiB, the broker's default limit).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// How a [`SimpleConsumer`] reaches its proxy and what it receives.
#[derive(Clone, Debug)]
pub struct SimpleConsumerConfig {
    /// Consumer group.
    pub group: String,
    /// The proxy, `host:port`.
    pub endpoint: String,
    /// Topic → tag expression (`*`, or tags joined by `||`).
    pub subscriptions: BTreeMap<String, String>,
    /// How long a receive waits on the server for messages to arrive (the long poll).
    pub await_duration: Duration,
    /// How long any other call may take, and what a receive may take beyond its long poll.
    pub request_timeout: Duration,
    /// Namespace; empty for none.
    pub namespace: String,
    /// TLS to the proxy (its roots and name); none: plain.
    pub tls: Option<ClientTls>,
    /// The ACL account every call is signed with, for a proxy that checks ACL; none: calls
    /// are not signed.
    pub credentials: Option<mq_client_api::acl::Credentials>,
}

impl SimpleConsumerConfig {
    /// A consumer of `group` through the proxy at `endpoint`, with no subscription yet, a 20 s
    /// long poll and a 3 s request timeout.
    pub fn new(group: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            endpoint: endpoint.into(),
            subscriptions: BTreeMap::new(),
            await_duration: Duration::from_secs(20),
            request_timeout: Duration::from_secs(3),
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

    /// Subscribes to `topic` with a tag expression (`*` for every message).
    #[must_use]
    pub fn subscribe(mut self, topic: impl Into<String>, expression: impl Into<String>) -> Self {
        self.subscriptions.insert(topic.into(), expression.into());
        self
    }

    /// Sets how long a receive waits on the server for messages.
    #[must_use]
    pub fn with_await_duration(mut self, wait: Duration) -> Self {
        self.await_duration = wait;
        self
    }

    /// Sets the request timeout.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

/// A message a [`SimpleConsumer`] received: it is invisible to the group until it is
/// acknowledged or its invisible time ends.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    /// The message, as a stored message reads (its `reconsume_times` is the delivery attempt
    /// less one).
    pub message: MessageExt,
    /// Which delivery this is: 1 for the first.
    pub delivery_attempt: u32,
    /// When the message becomes visible again unless acknowledged (as this client reckons it).
    pub invisible_until: Instant,
    receipt_handle: String,
}

impl ReceivedMessage {
    /// The message id (`UNIQ_KEY`).
    pub fn message_id(&self) -> &str {
        self.message.message.uniq_key().unwrap_or_default()
    }

    /// The receipt handle that acknowledges this delivery.
    pub fn receipt_handle(&self) -> &str {
        &self.receipt_handle
    }
}

/// RocketMQ 5's simple consumer: receive, acknowledge, change the invisible time.
///
/// # Example
/// ```no_run
/// # async fn demo() -> Result<(), mq_consumer::ConsumerError> {
/// use std::time::Duration;
/// use mq_consumer::{SimpleConsumer, SimpleConsumerConfig};
///
/// let consumer = SimpleConsumer::start(
///     SimpleConsumerConfig::new("my_group", "127.0.0.1:8081").subscribe("TopicTest", "*"),
/// )
/// .await?;
/// for m in consumer.receive(16, Duration::from_secs(30)).await? {
///     println!("{}", String::from_utf8_lossy(&m.message.message.body));
///     consumer.ack(&m).await?;
/// }
/// consumer.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SimpleConsumer {
    session: GrpcSession,
    config: SimpleConsumerConfig,
    /// The queues each topic was last assigned, until a receive from them fails.
    assigned: Mutex<HashMap<String, Vec<v2::MessageQueue>>>,
    turn: AtomicUsize,
}

impl SimpleConsumer {
    /// Checks the configuration, connects to the proxy and announces the consumer's
    /// subscription, within the request timeout.
    ///
    /// # Errors
    /// [`ConsumerError::Subscription`] for a bad group, topic or empty subscription list;
    /// [`ConsumerError::Grpc`] when the proxy cannot be reached or refuses the settings.
    pub async fn start(config: SimpleConsumerConfig) -> Result<Self, ConsumerError> {
        validate_group(&config.group)
            .map_err(|e| ConsumerError::Subscription(format!("group: {e}")))?;
        if config.subscriptions.is_empty() {
            return Err(ConsumerError::Subscription(
                "a simple consumer needs at least one subscription".into(),
            ));
        }
        for topic in config.subscriptions.keys() {
            validate_topic(topic).map_err(|e| ConsumerError::Subscription(e.to_string()))?;
        }
        let mut grpc = GrpcClientConfig::new(&config.endpoint)
            .with_namespace(&config.namespace)
            .with_request_timeout(config.request_timeout);
        grpc.tls.clone_from(&config.tls);
        grpc.credentials.clone_from(&config.credentials);
        let resource = |name: &str| v2::Resource {
            resource_namespace: config.namespace.clone(),
            name: name.to_owned(),
        };
        let settings = v2::Settings {
            client_type: Some(v2::ClientType::SimpleConsumer as i32),
            pub_sub: Some(v2::settings::PubSub::Subscription(v2::Subscription {
                group: Some(resource(&config.group)),
                subscriptions: config
                    .subscriptions
                    .iter()
                    .map(|(topic, expression)| v2::SubscriptionEntry {
                        topic: Some(resource(topic)),
                        expression: Some(filter(expression)),
                    })
                    .collect(),
                fifo: Some(false),
                receive_batch_size: Some(32),
                long_polling_timeout: Some(duration(config.await_duration)),
                ..Default::default()
            })),
            ..Default::default()
        };
        let deadline = Instant::now() + config.request_timeout;
        let session = GrpcSession::connect(grpc, settings, deadline).await?;
        Ok(Self {
            session,
            config,
            assigned: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
        })
    }

    /// The consumer's configuration.
    pub fn config(&self) -> &SimpleConsumerConfig {
        &self.config
    }

    /// Receives up to `max` messages from one of the subscribed topics (in turn), each
    /// invisible to the group for `invisible`. Waits on the server up to the await duration
    /// for messages to arrive; an empty list means none came.
    ///
    /// # Errors
    /// [`ConsumerError::Subscription`] when `max` is 0; [`ConsumerError::Grpc`] naming the
    /// proxy and the call that failed or did not answer within the await duration plus the
    /// request timeout.
    pub async fn receive(
        &self,
        max: usize,
        invisible: Duration,
    ) -> Result<Vec<ReceivedMessage>, ConsumerError> {
        if max == 0 {
            return Err(ConsumerError::Subscription(
                "receive asks for at least one message".into(),
            ));
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let topics: Vec<&String> = self.config.subscriptions.keys().collect();
        let topic = topics[turn % topics.len()].as_str();
        let expression = &self.config.subscriptions[topic];
        let queue = self.queue(topic, turn).await?;
        let request = v2::ReceiveMessageRequest {
            group: Some(self.session.resource(&self.config.group)),
            message_queue: Some(queue),
            filter_expression: Some(filter(expression)),
            batch_size: i32::try_from(max).unwrap_or(i32::MAX),
            invisible_duration: Some(duration(invisible)),
            auto_renew: false,
            long_polling_timeout: Some(duration(self.config.await_duration)),
            attempt_id: None,
        };
        let started = Instant::now();
        let deadline = started + self.config.await_duration + self.config.request_timeout;
        let messages = match self.session.receive(request, deadline).await {
            Ok(m) => m,
            Err(e) => {
                // The assignment may be stale (a broker left): ask again next time.
                self.assigned.lock().remove(topic);
                return Err(e.into());
            }
        };
        messages
            .iter()
            .map(|m| {
                let sys = m.system_properties.as_ref();
                let message = to_message_ext(m, MAX_BODY).map_err(|s| {
                    ConsumerError::Grpc(GrpcError::Refused {
                        endpoint: self.config.endpoint.clone(),
                        rpc: "ReceiveMessage",
                        code: s.code,
                        message: s.message,
                    })
                })?;
                Ok(ReceivedMessage {
                    message,
                    delivery_attempt: sys
                        .and_then(|s| s.delivery_attempt)
                        .and_then(|a| u32::try_from(a).ok())
                        .unwrap_or(1),
                    invisible_until: started + invisible,
                    receipt_handle: sys
                        .and_then(|s| s.receipt_handle.clone())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// One of the queues `topic` is assigned to this group (in turn), asking the proxy when
    /// none is known.
    async fn queue(&self, topic: &str, turn: usize) -> Result<v2::MessageQueue, ConsumerError> {
        if let Some(q) = self
            .assigned
            .lock()
            .get(topic)
            .and_then(|qs| qs.get(turn / self.config.subscriptions.len() % qs.len().max(1)))
        {
            return Ok(q.clone());
        }
        let deadline = Instant::now() + self.config.request_timeout;
        let queues = self
            .session
            .query_assignment(topic, &self.config.group, deadline)
            .await?;
        let Some(first) = queues.first().cloned() else {
            return Err(ConsumerError::Grpc(GrpcError::Refused {
                endpoint: self.config.endpoint.clone(),
                rpc: "QueryAssignment",
                code: v2::Code::TopicNotFound as i32,
                message: format!("no queue of {topic} is assigned to {}", self.config.group),
            }));
        };
        self.assigned.lock().insert(topic.to_owned(), queues);
        Ok(first)
    }

    /// Acknowledges `message`: it is not delivered again.
    ///
    /// # Errors
    /// [`ConsumerError::Grpc`]: the proxy did not answer within the request timeout, or refused
    /// (INVALID_RECEIPT_HANDLE when the invisible time had ended and the message was handed
    /// out again).
    pub async fn ack(&self, message: &ReceivedMessage) -> Result<(), ConsumerError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let entry = v2::AckMessageEntry {
            message_id: message.message_id().to_owned(),
            receipt_handle: message.receipt_handle.clone(),
            lite_topic: None,
        };
        self.session
            .ack(
                &self.config.group,
                &message.message.message.topic,
                vec![entry],
                deadline,
            )
            .await?;
        Ok(())
    }

    /// Makes `message` invisible for `invisible` from now (zero hands it back at once); its
    /// receipt handle is replaced by the new one, which is the one to acknowledge with.
    ///
    /// # Errors
    /// As for [`SimpleConsumer::ack`].
    pub async fn change_invisible_duration(
        &self,
        message: &mut ReceivedMessage,
        invisible: Duration,
    ) -> Result<(), ConsumerError> {
        let started = Instant::now();
        let deadline = started + self.config.request_timeout;
        let handle = self
            .session
            .change_invisible_duration(
                &self.config.group,
                &message.message.message.topic,
                message.message.message.uniq_key().unwrap_or_default(),
                &message.receipt_handle,
                invisible,
                deadline,
            )
            .await?;
        message.receipt_handle = handle;
        message.invisible_until = started + invisible;
        Ok(())
    }

    /// Tells the proxy the consumer leaves and stops its session (messages received and not
    /// acknowledged come back after their invisible time). Dropping the consumer stops the
    /// session too, without telling the proxy.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.config.request_timeout;
        if let Err(e) = self
            .session
            .terminate(Some(&self.config.group), deadline)
            .await
        {
            tracing::debug!(error = %e, "the proxy did not take the termination notice");
        }
    }
}

/// A tag expression as the contract's filter (blank reads as `*`).
fn filter(expression: &str) -> v2::FilterExpression {
    let expression = expression.trim();
    v2::FilterExpression {
        r#type: v2::FilterType::Tag as i32,
        expression: if expression.is_empty() {
            "*".to_owned()
        } else {
            expression.to_owned()
        },
    }
}
