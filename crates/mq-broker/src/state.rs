//! Broker tables: topic configs and consumer offsets (persisted atomically as JSON), and the
//! client registry (producer and consumer groups by connection).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mq_client_api::body::{
    DataVersion, SubscriptionGroupConfig, SubscriptionGroupWrapper, TopicConfig,
    TopicConfigSerializeWrapper, perm,
};
use mq_remoting::ConnectionHandle;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::store::now_ms;

/// The auto-create template topic.
pub const TBW102: &str = "TBW102";

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
///
/// Two writers of one path would share the temp file (one renames it from under the other), so
/// callers hold their table's [`FileWriter`] lock around it.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The table `what` kept as JSON in `path`; empty when there is no file yet.
fn read_json<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    what: &'static str,
) -> io::Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => mq_client_api::body::from_json(what, &bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}

/// One file written by one writer at a time, so concurrent updates neither share the temp file
/// nor leave an older snapshot on disk after a newer one.
#[derive(Debug)]
struct FileWriter {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileWriter {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    /// Takes the write turn, then serializes with `snapshot` and writes the bytes. The snapshot is
    /// taken inside the turn, so the last write holds the newest state.
    fn write(&self, snapshot: impl FnOnce() -> Vec<u8>) -> io::Result<()> {
        let _turn = self.lock.lock();
        write_atomically(&self.path, &snapshot())
    }
}

/// Topic configs with a data version. Java: `TopicConfigManager`.
#[derive(Debug)]
pub struct TopicTable {
    file: FileWriter,
    inner: RwLock<TopicConfigSerializeWrapper>,
}

impl TopicTable {
    /// Loads `path` (or starts empty), adding TBW102 with `default_queues` queues and perm 7
    /// when `auto_create` is on.
    pub(crate) fn load(path: PathBuf, auto_create: bool, default_queues: i32) -> io::Result<Self> {
        let mut wrapper = read_json::<TopicConfigSerializeWrapper>(&path, "topics")?;
        if auto_create {
            let mut tbw = TopicConfig::new(TBW102, default_queues);
            tbw.perm = perm::INHERIT | perm::READ_WRITE;
            wrapper.topic_config_table.insert(TBW102.into(), tbw);
        } else {
            wrapper.topic_config_table.remove(TBW102);
        }
        wrapper.data_version = DataVersion {
            counter: wrapper.data_version.counter + 1,
            timestamp: now_ms(),
        };
        Ok(Self {
            file: FileWriter::new(path),
            inner: RwLock::new(wrapper),
        })
    }

    /// A topic's config.
    pub fn get(&self, topic: &str) -> Option<TopicConfig> {
        self.inner.read().topic_config_table.get(topic).cloned()
    }

    /// What `f` reads from a topic's config, without copying it.
    pub fn read<R>(&self, topic: &str, f: impl FnOnce(&TopicConfig) -> R) -> Option<R> {
        self.inner.read().topic_config_table.get(topic).map(f)
    }

    /// Every config with the version.
    pub fn snapshot(&self) -> TopicConfigSerializeWrapper {
        self.inner.read().clone()
    }

    /// Inserts or replaces a config, bumps the version and persists.
    pub(crate) fn put(&self, tc: TopicConfig) -> io::Result<()> {
        {
            let mut w = self.inner.write();
            w.topic_config_table.insert(tc.topic_name.clone(), tc);
            w.data_version.counter += 1;
            w.data_version.timestamp = now_ms();
        }
        self.file
            .write(|| mq_client_api::body::to_json(&*self.inner.read()))
    }
}

/// Subscription group configs with a data version. Java: `SubscriptionGroupManager`.
#[derive(Debug)]
pub struct GroupTable {
    file: FileWriter,
    inner: RwLock<SubscriptionGroupWrapper>,
}

impl GroupTable {
    /// Loads `path`, or starts empty.
    pub(crate) fn load(path: PathBuf) -> io::Result<Self> {
        let wrapper = read_json::<SubscriptionGroupWrapper>(&path, "subscriptionGroup")?;
        Ok(Self {
            file: FileWriter::new(path),
            inner: RwLock::new(wrapper),
        })
    }

    /// A group's config, when it has one.
    pub fn get(&self, group: &str) -> Option<SubscriptionGroupConfig> {
        self.inner
            .read()
            .subscription_group_table
            .get(group)
            .cloned()
    }

    /// Every config with the version.
    pub fn snapshot(&self) -> SubscriptionGroupWrapper {
        self.inner.read().clone()
    }

    /// Inserts or replaces a config (`None`: removes `group`'s), bumps the version and
    /// persists. Returns whether anything changed.
    pub(crate) fn set(
        &self,
        group: &str,
        config: Option<SubscriptionGroupConfig>,
    ) -> io::Result<bool> {
        {
            let mut w = self.inner.write();
            let changed = match config {
                Some(c) => {
                    w.subscription_group_table
                        .insert(group.to_owned(), c.clone())
                        != Some(c)
                }
                None => w.subscription_group_table.remove(group).is_some(),
            };
            if !changed {
                return Ok(false);
            }
            w.data_version.counter += 1;
            w.data_version.timestamp = now_ms();
        }
        self.file
            .write(|| mq_client_api::body::to_json(&*self.inner.read()))?;
        Ok(true)
    }
}

/// Consumer offsets by `topic@group` and queue. Java: `ConsumerOffsetManager`.
#[derive(Debug)]
pub struct OffsetTable {
    file: FileWriter,
    inner: Mutex<OffsetFile>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct OffsetFile {
    offset_table: BTreeMap<String, BTreeMap<i32, i64>>,
}

impl OffsetTable {
    pub(crate) fn load(path: PathBuf) -> io::Result<Self> {
        let file = read_json::<OffsetFile>(&path, "consumerOffset")?;
        Ok(Self {
            file: FileWriter::new(path),
            inner: Mutex::new(file),
        })
    }

