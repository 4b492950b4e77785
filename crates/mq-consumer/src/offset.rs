//! Offset stores: where a consumer group resumes. Clustering keeps offsets on the brokers
//! (cached here, pushed periodically and on shutdown); broadcasting keeps them in a local file
//! written atomically. Java: `RemoteBrokerOffsetStore` / `LocalFileOffsetStore`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mq_client_api::header::{QueryConsumerOffsetRequestHeader, UpdateConsumerOffsetRequestHeader};
use mq_client_api::{MessageQueue, ResponseCode};
use mq_client_instance::ClientInstance;
use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::error::ConsumerError;

/// Where offsets live.
#[derive(Debug)]
pub enum OffsetStore {
    /// On the brokers (clustering).
    Remote(RemoteOffsetStore),
    /// In a local file (broadcasting).
    Local(LocalOffsetStore),
}

impl OffsetStore {
    /// The committed offset of `mq`, `None` when the group never committed one.
    ///
    /// # Errors
    /// Broker or file errors.
    pub async fn read(&self, mq: &MessageQueue) -> Result<Option<i64>, ConsumerError> {
        match self {
            Self::Remote(s) => s.read(mq).await,
            Self::Local(s) => Ok(s.read(mq)),
        }
    }

    /// Records `offset` (the next offset to consume) for `mq`.
    pub fn update(&self, mq: &MessageQueue, offset: i64) {
        match self {
            Self::Remote(s) => s.update(mq, offset),
            Self::Local(s) => s.update(mq, offset),
        }
    }

    /// Forgets `mq` (it moved to another consumer) after persisting it.
    pub async fn remove(&self, mq: &MessageQueue) {
        self.persist(std::slice::from_ref(mq)).await;
        match self {
            Self::Remote(s) => {
                s.cache.lock().remove(mq);
            }
            Self::Local(_) => {}
        }
    }

    /// Writes the offsets of `mqs` out.
    pub async fn persist(&self, mqs: &[MessageQueue]) {
        match self {
            Self::Remote(s) => s.persist(mqs).await,
            Self::Local(s) => {
                if let Err(e) = s.persist() {
                    warn!(cause = %e, "persisting local offsets failed");
                }
            }
        }
    }

    /// The cached offset of `mq`.
    pub fn cached(&self, mq: &MessageQueue) -> Option<i64> {
        match self {
            Self::Remote(s) => s.cache.lock().get(mq).copied(),
            Self::Local(s) => s.read(mq),
        }
    }
}

/// Offsets kept on the brokers.
#[derive(Debug)]
pub struct RemoteOffsetStore {
    instance: Arc<ClientInstance>,
    group: String,
    /// Found with the queue itself, which is copied only when first seen (an update per
    /// acknowledged batch hashed two strings with SipHash and copied them).
    cache: Mutex<HashMap<MessageQueue, i64, foldhash::fast::RandomState>>,
    timeout: Duration,
}

impl RemoteOffsetStore {
    /// A store for `group` talking through `instance`.
    pub fn new(instance: Arc<ClientInstance>, group: String) -> Self {
        let timeout = instance.config().request_timeout;
        Self {
            instance,
            group,
            cache: Mutex::default(),
            timeout,
        }
    }

    async fn broker(&self, mq: &MessageQueue) -> Result<Arc<str>, ConsumerError> {
        if let Some(a) = self.instance.broker_master(&mq.broker_name) {
            return Ok(a);
        }
        self.instance.update_route(&mq.topic, self.timeout).await?;
        self.instance
            .broker_master(&mq.broker_name)
            .ok_or_else(|| ConsumerError::BrokerNotFound(mq.broker_name.clone()))
    }

    async fn read(&self, mq: &MessageQueue) -> Result<Option<i64>, ConsumerError> {
        if let Some(o) = self.cache.lock().get(mq) {
            return Ok(Some(*o));
        }
        let addr = self.broker(mq).await?;
        let header = QueryConsumerOffsetRequestHeader {
            consumer_group: self.group.clone(),
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
            set_zero_if_not_found: Some(false),
        };
        match self
            .instance
            .api()
            .query_consumer_offset(&addr, &header, self.timeout)
            .await
        {
            Ok(o) => {
                self.cache.lock().insert(mq.clone(), o);
                Ok(Some(o))
            }
            Err(e) if e.response_code() == Some(ResponseCode::QUERY_NOT_FOUND) => Ok(None),
            Err(e) => Err(ConsumerError::Api(e)),
        }
    }

    fn update(&self, mq: &MessageQueue, offset: i64) {
        let mut cache = self.cache.lock();
        match cache.get_mut(mq) {
            Some(o) => *o = offset,
            None => {
                cache.insert(mq.clone(), offset);
            }
        }
    }

    async fn persist(&self, mqs: &[MessageQueue]) {
        let entries: Vec<(MessageQueue, i64)> = {
            let cache = self.cache.lock();
            mqs.iter()
                .filter_map(|mq| cache.get(mq).map(|o| (mq.clone(), *o)))
                .collect()
        };
        for (mq, offset) in entries {
            let Ok(addr) = self.broker(&mq).await else {
                continue;
            };
            let header = UpdateConsumerOffsetRequestHeader {
                consumer_group: self.group.clone(),
                topic: mq.topic.clone(),
                queue_id: mq.queue_id,
                commit_offset: offset,
            };
            if let Err(e) = self
                .instance
                .api()
                .update_consumer_offset(&addr, &header, self.timeout)
                .await
            {
                debug!(queue = %mq, cause = %e, "offset commit failed");
            }
        }
    }
}

/// Offsets kept in `dir/offsets.json`.
#[derive(Debug)]
pub struct LocalOffsetStore {
    path: PathBuf,
    offsets: Mutex<BTreeMap<String, i64>>,
}

fn key(mq: &MessageQueue) -> String {
    format!("{}@{}@{}", mq.topic, mq.broker_name, mq.queue_id)
}

impl LocalOffsetStore {
    /// Opens (or starts) the file in `dir`.
    ///
    /// # Errors
    /// A file that exists but cannot be read or parsed.
    pub fn open(dir: PathBuf) -> Result<Self, ConsumerError> {
        let path = dir.join("offsets.json");
        let failed = |source| ConsumerError::OffsetFile {
            path: path.clone(),
            source,
        };
        let offsets = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| failed(e.into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(failed(e)),
        };
        Ok(Self {
            path,
            offsets: Mutex::new(offsets),
        })
    }

    fn read(&self, mq: &MessageQueue) -> Option<i64> {
        self.offsets.lock().get(&key(mq)).copied()
    }

    fn update(&self, mq: &MessageQueue, offset: i64) {
        self.offsets.lock().insert(key(mq), offset);
    }

    pub(crate) fn persist(&self) -> std::io::Result<()> {
        let bytes =
            serde_json::to_vec_pretty(&*self.offsets.lock()).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mq = MessageQueue::new("T", "b", 3);
        let s = OffsetStore::Local(LocalOffsetStore::open(dir.path().to_owned()).unwrap());
        assert_eq!(s.read(&mq).await.unwrap(), None);
        s.update(&mq, 42);
        s.persist(&[]).await;
        let s = OffsetStore::Local(LocalOffsetStore::open(dir.path().to_owned()).unwrap());
        assert_eq!(s.read(&mq).await.unwrap(), Some(42));
    }
}
