//! The message store: commit log, consume queues, key index, checkpoint, and flushing (ASYNC
//! periodic or SYNC with group commit).
//!
//! Layout under the store directory: `commitlog/` segments; `consumequeue/{topic}/{queue}/`
//! and `index/` entry files (20-byte entries, Java's consume-queue layout); `checkpoint`, the
//! commit-log offset below which every record is in the consume queues and the key index on
//! disk. Memory holds only the index entries made since the last flush. A start verifies and
//! re-indexes only the records from the checkpoint on (none after a clean shutdown), cutting
//! off a torn tail of any file.

mod commitlog;
mod queue;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use mq_client_api::message::{
    MessageExt, PreparedRecord, decode_record, encode_offset_msg_id, property, push_offset_msg_id,
    sys_flag,
};
use mq_client_api::validate::java_hash;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, warn};

use commitlog::CommitLog;
use queue::{
    ConsumeQueue, CqEntry, EntryFiles, KEY_FILE_ENTRIES, KeyEntry, QUEUE_FILE_ENTRIES, TailWrite,
    key_hash,
};

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
    /// How long commit-log segments are kept after their last write. Default 72 h (Java
    /// `fileReservedTime`).
    pub file_reserved_time: Duration,
    /// Hours of the day (UTC) at which expired segments are deleted. Default 4 (Java
    /// `deleteWhen`, which uses local time).
    pub delete_hours: Vec<u32>,
    /// Use of the store's file system above which expired segments are deleted at once, and
    /// above which (plus 10 points) the oldest go whatever their age. Default 0.75 (Java
    /// `diskMaxUsedSpaceRatio`).
    pub disk_max_used_ratio: f64,
    /// How often retention is checked. Default 10 s (Java `cleanResourceInterval`).
    pub clean_interval: Duration,
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
            file_reserved_time: Duration::from_secs(72 * 3600),
            delete_hours: vec![4],
            disk_max_used_ratio: 0.75,
            clean_interval: Duration::from_secs(10),
        }
    }
}

/// Outcome of an append.
#[derive(Clone, Debug)]
pub struct PutResult {
    /// Commit-log offset.
    pub phys_offset: i64,
    /// Consume-queue offset.
    pub queue_offset: i64,
    /// The broker address the record was stored under (the host part of its offset id).
    pub store_host: SocketAddr,
    /// False when a SYNC flush missed its deadline (the message is stored all the same).
    pub flushed_in_time: bool,
}

impl PutResult {
    /// The offset message id.
    pub fn msg_id(&self) -> String {
        encode_offset_msg_id(self.store_host, self.phys_offset)
    }

    /// [`PutResult::msg_id`] appended to `out` (a batch's ids joined in one string).
    pub fn push_msg_id(&self, out: &mut String) {
        push_offset_msg_id(out, self.store_host, self.phys_offset);
    }
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

/// A map with a fast, per-process seeded hash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The consume queues and the key index.
#[derive(Debug)]
struct Indexes {
    /// `consumequeue/` under the store directory.
    queue_dir: PathBuf,
    /// Consume queues by topic, then queue id.
    queues: FastMap<String, FastMap<i32, ConsumeQueue>>,
    /// KEYS and UNIQ_KEY entries in append order; a lookup scans from the newest and confirms
    /// each hit against the record (lookups are admin queries).
    keys: EntryFiles<KeyEntry>,
    /// Entries added since the last tail writes were taken (all indexes together).
    unwritten: usize,
}

/// Index entries in memory that make the flusher write the tails before its interval is up:
/// memory stays bounded at any append rate (about 3 MB of entries).
const INDEX_TAIL_LIMIT: usize = 65_536;

/// Which index a tail write belongs to.
#[derive(Debug)]
enum IndexName {
    Queue(String, i32),
    Keys,
}

impl Indexes {
    /// Opens the index files of `store_dir`, cut back to the records before `from`.
    fn open(store_dir: &Path, from: i64) -> io::Result<Self> {
        let queue_dir = store_dir.join("consumequeue");
        let mut queues: FastMap<String, FastMap<i32, ConsumeQueue>> = FastMap::default();
        if queue_dir.exists() {
            for topic_dir in fs::read_dir(&queue_dir)? {
                let topic_dir = topic_dir?;
                let Some(topic) = topic_dir
                    .file_name()
                    .to_str()
                    .and_then(queue::topic_from_dir_name)
                else {
                    continue;
                };
                for queue in fs::read_dir(topic_dir.path())? {
                    let queue = queue?;
                    let Some(id) = queue.file_name().to_str().and_then(|n| n.parse().ok()) else {
                        continue;
                    };
                    let cq = ConsumeQueue::open(queue.path(), QUEUE_FILE_ENTRIES, from)?;
                    queues.entry(topic.clone()).or_default().insert(id, cq);
                }
            }
        }
        let keys = EntryFiles::open(store_dir.join("index"), KEY_FILE_ENTRIES, from)?;
        Ok(Self {
            queue_dir,
            queues,
            keys,
            unwritten: 0,
        })
    }

    fn queue(&self, topic: &str, queue_id: i32) -> Option<&ConsumeQueue> {
        self.queues.get(topic).and_then(|q| q.get(&queue_id))
    }

    fn max_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.queue(topic, queue_id)
            .map_or(0, ConsumeQueue::max_offset)
    }

    /// Indexes a stored record.
    fn add(&mut self, msg: &MessageExt, size: i32) {
        self.add_in(msg, size, queue::KeyHash::of_topic(&msg.message.topic));
    }

