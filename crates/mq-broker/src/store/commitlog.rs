//! The commit log: fixed-size segment files named by their base offset, holding §6.5 records
//! back to back; a segment's unused tail starts with a blank filler record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use mq_client_api::message::{MAGIC_BLANK, MessageExt, decode_record};
use tracing::{info, warn};

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: i64,
    pub(crate) file: Arc<File>,
}

/// Append-only segmented log.
#[derive(Debug)]
pub(crate) struct CommitLog {
    dir: PathBuf,
    segment_size: i64,
    segments: Vec<Segment>,
    /// Next physical offset to write.
    write_offset: i64,
    /// Records appended since the last write to the file: they start at
    /// `write_offset - pending.len()`. Whoever appends writes them out (one `pwrite` for a
    /// whole append call) before letting go of the log.
    pending: BytesMut,
}

impl CommitLog {
    /// Where a replay of `dir` may start given a checkpoint: the checkpoint itself when the log
    /// reaches that far, else 0 (the whole log is verified again).
    pub(crate) fn replay_start(dir: &Path, checkpoint: i64) -> io::Result<i64> {
        if checkpoint <= 0 || !dir.exists() {
            return Ok(0);
        }
        let last = fs::read_dir(dir)?
            .filter_map(|e| {
                let e = e.ok()?;
                let base: i64 = e.file_name().to_str()?.parse().ok()?;
                Some((base, e.metadata().ok()?.len()))
            })
            .max();
        Ok(match last {
            Some((base, len)) if base + len as i64 >= checkpoint => checkpoint,
            _ => {
                warn!(
                    checkpoint,
                    "the commit log ends before its checkpoint; verifying all of it"
                );
                0
            }
        })
    }

