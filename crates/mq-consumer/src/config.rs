//! [`ConsumerConfig`] and subscription expressions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::body::{MessageModel, SubscriptionData};
use mq_client_api::validate::{java_hash, validate_group};
use mq_client_instance::{ClientConfig, ConfigError, IntoNameServers};

use crate::allocate::{AllocateStrategy, Averagely};

/// Where a group with no committed offset starts.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub enum ConsumeFrom {
    /// At the end: only messages sent from now on. Java: `CONSUME_FROM_LAST_OFFSET`.
    #[default]
    LastOffset,
    /// At the beginning. Java: `CONSUME_FROM_FIRST_OFFSET`.
    FirstOffset,
    /// At the first message stored at or after this time. Java: `CONSUME_FROM_TIMESTAMP`.
    Timestamp(std::time::SystemTime),
}

/// Consumer settings. Start from [`ConsumerConfig::new`] and the `with_*` setters.
#[derive(Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Consumer group. Java: `consumerGroup`.
    pub group: String,
    /// Client settings.
    pub client: ClientConfig,
    /// Clustering (each message to one member) or broadcasting (to all). Default clustering.
    pub message_model: MessageModel,
    /// Start position of a new group. Default last offset.
    pub consume_from: ConsumeFrom,
    /// How queues are split among the group. Default [`Averagely`].
    pub allocate: Arc<dyn AllocateStrategy>,
    /// Messages per pull. Default 32. Java: `pullBatchSize`.
    pub pull_batch_size: i32,
    /// Messages per listener call. Default 1. Java: `consumeMessageBatchMaxSize`.
    pub consume_batch_size: usize,
    /// Listener workers. Default 20. Java: `consumeThreadMax`.
    pub workers: usize,
    /// Flow control: messages held per queue before pulling pauses. Default 1000.
    pub queue_max_messages: usize,
    /// Flow control: body bytes held per queue before pulling pauses. Default 100 MiB.
    pub queue_max_bytes: usize,
    /// Failures after which a message goes to the DLQ. Default 16.
    pub max_reconsume_times: i32,
    /// Rebalance period. Default 20 s.
    pub rebalance_interval: Duration,
    /// Offset persist period. Default 5 s.
    pub persist_interval: Duration,
    /// How long the broker may hold an empty pull. Default 15 s.
    pub suspend_timeout: Duration,
    /// Directory of broadcasting offsets. Default `$TMPDIR/mq-offsets/<client id>/<group>`.
    pub offset_dir: Option<PathBuf>,
    /// Pull consumer: commit polled offsets automatically every `persist_interval`. Default
    /// true.
    pub auto_commit: bool,
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("group", &self.group)
            .field("message_model", &self.message_model)
            .field("allocate", &self.allocate.name())
            .finish_non_exhaustive()
    }
}

impl ConsumerConfig {
    /// Settings for `group` talking to these name servers: `"host:port;host:port"`, or a list
    /// of `host:port` (see [`ClientConfig::new`]).
    pub fn new(group: impl Into<String>, name_servers: impl IntoNameServers) -> Self {
        Self {
            group: group.into(),
            client: ClientConfig::new(name_servers),
            message_model: MessageModel::Clustering,
            consume_from: ConsumeFrom::LastOffset,
            allocate: Arc::new(Averagely),
            pull_batch_size: 32,
            consume_batch_size: 1,
            workers: 20,
            queue_max_messages: 1000,
            queue_max_bytes: 100 * 1024 * 1024,
            max_reconsume_times: 16,
            rebalance_interval: Duration::from_secs(20),
            persist_interval: Duration::from_secs(5),
            suspend_timeout: Duration::from_secs(15),
            offset_dir: None,
            auto_commit: true,
        }
    }

    /// Replaces the client settings.
    #[must_use]
    pub fn with_client(mut self, client: ClientConfig) -> Self {
        self.client = client;
        self
    }

