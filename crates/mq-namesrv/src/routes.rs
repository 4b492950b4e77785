//! The name server's tables (spec §8.1): clusters, brokers, topic queues and broker liveness.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use mq_client_api::body::{
    BrokerData, ClusterInfo, DataVersion, MASTER_ID, QueueData, TopicConfigSerializeWrapper,
    TopicRouteData,
};
use parking_lot::RwLock;
use tokio::time::Instant;

/// A broker's registration as the name server needs it.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Cluster name.
    pub cluster_name: String,
    /// Broker address `ip:port`.
    pub broker_addr: String,
    /// Broker name.
    pub broker_name: String,
    /// Broker id; 0 is the master.
    pub broker_id: i64,
    /// HA address.
    pub ha_server_addr: String,
    /// Topic configs and their version.
    pub topics: TopicConfigSerializeWrapper,
    /// Filter servers.
    pub filter_server_list: Vec<String>,
    /// The connection that registered, so that its close removes the broker.
    pub connection_id: u64,
}

/// What a registration returns: for slaves, where their master is.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct RegisterOutcome {
    /// Master address, for a slave whose master is registered.
    pub master_addr: Option<String>,
    /// Master HA address, likewise.
    pub ha_server_addr: Option<String>,
}

#[derive(Debug)]
struct Live {
    last_update: Instant,
    data_version: DataVersion,
    ha_server_addr: String,
    connection_id: u64,
    cluster_name: String,
    broker_name: String,
}

#[derive(Debug, Default)]
struct Tables {
    topic_queues: HashMap<String, BTreeMap<String, QueueData>>,
    brokers: HashMap<String, BrokerData>,
    clusters: HashMap<String, BTreeSet<String>>,
    live: HashMap<String, Live>,
    filter_servers: HashMap<String, Vec<String>>,
}

/// Route tables behind one lock. Java: `RouteInfoManager`.
#[derive(Debug, Default)]
pub struct RouteInfoManager {
    tables: RwLock<Tables>,
}

impl RouteInfoManager {
    /// Records a registration at `now`.
    pub fn register(&self, reg: Registration, now: Instant) -> RegisterOutcome {
        let mut t = self.tables.write();
        t.clusters
            .entry(reg.cluster_name.clone())
            .or_default()
            .insert(reg.broker_name.clone());
        let first = !t.brokers.contains_key(&reg.broker_name);
        let broker = t
            .brokers
            .entry(reg.broker_name.clone())
            .or_insert_with(|| BrokerData {
                cluster: reg.cluster_name.clone(),
                broker_name: reg.broker_name.clone(),
                ..BrokerData::default()
            });
        // One address has one id: a slave promoted to master (or back) drops its old id.
        broker
            .broker_addrs
            .retain(|id, addr| *addr != reg.broker_addr || *id == reg.broker_id);
        let new_addr = broker
            .broker_addrs
            .insert(reg.broker_id, reg.broker_addr.clone())
            .is_none_or(|old| old != reg.broker_addr);
        let changed = t
            .live
            .get(&reg.broker_addr)
            .is_none_or(|l| l.data_version != reg.topics.data_version);
        if reg.broker_id == MASTER_ID && (changed || first || new_addr) {
            // Rebuild this broker's queue data from its topic configs.
            for queues in t.topic_queues.values_mut() {
                queues.remove(&reg.broker_name);
            }
            for tc in reg.topics.topic_config_table.values() {
                t.topic_queues
                    .entry(tc.topic_name.clone())
                    .or_default()
                    .insert(
                        reg.broker_name.clone(),
                        QueueData {
                            broker_name: reg.broker_name.clone(),
                            read_queue_nums: tc.read_queue_nums,
                            write_queue_nums: tc.write_queue_nums,
                            perm: tc.perm,
                            topic_sys_flag: tc.topic_sys_flag,
                        },
                    );
            }
            t.topic_queues.retain(|_, q| !q.is_empty());
        }
        t.live.insert(
            reg.broker_addr.clone(),
            Live {
                last_update: now,
                data_version: reg.topics.data_version.clone(),
                ha_server_addr: reg.ha_server_addr.clone(),
                connection_id: reg.connection_id,
                cluster_name: reg.cluster_name.clone(),
                broker_name: reg.broker_name.clone(),
            },
        );
        if reg.filter_server_list.is_empty() {
            t.filter_servers.remove(&reg.broker_addr);
        } else {
            t.filter_servers
                .insert(reg.broker_addr.clone(), reg.filter_server_list.clone());
        }
        let mut outcome = RegisterOutcome::default();
        if reg.broker_id != MASTER_ID
            && let Some(master) = t
                .brokers
                .get(&reg.broker_name)
                .and_then(|b| b.master_addr())
                .map(str::to_owned)
        {
            outcome.ha_server_addr = t.live.get(&master).map(|l| l.ha_server_addr.clone());
            outcome.master_addr = Some(master);
        }
        outcome
    }

