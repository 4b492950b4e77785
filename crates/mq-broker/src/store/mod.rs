//! The message store: commit log, consume queues, key index, and flushing (ASYNC periodic or
//! SYNC with group commit).
//!
//! Consume queues and the key index live in memory and are rebuilt from the commit log on
//! start, while every record's CRC is verified and a torn tail is cut off; the commit log is
//! the only file a crash can leave half-written.

mod commitlog;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mq_client_api::message::{MessageExt, encode_record, property};
use mq_client_api::validate::java_hash;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, warn};

use commitlog::CommitLog;

/// When a send is acknowledged relative to the disk.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum FlushMode {
    /// Flushed periodically; the send is answered once written to the page cache.
    #[default]
    Async,
    /// The send is answered after fsync; concurrent sends share one fsync (group commit).
    Sync,
}

/// Store settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Directory of the commit log and config files.
    pub dir: PathBuf,
    /// Size of one commit-log segment. Default 64 MiB (Java: 1 GiB).
    pub segment_size: i64,
    /// Flush mode. Default ASYNC.
    pub flush_mode: FlushMode,
    /// ASYNC flush period. Default 500 ms.
    pub flush_interval: Duration,
    /// How long a SYNC send waits for its fsync before answering FLUSH_DISK_TIMEOUT. Default 5 s.
    pub sync_flush_timeout: Duration,
}

impl StoreConfig {
    /// Defaults with the store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_size: 64 * 1024 * 1024,
            flush_mode: FlushMode::Async,
            flush_interval: Duration::from_millis(500),
            sync_flush_timeout: Duration::from_secs(5),
        }
    }
}

/// One consume-queue entry.
#[derive(Clone, Copy, Debug)]
struct CqEntry {
    phys: i64,
    size: i32,
    tag_hash: i64,
    store_timestamp: i64,
}

/// Outcome of an append.
#[derive(Clone, Debug)]
pub struct PutResult {
    /// Commit-log offset.
    pub phys_offset: i64,
    /// Consume-queue offset.
    pub queue_offset: i64,
    /// Offset message id.
    pub msg_id: String,
    /// False when a SYNC flush missed its deadline (the message is stored all the same).
    pub flushed_in_time: bool,
}

/// What a read of a queue found (broker side of spec §3.4).
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum GetStatus {
    /// Messages found.
    Found,
    /// The queue holds no message.
    NoMessageInQueue,
    /// Offset below the queue's min.
    OffsetTooSmall,
    /// Offset equals the queue's max: nothing new.
    OffsetOverflowOne,
    /// Offset beyond the queue's max.
    OffsetOverflowBadly,
    /// Entries were scanned but none matched the tag filter.
    NoMatchedMessage,
}

/// A read of a queue.
#[derive(Clone, Debug)]
pub struct GetResult {
    /// Outcome.
    pub status: GetStatus,
    /// Concatenated records.
    pub body: Bytes,
    /// Number of records in `body`.
    pub count: usize,
    /// Where to read next.
    pub next_begin_offset: i64,
    /// Queue min offset.
    pub min_offset: i64,
    /// Queue max offset.
    pub max_offset: i64,
}

#[derive(Debug)]
struct Inner {
    log: CommitLog,
    queues: HashMap<(String, i32), Vec<CqEntry>>,
    keys: HashMap<(String, String), Vec<(i64, i32)>>,
}

/// The store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MessageStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: StoreConfig,
    inner: Mutex<Inner>,
    /// Bumped on every append; long-polling pulls wait on it.
    appended: watch::Sender<u64>,
    flushed: watch::Sender<i64>,
    flush_request: Notify,
    token: CancellationToken,
    tasks: TaskTracker,
}

