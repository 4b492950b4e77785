//! [`ProducerError`]: the one error of every send mode.

use std::time::Duration;

use mq_client_api::message::BatchError;
use mq_client_api::validate::ValidationError;
use mq_client_api::{ClientApiError, Message, ResponseCode};
use mq_client_instance::{ConfigError, InstanceError, ServiceState};

/// A producer operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// Caller: the producer is not running (send before start, after shutdown), or was
    /// started twice.
    #[error("the producer service state not OK, {0}")]
    State(ServiceState),
    /// Caller: the configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Caller: the message failed validation; nothing was sent.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// Caller: the batch broke a batching rule; nothing was sent.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Caller: a message sent to an explicit queue of another topic.
    #[error("message's topic {message_topic} not equal mq's topic {queue_topic}")]
    TopicMismatch {
        /// The message's topic.
        message_topic: String,
        /// The queue's topic.
        queue_topic: String,
    },
    /// Caller: the selector chose no queue.
    #[error("the queue selector chose no queue for topic {topic}")]
    NoQueueSelected {
        /// The topic.
        topic: String,
    },
    /// Caller: no name server address is configured.
    #[error("no name server address, please set it")]
    NoNameServer,
    /// Peer: the name servers know no route for the topic, nor for the auto-create template.
    #[error(
        "no route info of this topic {topic} (asked name servers {name_servers:?}, then template {template})"
    )]
    NoRoute {
        /// The topic.
        topic: String,
        /// The name servers asked.
        name_servers: Vec<String>,
        /// The template topic tried next.
        template: String,
    },
    /// Transport: the route could not be looked up in time (e.g. the name server did not
    /// answer within the time left); nothing was sent.
    #[error("cannot look up the route of topic {topic} (after {elapsed:?}): {source}")]
    RouteLookup {
        /// The topic.
        topic: String,
        /// Time since the call.
        elapsed: Duration,
        /// What failed: [`InstanceError::NameServerTimeout`] names the silent name server.
        #[source]
        source: InstanceError,
    },
    /// Every attempt failed; `source` is the last attempt's error.
    #[error(
        "send to {topic} failed after {attempts} attempt(s) on {brokers:?} in {elapsed:?}: {source}"
    )]
    SendFailed {
        /// The topic.
        topic: String,
        /// Attempts made.
        attempts: u32,
        /// Brokers tried, in order.
        brokers: Vec<String>,
        /// Time since the call.
        elapsed: Duration,
        /// The last cause.
        #[source]
        source: Box<ClientApiError>,
    },
    /// The deadline passed before an attempt could be made (or completed).
    #[error(
        "send to {topic} ran out of its deadline after {attempts} attempt(s) on {brokers:?} in {elapsed:?}"
    )]
    DeadlineExceeded {
        /// The topic.
        topic: String,
        /// Attempts made.
        attempts: u32,
        /// Brokers tried.
        brokers: Vec<String>,
        /// Time since the call.
        elapsed: Duration,
    },
    /// A send through a gRPC proxy failed: no attempt was left, or the deadline passed;
    /// `source` is the last attempt's error (none when no attempt could start).
    #[error(
        "send to {topic} through {endpoint} failed after {attempts} attempt(s) in {elapsed:?}{}",
        source.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    GrpcSendFailed {
        /// The topic.
        topic: String,
        /// The proxy.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// Time since the call.
        elapsed: Duration,
        /// The last cause.
        #[source]
        source: Option<Box<mq_grpc::GrpcError>>,
    },
    /// Caller: the recall handle is not one a broker gave.
    #[error(transparent)]
    RecallHandle(#[from] mq_client_api::message::RecallHandleError),
    /// The broker refused the recall or did not answer in time.
    #[error("recall of a message of {topic} on {broker} failed: {source}")]
    RecallFailed {
        /// The topic.
        topic: String,
        /// The broker the handle names.
        broker: String,
        /// The cause.
        #[source]
        source: Box<ClientApiError>,
    },
    /// A gRPC proxy could not be reached, or refused the producer's settings or a route.
    #[error(transparent)]
    Grpc(#[from] mq_grpc::GrpcError),
    /// An auto-batched send failed with the batch it was gathered into.
    #[error("the batch of {size} message(s) to {topic} failed: {cause}")]
    BatchFailed {
        /// The topic.
        topic: String,
        /// Messages in the batch.
        size: usize,
        /// Why the batch failed (shared by every message of it).
        cause: std::sync::Arc<Self>,
    },
    /// Caller: `try_send_async` found no room: the in-flight bounds are reached.
    #[error("the producer is full: {messages} message(s) / {bytes} byte(s) in flight at most")]
    QueueFull {
        /// The message bound.
        messages: usize,
        /// The byte bound.
        bytes: usize,
    },
    /// `flush` reached its deadline with sends still in flight.
    #[error("flush timed out with {in_flight} send(s) still in flight")]
    FlushTimedOut {
        /// Sends without an outcome yet.
        in_flight: usize,
    },
    /// Ordered send: an earlier message of the same queue failed for good, so this one was not
    /// stored (storing it would break the order).
    #[error(
        "an earlier message on {queue} of {topic} failed; this one was not sent, to keep order"
    )]
    PredecessorFailed {
        /// The topic.
        topic: String,
        /// The queue.
        queue: String,
    },
    /// A request was stored but no reply came within its timeout. A reply that comes later
    /// is dropped.
    #[error(
        "the request to {topic} got no reply within {timeout:?} (correlation id {correlation_id})"
    )]
    NoReply {
        /// The request's topic.
        topic: String,
        /// The request's correlation id.
        correlation_id: String,
        /// How long the request waited in all.
        timeout: Duration,
    },
    /// Caller: a reply was asked for a message that is not a request (it lacks a property
    /// every request carries once stored).
    #[error("cannot reply: the message is not a request (no {missing} property)")]
    NotARequest {
        /// The missing property.
        missing: &'static str,
    },
    /// The producer shut down before the send finished.
    #[error("the producer shut down before the send completed")]
    ShutDown,
    /// A client-instance failure outside a send attempt.
    #[error(transparent)]
    Instance(#[from] InstanceError),
}

