//! Heartbeat body (spec §5.3): producer and consumer groups of one client.

use serde::{Deserialize, Serialize};

use super::{java_enum, lenient_i64};

/// A client's heartbeat (HEART_BEAT body). Java: `HeartbeatData`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatData {
    /// Client id `ip@instance`.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Producer groups (Java includes `CLIENT_INNER_PRODUCER`).
    #[serde(default)]
    pub producer_data_set: Vec<ProducerData>,
    /// Consumer groups.
    #[serde(default)]
    pub consumer_data_set: Vec<ConsumerData>,
}

/// A producer group. Java: `ProducerData`.
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerData {
    /// Group name.
    pub group_name: String,
}

/// A consumer group and its subscriptions. Java: `ConsumerData`.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerData {
    /// Group name.
    pub group_name: String,
    /// Pull (`CONSUME_ACTIVELY`) or push (`CONSUME_PASSIVELY`).
    pub consume_type: ConsumeType,
    /// Clustering or broadcasting.
    pub message_model: MessageModel,
    /// Where a new group starts.
    pub consume_from_where: ConsumeFromWhere,
    /// Subscriptions.
    #[serde(default)]
    pub subscription_data_set: Vec<SubscriptionData>,
    /// Unit mode (JS and C++ clients leave it out).
    #[serde(default)]
    pub unit_mode: bool,
}

/// One topic subscription. Java: `SubscriptionData`.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionData {
    /// Class filter mode (always false here).
    #[serde(default)]
    pub class_filter_mode: bool,
    /// Topic.
    pub topic: String,
    /// Expression: `*` or `TagA || TagB`.
    pub sub_string: String,
    /// Trimmed tags.
    #[serde(default)]
    pub tags_set: Vec<String>,
    /// Java `String.hashCode` of each tag.
    #[serde(default)]
    pub code_set: Vec<i32>,
    /// Version (ms timestamp when built); a number or a numeric string.
    #[serde(deserialize_with = "lenient_i64")]
    pub sub_version: i64,
    /// `TAG` (default) or `SQL92`.
    #[serde(default = "tag_expression")]
    pub expression_type: String,
}

fn tag_expression() -> String {
    "TAG".to_owned()
}

java_enum! {
    /// Java `ConsumeType`.
    ConsumeType {
        /// Pull consumer.
        Actively = "CONSUME_ACTIVELY",
        /// Push consumer.
        Passively = "CONSUME_PASSIVELY",
    }
}

java_enum! {
    /// Java `MessageModel`.
    MessageModel {
        /// Every consumer gets every message.
        Broadcasting = "BROADCASTING",
        /// Each message goes to one consumer of the group.
        Clustering = "CLUSTERING",
    }
}

java_enum! {
    /// Java `ConsumeFromWhere` (ordinals as in 4.5.1).
    ConsumeFromWhere {
        /// Start at the last offset.
        LastOffset = "CONSUME_FROM_LAST_OFFSET",
        /// Deprecated.
        LastOffsetAndFromMinWhenBootFirst = "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
        /// Deprecated.
        MinOffset = "CONSUME_FROM_MIN_OFFSET",
        /// Deprecated.
        MaxOffset = "CONSUME_FROM_MAX_OFFSET",
        /// Start at the first offset.
        FirstOffset = "CONSUME_FROM_FIRST_OFFSET",
        /// Start at a timestamp.
        Timestamp = "CONSUME_FROM_TIMESTAMP",
    }
}