impl MessageStore {
    /// Opens (recovering) the store and starts its flusher.
    ///
    /// # Errors
    /// I/O errors opening or repairing the commit log.
    pub fn open(config: StoreConfig) -> io::Result<Self> {
        let mut queues: HashMap<(String, i32), Vec<CqEntry>> = HashMap::new();
        let mut keys: HashMap<(String, String), Vec<(i64, i32)>> = HashMap::new();
        let log = CommitLog::open(
            &config.dir.join("commitlog"),
            config.segment_size,
            |msg, size| {
                index(&mut queues, &mut keys, msg, size);
            },
        )?;
        let write_offset = log.write_offset();
        let (flushed, _) = watch::channel(write_offset);
        let (appended, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            config,
            inner: Mutex::new(Inner { log, queues, keys }),
            appended,
            flushed,
            flush_request: Notify::new(),
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let s = Arc::clone(&shared);
        shared
            .tasks
            .spawn(flusher(s).instrument(tracing::debug_span!("store_flusher")));
        Ok(Self { shared })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.shared.config.dir
    }

    /// Appends one message to its queue: assigns queue and physical offsets, the store time
    /// and the store host, writes the record, and (SYNC mode) waits for the fsync.
    ///
    /// # Errors
    /// I/O errors and records larger than a segment.
    pub async fn put(&self, msg: MessageExt, store_host: SocketAddr) -> io::Result<PutResult> {
        let mut results = self.put_batch(vec![msg], store_host).await?;
        results
            .pop()
            .ok_or_else(|| io::Error::other("an append of one message stored none"))
    }

    /// Appends messages as one unit: each gets the next queue offset of its queue with no
    /// other append in between (a batch occupies contiguous offsets), and SYNC mode waits for
    /// one fsync covering all of them.
    ///
    /// # Errors
    /// I/O errors and records larger than a segment; messages before the failing one stay
    /// stored.
    pub async fn put_batch(
        &self,
        msgs: Vec<MessageExt>,
        store_host: SocketAddr,
    ) -> io::Result<Vec<PutResult>> {
        let mut results = Vec::with_capacity(msgs.len());
        let end = {
            let mut inner = self.shared.inner.lock();
            for mut msg in msgs {
                let key = (msg.message.topic.clone(), msg.queue_id);
                let queue_offset = inner.queues.get(&key).map_or(0, |q| q.len() as i64);
                msg.queue_offset = queue_offset;
                msg.store_host = store_host;
                msg.store_timestamp = now_ms();
                let len = msg.encoded_len();
                let phys = inner.log.reserve(len)?;
                msg.commit_log_offset = phys;
                let record = encode_record(&msg)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                inner.log.append(&record)?;
                let Inner { queues, keys, .. } = &mut *inner;
                index(queues, keys, &msg, record.len() as i32);
                results.push(PutResult {
                    phys_offset: phys,
                    queue_offset,
                    msg_id: msg.offset_msg_id(),
                    flushed_in_time: true,
                });
            }
            inner.log.write_offset()
        };
        self.shared.appended.send_modify(|n| *n += 1);
        if self.shared.config.flush_mode == FlushMode::Sync {
            self.shared.flush_request.notify_one();
            let mut rx = self.shared.flushed.subscribe();
            let limit = self.shared.config.sync_flush_timeout;
            let flushed = if limit.is_zero() {
                // No time to wait at all: only an fsync that already happened counts.
                *rx.borrow() >= end
            } else {
                tokio::time::timeout(limit, rx.wait_for(|f| *f >= end))
                    .await
                    .is_ok_and(|r| r.is_ok())
            };
            for r in &mut results {
                r.flushed_in_time = flushed;
            }
        }
        Ok(results)
    }

    /// A receiver that changes on every append (long polling).
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.shared.appended.subscribe()
    }

    /// How many readers are waiting for appends (parked long-polling pulls).
    pub fn waiting_readers(&self) -> usize {
        self.shared.appended.receiver_count()
    }

    /// Reads up to `max` messages of a queue from `offset`, keeping those whose tag hash is in
    /// `tag_hashes` (all when `None`).
    pub fn get(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max: usize,
        tag_hashes: Option<&[i64]>,
    ) -> io::Result<GetResult> {
        let inner = self.shared.inner.lock();
        let entries = inner
            .queues
            .get(&(topic.to_owned(), queue_id))
            .map_or(&[][..], Vec::as_slice);
        let max_offset = entries.len() as i64;
        let mut result = GetResult {
            status: GetStatus::NoMessageInQueue,
            body: Bytes::new(),
            count: 0,
            next_begin_offset: offset,
            min_offset: 0,
            max_offset,
        };
        if max_offset == 0 {
            result.next_begin_offset = 0;
            return Ok(result);
        }
        if offset < 0 {
            result.status = GetStatus::OffsetTooSmall;
            result.next_begin_offset = 0;
            return Ok(result);
        }
        if offset == max_offset {
            result.status = GetStatus::OffsetOverflowOne;
            return Ok(result);
        }
        if offset > max_offset {
            result.status = GetStatus::OffsetOverflowBadly;
            result.next_begin_offset = max_offset;
            return Ok(result);
        }
        let mut body = BytesMut::new();
        let mut next = offset;
        // Scan at most a bounded window so a selective filter cannot stall the broker.
        let scan_limit = max.max(1) * 8 + 32;
        for e in entries.iter().skip(offset as usize).take(scan_limit) {
            next += 1;
            if tag_hashes.is_some_and(|h| !h.contains(&e.tag_hash)) {
                continue;
            }
            body.extend_from_slice(&inner.log.read(e.phys, e.size as usize)?);
            result.count += 1;
            if result.count >= max {
                break;
            }
        }
        result.next_begin_offset = next;
        result.status = if result.count > 0 {
            GetStatus::Found
        } else {
            GetStatus::NoMatchedMessage
        };
        result.body = body.freeze();
        Ok(result)
    }