    /// [`Indexes::add`] with the key hash of the record's topic already made: a batch's
    /// messages share their topic, and the hash goes a byte at a time.
    fn add_in(&mut self, msg: &MessageExt, size: i32, topic: queue::KeyHash) {
        let m = &msg.message;
        // The three properties an index needs, found in one pass over them.
        let (mut tags, mut keys, mut uniq) = (None, None, None);
        for (name, value) in m.properties().iter() {
            match name {
                property::TAGS => tags = Some(value),
                property::KEYS => keys = Some(value),
                property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX => uniq = Some(value),
                _ => {}
            }
        }
        let entry = CqEntry {
            phys: msg.commit_log_offset,
            size,
            tag_hash: tags.map_or(0, |t| i64::from(java_hash(t))),
        };
        // The topic's name is copied only for its first message.
        let queue_dir = &self.queue_dir;
        let new_queue = || {
            ConsumeQueue::new(
                queue_dir
                    .join(queue::topic_dir_name(&m.topic))
                    .join(msg.queue_id.to_string()),
                QUEUE_FILE_ENTRIES,
            )
        };
        match self.queues.get_mut(m.topic.as_str()) {
            Some(queues) => queues
                .entry(msg.queue_id)
                .or_insert_with(new_queue)
                .push(entry),
            None => {
                let mut cq = new_queue();
                cq.push(entry);
                let mut queues = FastMap::default();
                queues.insert(msg.queue_id, cq);
                self.queues.insert(m.topic.clone(), queues);
            }
        }
        self.unwritten += 1;
        let keys = keys
            .into_iter()
            .flat_map(|k| k.split(' ').filter(|k| !k.is_empty()));
        for key in keys.chain(uniq) {
            self.unwritten += 1;
            self.keys.push(KeyEntry {
                hash: topic.key(key),
                phys: msg.commit_log_offset,
                size,
            });
        }
    }

    /// Indexes a record found again at start: skipped when its queue already has its offset
    /// (it cannot, the files being cut back to the replay point, unless the log holds
    /// duplicates).
    fn replay(&mut self, msg: &MessageExt, size: i32) {
        let max = self.max_offset(&msg.message.topic, msg.queue_id);
        if msg.queue_offset == max {
            self.add(msg, size);
        } else {
            warn!(topic = %msg.message.topic, queue = msg.queue_id, offset = msg.queue_offset, max, "record out of its queue's sequence; not indexed");
        }
    }

    /// Takes back [`Indexes::add`] for the last record added (its write failed).
    fn remove_last(&mut self, msg: &MessageExt) {
        if let Some(q) = self
            .queues
            .get_mut(msg.message.topic.as_str())
            .and_then(|q| q.get_mut(&msg.queue_id))
        {
            q.pop_if(msg.commit_log_offset);
        }
        // Its key entries are the last ones.
        while self.keys.pop_if(msg.commit_log_offset) {}
    }

    /// Moves every index's min past the records below `min_phys`.
    fn advance_min(&mut self, min_phys: i64) -> io::Result<()> {
        for cq in self.queues.values_mut().flat_map(|q| q.values_mut()) {
            cq.advance_min(min_phys)?;
        }
        self.keys.advance_min(min_phys)
    }

    /// The writes of every index's unwritten tail.
    fn tail_writes(&mut self) -> io::Result<Vec<(IndexName, TailWrite)>> {
        let mut out = Vec::new();
        for (topic, queues) in &mut self.queues {
            for (id, cq) in queues.iter_mut() {
                if let Some(w) = cq.tail_write()? {
                    out.push((IndexName::Queue(topic.clone(), *id), w));
                }
            }
        }
        if let Some(w) = self.keys.tail_write()? {
            out.push((IndexName::Keys, w));
        }
        self.unwritten = 0;
        Ok(out)
    }

    /// Marks the tails of `writes` as written.
    fn written_out(&mut self, writes: &[(IndexName, TailWrite)]) {
        for (name, w) in writes {
            match name {
                IndexName::Queue(topic, id) => {
                    if let Some(cq) = self.queues.get_mut(topic).and_then(|q| q.get_mut(id)) {
                        cq.written_out(w.count);
                    }
                }
                IndexName::Keys => self.keys.written_out(w.count),
            }
        }
    }
}

/// The store time of the record whose first bytes are `head` (§6.5 layout).
fn store_time(head: &[u8]) -> Option<i64> {
    let sys_flag = i32::from_be_bytes(head.get(36..40)?.try_into().ok()?);
    let born_host = if sys_flag & sys_flag::BORNHOST_V6 != 0 {
        20
    } else {
        8
    };
    let at = 48 + born_host;
    Some(i64::from_be_bytes(head.get(at..at + 8)?.try_into().ok()?))
}

#[derive(Debug)]
struct Inner {
    log: CommitLog,
    index: Indexes,
}

impl Inner {
    /// The store time of the record `e` points at.
    fn store_time(&self, e: CqEntry) -> io::Result<i64> {
        let head = self
            .log
            .read(e.phys, usize::try_from(e.size.min(96)).unwrap_or(0))?;
        store_time(&head).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "record too short for its store time",
            )
        })
    }
}

/// A reader's interest in one queue's appends; see [`MessageStore::watch_queue`].
#[derive(Debug)]
pub struct QueueWatch {
    shared: Arc<Shared>,
    topic: String,
    queue_id: i32,
    notify: Arc<Notify>,
}

impl QueueWatch {
    /// A future that completes at the next append to the queue once enabled (or polled).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for QueueWatch {
    fn drop(&mut self) {
        let mut readers = self.shared.readers.lock();
        // The map's reference and ours: nobody else watches the queue, so the entry goes.
        if Arc::strong_count(&self.notify) <= 2
            && let Some(queues) = readers.get_mut(&self.topic)
        {
            queues.remove(&self.queue_id);
            if queues.is_empty() {
                readers.remove(&self.topic);
            }
        }
        drop(readers);
        self.shared.watching.fetch_sub(1, Ordering::SeqCst);
    }
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
    /// Readers waiting for appends (long-polling pulls), by topic and queue: an append wakes
    /// the readers of its own queues only.
    readers: Mutex<FastMap<String, FastMap<i32, Arc<Notify>>>>,
    /// Live [`QueueWatch`]es; appends look up `readers` only when there are any.
    watching: AtomicUsize,
    flushed: watch::Sender<i64>,
    flush_request: Notify,
    /// One flush at a time: a flush writes the index tails it took, then drops them.
    flush_turn: tokio::sync::Mutex<()>,
    token: CancellationToken,
    tasks: TaskTracker,
}

