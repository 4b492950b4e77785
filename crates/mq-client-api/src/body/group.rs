//! Subscription group configs (UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, GET_SUBSCRIPTIONGROUP_CONFIG,
//! GET_ALL_SUBSCRIPTIONGROUP_CONFIG): how a broker treats a consumer group, notably whether it
//! consumes in order (what a RocketMQ 5 proxy tells FIFO consumers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DataVersion;

/// A consumer group's config on a broker. Java: `SubscriptionGroupConfig`; fields this crate
/// does not model (the retry policy, the subscriptions of 5.x) are dropped when read.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionGroupConfig {
    /// The group.
    pub group_name: String,
    /// Whether the group may consume at all (default true).
    #[serde(default = "yes")]
    pub consume_enable: bool,
    /// Whether a new group starts from a queue's first message (default true).
    #[serde(default = "yes")]
    pub consume_from_min_enable: bool,
    /// Whether broadcasting consumers may use the group (default true).
    #[serde(default = "yes")]
    pub consume_broadcast_enable: bool,
    /// FIFO: a queue's next message goes out only once the one before it is acknowledged
    /// (default false).
    #[serde(default)]
    pub consume_message_orderly: bool,
    /// Retry queues (default 1).
    #[serde(default = "one")]
    pub retry_queue_nums: i32,
    /// Deliveries before the dead-letter queue (default 16).
    #[serde(default = "sixteen")]
    pub retry_max_times: i32,
    /// The broker the group reads from (0, the master).
    #[serde(default)]
    pub broker_id: i64,
    /// The broker a slow consumer is sent to (default 1).
    #[serde(default = "one_i64")]
    pub which_broker_when_consume_slowly: i64,
    /// Whether members hear of membership changes (default true).
    #[serde(default = "yes")]
    pub notify_consumer_ids_changed_enable: bool,
    /// Group sysFlag.
    #[serde(default)]
    pub group_sys_flag: i32,
    /// Minutes before a message being consumed counts as failed (default 15).
    #[serde(default = "fifteen")]
    pub consume_timeout_minute: i32,
    /// 5.x attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}
fn one() -> i32 {
    1
}
fn one_i64() -> i64 {
    1
}
fn sixteen() -> i32 {
    16
}
fn fifteen() -> i32 {
    15
}

impl SubscriptionGroupConfig {
    /// A group with Java's defaults.
    pub fn new(group_name: impl Into<String>) -> Self {
        Self {
            group_name: group_name.into(),
            consume_enable: true,
            consume_from_min_enable: true,
            consume_broadcast_enable: true,
            consume_message_orderly: false,
            retry_queue_nums: 1,
            retry_max_times: 16,
            broker_id: 0,
            which_broker_when_consume_slowly: 1,
            notify_consumer_ids_changed_enable: true,
            group_sys_flag: 0,
            consume_timeout_minute: 15,
            attributes: BTreeMap::new(),
        }
    }

    /// The same group, consuming in order or not.
    #[must_use]
    pub fn with_orderly(mut self, orderly: bool) -> Self {
        self.consume_message_orderly = orderly;
        self
    }
}

/// Every group config of a broker, with its version. Java: `SubscriptionGroupWrapper` (whose
/// `forbiddenTable` is dropped when read).
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionGroupWrapper {
    /// Group → config.
    #[serde(default)]
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
    /// Version.
    #[serde(default)]
    pub data_version: DataVersion,
}