    /// Sets clustering or broadcasting.
    #[must_use]
    pub fn with_message_model(mut self, model: MessageModel) -> Self {
        self.message_model = model;
        self
    }

    /// Sets where a new group starts.
    #[must_use]
    pub fn with_consume_from(mut self, from: ConsumeFrom) -> Self {
        self.consume_from = from;
        self
    }

    /// Sets the rebalance strategy.
    #[must_use]
    pub fn with_allocate(mut self, strategy: Arc<dyn AllocateStrategy>) -> Self {
        self.allocate = strategy;
        self
    }

    /// Sets the number of listener workers.
    #[must_use]
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Sets the max reconsume times before the DLQ.
    #[must_use]
    pub fn with_max_reconsume_times(mut self, n: i32) -> Self {
        self.max_reconsume_times = n;
        self
    }

    /// Sets the per-queue flow-control limits.
    #[must_use]
    pub fn with_queue_limits(mut self, messages: usize, bytes: usize) -> Self {
        self.queue_max_messages = messages;
        self.queue_max_bytes = bytes;
        self
    }

    /// Sets the rebalance period.
    #[must_use]
    pub fn with_rebalance_interval(mut self, d: Duration) -> Self {
        self.rebalance_interval = d;
        self
    }

    /// Sets the broadcasting offset directory.
    #[must_use]
    pub fn with_offset_dir(mut self, dir: PathBuf) -> Self {
        self.offset_dir = Some(dir);
        self
    }

    /// Turns pull-consumer auto-commit on or off.
    #[must_use]
    pub fn with_auto_commit(mut self, on: bool) -> Self {
        self.auto_commit = on;
        self
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: &str| ConfigError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        validate_group(&self.group).map_err(|e| ConfigError::Invalid {
            field: "group",
            reason: e.to_string(),
        })?;
        if self.pull_batch_size <= 0 || self.consume_batch_size == 0 || self.workers == 0 {
            return Err(invalid("batch sizes and workers", "must be positive"));
        }
        if self.queue_max_messages == 0 || self.queue_max_bytes == 0 {
            return Err(invalid("queue limits", "must be positive"));
        }
        for (name, d) in [
            ("rebalance_interval", self.rebalance_interval),
            ("persist_interval", self.persist_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        self.client.validate()
    }
}

/// Parses a tag expression (`*`, `TagA`, `TagA || TagB`) into Java's `SubscriptionData`.
pub fn subscription(topic: &str, expression: &str) -> SubscriptionData {
    let expr = expression.trim();
    let tags = mq_client_api::names::expression_tags(expr);
    let all = tags.is_none();
    let tags_set: Vec<String> = tags
        .map(|t| t.map(str::to_owned).collect())
        .unwrap_or_default();
    let code_set = tags_set.iter().map(|t| java_hash(t)).collect();
    SubscriptionData {
        class_filter_mode: false,
        topic: topic.to_owned(),
        sub_string: if all { "*".to_owned() } else { expr.to_owned() },
        tags_set,
        code_set,
        sub_version: mq_client_api::wire_time::now_millis(),
        expression_type: "TAG".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_expressions() {
        let s = subscription("T", " TagA || TagB ");
        assert_eq!(s.tags_set, vec!["TagA", "TagB"]);
        assert_eq!(s.code_set, vec![java_hash("TagA"), java_hash("TagB")]);
        assert_eq!(subscription("T", "*").sub_string, "*");
        assert!(subscription("T", "").tags_set.is_empty());
    }

    #[test]
    fn validation() {
        assert!(
            ConsumerConfig::new("cg", "127.0.0.1:9876")
                .validate()
                .is_ok()
        );
        assert!(
            ConsumerConfig::new("bad group", "127.0.0.1:9876")
                .validate()
                .is_err()
        );
        assert!(
            ConsumerConfig::new("cg", "127.0.0.1:9876")
                .with_workers(0)
                .validate()
                .is_err()
        );
    }
}