/// Whether a message reached the broker, as far as the producer can tell.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum DeliveryState {
    /// Nothing was written: retrying cannot duplicate.
    NotSent,
    /// It may have been stored (e.g. timed out after the write): a retry may duplicate.
    PossiblyStored,
    /// The broker said it stored it.
    Stored,
}

impl ProducerError {
    /// Whether the message was not sent or possibly stored (an `Ok` result means stored).
    pub fn delivery_state(&self) -> DeliveryState {
        if self.possibly_delivered() {
            DeliveryState::PossiblyStored
        } else {
            DeliveryState::NotSent
        }
    }

    /// The broker's response code, when a broker refused the last attempt.
    pub fn response_code(&self) -> Option<ResponseCode> {
        match self {
            Self::SendFailed { source, .. } => source.response_code(),
            _ => None,
        }
    }

    /// Whether the message may have been stored (a retry of your own may duplicate it).
    pub fn possibly_delivered(&self) -> bool {
        match self {
            Self::SendFailed { source, .. } => source.possibly_delivered(),
            Self::DeadlineExceeded { attempts, .. } => *attempts > 0,
            Self::ShutDown | Self::NoReply { .. } => true,
            Self::BatchFailed { cause, .. } => cause.possibly_delivered(),
            Self::GrpcSendFailed { source, .. } => {
                source.as_ref().is_some_and(|e| e.possibly_applied())
            }
            _ => false,
        }
    }

    /// Attempts made before giving up.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::SendFailed { attempts, .. }
            | Self::DeadlineExceeded { attempts, .. }
            | Self::GrpcSendFailed { attempts, .. } => *attempts,
            _ => 0,
        }
    }
}

/// A send that failed, with what was being sent handed back (as rdkafka does), so that the
/// caller may send it again, park it or log it. A message carries the `UNIQ_KEY` it was given:
/// sent again, it keeps its id, so consumers can tell a resend from a new message.
///
/// `?` turns it into a [`ProducerError`] where only the cause matters.
#[derive(Debug)]
pub struct SendError<M = Message>(Box<Failed<M>>);

/// Boxed, so that the result of every send stays small: a failed send is the rare case.
#[derive(Debug)]
struct Failed<M> {
    error: ProducerError,
    message: M,
}

impl<M> SendError<M> {
    pub(crate) fn new(error: ProducerError, message: M) -> Self {
        Self(Box::new(Failed { error, message }))
    }

    /// Why the send failed.
    pub fn error(&self) -> &ProducerError {
        &self.0.error
    }

    /// What was being sent.
    pub fn message(&self) -> &M {
        &self.0.message
    }

    /// The cause and what was being sent.
    pub fn into_parts(self) -> (ProducerError, M) {
        let failed = *self.0;
        (failed.error, failed.message)
    }

    /// What was being sent, for another try.
    pub fn into_message(self) -> M {
        self.0.message
    }

    /// The cause alone.
    pub fn into_error(self) -> ProducerError {
        self.0.error
    }
}

impl<M> std::fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0.error, f)
    }
}

impl<M: std::fmt::Debug> std::error::Error for SendError<M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.error)
    }
}

impl<M> From<SendError<M>> for ProducerError {
    fn from(e: SendError<M>) -> Self {
        e.0.error
    }
}
