//! [`ProducerConfig`]: one producer group's settings (Java `DefaultMQProducer` fields).

use std::time::Duration;

use mq_client_api::message::{CompressionType, Compressor};
use mq_client_api::validate::{DEFAULT_MAX_MESSAGE_SIZE, validate_group};
use mq_client_instance::{ClientConfig, ConfigError, IntoNameServers};

/// Default send deadline (Java `sendMsgTimeout`, 3000 ms).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Default retries after a failed sync send (Java `retryTimesWhenSendFailed`).
pub const DEFAULT_RETRIES: u32 = 2;
/// Default queues of an auto-created topic (Java `defaultTopicQueueNums`).
pub const DEFAULT_TOPIC_QUEUE_NUMS: i32 = 4;
/// The group Java's no-arg constructor uses and `start()` rejects.
pub const DEFAULT_PRODUCER_GROUP: &str = "DEFAULT_PRODUCER";

/// Producer settings. Start from [`ProducerConfig::new`] and the `with_*` setters; checked by
/// [`ProducerConfig::validate`] when the producer starts.
///
/// ```
/// use std::time::Duration;
/// use mq_producer::{BatchingConfig, ProducerConfig};
///
/// let config = ProducerConfig::new("orders_producer", ["10.0.0.1:9876", "10.0.0.2:9876"])
///     .with_send_timeout(Duration::from_secs(1))
///     .with_retries(2, 2)
///     .with_max_in_flight(10_000, 64 << 20)
///     .with_batching(BatchingConfig::default());
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// Producer group. Java: `producerGroup`.
    pub group: String,
    /// Client settings (name servers, instance name, codec, namespace, ...).
    pub client: ClientConfig,
    /// One deadline per send covering permits, route lookup, every attempt and backoff.
    /// Default 3 s. Java: `sendMsgTimeout`.
    pub send_timeout: Duration,
    /// Retries of a sync send. Default 2. Java: `retryTimesWhenSendFailed`.
    pub retries: u32,
    /// Retries of an async send, by the same rules. Default 2. Java:
    /// `retryTimesWhenSendAsyncFailed`.
    pub retries_async: u32,
    /// Retry (on another broker) when a send was stored but not flushed/replicated. Default
    /// false. Java: `retryAnotherBrokerWhenNotStoreOK`.
    pub retry_another_broker_when_not_stored: bool,
    /// Largest body. Default 4 MiB. Java: `maxMessageSize`.
    pub max_message_size: usize,
    /// Compression of single messages (threshold 4096, zlib level 5 by default). Java:
    /// `compressMsgBodyOverHowmuch`, `rocketmq.message.compressLevel`/`compressType`.
    pub compressor: Compressor,
    /// Queues of a topic the broker creates on first send. Default 4. Java:
    /// `defaultTopicQueueNums`.
    pub default_topic_queue_nums: i32,
    /// Template topic for auto-creation. Default `TBW102`. Java: `createTopicKey`.
    pub create_topic_key: String,
    /// Avoid slow or failing brokers for a while (spec §7.8). Default false. Java:
    /// `sendLatencyFaultEnable`.
    pub latency_fault_tolerance: bool,
    /// Opt-in auto-batching of async sends (the Kafka `linger` / `batch.size` design). Default
    /// off.
    pub batching: Option<BatchingConfig>,
    /// Backpressure: sends in flight at most (a send waits for room within its deadline).
    /// Default 10 000; a bound above 16 777 215 acts as that.
    pub max_in_flight_messages: usize,
    /// Backpressure: body bytes in flight at most. Default 64 MiB; a bound above 2^40 - 1
    /// (a terabyte) acts as that.
    pub max_in_flight_bytes: usize,
}

/// How async sends are gathered into SEND_BATCH_MESSAGE requests.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct BatchingConfig {
    /// How long the first message of a batch waits for company. Default 5 ms.
    pub linger: Duration,
    /// A batch is sent once its bodies reach this many bytes. Default 256 KiB.
    pub max_bytes: usize,
    /// A batch is sent once it holds this many messages. Default 256.
    pub max_messages: usize,
}