    /// Opens `dir`. Records from `from` on (a record boundary, see
    /// [`CommitLog::replay_start`]) are verified (CRC included) and handed to `on_record` in
    /// order, so indexes can catch up, and a torn tail is truncated; segments that end before
    /// `from` are trusted as they are.
    pub(crate) fn open(
        dir: &Path,
        segment_size: i64,
        from: i64,
        mut on_record: impl FnMut(&MessageExt, i32),
    ) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut bases: Vec<i64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        bases.sort_unstable();
        let last_base = bases.last().copied();
        let mut segments = Vec::new();
        let mut write_offset = 0;
        let mut torn = false;
        for base in bases {
            let path = segment_path(dir, base);
            if torn {
                warn!(segment = %path.display(), "removing segment after a torn record");
                fs::remove_file(&path)?;
                continue;
            }
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            if base + segment_size <= from && Some(base) != last_base {
                // Wholly before the checkpoint: verified by an earlier run.
                write_offset = base + segment_size;
                segments.push(Segment {
                    base,
                    file: Arc::new(file),
                });
                continue;
            }
            let start = usize::try_from((from - base).max(0)).unwrap_or(0);
            let mut data = Vec::new();
            {
                let mut reader = &file;
                reader.seek(SeekFrom::Start(start as u64))?;
                reader.read_to_end(&mut data)?;
            }
            let data = Bytes::from(data);
            let mut src = data.clone();
            let mut pos = start;
            let mut end_of_segment = false;
            while !src.is_empty() {
                if src.len() >= 8 && src[4..8] == MAGIC_BLANK.to_be_bytes() {
                    end_of_segment = true;
                    break;
                }
                let before = src.len();
                match decode_record(&mut src, true, false) {
                    Ok(msg) => {
                        let size = (before - src.len()) as i32;
                        if msg.commit_log_offset != base + pos as i64 {
                            warn!(
                                offset = base + pos as i64,
                                "record at the wrong offset; truncating"
                            );
                            torn = true;
                            break;
                        }
                        on_record(&msg, size);
                        pos += size as usize;
                    }
                    Err(e) => {
                        // Zero padding after the last record is not a tear.
                        if !data[pos - start..].iter().all(|b| *b == 0) {
                            warn!(offset = base + pos as i64, cause = %e, "torn or corrupt record; truncating");
                            torn = true;
                        }
                        break;
                    }
                }
            }
            if torn || !end_of_segment {
                file.set_len(pos as u64)?;
                file.sync_all()?;
            }
            write_offset = if end_of_segment {
                base + segment_size
            } else {
                base + pos as i64
            };
            if !end_of_segment {
                torn = true; // any later segment is unreachable
            }
            segments.push(Segment {
                base,
                file: Arc::new(file),
            });
        }
        info!(dir = %dir.display(), write_offset, "commit log opened");
        Ok(Self {
            dir: dir.to_owned(),
            segment_size,
            segments,
            write_offset,
            pending: BytesMut::new(),
        })
    }

    pub(crate) fn write_offset(&self) -> i64 {
        self.write_offset
    }

    /// The first offset still in the log (the base of the oldest segment).
    pub(crate) fn min_offset(&self) -> i64 {
        self.segments.first().map_or(self.write_offset, |s| s.base)
    }

    /// Deletes the oldest segments, never the one being written: those last modified before
    /// `expired_before`, and the `forced` oldest ones on top whatever their age (disk
    /// pressure). Stops at the first segment that stays. Returns how many went.
    pub(crate) fn delete_oldest(
        &mut self,
        expired_before: std::time::SystemTime,
        mut forced: usize,
    ) -> io::Result<usize> {
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let expired = oldest.file.metadata()?.modified()? < expired_before;
            if !expired && forced == 0 {
                break;
            }
            if !expired {
                forced -= 1;
            }
            let path = segment_path(&self.dir, oldest.base);
            fs::remove_file(&path)?;
            info!(segment = %path.display(), expired, "commit-log segment deleted");
            self.segments.remove(0);
            deleted += 1;
        }
        Ok(deleted)
    }

    /// The physical offset the next record of `len` bytes will get, rolling to a new segment
    /// (after writing a blank filler) when it does not fit the current one.
    pub(crate) fn reserve(&mut self, len: usize) -> io::Result<i64> {
        let len = len as i64;
        if len + 8 > self.segment_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record larger than a commit-log segment",
            ));
        }
        let in_segment = self.write_offset % self.segment_size;
        let needs_new = self.segments.is_empty()
            || self.write_offset >= self.current_base() + self.segment_size;
        if needs_new || in_segment + len + 8 > self.segment_size {
            // What is pending belongs to the current segment.
            self.write_pending()?;
        }
        if needs_new {
            self.roll(self.write_offset - in_segment)?;
        } else if in_segment + len + 8 > self.segment_size {
            let remaining = self.segment_size - in_segment;
            let mut blank = BytesMut::with_capacity(8);
            blank.put_i32(remaining as i32);
            blank.put_i32(MAGIC_BLANK);
            self.current()?.write_all_at(&blank, in_segment as u64)?;
            self.current()?.sync_data()?;
            let next = self.write_offset + remaining;
            self.roll(next)?;
        }
        Ok(self.write_offset)
    }

    /// Appends a record at the offset [`CommitLog::reserve`] returned: `write` puts exactly
    /// the reserved length into the pending buffer, which [`CommitLog::write_pending`] writes.
    pub(crate) fn append_with(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let before = self.pending.len();
        write(&mut self.pending);
        self.write_offset += (self.pending.len() - before) as i64;
    }

    /// Bytes appended but not yet written to the file.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Writes the pending records to the current segment with one `pwrite`.
    pub(crate) fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let start = self.write_offset - self.pending.len() as i64;
        let pos = (start - self.current_base()) as u64;
        self.current()?.write_all_at(&self.pending, pos)?;
        self.pending.clear();
        Ok(())
    }

    /// Forgets the pending records (their write failed): the log ends where the file does.
    pub(crate) fn discard_pending(&mut self) {
        self.write_offset -= self.pending.len() as i64;
        self.pending.clear();
    }

    /// Reads `size` bytes at physical offset `offset`.
    pub(crate) fn read(&self, offset: i64, size: usize) -> io::Result<Bytes> {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.base <= offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "offset before the log"))?;
        let mut buf = vec![0u8; size];
        seg.file
            .read_exact_at(&mut buf, (offset - seg.base) as u64)?;
        Ok(Bytes::from(buf))
    }

    /// Segment files that may hold unflushed data at or after `flushed`.
    pub(crate) fn files_since(&self, flushed: i64) -> Vec<Arc<File>> {
        self.segments
            .iter()
            .filter(|s| s.base + self.segment_size > flushed)
            .map(|s| Arc::clone(&s.file))
            .collect()
    }

    fn current_base(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.base)
    }

    fn current(&self) -> io::Result<&File> {
        self.segments
            .last()
            .map(|s| &*s.file)
            .ok_or_else(|| io::Error::other("no segment"))
    }

    fn roll(&mut self, base: i64) -> io::Result<()> {
        if let Some(last) = self.segments.last() {
            last.file.sync_data()?;
        }
        let path = segment_path(&self.dir, base);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.flush()?;
        File::open(&self.dir)?.sync_all()?;
        self.segments.push(Segment {
            base,
            file: Arc::new(file),
        });
        self.write_offset = base;
        Ok(())
    }
}

fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}"))
}
