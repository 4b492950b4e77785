//! Indexes on disk as files of fixed-size entries ([`EntryFiles`]): the consume queues (per
//! topic and queue id, 20-byte [`CqEntry`]s as Java's ConsumeQueue, entry `n` being queue
//! offset `n`) and the key index ([`KeyEntry`]s of KEYS and UNIQ_KEY).
//!
//! A file holds a fixed number of entries and is named by the index of its first one. Appends
//! go to an in-memory tail; the flusher writes the tail out (see [`TailWrite`]), so memory
//! holds only what arrived since the last flush and reads of older entries come from the files
//! (the page cache, in practice).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

/// Consume-queue entries per file: 300 000 × 20 B = 6 MB, Java's default.
pub(crate) const QUEUE_FILE_ENTRIES: i64 = 300_000;
/// Key-index entries per file: 1 M × 20 B = 20 MB.
pub(crate) const KEY_FILE_ENTRIES: i64 = 1_000_000;

/// An entry of fixed size, big-endian on disk, that points at a commit-log record.
pub(crate) trait FixedEntry: Copy {
    /// Bytes per entry.
    const LEN: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Self;
    /// The commit-log offset of the record it points at (entries of one file set only grow).
    fn phys(&self) -> i64;
    /// The size of that record: never 0 in a written entry (zeros are a torn write).
    fn size(&self) -> i32;
}

/// One consume-queue entry.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct CqEntry {
    pub(crate) phys: i64,
    pub(crate) size: i32,
    pub(crate) tag_hash: i64,
}

impl FixedEntry for CqEntry {
    const LEN: usize = 20;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.phys.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.tag_hash.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        Self {
            phys: i64::from_be_bytes(bytes_at(b, 0)),
            size: i32::from_be_bytes(bytes_at(b, 8)),
            tag_hash: i64::from_be_bytes(bytes_at(b, 12)),
        }
    }

    fn phys(&self) -> i64 {
        self.phys
    }

    fn size(&self) -> i32 {
        self.size
    }
}

/// One key-index entry: a stable hash of (topic, key) and where its record is.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct KeyEntry {
    pub(crate) hash: u64,
    pub(crate) phys: i64,
    pub(crate) size: i32,
}

impl FixedEntry for KeyEntry {
    const LEN: usize = 20;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash.to_be_bytes());
        out.extend_from_slice(&self.phys.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        Self {
            hash: u64::from_be_bytes(bytes_at(b, 0)),
            phys: i64::from_be_bytes(bytes_at(b, 8)),
            size: i32::from_be_bytes(bytes_at(b, 16)),
        }
    }

    fn phys(&self) -> i64 {
        self.phys
    }

    fn size(&self) -> i32 {
        self.size
    }
}

/// `N` bytes of `b` from `at`. Entries are decoded from slices of exactly their length
/// (`chunks_exact` or a buffer of one entry), so the range is always inside `b`.
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// The hash a key is indexed by: FNV-1a (64 bits) of the topic, a 0x01 byte and the key.
/// Stable across processes and versions, since it is stored.
pub(crate) fn key_hash(topic: &str, key: &str) -> u64 {
    KeyHash::of_topic(topic).key(key)
}

/// [`key_hash`] for several keys of one topic: the topic is hashed once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHash(u64);

impl KeyHash {
    /// FNV-1a's state after the topic and the 0x01 byte.
    pub(crate) fn of_topic(topic: &str) -> Self {
        Self(fnv1a(fnv1a(0xcbf2_9ce4_8422_2325, topic.as_bytes()), &[1]))
    }

    /// The hash of `key` in this topic.
    pub(crate) fn key(self, key: &str) -> u64 {
        fnv1a(self.0, key.as_bytes())
    }
}

/// FNV-1a (64 bits) from state `h` over `bytes`.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug)]
struct EntryFile {
    /// Index of the file's first entry.
    first: i64,
    file: Arc<File>,
}

/// Entries in files (see the module docs) and the tail not written yet.
#[derive(Debug)]
pub(crate) struct EntryFiles<E> {
    dir: PathBuf,
    per_file: i64,
    files: Vec<EntryFile>,
    /// Entries `[min, written)` are in the files; those before `min` point at deleted records.
    written: i64,
    /// Entries `[written, written + tail.len())`.
    tail: Vec<E>,
    /// The first entry whose record is still in the commit log.
    min: i64,
}

/// A consume queue.
pub(crate) type ConsumeQueue = EntryFiles<CqEntry>;

