//! Small bodies: message queues, consumer lists, queue locks, KV tables (spec §5.5–§5.7).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One queue of a topic on one broker. Java: `MessageQueue`.
#[derive(Clone, Debug, Default, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueue {
    /// Topic.
    pub topic: String,
    /// Broker name.
    pub broker_name: String,
    /// Queue id.
    pub queue_id: i32,
}

impl MessageQueue {
    /// A queue.
    pub fn new(topic: impl Into<String>, broker_name: impl Into<String>, queue_id: i32) -> Self {
        Self {
            topic: topic.into(),
            broker_name: broker_name.into(),
            queue_id,
        }
    }
}

impl fmt::Display for MessageQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.topic, self.broker_name, self.queue_id)
    }
}

/// GET_CONSUMER_LIST_BY_GROUP response. Java: `GetConsumerListByGroupResponseBody`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerListByGroupBody {
    /// Client ids.
    #[serde(default)]
    pub consumer_id_list: Vec<String>,
}

/// LOCK_BATCH_MQ request. Java: `LockBatchRequestBody`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockBatchRequestBody {
    /// Consumer group.
    pub consumer_group: String,
    /// Client id.
    pub client_id: String,
    /// Queues to lock.
    #[serde(default)]
    pub mq_set: Vec<MessageQueue>,
}

/// LOCK_BATCH_MQ response. Java: `LockBatchResponseBody`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct LockBatchResponseBody {
    /// Queues now locked by the caller.
    #[serde(default, rename = "lockOKMQSet")]
    pub lock_ok_mq_set: Vec<MessageQueue>,
}

/// UNLOCK_BATCH_MQ request (same shape as the lock request). Java: `UnlockBatchRequestBody`.
pub type UnlockBatchRequestBody = LockBatchRequestBody;

/// A KV table (REGISTER_BROKER response body). Java: `KVTable`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
pub struct KvTable {
    /// Entries.
    #[serde(default)]
    pub table: BTreeMap<String, String>,
}

/// Topic names (GET_ALL_TOPIC_LIST_FROM_NAMESERVER response). Java: `TopicList`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicList {
    /// Topics.
    #[serde(default)]
    pub topic_list: Vec<String>,
}