    /// Removes one broker address (UNREGISTER_BROKER, connection close, expiry).
    pub fn unregister(
        &self,
        cluster_name: &str,
        broker_addr: &str,
        broker_name: &str,
        broker_id: i64,
    ) {
        let mut t = self.tables.write();
        remove_broker(&mut t, cluster_name, broker_addr, broker_name, broker_id);
    }

    /// The route of `topic`: only when both queue data and broker data exist.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let t = self.tables.read();
        let queues = t.topic_queues.get(topic)?;
        let broker_datas: Vec<BrokerData> = queues
            .keys()
            .filter_map(|name| t.brokers.get(name).cloned())
            .collect();
        if broker_datas.is_empty() {
            return None;
        }
        let filter_server_table = broker_datas
            .iter()
            .flat_map(|b| b.broker_addrs.values())
            .filter_map(|addr| {
                t.filter_servers
                    .get(addr)
                    .map(|f| (addr.clone(), f.clone()))
            })
            .collect();
        Some(TopicRouteData {
            order_topic_conf: None,
            queue_datas: queues.values().cloned().collect(),
            broker_datas,
            filter_server_table,
        })
    }

    /// Cluster membership.
    pub fn cluster_info(&self) -> ClusterInfo {
        let t = self.tables.read();
        ClusterInfo {
            broker_addr_table: t
                .brokers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cluster_addr_table: t
                .clusters
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
        }
    }

    /// Every topic with a route.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.tables.read().topic_queues.keys().cloned().collect();
        topics.sort();
        topics
    }

    /// Drops brokers whose last registration is older than `expiry`; returns their addresses.
    pub fn scan_not_active(&self, now: Instant, expiry: Duration) -> Vec<String> {
        let mut t = self.tables.write();
        let expired: Vec<(String, String, String)> = t
            .live
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.last_update) > expiry)
            .map(|(addr, l)| (addr.clone(), l.cluster_name.clone(), l.broker_name.clone()))
            .collect();
        for (addr, cluster, name) in &expired {
            remove_addr(&mut t, cluster, addr, name);
        }
        expired.into_iter().map(|(a, _, _)| a).collect()
    }

    /// Drops every broker registered over connection `connection_id` (it closed).
    pub fn connection_closed(&self, connection_id: u64) -> Vec<String> {
        let mut t = self.tables.write();
        let gone: Vec<(String, String, String)> = t
            .live
            .iter()
            .filter(|(_, l)| l.connection_id == connection_id)
            .map(|(addr, l)| (addr.clone(), l.cluster_name.clone(), l.broker_name.clone()))
            .collect();
        for (addr, cluster, name) in &gone {
            remove_addr(&mut t, cluster, addr, name);
        }
        gone.into_iter().map(|(a, _, _)| a).collect()
    }
}

fn remove_addr(t: &mut Tables, cluster: &str, addr: &str, broker_name: &str) {
    let id = t.brokers.get(broker_name).and_then(|b| {
        b.broker_addrs
            .iter()
            .find(|(_, a)| *a == addr)
            .map(|(id, _)| *id)
    });
    match id {
        Some(id) => remove_broker(t, cluster, addr, broker_name, id),
        None => {
            t.live.remove(addr);
            t.filter_servers.remove(addr);
        }
    }
}