impl BatchingConfig {
    /// Batches closed after `linger`, or at `max_bytes` of bodies, or at `max_messages`.
    pub fn new(linger: Duration, max_bytes: usize, max_messages: usize) -> Self {
        Self {
            linger,
            max_bytes,
            max_messages,
        }
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            max_bytes: 256 * 1024,
            max_messages: 256,
        }
    }
}

impl ProducerConfig {
    /// Settings for `group` talking to these name servers: `"host:port;host:port"`, or a list
    /// of `host:port` (see [`ClientConfig::new`]).
    pub fn new(group: impl Into<String>, name_servers: impl IntoNameServers) -> Self {
        Self {
            group: group.into(),
            client: ClientConfig::new(name_servers),
            send_timeout: DEFAULT_SEND_TIMEOUT,
            retries: DEFAULT_RETRIES,
            retries_async: DEFAULT_RETRIES,
            retry_another_broker_when_not_stored: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            compressor: Compressor::default(),
            default_topic_queue_nums: DEFAULT_TOPIC_QUEUE_NUMS,
            create_topic_key: "TBW102".to_owned(),
            latency_fault_tolerance: false,
            batching: None,
            max_in_flight_messages: 10_000,
            max_in_flight_bytes: 64 * 1024 * 1024,
        }
    }

    /// Replaces the client settings.
    #[must_use]
    pub fn with_client(mut self, client: ClientConfig) -> Self {
        self.client = client;
        self
    }

    /// Sets the send deadline (default 3 s).
    #[must_use]
    pub fn with_send_timeout(mut self, d: Duration) -> Self {
        self.send_timeout = d;
        self
    }

    /// Sets the retries of sync and async sends (default 2 each).
    #[must_use]
    pub fn with_retries(mut self, sync: u32, async_: u32) -> Self {
        self.retries = sync;
        self.retries_async = async_;
        self
    }

    /// Retries on another broker when a message was stored but not flushed (default false).
    #[must_use]
    pub fn with_retry_another_broker_when_not_stored(mut self, on: bool) -> Self {
        self.retry_another_broker_when_not_stored = on;
        self
    }

    /// Sets the largest body (default 4 MiB).
    #[must_use]
    pub fn with_max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self
    }

    /// Sets the compression threshold (default 4096 bytes).
    #[must_use]
    pub fn with_compress_over(mut self, n: usize) -> Self {
        self.compressor.threshold = n;
        self
    }

    /// Sets the compression codec and level (default zlib, 5).
    #[must_use]
    pub fn with_compression(mut self, kind: CompressionType, level: i32) -> Self {
        self.compressor.kind = kind;
        self.compressor.level = level;
        self
    }

    /// Sets the queues of auto-created topics (default 4).
    #[must_use]
    pub fn with_default_topic_queue_nums(mut self, n: i32) -> Self {
        self.default_topic_queue_nums = n;
        self
    }

    /// Turns latency fault tolerance on or off (default off).
    #[must_use]
    pub fn with_latency_fault_tolerance(mut self, on: bool) -> Self {
        self.latency_fault_tolerance = on;
        self
    }

    /// Gathers async sends into batches (default: off).
    #[must_use]
    pub fn with_batching(mut self, batching: BatchingConfig) -> Self {
        self.batching = Some(batching);
        self
    }

    /// Sets the backpressure bounds (defaults 10 000 messages, 64 MiB).
    #[must_use]
    pub fn with_max_in_flight(mut self, messages: usize, bytes: usize) -> Self {
        self.max_in_flight_messages = messages;
        self.max_in_flight_bytes = bytes;
        self
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| ConfigError::Invalid { field, reason };
        validate_group(&self.group).map_err(|e| invalid("group", e.to_string()))?;
        if self.group == DEFAULT_PRODUCER_GROUP {
            return Err(invalid(
                "group",
                "DEFAULT_PRODUCER is reserved; name your group".into(),
            ));
        }
        if self.send_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("send_timeout"));
        }
        if self.max_message_size == 0 {
            return Err(invalid("max_message_size", "must be positive".into()));
        }
        if self.max_in_flight_messages == 0 || self.max_in_flight_bytes == 0 {
            return Err(invalid("max_in_flight", "must be positive".into()));
        }
        if self.default_topic_queue_nums <= 0 {
            return Err(invalid(
                "default_topic_queue_nums",
                "must be positive".into(),
            ));
        }
        self.client.validate()
    }
}