/// A write of a queue's tail, prepared under the store lock and done outside it: the bytes of
/// `count` entries to put at `pos` of each file (one or two files when the tail crosses a file
/// boundary). [`ConsumeQueue::written_out`] then drops those entries from the tail.
#[derive(Debug)]
pub(crate) struct TailWrite {
    pub(crate) parts: Vec<(Arc<File>, u64, Vec<u8>)>,
    pub(crate) count: usize,
}

impl TailWrite {
    /// Writes every part; the files are synced by the caller.
    pub(crate) fn write(&self) -> io::Result<()> {
        self.parts
            .iter()
            .try_for_each(|(file, pos, bytes)| file.write_all_at(bytes, *pos))
    }
}

impl<E: FixedEntry> EntryFiles<E> {
    /// An empty set kept in `dir` (created on the first write), `per_file` entries a file.
    pub(crate) fn new(dir: PathBuf, per_file: i64) -> Self {
        Self {
            dir,
            per_file,
            files: Vec::new(),
            written: 0,
            tail: Vec::new(),
            min: 0,
        }
    }

    /// Opens the files of `dir`. A torn last entry is cut off, and so are entries for records
    /// at or past `from` (the commit log is replayed from there and adds them again).
    pub(crate) fn open(dir: PathBuf, per_file: i64, from: i64) -> io::Result<Self> {
        if !dir.exists() {
            return Ok(Self::new(dir, per_file));
        }
        let mut firsts: Vec<i64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        firsts.sort_unstable();
        let mut q = Self::new(dir, per_file);
        // Retention may have deleted the first files.
        q.written = firsts.first().copied().unwrap_or(0);
        q.min = q.written;
        for first in firsts {
            let path = file_path(&q.dir, first);
            if first != q.written {
                // A gap (or a file after a short one): nothing from here on is reachable.
                warn!(file = %path.display(), "consume-queue file out of sequence; removing");
                fs::remove_file(&path)?;
                continue;
            }
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = file.metadata()?.len();
            let len_of = |n: i64| n as u64 * E::LEN as u64;
            let whole = (len / E::LEN as u64) as i64;
            // Entries point at ever larger offsets: keep those before `from` (found by
            // bisection, a read per step).
            let mut b = vec![0u8; E::LEN];
            let (mut keep, mut over) = (0, whole);
            while keep < over {
                let mid = keep + (over - keep) / 2;
                file.read_exact_at(&mut b, len_of(mid))?;
                if E::decode(&b).phys() < from {
                    keep = mid + 1;
                } else {
                    over = mid;
                }
            }
            // Zeros where entries should be (a torn write extended the file) are not entries.
            let mut entries = keep;
            while entries > 0 {
                file.read_exact_at(&mut b, len_of(entries - 1))?;
                if E::decode(&b).size() > 0 {
                    break;
                }
                entries -= 1;
            }
            if len_of(entries) != len {
                if len % E::LEN as u64 != 0 {
                    warn!(file = %path.display(), entries, "torn entry cut off");
                }
                file.set_len(len_of(entries))?;
                file.sync_all()?;
            }
            // A file that is not full ends the queue: a later one fails the sequence check.
            q.written = first + entries;
            q.files.push(EntryFile {
                first,
                file: Arc::new(file),
            });
        }
        Ok(q)
    }

    /// The first entry whose record is still in the log (the min offset).
    pub(crate) fn min_offset(&self) -> i64 {
        self.min
    }