impl MessageStore {
    /// Opens (recovering) the store and starts its flusher.
    ///
    /// # Errors
    /// I/O errors opening or repairing the commit log.
    pub fn open(config: StoreConfig) -> io::Result<Self> {
        let log_dir = config.dir.join("commitlog");
        let from = CommitLog::replay_start(&log_dir, read_checkpoint(&config.dir))?;
        let mut index = Indexes::open(&config.dir, from)?;
        let log = CommitLog::open(&log_dir, config.segment_size, from, |msg, size| {
            index.replay(msg, size);
        })?;
        index.advance_min(log.min_offset())?;
        let write_offset = log.write_offset();
        let (flushed, _) = watch::channel(write_offset);

        let shared = Arc::new(Shared {
            config,
            inner: Mutex::new(Inner { log, index }),
            readers: Mutex::new(FastMap::default()),
            watching: AtomicUsize::new(0),
            flushed,
            flush_request: Notify::new(),
            flush_turn: tokio::sync::Mutex::new(()),
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let s = Arc::clone(&shared);
        shared
            .tasks
            .spawn(flusher(s).instrument(tracing::debug_span!("store_flusher")));
        let s = Arc::clone(&shared);
        shared
            .tasks
            .spawn(cleaner(s).instrument(tracing::debug_span!("store_cleaner")));
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
        self.put_groups(vec![msgs], store_host)
            .await
            .pop()
            .unwrap_or_else(|| Err(io::Error::other("an append of one group stored none")))
    }

    /// Appends several units (see [`MessageStore::put_batch`]) in order, with one write to the
    /// commit log for all of them (more when a segment fills up) and, in SYNC mode, one wait
    /// for the fsync covering the last. Each unit has its own outcome: a unit that cannot be
    /// stored fails alone, and a failed write fails every unit it carried.
    pub async fn put_groups(
        &self,
        groups: Vec<Vec<MessageExt>>,
        store_host: SocketAddr,
    ) -> Vec<io::Result<Vec<PutResult>>> {
        self.put_groups_stamped(groups, store_host, "").await
    }

    /// [`MessageStore::put_groups`], each record's properties string ending with `stamp`, a
    /// properties string (`name\u{1}value\u{2}`…) of what the broker adds to every message it
    /// takes from a producer: read back, its values win over the message's own.
    pub async fn put_groups_stamped(
        &self,
        groups: Vec<Vec<MessageExt>>,
        store_host: SocketAddr,
        stamp: &str,
    ) -> Vec<io::Result<Vec<PutResult>>> {
        let (mut out, end, index_full, touched) = {
            let mut guard = self.shared.inner.lock();
            let inner = &mut *guard;
            // Checked under the store lock: a reader that registers later reads the queue
            // after this append. Without readers nothing is collected.
            let touched = if self.shared.watching.load(Ordering::SeqCst) > 0 {
                touched_queues(&groups)
            } else {
                Vec::new()
            };
            let (out, end) = append_groups(inner, groups, store_host, stamp);
            (out, end, inner.index.unwritten >= INDEX_TAIL_LIMIT, touched)
        };
        if index_full {
            self.shared.flush_request.notify_one();
        }
        if !touched.is_empty() {
            let readers = self.shared.readers.lock();
            for (topic, queue) in &touched {
                if let Some(n) = readers.get(topic).and_then(|q| q.get(queue)) {
                    n.notify_waiters();
                }
            }
        }
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
            for r in out.iter_mut().flatten().flatten() {
                r.flushed_in_time = flushed;
            }
        }
        out
    }

    /// Interest in appends to one queue, for a long-polling reader: enable a
    /// [`QueueWatch::notified`] future before reading the queue, then wait on it; an append to
    /// this queue (only) wakes it.
    pub fn watch_queue(&self, topic: &str, queue_id: i32) -> QueueWatch {
        self.shared.watching.fetch_add(1, Ordering::SeqCst);
        let notify = {
            let mut readers = self.shared.readers.lock();
            let queues = match readers.get_mut(topic) {
                Some(q) => q,
                None => readers.entry(topic.to_owned()).or_default(),
            };
            Arc::clone(queues.entry(queue_id).or_default())
        };
        QueueWatch {
            shared: Arc::clone(&self.shared),
            topic: topic.to_owned(),
            queue_id,
            notify,
        }
    }

    /// How many readers are watching queues (long-polling pulls).
    pub fn waiting_readers(&self) -> usize {
        self.shared.watching.load(Ordering::SeqCst)
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
        let queue = inner.index.queue(topic, queue_id);
        let max_offset = queue.map_or(0, ConsumeQueue::max_offset);
        let mut result = GetResult {
            status: GetStatus::NoMessageInQueue,
            body: Bytes::new(),
            count: 0,
            next_begin_offset: offset,
            min_offset: 0,
            max_offset,
        };
        let min_offset = queue.map_or(0, ConsumeQueue::min_offset);
        result.min_offset = min_offset;
        let Some(queue) = queue.filter(|_| max_offset > 0) else {
            result.next_begin_offset = 0;
            return Ok(result);
        };
        if offset < min_offset {
            // Below what retention kept (or negative): start again at the min.
            result.status = GetStatus::OffsetTooSmall;
            result.next_begin_offset = min_offset;
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
        for e in queue.read(offset, scan_limit)? {
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
        self.shared.inner.lock().index.max_offset(topic, queue_id)
    }

    /// A queue's min offset: its first message still in the commit log.
    pub fn min_offset(&self, topic: &str, queue_id: i32) -> i64 {
        let inner = self.shared.inner.lock();
        inner
            .index
            .queue(topic, queue_id)
            .map_or(0, ConsumeQueue::min_offset)
    }

    /// Deletes commit-log segments last written before `expired_before` (and the `forced`
    /// oldest on top), then moves the queues' min offsets past what went. Returns how many
    /// segments were deleted. Run by the store's cleaner (see [`StoreConfig`]); callable
    /// directly.
    ///
    /// # Errors
    /// I/O errors deleting files.
    pub fn delete_expired(&self, expired_before: SystemTime, forced: usize) -> io::Result<usize> {
        let mut guard = self.shared.inner.lock();
        let inner = &mut *guard;
        let deleted = inner.log.delete_oldest(expired_before, forced)?;
        if deleted > 0 {
            inner.index.advance_min(inner.log.min_offset())?;
        }
        Ok(deleted)
    }

    /// The first queue offset whose store time is at or after `timestamp_ms` (the max offset
    /// when none is, the min when all are): a bisection over the queue, reading each probed
    /// record's store time.
    ///
    /// # Errors
    /// I/O errors reading the queue or the log.
    pub fn search_offset(&self, topic: &str, queue_id: i32, timestamp_ms: i64) -> io::Result<i64> {
        let inner = self.shared.inner.lock();
        let Some(queue) = inner.index.queue(topic, queue_id) else {
            return Ok(0);
        };
        let (mut lo, mut hi) = (queue.min_offset(), queue.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let before = match queue.entry(mid)? {
                Some(e) => inner.store_time(e)? < timestamp_ms,
                None => false,
            };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Store time of a queue's earliest message.
    ///
    /// # Errors
    /// I/O errors reading the queue or the log.
    pub fn earliest_store_time(&self, topic: &str, queue_id: i32) -> io::Result<Option<i64>> {
        let inner = self.shared.inner.lock();
        match inner
            .index
            .queue(topic, queue_id)
            .map(|q| q.entry(q.min_offset()))
        {
            Some(Ok(Some(e))) => inner.store_time(e).map(Some),
            Some(Err(e)) => Err(e),
            _ => Ok(None),
        }
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
        let hash = key_hash(topic, key);
        // Entries with the hash, newest first; keep the records that really carry the key.
        let mut found = Vec::new();
        if max == 0 {
            return Ok(found);
        }
        inner.index.keys.scan_back(|e| {
            if e.hash != hash {
                return Ok(true);
            }
            let record = inner.log.read(e.phys, e.size as usize)?;
            let matches = decode_record(&mut record.clone(), false, false).is_ok_and(|m| {
                let m = &m.message;
                m.topic == topic
                    && (m.keys().contains(&key)
                        || m.property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX) == Some(key))
            });
            if matches {
                found.push(record);
            }
            Ok(found.len() < max)
        })?;
        found.reverse();
        Ok(found)
    }

    /// Flushes everything written so far (used at shutdown).
    pub async fn flush(&self) -> io::Result<()> {
        flush_once(&self.shared, true).await
    }

    /// Stops the flusher after a final flush.
    pub async fn shutdown(&self) {
        self.shared.token.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        if let Err(e) = flush_once(&self.shared, true).await {
            warn!(cause = %e, "final flush failed");
        }
    }
}

/// The queues `groups` append to (a topic name copied once per run of one queue).
fn touched_queues(groups: &[Vec<MessageExt>]) -> Vec<(String, i32)> {
    let mut touched: Vec<(String, i32)> = Vec::new();
    for m in groups.iter().flatten() {
        if touched
            .last()
            .is_none_or(|(t, q)| *q != m.queue_id || *t != m.message.topic)
        {
            touched.push((m.message.topic.clone(), m.queue_id));
        }
    }
    touched
}

/// Appends `groups` under the store lock: records go to the log's pending buffer and out with
/// one write at the end (or when a segment fills up). Returns each group's outcome and the
/// log's end.
fn append_groups(
    inner: &mut Inner,
    mut groups: Vec<Vec<MessageExt>>,
    store_host: SocketAddr,
    stamp: &str,
) -> (Vec<io::Result<Vec<PutResult>>>, i64) {
    let mut out: Vec<io::Result<Vec<PutResult>>> = Vec::with_capacity(groups.len());
    // Records still in the pending buffer, as (group, place in the group): the messages stay
    // where they are, since a message is large and moving it is a copy.
    let mut unwritten: Vec<(usize, usize)> = Vec::with_capacity(groups.iter().map(Vec::len).sum());
    // A failed write loses what was pending: those records leave the index and their groups
    // fail; later groups are not tried.
    let lost = |inner: &mut Inner,
                groups: &[Vec<MessageExt>],
                unwritten: &mut Vec<(usize, usize)>,
                out: &mut Vec<io::Result<Vec<PutResult>>>,
                e: &io::Error| {
        inner.log.discard_pending();
        for (g, i) in unwritten.drain(..).rev() {
            if let Some(msg) = groups.get(g).and_then(|msgs| msgs.get(i)) {
                inner.index.remove_last(msg);
            }
            if let Some(slot) = out.get_mut(g) {
                *slot = Err(io::Error::new(e.kind(), e.to_string()));
            }
        }
    };
    let mut broken: Option<io::Error> = None;
    // One store time for everything appended under this lock hold (microseconds apart).
    let stored_at = now_ms();
    for g in 0..groups.len() {
        if let Some(e) = &broken {
            out.push(Err(io::Error::new(e.kind(), e.to_string())));
            continue;
        }
        let count = groups[g].len();
        let mut results = Vec::with_capacity(count);
        let mut failed = None;
        // A batch's messages share one queue: its offsets are counted on from the first,
        // without a lookup for each message.
        let one_queue = groups[g]
            .windows(2)
            .all(|w| w[0].queue_id == w[1].queue_id && w[0].message.topic == w[1].message.topic);
        let mut next_offset = None;
        let group_topic = groups[g]
            .first()
            .filter(|_| one_queue)
            .map(|m| queue::KeyHash::of_topic(&m.message.topic));
        for i in 0..count {
            let msg = &mut groups[g][i];
            msg.queue_offset = match next_offset {
                Some(offset) => offset,
                None => inner.index.max_offset(&msg.message.topic, msg.queue_id),
            };
            if one_queue {
                next_offset = Some(msg.queue_offset + 1);
            }
            msg.store_host = store_host;
            msg.store_timestamp = stored_at;
            let record = match PreparedRecord::with_extra_properties(msg, stamp) {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(io::Error::new(io::ErrorKind::InvalidInput, e));
                    break;
                }
            };
            let phys = match inner.log.reserve(record.len()) {
                Ok(p) => p,
                // A record larger than a segment: this group fails, nothing else.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    failed = Some(e);
                    break;
                }
                Err(e) => {
                    out.push(Err(io::Error::new(e.kind(), e.to_string())));
                    if inner.log.pending_len() == 0 {
                        // The pending records were written before the segment roll failed:
                        // they are stored and stay indexed.
                        unwritten.clear();
                    } else {
                        lost(inner, &groups, &mut unwritten, &mut out, &e);
                    }
                    broken = Some(e);
                    break;
                }
            };
            if inner.log.pending_len() == 0 {
                // A new segment began: what came before is written.
                unwritten.clear();
            }
            msg.commit_log_offset = phys;
            inner
                .log
                .append_with(|buf| record.write_with_extra(msg, stamp, buf));
            let topic = group_topic.unwrap_or_else(|| queue::KeyHash::of_topic(&msg.message.topic));
            inner.index.add_in(msg, record.len() as i32, topic);
            results.push(PutResult {
                phys_offset: phys,
                queue_offset: msg.queue_offset,
                store_host,
                flushed_in_time: true,
            });
            unwritten.push((g, i));
        }
        if broken.is_none() {
            out.push(match failed {
                Some(e) => Err(e),
                None => Ok(results),
            });
        }
    }
    if broken.is_none()
        && let Err(e) = inner.log.write_pending()
    {
        lost(inner, &groups, &mut unwritten, &mut out, &e);
    }
    (out, inner.log.write_offset())
}

async fn flusher(shared: Arc<Shared>) {
    let interval = shared.config.flush_interval;
    // SYNC mode flushes the log per request; the index files and the checkpoint follow at the
    // flush interval, as in ASYNC mode, not on every request.
    let mut index_due = tokio::time::Instant::now() + interval;
    loop {
        let wait = async {
            match shared.config.flush_mode {
                FlushMode::Sync => {
                    tokio::select! {
                        () = shared.flush_request.notified() => {}
                        () = tokio::time::sleep_until(index_due) => {}
                    }
                }
                FlushMode::Async => {
                    tokio::select! {
                        () = shared.flush_request.notified() => {}
                        () = tokio::time::sleep(interval) => {}
                    }
                }
            }
        };
        tokio::select! {
            () = shared.token.cancelled() => break,
            () = wait => {}
        }
        let now = tokio::time::Instant::now();
        let index_full = shared.inner.lock().index.unwritten >= INDEX_TAIL_LIMIT;
        let index_too =
            shared.config.flush_mode == FlushMode::Async || now >= index_due || index_full;
        if index_too {
            index_due = now + interval;
        }
        if let Err(e) = flush_once(&shared, index_too).await {
            warn!(cause = %e, "store flush failed");
        }
    }
}

/// Deletes expired segments at the configured hours, or at once when the disk is fuller than
/// the configured ratio (the oldest whatever their age, one per round, 10 points above it).
async fn cleaner(shared: Arc<Shared>) {
    let config = &shared.config;
    loop {
        tokio::select! {
            () = shared.token.cancelled() => break,
            () = tokio::time::sleep(config.clean_interval) => {}
        }
        let now = SystemTime::now();
        let used = disk_used_ratio(&config.dir).unwrap_or(0.0);
        let hour = (now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / 3600
            % 24) as u32;
        let pressed = used > config.disk_max_used_ratio;
        if !pressed && !config.delete_hours.contains(&hour) {
            continue;
        }
        let forced = usize::from(used > config.disk_max_used_ratio + 0.10);
        let expired_before = now
            .checked_sub(config.file_reserved_time)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let store = MessageStore {
            shared: Arc::clone(&shared),
        };
        match store.delete_expired(expired_before, forced) {
            Ok(0) => {}
            Ok(n) => tracing::info!(segments = n, disk_used = used, "retention deleted segments"),
            Err(e) => warn!(cause = %e, "retention failed"),
        }
    }
}

/// The used fraction of the file system holding `dir`.
fn disk_used_ratio(dir: &Path) -> io::Result<f64> {
    let st = rustix::fs::statvfs(dir)?;
    if st.f_blocks == 0 {
        return Ok(0.0);
    }
    let free = st.f_bavail as f64;
    Ok(1.0 - free / st.f_blocks as f64)
}

/// fsyncs the segments written since the last flush and publishes the new flushed offset
/// (every send waiting for an offset up to it is released by the same fsync); then, with
/// `index_too`, writes the index entries made meanwhile, syncs them, and moves the checkpoint
/// to the flushed offset.
async fn flush_once(shared: &Arc<Shared>, index_too: bool) -> io::Result<()> {
    let _turn = shared.flush_turn.lock().await;
    let (target, files, writes) = {
        let mut inner = shared.inner.lock();
        let flushed = *shared.flushed.borrow();
        let target = inner.log.write_offset();
        let writes = if index_too {
            inner.index.tail_writes()?
        } else {
            Vec::new()
        };
        if target <= flushed && writes.is_empty() {
            return Ok(());
        }
        (target, inner.log.files_since(flushed), writes)
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
    if !index_too {
        return Ok(());
    }
    let dir = shared.config.dir.clone();
    let writes = tokio::task::spawn_blocking(move || {
        for (_, w) in &writes {
            w.write()?;
        }
        for (_, w) in &writes {
            for (file, _, _) in &w.parts {
                file.sync_data()?;
            }
        }
        Ok::<_, io::Error>(writes)
    })
    .await
    .map_err(io::Error::other)??;
    shared.inner.lock().index.written_out(&writes);
    tokio::task::spawn_blocking(move || write_checkpoint(&dir, target))
        .await
        .map_err(io::Error::other)?
}

/// The checkpoint: the commit-log offset below which every record is indexed on disk. 0 when
/// there is none (or it does not read back whole).
fn read_checkpoint(dir: &Path) -> i64 {
    let Ok(b) = fs::read(dir.join("checkpoint")) else {
        return 0;
    };
    let Ok(b) = <[u8; 16]>::try_from(b.as_slice()) else {
        return 0;
    };
    let (offset, check) = b.split_at(8);
    let offset: [u8; 8] = offset.try_into().unwrap_or_default();
    if check == checkpoint_check(offset) {
        i64::from_be_bytes(offset)
    } else {
        0
    }
}

/// Writes the checkpoint beside the store (a new file renamed over the old one, then synced).
fn write_checkpoint(dir: &Path, offset: i64) -> io::Result<()> {
    let bytes = offset.to_be_bytes();
    let mut content = bytes.to_vec();
    content.extend_from_slice(&checkpoint_check(bytes));
    let tmp = dir.join("checkpoint.new");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&content)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join("checkpoint"))?;
    File::open(dir)?.sync_all()
}

/// What tells a whole checkpoint from a torn one: the offset's bytes inverted.
fn checkpoint_check(offset: [u8; 8]) -> [u8; 8] {
    offset.map(|b| !b)
}

pub(crate) use mq_client_api::wire_time::now_millis as now_ms;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mq_client_api::Message;

