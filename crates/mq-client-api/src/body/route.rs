//! Route and cluster bodies (spec §5.2, §5.4).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// The master's broker id.
pub const MASTER_ID: i64 = 0;

/// A topic's route (GET_ROUTEINFO_BY_TOPIC response). Java: `TopicRouteData`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicRouteData {
    /// `brokerName:queueNum;...` for ordered topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    /// Queues per broker.
    #[serde(default)]
    pub queue_datas: Vec<QueueData>,
    /// Broker addresses.
    #[serde(default)]
    pub broker_datas: Vec<BrokerData>,
    /// Filter servers per broker address.
    #[serde(default)]
    pub filter_server_table: HashMap<String, Vec<String>>,
}

impl TopicRouteData {
    /// The broker data of `broker_name`.
    pub fn broker(&self, broker_name: &str) -> Option<&BrokerData> {
        self.broker_datas
            .iter()
            .find(|b| b.broker_name == broker_name)
    }
}

/// One broker's queues of a topic. Java: `QueueData`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(from = "QueueDataWire", into = "QueueDataWire")]
pub struct QueueData {
    /// Broker name.
    pub broker_name: String,
    /// Readable queues.
    pub read_queue_nums: i32,
    /// Writable queues.
    pub write_queue_nums: i32,
    /// Permission bits ([`super::perm`]).
    pub perm: i32,
    /// Topic sysFlag: written under both spellings, 4.5.1's `topicSynFlag` and 5.x's
    /// `topicSysFlag` (strict 5.x parsers require the latter; fastjson ignores the field it does
    /// not know, spec §10 #6); read from either.
    pub topic_sys_flag: i32,
}

/// [`QueueData`] as the wire carries it.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueDataWire {
    broker_name: String,
    read_queue_nums: i32,
    write_queue_nums: i32,
    perm: i32,
    #[serde(default)]
    topic_syn_flag: Option<i32>,
    #[serde(default)]
    topic_sys_flag: Option<i32>,
}

impl From<QueueDataWire> for QueueData {
    fn from(w: QueueDataWire) -> Self {
        Self {
            broker_name: w.broker_name,
            read_queue_nums: w.read_queue_nums,
            write_queue_nums: w.write_queue_nums,
            perm: w.perm,
            topic_sys_flag: w.topic_sys_flag.or(w.topic_syn_flag).unwrap_or(0),
        }
    }
}

impl From<QueueData> for QueueDataWire {
    fn from(q: QueueData) -> Self {
        Self {
            broker_name: q.broker_name,
            read_queue_nums: q.read_queue_nums,
            write_queue_nums: q.write_queue_nums,
            perm: q.perm,
            topic_syn_flag: Some(q.topic_sys_flag),
            topic_sys_flag: Some(q.topic_sys_flag),
        }
    }
}

/// One broker's addresses by id (0 = master). Java: `BrokerData`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerData {
    /// Cluster name.
    pub cluster: String,
    /// Broker name.
    pub broker_name: String,
    /// Broker id → `ip:port`; keys travel as `"0"` (standard) or `0` (fastjson).
    pub broker_addrs: BTreeMap<i64, String>,
    /// 5.x zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
    /// 5.x: whether a slave acts as master (`false` unless acting master is on). Always written:
    /// strict 5.x parsers require it (spec §10 #7).
    #[serde(default)]
    pub enable_acting_master: bool,
}

impl BrokerData {
    /// The master's address.
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&MASTER_ID).map(String::as_str)
    }
}

/// Cluster membership (GET_BROKER_CLUSTER_INFO response). Java: `ClusterInfo`.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// Broker name → broker data.
    #[serde(default)]
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// Cluster name → broker names.
    #[serde(default)]
    pub cluster_addr_table: BTreeMap<String, Vec<String>>,
}