    /// Forgets the entries that point below `min_phys` (records retention deleted): their
    /// files are removed, and the min offset moves to the first entry at or after it.
    pub(crate) fn advance_min(&mut self, min_phys: i64) -> io::Result<()> {
        let mut b = vec![0u8; E::LEN];
        // Whole files before it; the last file stays (it is where appends continue).
        while self.files.len() > 1 {
            let next_first = self.files[1].first;
            self.files[0]
                .file
                .read_exact_at(&mut b, (self.per_file - 1) as u64 * E::LEN as u64)?;
            if E::decode(&b).phys() >= min_phys {
                break;
            }
            let gone = self.files.remove(0);
            fs::remove_file(file_path(&self.dir, gone.first))?;
            self.min = self.min.max(next_first);
        }
        // Within the first file: the first entry at or after `min_phys`.
        let mut lo = self.min;
        if let Some(f) = self.files.first() {
            lo = lo.max(f.first);
            let mut hi = self.written.min(f.first + self.per_file);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                f.file
                    .read_exact_at(&mut b, (mid - f.first) as u64 * E::LEN as u64)?;
                if E::decode(&b).phys() < min_phys {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
        }
        // Past every written entry: on into the tail.
        if lo >= self.written {
            let skip = (lo - self.written) as usize;
            let rest = self.tail.get(skip..).unwrap_or_default();
            lo += rest.partition_point(|e| e.phys() < min_phys) as i64;
        }
        self.min = self.min.max(lo);
        Ok(())
    }

    /// Number of entries (the max offset).
    pub(crate) fn max_offset(&self) -> i64 {
        self.written + self.tail.len() as i64
    }

    pub(crate) fn push(&mut self, e: E) {
        self.tail.push(e);
    }

    /// Takes back the newest entry if it points at `phys` (its record was not written).
    pub(crate) fn pop_if(&mut self, phys: i64) -> bool {
        let hit = self.tail.last().is_some_and(|e| e.phys() == phys);
        if hit {
            self.tail.pop();
        }
        hit
    }

    /// Up to `max` entries from `offset` (fewer at the end of the queue; none below the min).
    pub(crate) fn read(&self, offset: i64, max: usize) -> io::Result<Vec<E>> {
        if offset < self.min {
            return Ok(Vec::new());
        }
        let end = self.max_offset().min(offset.saturating_add(max as i64));
        let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
        let mut at = offset.max(self.min);
        while at < end.min(self.written) {
            let Some(f) = self.files.iter().rev().find(|f| f.first <= at) else {
                break;
            };
            let upto = end.min(self.written).min(f.first + self.per_file);
            let mut buf = vec![0u8; (upto - at) as usize * E::LEN];
            f.file
                .read_exact_at(&mut buf, (at - f.first) as u64 * E::LEN as u64)?;
            out.extend(buf.chunks_exact(E::LEN).map(E::decode));
            at = upto;
        }
        let from_tail = (at.max(self.written) - self.written) as usize;
        let to_tail = (end - self.written).max(0) as usize;
        if from_tail < to_tail {
            out.extend_from_slice(&self.tail[from_tail..to_tail]);
        }
        Ok(out)
    }

    /// The entry at `offset`.
    pub(crate) fn entry(&self, offset: i64) -> io::Result<Option<E>> {
        Ok(self.read(offset, 1)?.first().copied())
    }

    /// Visits the entries newest first until `visit` returns false.
    pub(crate) fn scan_back(
        &self,
        mut visit: impl FnMut(&E) -> io::Result<bool>,
    ) -> io::Result<()> {
        // Tail entry `i` is entry `written + i`; those below `min` point at deleted records.
        let kept = usize::try_from(self.min - self.written).unwrap_or(0);
        for e in self.tail.iter().skip(kept).rev() {
            if !visit(e)? {
                return Ok(());
            }
        }
        const CHUNK: i64 = 4096;
        let mut end = self.written;
        for f in self.files.iter().rev() {
            let floor = f.first.max(self.min);
            while end > floor {
                let start = (end - CHUNK).max(floor);
                let mut buf = vec![0u8; (end - start) as usize * E::LEN];
                f.file
                    .read_exact_at(&mut buf, (start - f.first) as u64 * E::LEN as u64)?;
                for chunk in buf.chunks_exact(E::LEN).rev() {
                    if !visit(&E::decode(chunk))? {
                        return Ok(());
                    }
                }
                end = start;
            }
        }
        Ok(())
    }

    /// Prepares the write of the tail (creating files as needed); `None` when it is empty.
    pub(crate) fn tail_write(&mut self) -> io::Result<Option<TailWrite>> {
        if self.tail.is_empty() {
            return Ok(None);
        }
        let mut parts = Vec::new();
        let mut at = self.written;
        let mut rest = &self.tail[..];
        while !rest.is_empty() {
            let first = at - at % self.per_file;
            let file = match self.files.last() {
                Some(f) if f.first == first => Arc::clone(&f.file),
                _ => {
                    fs::create_dir_all(&self.dir)?;
                    let file = Arc::new(
                        OpenOptions::new()
                            .read(true)
                            .write(true)
                            .create(true)
                            .truncate(false)
                            .open(file_path(&self.dir, first))?,
                    );
                    self.files.push(EntryFile {
                        first,
                        file: Arc::clone(&file),
                    });
                    file
                }
            };
            let room = (first + self.per_file - at) as usize;
            let (now, later) = rest.split_at(room.min(rest.len()));
            let mut bytes = Vec::with_capacity(now.len() * E::LEN);
            for e in now {
                e.encode(&mut bytes);
            }
            parts.push((file, (at - first) as u64 * E::LEN as u64, bytes));
            at += now.len() as i64;
            rest = later;
        }
        Ok(Some(TailWrite {
            parts,
            count: self.tail.len(),
        }))
    }

    /// The first `count` tail entries are in the files now.
    pub(crate) fn written_out(&mut self, count: usize) {
        let count = count.min(self.tail.len());
        self.tail.drain(..count);
        self.written += count as i64;
    }
}

fn file_path(dir: &Path, first: i64) -> PathBuf {
    dir.join(format!("{first:020}"))
}

/// The directory name of a topic: the name itself when it is made of the characters topics
/// allow, otherwise `=` and its bytes in hex (so no name can leave the store directory).
pub(crate) fn topic_dir_name(topic: &str) -> String {
    let plain = !topic.is_empty()
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'));
    if plain {
        topic.to_owned()
    } else {
        let mut s = String::with_capacity(1 + 2 * topic.len());
        s.push('=');
        for b in topic.bytes() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// The topic a directory name stands for (see [`topic_dir_name`]).
pub(crate) fn topic_from_dir_name(name: &str) -> Option<String> {
    match name.strip_prefix('=') {
        None => Some(name.to_owned()),
        Some(hex) => {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            String::from_utf8(bytes).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn e(i: i64) -> CqEntry {
        CqEntry {
            phys: i * 100,
            size: 100,
            tag_hash: i,
        }
    }

    /// The key index's hash is stored: it must stay FNV-1a 64 of topic, 0x01 and key, whether
    /// the topic's part is computed once for several keys or not.
    #[test]
    fn key_hashes_stay_fnv1a_of_topic_separator_and_key() {
        assert_eq!(key_hash("TopicA", "key-1"), 0x5ca6_017c_67ac_2f3f);
        let topic = KeyHash::of_topic("TopicA");
        assert_eq!(topic.key("key-1"), 0x5ca6_017c_67ac_2f3f);
        assert_ne!(topic.key("key-2"), topic.key("key-1"));
    }

    #[test]
    fn entries_read_the_same_from_the_tail_the_files_and_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let qdir = dir.path().join("T").join("0");
        let mut q = ConsumeQueue::new(qdir.clone(), 4);
        for i in 0..10 {
            q.push(e(i));
        }
        let w = q.tail_write().unwrap().unwrap();
        w.write().unwrap();
        q.written_out(w.count);
        for i in 10..15 {
            q.push(e(i));
        }
        let all: Vec<CqEntry> = (0..15).map(e).collect();
        assert_eq!(q.read(0, 100).unwrap(), all);
        assert_eq!(q.read(8, 4).unwrap(), all[8..12]);
        assert_eq!(q.max_offset(), 15);
        // Ten entries over files of four: 0..4, 4..8, 8..10.
        assert_eq!(fs::read_dir(&qdir).unwrap().count(), 3);
        // Reopened: only what was written is there; a torn entry is cut off.
        let f = OpenOptions::new()
            .write(true)
            .open(file_path(&qdir, 8))
            .unwrap();
        f.write_all_at(&[1, 2, 3], 40).unwrap();
        let q = ConsumeQueue::open(qdir.clone(), 4, i64::MAX).unwrap();
        assert_eq!(q.max_offset(), 10);
        assert_eq!(q.read(0, 100).unwrap(), all[..10]);
        // Entries for records from the replay point on go too (here records 6.. at 600..).
        let q = ConsumeQueue::open(qdir.clone(), 4, 600).unwrap();
        assert_eq!(q.max_offset(), 6);
        assert_eq!(q.read(0, 100).unwrap(), all[..6]);
        // A file after a short one is unreachable and removed.
        assert_eq!(fs::read_dir(&qdir).unwrap().count(), 2);
    }

    #[test]
    fn topic_names_map_to_safe_directories_and_back() {
        for topic in ["TopicTest", "%RETRY%g_1", "../etc", "a/b", "", "é"] {
            let dir = topic_dir_name(topic);
            assert!(
                !dir.contains('/') && dir != ".." && !dir.is_empty(),
                "{dir}"
            );
            assert_eq!(topic_from_dir_name(&dir).as_deref(), Some(topic));
        }
    }
}