    use super::*;

    fn ext(topic: &str, key: &str, body: &str) -> MessageExt {
        MessageExt {
            message: Message::new(topic, body.to_owned()).with_keys([key]),
            queue_id: 0,
            ..MessageExt::default()
        }
    }

    fn host() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10911))
    }

    fn bodies(records: &[Bytes]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                let m = decode_record(&mut r.clone(), true, false).unwrap();
                String::from_utf8(m.message.body.to_vec()).unwrap()
            })
            .collect()
    }

    /// Queue offsets go on from what a queue holds, a batch's one after another and a group
    /// of several queues' messages each by its own queue; every result's offset id names
    /// the record's place in the commit log.
    #[tokio::test]
    async fn groups_take_the_next_offsets_of_their_queues() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
        let on = |queue_id, body: &str| MessageExt {
            queue_id,
            ..ext("T", "k", body)
        };
        store
            .put_batch(vec![on(0, "a"), on(0, "b")], host())
            .await
            .unwrap();
        let groups = vec![
            vec![on(0, "c"), on(0, "d"), on(0, "e")],
            vec![on(1, "f"), on(0, "g"), on(1, "h")],
            vec![on(0, "i")],
        ];
        let offsets: Vec<Vec<i64>> = store
            .put_groups(groups, host())
            .await
            .into_iter()
            .map(|g| g.unwrap().iter().map(|r| r.queue_offset).collect())
            .collect();
        assert_eq!(offsets, [vec![2, 3, 4], vec![0, 5, 1], vec![6]]);
        assert_eq!(store.max_offset("T", 0), 7);
        assert_eq!(store.max_offset("T", 1), 2);
        let got = store.get("T", 0, 0, 32, None).unwrap();
        let read = decode_records(&got.body);
        let bodies: Vec<&[u8]> = read.iter().map(|m| &m.message.body[..]).collect();
        assert_eq!(bodies, [&b"a"[..], b"b", b"c", b"d", b"e", b"g", b"i"]);
        let stored = store.put(on(1, "j"), host()).await.unwrap();
        assert_eq!(stored.queue_offset, 2);
        assert_eq!(
            mq_client_api::message::decode_offset_msg_id(&stored.msg_id()).unwrap(),
            (host(), stored.phys_offset)
        );
    }

    /// A batch that does not fit the current segment is written in two parts (one write
    /// before the roll, one after); offsets, reads and key lookups hold across the roll and a
    /// reopen, and a key is only found in its own topic.
    #[tokio::test]
    async fn batches_span_segments_and_keys_are_exact_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(dir.path());
        let store = MessageStore::open(config.clone()).unwrap();
        let batch: Vec<MessageExt> = (0..12)
            .map(|i| ext("T", &format!("k{}", i % 3), &format!("body-{i}")))
            .collect();
        let stored = store.put_batch(batch, host()).await.unwrap();
        assert_eq!(
            stored.iter().map(|r| r.queue_offset).collect::<Vec<_>>(),
            (0..12).collect::<Vec<_>>()
        );
        store
            .put(ext("Other", "k1", "elsewhere"), host())
            .await
            .unwrap();
        let check = |store: &MessageStore| {
            let got = store.get("T", 0, 0, 32, None).unwrap();
            assert_eq!(got.count, 12);
            let all = decode_records(&got.body);
            assert_eq!(all.len(), 12);
            let found = store.query_by_key("T", "k1", 32).unwrap();
            assert_eq!(bodies(&found), ["body-1", "body-4", "body-7", "body-10"]);
            let newest = store.query_by_key("T", "k1", 2).unwrap();
            assert_eq!(bodies(&newest), ["body-7", "body-10"]);
            let other = store.query_by_key("Other", "k1", 32).unwrap();
            assert_eq!(bodies(&other), ["elsewhere"]);
            assert!(store.query_by_key("T", "k", 32).unwrap().is_empty());
        };
        check(&store);
        assert!(
            fs_segments(dir.path()) > 1,
            "the batch should have rolled the 1 KiB segment"
        );
        store.shutdown().await;
        let reopened = MessageStore::open(config).unwrap();
        check(&reopened);
        reopened.shutdown().await;
    }

    /// A record too large for a segment fails its own send only: the sends around it in the
    /// same group are stored and readable.
    #[tokio::test]
    async fn an_oversized_record_fails_only_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(dir.path());
        let store = MessageStore::open(config).unwrap();
        let huge = "x".repeat(2048);
        let groups = vec![
            vec![ext("T", "a", "first")],
            vec![ext("T", "b", &huge)],
            vec![ext("T", "c", "last")],
        ];
        let out = store.put_groups(groups, host()).await;
        assert!(out[0].is_ok(), "{:?}", out[0]);
        assert_eq!(
            out[1].as_ref().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(out[2].as_ref().unwrap()[0].queue_offset, 1);
        let got = store.get("T", 0, 0, 32, None).unwrap();
        let bodies: Vec<_> = decode_records(&got.body)
            .iter()
            .map(|m| String::from_utf8(m.message.body.to_vec()).unwrap())
            .collect();
        assert_eq!(bodies, ["first", "last"]);
        store.shutdown().await;
    }

    /// A write that fails (the disk is full) fails the groups whose records it held and takes
    /// them out of the indexes: the queue and the key index show only what is stored, and
    /// what was written before the failure stays readable.
    #[tokio::test]
    async fn a_failed_write_fails_its_groups_and_leaves_them_out_of_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(dir.path());
        let store = MessageStore::open(config).unwrap();
        store.put(ext("T", "a", "first"), host()).await.unwrap();
        // The second segment is a device that refuses every write (ENOSPC).
        let second = dir.path().join("commitlog").join(format!("{:020}", 1024));
        std::os::unix::fs::symlink("/dev/full", second).unwrap();
        let body = "x".repeat(400);
        let groups = vec![
            // Fits the first segment: written before the log rolls over.
            vec![ext("T", "b", &body)],
            // Does not fit: goes to the second segment, with what follows it.
            vec![ext("T", "c", &body), ext("T", "d", "after")],
            vec![ext("T", "e", "last")],
        ];
        let out = store.put_groups(groups, host()).await;
        assert_eq!(out[0].as_ref().unwrap()[0].queue_offset, 1);
        for failed in &out[1..] {
            let kind = failed.as_ref().unwrap_err().kind();
            assert_eq!(kind, io::ErrorKind::StorageFull, "{failed:?}");
        }
        assert_eq!(store.max_offset("T", 0), 2);
        assert_eq!(read_all(&store, "T"), ["first".to_owned(), body]);
        for (key, stored) in [("a", 1), ("b", 1), ("c", 0), ("d", 0), ("e", 0)] {
            let found = store.query_by_key("T", key, 32).unwrap();
            assert_eq!(found.len(), stored, "records found by key {key}");
        }
        store.shutdown().await;
    }

    /// A store of 1 KiB segments: a few records roll the log over.
    fn small_segments(dir: &Path) -> StoreConfig {
        let mut config = StoreConfig::new(dir);
        config.segment_size = 1024;
        config
    }

    /// A store whose flusher never runs by itself: what reaches the files is what the test
    /// flushes, and dropping it is a crash.
    fn no_background_flush(dir: &Path) -> StoreConfig {
        let mut config = StoreConfig::new(dir);
        config.flush_interval = Duration::from_secs(3600);
        config
    }

    fn read_all(store: &MessageStore, topic: &str) -> Vec<String> {
        let got = store.get(topic, 0, 0, 1000, None).unwrap();
        decode_records(&got.body)
            .iter()
            .map(|m| String::from_utf8(m.message.body.to_vec()).unwrap())
            .collect()
    }

    async fn put_range(store: &MessageStore, range: std::ops::Range<usize>) {
        for i in range {
            store
                .put(ext("T", &format!("k{i}"), &format!("m{i}")), host())
                .await
                .unwrap();
        }
    }

    /// After a crash the records written since the checkpoint are indexed again from the
    /// log; those before it come from the index files.
    #[tokio::test]
    async fn a_crash_replays_the_log_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(no_background_flush(dir.path())).unwrap();
        put_range(&store, 0..10).await;
        store.flush().await.unwrap();
        assert!(dir.path().join("consumequeue/T/0").exists());
        put_range(&store, 10..15).await;
        drop(store);

        let store = MessageStore::open(no_background_flush(dir.path())).unwrap();
        let want: Vec<String> = (0..15).map(|i| format!("m{i}")).collect();
        assert_eq!(read_all(&store, "T"), want);
        for i in [3, 12] {
            let found = store.query_by_key("T", &format!("k{i}"), 8).unwrap();
            assert_eq!(bodies(&found), [format!("m{i}")]);
        }
        let next = store.put(ext("T", "k15", "m15"), host()).await.unwrap();
        assert_eq!(next.queue_offset, 15);
        store.shutdown().await;
    }

    /// A torn entry at the end of a consume-queue file or of the key index (a partial write,
    /// or zeros where a write extended the file) is cut off; the rest reads as before.
    #[tokio::test]
    async fn torn_index_tails_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
        put_range(&store, 0..10).await;
        store.shutdown().await;
        let append = |path: PathBuf, bytes: &[u8]| {
            let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(bytes).unwrap();
        };
        append(
            dir.path()
                .join("consumequeue/T/0")
                .join(format!("{:020}", 0)),
            &[7; 7],
        );
        append(
            dir.path().join("index").join(format!("{:020}", 0)),
            &[0; 40],
        );

        let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
        let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        assert_eq!(read_all(&store, "T"), want);
        assert_eq!(bodies(&store.query_by_key("T", "k9", 8).unwrap()), ["m9"]);
        let next = store.put(ext("T", "k10", "m10"), host()).await.unwrap();
        assert_eq!(next.queue_offset, 10);
        store.shutdown().await;
        let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(bodies(&store.query_by_key("T", "k10", 8).unwrap()), ["m10"]);
        store.shutdown().await;
    }

    /// After a clean shutdown the checkpoint is the log's end, so a restart reads none of
    /// the log: a record damaged on disk before the checkpoint is not even looked at (a full
    /// verification would have cut the log there).
    #[tokio::test]
    async fn a_clean_restart_reads_nothing_before_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
        put_range(&store, 0..3).await;
        store.shutdown().await;
        let segment = dir.path().join("commitlog").join(format!("{:020}", 0));
        let mut log = fs::read(&segment).unwrap();
        // The last byte of the first record's body.
        let first_len = i32::from_be_bytes(log[0..4].try_into().unwrap()) as usize;
        let body_end = log[..first_len]
            .windows(2)
            .rposition(|w| w == b"m0")
            .unwrap()
            + 1;
        log[body_end] ^= 0xff;
        fs::write(&segment, &log).unwrap();

        let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(store.max_offset("T", 0), 3);
        let got = store.get("T", 0, 0, 10, None).unwrap();
        assert_eq!(got.count, 3);
        store.shutdown().await;
    }

    /// Retention deletes the oldest segments (never the one being written); queues then start
    /// at their first message still stored, a read below it gets the corrected offset, keys
    /// of deleted messages are no longer found, and all of it holds after a restart.
    #[tokio::test]
    async fn retention_moves_min_offsets_past_deleted_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(dir.path());
        let store = MessageStore::open(config.clone()).unwrap();
        put_range(&store, 0..40).await;
        store.flush().await.unwrap();
        let segments = fs_segments(dir.path());
        assert!(segments > 3, "{segments} segments");
        // Nothing is older than an hour ago.
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(store.delete_expired(hour_ago, 0).unwrap(), 0);
        assert_eq!(store.min_offset("T", 0), 0);
        // Everything is older than an hour from now: all but the segment being written go.
        let later = SystemTime::now() + Duration::from_secs(3600);
        let deleted = store.delete_expired(later, 0).unwrap();
        assert_eq!(deleted, segments - 1);
        assert_eq!(fs_segments(dir.path()), 1);
        let check = |store: &MessageStore| {
            let min = store.min_offset("T", 0);
            assert!(min > 0 && min < 40, "min {min}");
            let below = store.get("T", 0, 0, 10, None).unwrap();
            assert_eq!(below.status, GetStatus::OffsetTooSmall);
            assert_eq!(below.next_begin_offset, min);
            assert_eq!(below.min_offset, min);
            let want: Vec<String> = (min..40).map(|i| format!("m{i}")).collect();
            let got = store.get("T", 0, min, 100, None).unwrap();
            let read: Vec<String> = decode_records(&got.body)
                .iter()
                .map(|m| String::from_utf8(m.message.body.to_vec()).unwrap())
                .collect();
            assert_eq!(read, want);
            assert!(store.query_by_key("T", "k0", 8).unwrap().is_empty());
            assert_eq!(bodies(&store.query_by_key("T", "k39", 8).unwrap()), ["m39"]);
            // Search by time starts at the min; the earliest store time is the min's.
            assert_eq!(store.search_offset("T", 0, 0).unwrap(), min);
            assert_eq!(store.search_offset("T", 0, i64::MAX).unwrap(), 40);
            assert!(store.earliest_store_time("T", 0).unwrap().is_some());
            min
        };
        let min = check(&store);
        store.shutdown().await;
        let store = MessageStore::open(config).unwrap();
        assert_eq!(check(&store), min);
        store.shutdown().await;
    }

    /// An append wakes the readers of its own queue, not those of other queues.
    #[tokio::test]
    async fn appends_wake_only_their_queue_readers() {
        use futures_util::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let store = MessageStore::open(StoreConfig::new(dir.path())).unwrap();
        let watch = store.watch_queue("T", 0);
        assert_eq!(store.waiting_readers(), 1);
        let mut woken = Box::pin(watch.notified());
        woken.as_mut().enable();
        let mut other = ext("T", "k", "elsewhere");
        other.queue_id = 1;
        store.put(other, host()).await.unwrap();
        store
            .put(ext("U", "k", "other topic"), host())
            .await
            .unwrap();
        assert!(
            woken.as_mut().now_or_never().is_none(),
            "woken by another queue"
        );
        store.put(ext("T", "k", "mine"), host()).await.unwrap();
        assert!(woken.now_or_never().is_some(), "not woken by its own queue");
        drop(watch);
        assert_eq!(store.waiting_readers(), 0);
        assert!(store.shared.readers.lock().is_empty());
        store.shutdown().await;
    }

    fn decode_records(body: &Bytes) -> Vec<MessageExt> {
        mq_client_api::message::decode_records(body, true, false)
    }

    fn fs_segments(dir: &Path) -> usize {
        fs::read_dir(dir.join("commitlog")).unwrap().count()
    }
}