    /// A committed offset.
    pub fn get(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.inner
            .lock()
            .offset_table
            .get(&format!("{topic}@{group}"))
            .and_then(|q| q.get(&queue_id).copied())
    }

    /// Commits an offset in memory; the broker persists the table every few seconds and on
    /// shutdown.
    pub fn commit(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        self.inner
            .lock()
            .offset_table
            .entry(format!("{topic}@{group}"))
            .or_default()
            .insert(queue_id, offset);
    }

    /// Forgets every offset `group` committed.
    pub fn remove_group(&self, group: &str) {
        self.inner
            .lock()
            .offset_table
            .retain(|key, _| key.split_once('@').map(|(_, g)| g) != Some(group));
    }

    /// Writes the table atomically.
    pub(crate) fn persist(&self) -> io::Result<()> {
        self.file
            .write(|| mq_client_api::body::to_json(&*self.inner.lock()))
    }
}

/// A connected client of a group.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) client_id: String,
    pub(crate) connection: ConnectionHandle,
}

/// Producer and consumer groups. Java: `ProducerManager` / `ConsumerManager`.
#[derive(Debug, Default)]
pub(crate) struct ClientRegistry {
    producers: Mutex<HashMap<String, HashMap<u64, Member>>>,
    consumers: Mutex<HashMap<String, HashMap<u64, Member>>>,
}

impl ClientRegistry {
    pub(crate) fn add_producer(&self, group: &str, member: Member) {
        self.producers
            .lock()
            .entry(group.to_owned())
            .or_default()
            .insert(member.connection.id(), member);
    }

    /// Adds a consumer; returns whether the group's membership changed.
    pub(crate) fn add_consumer(&self, group: &str, member: Member) -> bool {
        self.consumers
            .lock()
            .entry(group.to_owned())
            .or_default()
            .insert(member.connection.id(), member)
            .is_none()
    }

    pub(crate) fn remove_producer(&self, group: &str, client_id: &str) {
        if let Some(g) = self.producers.lock().get_mut(group) {
            g.retain(|_, m| m.client_id != client_id);
        }
    }

    /// Removes a consumer; returns whether it was there.
    pub(crate) fn remove_consumer(&self, group: &str, client_id: &str) -> bool {
        self.consumers.lock().get_mut(group).is_some_and(|g| {
            let before = g.len();
            g.retain(|_, m| m.client_id != client_id);
            g.len() != before
        })
    }

    /// Drops a closed connection everywhere; returns the consumer groups it left.
    pub(crate) fn connection_closed(&self, connection_id: u64) -> Vec<String> {
        for g in self.producers.lock().values_mut() {
            g.remove(&connection_id);
        }
        self.consumers
            .lock()
            .iter_mut()
            .filter_map(|(name, g)| g.remove(&connection_id).map(|_| name.clone()))
            .collect()
    }

    pub(crate) fn consumer_ids(&self, group: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .consumers
            .lock()
            .get(group)
            .map(|g| g.values().map(|m| m.client_id.clone()).collect())
            .unwrap_or_default();
        ids.sort();
        ids.dedup();
        ids
    }

    pub(crate) fn consumers(&self, group: &str) -> Vec<Member> {
        self.consumers
            .lock()
            .get(group)
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl ClientRegistry {
    /// The live connection of the client `client_id` as some producer group registered it
    /// (every client announces `CLIENT_INNER_PRODUCER`): where its replies are pushed.
    pub(crate) fn producer_connection(&self, client_id: &str) -> Option<ConnectionHandle> {
        self.producers.lock().values().find_map(|g| {
            g.values()
                .find(|m| m.client_id == client_id && !m.connection.is_closed())
                .map(|m| m.connection.clone())
        })
    }

    /// Some live connection of a producer group (for transaction checks).
    pub(crate) fn any_producer(&self, group: &str) -> Option<Member> {
        self.producers
            .lock()
            .get(group)
            .and_then(|g| g.values().find(|m| !m.connection.is_closed()).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Topics created at the same time from many connections all succeed, and the file on disk
    /// holds every one of them (it once failed with ENOENT when two writers shared the temp file).
    #[test]
    fn concurrent_topic_creates_all_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/topics.json");
        let table = TopicTable::load(path.clone(), true, 4).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let table = &table;
                s.spawn(move || {
                    for i in 0..25 {
                        table.put(TopicConfig::new(format!("T{t}_{i}"), 4)).unwrap();
                    }
                });
            }
        });
        let reloaded = TopicTable::load(path, true, 4).unwrap().snapshot();
        for t in 0..8 {
            for i in 0..25 {
                assert!(
                    reloaded
                        .topic_config_table
                        .contains_key(&format!("T{t}_{i}")),
                    "T{t}_{i} missing on disk"
                );
            }
        }
    }

    /// Offsets persisted from two tasks at once (the periodic flush and a shutdown) both succeed.
    #[test]
    fn concurrent_offset_persists_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/consumerOffset.json");
        let table = OffsetTable::load(path.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let table = &table;
                s.spawn(move || {
                    for i in 0..25 {
                        table.commit("g", &format!("T{t}"), 0, i);
                        table.persist().unwrap();
                    }
                });
            }
        });
        let reloaded = OffsetTable::load(path).unwrap();
        for t in 0..4 {
            assert_eq!(reloaded.get("g", &format!("T{t}"), 0), Some(24));
        }
    }
}