fn remove_broker(t: &mut Tables, cluster: &str, addr: &str, broker_name: &str, broker_id: i64) {
    t.live.remove(addr);
    t.filter_servers.remove(addr);
    let mut broker_gone = false;
    if let Some(b) = t.brokers.get_mut(broker_name) {
        if b.broker_addrs.get(&broker_id).is_some_and(|a| a == addr) {
            b.broker_addrs.remove(&broker_id);
        }
        broker_gone = b.broker_addrs.is_empty();
    }
    if broker_gone {
        t.brokers.remove(broker_name);
        if let Some(names) = t.clusters.get_mut(cluster) {
            names.remove(broker_name);
            if names.is_empty() {
                t.clusters.remove(cluster);
            }
        }
        for queues in t.topic_queues.values_mut() {
            queues.remove(broker_name);
        }
        t.topic_queues.retain(|_, q| !q.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use mq_client_api::body::TopicConfig;

    use super::*;

    fn reg(name: &str, addr: &str, id: i64, topics: &[&str], conn: u64) -> Registration {
        let mut w = TopicConfigSerializeWrapper::default();
        for t in topics {
            w.topic_config_table
                .insert((*t).into(), TopicConfig::new(*t, 4));
        }
        Registration {
            cluster_name: "C".into(),
            broker_addr: addr.into(),
            broker_name: name.into(),
            broker_id: id,
            ha_server_addr: format!("{addr}-ha"),
            topics: w,
            filter_server_list: vec![],
            connection_id: conn,
        }
    }

    #[test]
    fn master_and_slave_appear_in_the_route() {
        let m = RouteInfoManager::default();
        let now = Instant::now();
        assert_eq!(
            m.register(reg("a", "m:1", 0, &["T"], 1), now),
            RegisterOutcome::default()
        );
        let slave = m.register(reg("a", "s:1", 1, &["T"], 2), now);
        assert_eq!(slave.master_addr.as_deref(), Some("m:1"));
        assert_eq!(slave.ha_server_addr.as_deref(), Some("m:1-ha"));
        let route = m.route("T").unwrap();
        assert_eq!(route.broker_datas[0].broker_addrs.len(), 2);
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);
        assert!(m.route("U").is_none());
    }

    #[test]
    fn a_new_topic_config_rebuilds_queue_data() {
        let m = RouteInfoManager::default();
        let now = Instant::now();
        m.register(reg("a", "m:1", 0, &["T"], 1), now);
        let mut r = reg("a", "m:1", 0, &["T", "U"], 1);
        r.topics.data_version.counter = 1;
        m.register(r, now);
        assert!(m.route("U").is_some());
        assert_eq!(m.topics(), vec!["T".to_owned(), "U".to_owned()]);
    }

    #[test]
    fn silent_brokers_expire() {
        let m = RouteInfoManager::default();
        let t0 = Instant::now();
        m.register(reg("a", "m:1", 0, &["T"], 1), t0);
        m.register(reg("b", "m:2", 0, &["T"], 2), t0 + Duration::from_secs(100));
        let expiry = Duration::from_secs(120);
        assert!(
            m.scan_not_active(t0 + Duration::from_secs(120), expiry)
                .is_empty()
        );
        assert_eq!(
            m.scan_not_active(t0 + Duration::from_secs(121), expiry),
            vec!["m:1".to_owned()]
        );
        let route = m.route("T").unwrap();
        assert_eq!(route.broker_datas.len(), 1);
        assert_eq!(route.broker_datas[0].broker_name, "b");
        assert_eq!(
            m.cluster_info().cluster_addr_table["C"],
            vec!["b".to_owned()]
        );
    }

    #[test]
    fn closing_the_connection_removes_its_brokers() {
        let m = RouteInfoManager::default();
        m.register(reg("a", "m:1", 0, &["T"], 7), Instant::now());
        assert_eq!(m.connection_closed(7), vec!["m:1".to_owned()]);
        assert!(m.route("T").is_none());
        assert!(m.cluster_info().broker_addr_table.is_empty());
    }

    #[test]
    fn promotion_keeps_one_id_per_address() {
        let m = RouteInfoManager::default();
        let now = Instant::now();
        m.register(reg("a", "x:1", 1, &["T"], 1), now);
        m.register(reg("a", "x:1", 0, &["T"], 1), now);
        let b = &m.cluster_info().broker_addr_table["a"];
        assert_eq!(b.broker_addrs.len(), 1);
        assert_eq!(b.master_addr(), Some("x:1"));
    }
}