    /// A queue's max offset (number of messages).
    pub fn max_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.shared
            .inner
            .lock()
            .queues
            .get(&(topic.to_owned(), queue_id))
            .map_or(0, |q| q.len() as i64)
    }

    /// The first queue offset whose store time is at or after `timestamp_ms` (the max offset
    /// when none is).
    pub fn search_offset(&self, topic: &str, queue_id: i32, timestamp_ms: i64) -> i64 {
        let inner = self.shared.inner.lock();
        inner
            .queues
            .get(&(topic.to_owned(), queue_id))
            .map_or(0, |q| {
                q.partition_point(|e| e.store_timestamp < timestamp_ms) as i64
            })
    }

    /// Store time of a queue's earliest message.
    pub fn earliest_store_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        let inner = self.shared.inner.lock();
        inner
            .queues
            .get(&(topic.to_owned(), queue_id))
            .and_then(|q| q.first())
            .map(|e| e.store_timestamp)
    }

    /// The raw record at a physical offset.
    ///
    /// # Errors
    /// I/O errors, or `NotFound` when no record starts there.
    pub fn read_record(&self, phys: i64) -> io::Result<Bytes> {
        let inner = self.shared.inner.lock();
        if phys < 0 || phys >= inner.log.write_offset() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no record at that offset",
            ));
        }
        let head = inner.log.read(phys, 8)?;
        let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if size < 8 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no record at that offset",
            ));
        }
        inner.log.read(phys, size as usize)
    }

    /// Records of `topic` whose KEYS or UNIQ_KEY contain `key`, newest last, at most `max`.
    pub fn query_by_key(&self, topic: &str, key: &str, max: usize) -> io::Result<Vec<Bytes>> {
        let inner = self.shared.inner.lock();
        let Some(hits) = inner.keys.get(&(topic.to_owned(), key.to_owned())) else {
            return Ok(Vec::new());
        };
        hits.iter()
            .rev()
            .take(max)
            .rev()
            .map(|(phys, size)| inner.log.read(*phys, *size as usize))
            .collect()
    }

    /// Flushes everything written so far (used at shutdown).
    pub async fn flush(&self) -> io::Result<()> {
        flush_once(&self.shared).await
    }

    /// Stops the flusher after a final flush.
    pub async fn shutdown(&self) {
        self.shared.token.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        if let Err(e) = flush_once(&self.shared).await {
            warn!(cause = %e, "final flush failed");
        }
    }
}

fn index(
    queues: &mut HashMap<(String, i32), Vec<CqEntry>>,
    keys: &mut HashMap<(String, String), Vec<(i64, i32)>>,
    msg: &MessageExt,
    size: i32,
) {
    let m = &msg.message;
    queues
        .entry((m.topic.clone(), msg.queue_id))
        .or_default()
        .push(CqEntry {
            phys: msg.commit_log_offset,
            size,
            tag_hash: m.tags().map_or(0, |t| i64::from(java_hash(t))),
            store_timestamp: msg.store_timestamp,
        });
    let uniq = m.property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX);
    for key in m.keys().into_iter().chain(uniq) {
        keys.entry((m.topic.clone(), key.to_owned()))
            .or_default()
            .push((msg.commit_log_offset, size));
    }
}

async fn flusher(shared: Arc<Shared>) {
    loop {
        let wait = async {
            match shared.config.flush_mode {
                FlushMode::Sync => shared.flush_request.notified().await,
                FlushMode::Async => tokio::time::sleep(shared.config.flush_interval).await,
            }
        };
        tokio::select! {
            () = shared.token.cancelled() => break,
            () = wait => {}
        }
        if let Err(e) = flush_once(&shared).await {
            warn!(cause = %e, "commit log flush failed");
        }
    }
}

/// fsyncs the segments written since the last flush and publishes the new flushed offset.
/// Every send waiting for an offset up to it is released by the same fsync.
async fn flush_once(shared: &Arc<Shared>) -> io::Result<()> {
    let (target, files) = {
        let inner = shared.inner.lock();
        let flushed = *shared.flushed.borrow();
        let target = inner.log.write_offset();
        if target <= flushed {
            return Ok(());
        }
        (target, inner.log.files_since(flushed))
    };
    tokio::task::spawn_blocking(move || files.iter().try_for_each(|f| f.sync_data()))
        .await
        .map_err(io::Error::other)??;
    shared.flushed.send_if_modified(|f| {
        if target > *f {
            *f = target;
            true
        } else {
            false
        }
    });
    Ok(())
}

pub(crate) use mq_client_api::wire_time::now_millis as now_ms;
