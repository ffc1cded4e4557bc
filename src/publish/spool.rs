//! Durable, bounded, append-only on-disk FIFO of opaque byte entries.
//!
//! # Why it exists
//!
//! The bridge answers Bitrix24 with HTTP 2xx only once an event is either
//! acknowledged by Kafka or durably stored here. When Kafka is slow or down,
//! events go to the spool; a drainer task reads them oldest-first
//! ([`Spool::peek`]), publishes them and then removes them ([`Spool::ack`]).
//! Delivery is therefore **at-least-once**: a crash between a successful
//! publish and the durable ack leaves the entry in the spool, and it is
//! published again after restart. Consumers must tolerate duplicates. What the
//! spool never does is lose an entry whose [`Spool::append`] future resolved
//! `Ok`: that only happens after the bytes were `fdatasync`ed.
//!
//! # On-disk layout
//!
//! Everything lives in one directory (`SpoolConfig::dir`):
//!
//! ```text
//! 00000000000000000001.seg       segment; name = first sequence number it may hold, 20 digits
//! 00000000000000004711.seg       newer segment (only the newest one is appended to)
//! ack.cursor                     last acknowledged sequence number
//! lock                           flock'd while a process has the spool open
//! 00000000000000000001.seg.corrupt-1717171717   tail moved aside by recovery (kept for operators)
//! ```
//!
//! A segment is a plain concatenation of records. Each record is a 20-byte
//! little-endian header followed by the payload:
//!
//! ```text
//! offset  size  field
//!      0     4  magic   0x4C50_5342 ("BSPL" on disk)
//!      4     4  len     payload length in bytes
//!      8     8  seq     sequence number, strictly increasing across the spool
//!     16     4  crc32   CRC-32 (IEEE) of the 8 seq bytes followed by the payload
//!     20   len  payload
//! ```
//!
//! A new segment is started when the next record would push the current one
//! past `segment_bytes` (a single record larger than that gets a segment of
//! its own), and on every start-up. `ack.cursor` is 16 bytes,
//! `magic u32 (0x5255_4341, "ACUR" on disk) | seq u64 | crc32 u32 of seq`,
//! replaced atomically (write `ack.cursor.tmp`, fsync, rename, fsync the
//! directory). A missing cursor means nothing is acknowledged yet.
//!
//! # Writing
//!
//! [`Spool::append`] reserves the sequence number and queues the entry under
//! one lock, so sequence order is call order. A dedicated writer thread takes
//! everything queued, writes it, issues one `fdatasync` for the whole batch
//! (group commit) and only then resolves the callers' futures and wakes the
//! drainer. Creating a segment also fsyncs the directory, so a record is never
//! durable inside a file whose name is not. If a write or fsync fails, the
//! affected entries fail with [`SpoolError::Io`] and the writer moves on to a
//! fresh segment: after a failed fsync the kernel may have dropped the dirty
//! pages, so the old file is not trusted to take more data.
//!
//! # Space accounting
//!
//! `used_bytes` counts header plus payload of every un-acked record, durable or
//! still queued; an append that would take it past `max_bytes` fails with
//! [`SpoolError::Full`]. Disk usage can exceed that by up to one segment,
//! because a segment file is deleted only once every record in it is acked.
//! The in-memory index costs about 32 bytes per un-acked entry.
//!
//! # Recovery
//!
//! [`Spool::open`] reads the cursor, then scans the segments in name order and
//! validates every record (magic, length within the file, checksum, sequence
//! strictly increasing and not below the segment's name). At the first bad or
//! torn record of a segment, the rest of that file is moved aside (the whole
//! file renamed to `<segment>.corrupt-<unix_ts>` if the bad record is the first
//! one, otherwise the bad suffix copied there and the segment truncated to the
//! last good record) and reported; later segments are still scanned. Records at
//! or below the cursor are skipped, segments holding nothing un-acked are
//! deleted, and numbering continues after the highest sequence number seen in
//! a valid record or the cursor, whichever is larger. A corrupt cursor is
//! moved aside, reported and treated as "nothing acked": that re-delivers
//! entries (duplicates) rather than losing any. Corrupt data never makes
//! `open` fail; only real I/O errors do.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, Notify};

const RECORD_MAGIC: u32 = 0x4C50_5342;
const HEADER_LEN: u64 = 20;
const CURSOR_MAGIC: u32 = 0x5255_4341;
const CURSOR_LEN: usize = 16;
const CURSOR_FILE: &str = "ack.cursor";
const CURSOR_TMP_FILE: &str = "ack.cursor.tmp";
const SEGMENT_SUFFIX: &str = ".seg";
const SEGMENT_NAME_DIGITS: usize = 20;

/// Where the spool lives and how big it may get.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory holding the segments and the ack cursor; created if missing.
    pub dir: PathBuf,
    /// Upper bound for header + payload bytes of un-acked entries.
    pub max_bytes: u64,
    /// Target size of one segment file; fully acked segments are deleted whole.
    pub segment_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("spool I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("spool writer has stopped")]
    Closed,
}

/// What [`Spool::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Un-acked records recovered.
    pub records: u64,
    /// Header + payload bytes of those records (the starting `used_bytes`).
    pub bytes: u64,
    /// Files (or file tails) moved aside because they were corrupt or torn,
    /// including a corrupt `ack.cursor`.
    pub corrupt_files: Vec<PathBuf>,
    /// Bytes moved out of segments by recovery.
    pub discarded_bytes: u64,
}

/// One durable, un-acked entry as returned by [`Spool::peek`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    pub seq: u64,
    pub bytes: Vec<u8>,
}

/// The spool handle. Share it through an `Arc`; dropping it closes it.
pub struct Spool {
    inner: Arc<Inner>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Held (locked) while the spool is open; the OS releases it on exit.
    _lock: fs::File,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Serialises cursor writes so a smaller cursor never overwrites a larger one.
    cursor_io: Mutex<()>,
    notify: Notify,
    closed: AtomicBool,
}

struct State {
    next_seq: u64,
    /// `None` once closed (or if the writer could not be started).
    tx: Option<mpsc::Sender<Job>>,
    queued_count: u64,
    queued_bytes: u64,
    durable_bytes: u64,
    /// Highest sequence number that is durable (0 = none).
    durable_high: u64,
    acked: u64,
    /// Durable, un-acked records, oldest first.
    index: VecDeque<IndexEntry>,
    /// Segment files on disk, oldest first; the last one is the writer's.
    segments: VecDeque<SegmentMeta>,
}

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    seq: u64,
    segment: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct SegmentMeta {
    id: u64,
    /// Highest durable sequence number in the file (0 = none).
    last_seq: u64,
}

struct Job {
    seq: u64,
    len: u32,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<u64, SpoolError>>,
}

fn framed_len(payload_len: u64) -> u64 {
    HEADER_LEN.saturating_add(payload_len)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave State half-updated in a way
    // that matters more than refusing service would.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Spool {
    /// Opens (creating the dir if needed) and recovers. Never fails because of
    /// corrupt data: a torn or corrupt tail is moved aside and reported, and
    /// start-up goes on. Fails only on real I/O errors (e.g. dir not writable).
    #[tracing::instrument(skip_all, fields(dir = %cfg.dir.display()))]
    pub fn open(cfg: SpoolConfig) -> Result<(Spool, RecoveryReport), SpoolError> {
        fs::create_dir_all(&cfg.dir)?;
        // Two processes appending to one spool would interleave sequence
        // numbers and delete each other's segments: hold an exclusive lock
        // for as long as the spool is open.
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.dir.join("lock"))?;
        if let Err(e) = lock.try_lock() {
            return Err(SpoolError::Io(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("{} is in use by another process ({e})", cfg.dir.display()),
            )));
        }
        let recovered = recover(&cfg.dir)?;
        let report = recovered.report;

        let next_seq = recovered.high_seq.max(recovered.acked).saturating_add(1);
        let mut segments: VecDeque<SegmentMeta> = recovered.segments;
        let active = ActiveSegment::create(&cfg.dir, next_seq)?;
        segments.push_back(SegmentMeta {
            id: next_seq,
            last_seq: 0,
        });

        let (tx, rx) = mpsc::channel::<Job>();
        let durable_high = recovered.index.back().map_or(0, |e| e.seq);
        let inner = Arc::new(Inner {
            dir: cfg.dir.clone(),
            max_bytes: cfg.max_bytes,
            segment_bytes: cfg.segment_bytes,
            state: Mutex::new(State {
                next_seq,
                tx: Some(tx),
                queued_count: 0,
                queued_bytes: 0,
                durable_bytes: report.bytes,
                durable_high,
                acked: recovered.acked,
                index: recovered.index,
                segments,
            }),
            cursor_io: Mutex::new(()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        });

        let writer = Writer {
            inner: Arc::clone(&inner),
            active: Some(active),
            buf: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))?;

        tracing::info!(
            records = report.records,
            bytes = report.bytes,
            corrupt_files = report.corrupt_files.len(),
            discarded_bytes = report.discarded_bytes,
            next_seq,
            "spool opened"
        );
        Ok((
            Spool {
                inner,
                writer: Mutex::new(Some(handle)),
                _lock: lock,
            },
            report,
        ))
    }

    /// Reserves the next sequence number and queues the entry, synchronously,
    /// so sequence order is call order. The returned future resolves with the
    /// sequence number once the entry is fdatasync'd; it never blocks the
    /// runtime (the fsync happens on the writer thread).
    pub fn append(
        &self,
        entry: Vec<u8>,
    ) -> Result<impl Future<Output = Result<u64, SpoolError>> + Send + 'static, SpoolError> {
        let len = u32::try_from(entry.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "spool entry larger than 4 GiB")
        })?;
        let framed = framed_len(u64::from(len));
        let (reply, rx) = oneshot::channel();
        {
            let mut st = lock(&self.inner.state);
            let used = st.durable_bytes.saturating_add(st.queued_bytes);
            if used.saturating_add(framed) > self.inner.max_bytes {
                return Err(SpoolError::Full {
                    used,
                    max: self.inner.max_bytes,
                });
            }
            let seq = st.next_seq;
            let job = Job {
                seq,
                len,
                payload: entry,
                reply,
            };
            // Sending under the lock keeps channel order equal to seq order.
            match st.tx.as_ref() {
                Some(tx) if tx.send(job).is_ok() => {}
                _ => return Err(SpoolError::Closed),
            }
            st.next_seq = seq.saturating_add(1);
            st.queued_count += 1;
            st.queued_bytes = st.queued_bytes.saturating_add(framed);
        }
        Ok(async move { rx.await.unwrap_or(Err(SpoolError::Closed)) })
    }

    /// Up to `max` oldest durable, un-acked entries, in order. Reads files
    /// synchronously; call it from `spawn_blocking` if that matters.
    pub fn peek(&self, max: usize) -> Result<Vec<SpoolEntry>, SpoolError> {
        let wanted: Vec<IndexEntry> = {
            let st = lock(&self.inner.state);
            st.index.iter().take(max).copied().collect()
        };
        let mut out = Vec::with_capacity(wanted.len());
        let mut open: Option<(u64, File)> = None;
        for loc in wanted {
            let file = match &mut open {
                Some((id, file)) if *id == loc.segment => file,
                _ => {
                    let path = segment_path(&self.inner.dir, loc.segment);
                    match File::open(&path) {
                        Ok(file) => &mut open.insert((loc.segment, file)).1,
                        // An ack running concurrently may have deleted it.
                        Err(e)
                            if e.kind() == io::ErrorKind::NotFound
                                && loc.seq <= lock(&self.inner.state).acked =>
                        {
                            break
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            out.push(read_record_at(file, &loc)?);
        }
        Ok(out)
    }

    /// Marks every entry with sequence number `<= seq` as delivered, durably
    /// (the cursor is fsync'd before this returns), and deletes segment files
    /// that hold nothing un-acked. Acks beyond the highest durable entry are
    /// clamped to it.
    pub fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        let _serial = lock(&self.inner.cursor_io);
        let target = {
            let st = lock(&self.inner.state);
            let target = seq.min(st.durable_high);
            if target < seq {
                tracing::warn!(
                    requested = seq,
                    durable = st.durable_high,
                    "ack beyond durable entries clamped"
                );
            }
            if target <= st.acked {
                return Ok(());
            }
            target
        };
        write_cursor(&self.inner.dir, target)?;

        let doomed: Vec<u64> = {
            let mut st = lock(&self.inner.state);
            st.acked = target;
            while let Some(front) = st.index.front().copied() {
                if front.seq > target {
                    break;
                }
                st.index.pop_front();
                st.durable_bytes = st
                    .durable_bytes
                    .saturating_sub(framed_len(u64::from(front.len)));
            }
            let keep_from = st.segments.len().saturating_sub(1);
            let mut doomed = Vec::new();
            let mut i = 0;
            st.segments.retain(|seg| {
                let remove = i < keep_from && seg.last_seq <= target;
                i += 1;
                if remove {
                    doomed.push(seg.id);
                }
                !remove
            });
            doomed
        };
        if !doomed.is_empty() {
            for id in &doomed {
                match fs::remove_file(segment_path(&self.inner.dir, *id)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            fsync_dir(&self.inner.dir)?;
            tracing::debug!(
                segments = doomed.len(),
                acked = target,
                "spool segments deleted"
            );
        }
        Ok(())
    }

    /// Entries appended (including not yet durable) and not yet acked.
    pub fn pending(&self) -> u64 {
        let st = lock(&self.inner.state);
        st.queued_count.saturating_add(st.index.len() as u64)
    }

    /// Header + payload bytes of un-acked entries, durable or queued; this is
    /// what `append` checks against `max_bytes`.
    pub fn used_bytes(&self) -> u64 {
        let st = lock(&self.inner.state);
        st.durable_bytes.saturating_add(st.queued_bytes)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Resolves when an entry becomes durable or the spool is closed. May wake
    /// spuriously; the drainer should simply `peek` again.
    pub async fn wait_for_entries(&self) {
        let notified = self.inner.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// Stops the writer thread after it has written and fsync'd everything
    /// already queued; later appends get [`SpoolError::Closed`]. Blocks for at
    /// most the batch in flight. Idempotent.
    pub fn close(&self) {
        let tx = lock(&self.inner.state).tx.take();
        drop(tx);
        // Held across the join so a concurrent close returns only once the
        // writer has really finished.
        let mut writer = lock(&self.writer);
        if let Some(handle) = writer.take() {
            if handle.join().is_err() {
                tracing::error!("spool writer thread panicked");
            }
        }
        self.inner.closed.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
        self.inner.notify.notify_one();
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.dir)
            .field("pending", &self.pending())
            .field("used_bytes", &self.used_bytes())
            .field("max_bytes", &self.inner.max_bytes)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Writer thread

struct ActiveSegment {
    id: u64,
    file: File,
    len: u64,
}

impl ActiveSegment {
    fn create(dir: &Path, id: u64) -> io::Result<ActiveSegment> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, id))?;
        let len = file.metadata()?.len();
        fsync_dir(dir)?;
        Ok(ActiveSegment { id, file, len })
    }
}

/// A job whose bytes are in the write buffer, waiting for the fsync.
struct Staged {
    job_seq: u64,
    loc: IndexEntry,
    reply: oneshot::Sender<Result<u64, SpoolError>>,
}

struct Writer {
    inner: Arc<Inner>,
    active: Option<ActiveSegment>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        // `recv` keeps returning queued jobs after the sender is dropped, so
        // close() gets everything enqueued written before this returns.
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            self.write_batch(batch);
        }
    }

    fn write_batch(&mut self, jobs: Vec<Job>) {
        let mut staged: Vec<Staged> = Vec::with_capacity(jobs.len());
        self.buf.clear();
        for job in jobs {
            let framed = framed_len(u64::from(job.len));
            let rotate = match &self.active {
                Some(a) => {
                    let size = a.len + self.buf.len() as u64;
                    size > 0 && size.saturating_add(framed) > self.inner.segment_bytes
                }
                None => false,
            };
            if rotate {
                self.flush(&mut staged);
                self.active = None;
            }
            if self.active.is_none() {
                match ActiveSegment::create(&self.inner.dir, job.seq) {
                    Ok(seg) => {
                        lock(&self.inner.state).segments.push_back(SegmentMeta {
                            id: seg.id,
                            last_seq: 0,
                        });
                        self.active = Some(seg);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, seq = job.seq, "spool cannot create segment");
                        self.fail(std::iter::once((job.seq, job.len, job.reply)), &e);
                        continue;
                    }
                }
            }
            let Some(active) = &self.active else { continue };
            let loc = IndexEntry {
                seq: job.seq,
                segment: active.id,
                offset: active.len + self.buf.len() as u64,
                len: job.len,
            };
            encode_record(&mut self.buf, job.seq, job.len, &job.payload);
            staged.push(Staged {
                job_seq: job.seq,
                loc,
                reply: job.reply,
            });
        }
        self.flush(&mut staged);
    }

    /// Writes the buffer to the active segment, fdatasyncs it and settles
    /// every staged job.
    fn flush(&mut self, staged: &mut Vec<Staged>) {
        if staged.is_empty() {
            self.buf.clear();
            return;
        }
        let result = match self.active.as_mut() {
            Some(a) => a
                .file
                .write_all(&self.buf)
                .and_then(|()| a.file.sync_data()),
            None => Err(io::Error::other("no active spool segment")),
        };
        match result {
            Ok(()) => {
                if let Some(a) = self.active.as_mut() {
                    a.len += self.buf.len() as u64;
                }
                self.commit(std::mem::take(staged));
            }
            Err(e) => {
                tracing::error!(error = %e, entries = staged.len(), "spool write failed; abandoning segment");
                if let Some(a) = self.active.take() {
                    // Best effort: the records are reported failed, so leaving
                    // them on disk only risks a duplicate after restart.
                    let _ = a.file.set_len(a.len);
                }
                let failed = std::mem::take(staged)
                    .into_iter()
                    .map(|s| (s.job_seq, s.loc.len, s.reply));
                self.fail(failed, &e);
            }
        }
        self.buf.clear();
    }

    fn commit(&self, staged: Vec<Staged>) {
        let Some(last) = staged.last().map(|s| s.loc) else {
            return;
        };
        {
            let mut st = lock(&self.inner.state);
            for s in &staged {
                let framed = framed_len(u64::from(s.loc.len));
                st.index.push_back(s.loc);
                st.queued_count = st.queued_count.saturating_sub(1);
                st.queued_bytes = st.queued_bytes.saturating_sub(framed);
                st.durable_bytes = st.durable_bytes.saturating_add(framed);
            }
            st.durable_high = last.seq;
            if let Some(seg) = st.segments.iter_mut().rev().find(|m| m.id == last.segment) {
                seg.last_seq = last.seq;
            }
        }
        for s in staged {
            // The appender may have dropped its future; the entry is durable anyway.
            let _ = s.reply.send(Ok(s.job_seq));
        }
        self.inner.notify.notify_waiters();
        self.inner.notify.notify_one();
    }

    fn fail(
        &self,
        jobs: impl Iterator<Item = (u64, u32, oneshot::Sender<Result<u64, SpoolError>>)>,
        err: &io::Error,
    ) {
        let jobs: Vec<_> = jobs.collect();
        {
            let mut st = lock(&self.inner.state);
            for (_, len, _) in &jobs {
                st.queued_count = st.queued_count.saturating_sub(1);
                st.queued_bytes = st.queued_bytes.saturating_sub(framed_len(u64::from(*len)));
            }
        }
        for (_, _, reply) in jobs {
            let _ = reply.send(Err(SpoolError::Io(io::Error::new(
                err.kind(),
                err.to_string(),
            ))));
        }
    }
}

// ---------------------------------------------------------------------------
// Record and cursor encoding

fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode_record(buf: &mut Vec<u8>, seq: u64, len: u32, payload: &[u8]) {
    buf.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&record_crc(seq, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

struct Header {
    magic: u32,
    len: u32,
    seq: u64,
    crc: u32,
}

fn decode_header(h: &[u8; HEADER_LEN as usize]) -> Header {
    Header {
        magic: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        len: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        seq: u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        crc: u32::from_le_bytes([h[16], h[17], h[18], h[19]]),
    }
}

fn read_record_at(file: &mut File, loc: &IndexEntry) -> Result<SpoolEntry, SpoolError> {
    file.seek(SeekFrom::Start(loc.offset))?;
    let mut raw = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut raw)?;
    let header = decode_header(&raw);
    let mut bytes = vec![0u8; loc.len as usize];
    file.read_exact(&mut bytes)?;
    if header.magic != RECORD_MAGIC
        || header.len != loc.len
        || header.seq != loc.seq
        || header.crc != record_crc(header.seq, &bytes)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "spool record {} in segment {} failed validation on read",
                loc.seq, loc.segment
            ),
        )
        .into());
    }
    Ok(SpoolEntry {
        seq: loc.seq,
        bytes,
    })
}

fn encode_cursor(seq: u64) -> [u8; CURSOR_LEN] {
    let mut out = [0u8; CURSOR_LEN];
    out[0..4].copy_from_slice(&CURSOR_MAGIC.to_le_bytes());
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    out[12..16].copy_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    out
}

fn decode_cursor(raw: &[u8]) -> Option<u64> {
    if raw.len() != CURSOR_LEN {
        return None;
    }
    let magic = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let seq_bytes = [
        raw[4], raw[5], raw[6], raw[7], raw[8], raw[9], raw[10], raw[11],
    ];
    let crc = u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]);
    (magic == CURSOR_MAGIC && crc == crc32fast::hash(&seq_bytes))
        .then(|| u64::from_le_bytes(seq_bytes))
}

fn write_cursor(dir: &Path, seq: u64) -> io::Result<()> {
    let tmp = dir.join(CURSOR_TMP_FILE);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&encode_cursor(seq))?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(CURSOR_FILE))?;
    fsync_dir(dir)
}

// ---------------------------------------------------------------------------
// Files and recovery

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!(
        "{id:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    ))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(unix)]
fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn fsync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn unix_ts() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A free `<path>.corrupt-<unix_ts>[-n]` name.
fn corrupt_path(path: &Path) -> PathBuf {
    let base = format!("{}.corrupt-{}", path.display(), unix_ts());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1u32;
    while candidate.exists() && n < 10_000 {
        candidate = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

struct Recovered {
    acked: u64,
    high_seq: u64,
    index: VecDeque<IndexEntry>,
    segments: VecDeque<SegmentMeta>,
    report: RecoveryReport,
}

fn recover(dir: &Path) -> io::Result<Recovered> {
    let mut report = RecoveryReport::default();
    let acked = recover_cursor(dir, &mut report)?;

    let mut ids = Vec::new();
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        if let Some(id) = dirent.file_name().to_str().and_then(parse_segment_name) {
            if dirent.file_type()?.is_file() {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();

    let mut high_seq = 0u64;
    let mut index = VecDeque::new();
    let mut segments = VecDeque::new();
    let mut dir_changed = false;
    let mut payload = Vec::new();
    for id in ids {
        let path = segment_path(dir, id);
        let scan = scan_segment(&path, id, high_seq, &mut payload)?;
        if let Some(bad) = &scan.bad {
            let (moved, bytes) = quarantine(&path, bad.offset, scan.file_len)?;
            tracing::warn!(
                segment = %path.display(),
                offset = bad.offset,
                reason = bad.reason,
                moved_to = %moved.display(),
                bytes,
                "spool segment has a corrupt tail; moved aside"
            );
            report.corrupt_files.push(moved);
            report.discarded_bytes += bytes;
            dir_changed = true;
        }
        let mut last_seq = 0;
        let mut unacked = 0usize;
        for loc in scan.records {
            high_seq = loc.seq;
            last_seq = loc.seq;
            if loc.seq > acked {
                report.records += 1;
                report.bytes += framed_len(u64::from(loc.len));
                index.push_back(loc);
                unacked += 1;
            }
        }
        if unacked == 0 {
            // Empty, fully acked or wholly moved aside: nothing to keep.
            match fs::remove_file(&path) {
                Ok(()) => dir_changed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        } else {
            segments.push_back(SegmentMeta { id, last_seq });
        }
    }
    if dir_changed {
        fsync_dir(dir)?;
    }
    Ok(Recovered {
        acked,
        high_seq,
        index,
        segments,
        report,
    })
}

fn recover_cursor(dir: &Path, report: &mut RecoveryReport) -> io::Result<u64> {
    match fs::remove_file(dir.join(CURSOR_TMP_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let path = dir.join(CURSOR_FILE);
    let raw = match fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if let Some(seq) = decode_cursor(&raw) {
        return Ok(seq);
    }
    let moved = corrupt_path(&path);
    fs::rename(&path, &moved)?;
    fsync_dir(dir)?;
    tracing::warn!(
        moved_to = %moved.display(),
        "spool ack cursor is corrupt; treating everything as un-acked (duplicates will be re-published)"
    );
    report.corrupt_files.push(moved);
    Ok(0)
}

struct BadRecord {
    offset: u64,
    reason: &'static str,
}

struct SegmentScan {
    records: Vec<IndexEntry>,
    file_len: u64,
    bad: Option<BadRecord>,
}

/// Reads into `buf` until it is full or the reader hits end of file.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn scan_segment(
    path: &Path,
    id: u64,
    mut prev_seq: u64,
    payload: &mut Vec<u8>,
) -> io::Result<SegmentScan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut records = Vec::new();
    let mut offset = 0u64;
    let bad = loop {
        let mut raw = [0u8; HEADER_LEN as usize];
        let got = read_up_to(&mut reader, &mut raw)?;
        if got == 0 {
            break None;
        }
        let reason = if got < raw.len() {
            Some("torn header")
        } else {
            None
        };
        let header = decode_header(&raw);
        let reason = reason.or_else(|| {
            if header.magic != RECORD_MAGIC {
                Some("bad magic")
            } else if u64::from(header.len)
                > file_len.saturating_sub(offset).saturating_sub(HEADER_LEN)
            {
                Some("torn payload")
            } else {
                None
            }
        });
        if let Some(reason) = reason {
            break Some(BadRecord { offset, reason });
        }
        payload.resize(header.len as usize, 0);
        if read_up_to(&mut reader, payload)? < payload.len() {
            // The file shrank under us; treat like a torn payload.
            break Some(BadRecord {
                offset,
                reason: "torn payload",
            });
        }
        if header.crc != record_crc(header.seq, payload) {
            break Some(BadRecord {
                offset,
                reason: "checksum mismatch",
            });
        }
        if header.seq <= prev_seq || header.seq < id {
            break Some(BadRecord {
                offset,
                reason: "sequence out of order",
            });
        }
        records.push(IndexEntry {
            seq: header.seq,
            segment: id,
            offset,
            len: header.len,
        });
        prev_seq = header.seq;
        offset += framed_len(u64::from(header.len));
    };
    Ok(SegmentScan {
        records,
        file_len,
        bad,
    })
}

/// Moves `[offset, file_len)` of a segment aside; returns where it went and
/// how many bytes moved.
fn quarantine(path: &Path, offset: u64, file_len: u64) -> io::Result<(PathBuf, u64)> {
    let dest = corrupt_path(path);
    if offset == 0 {
        fs::rename(path, &dest)?;
        return Ok((dest, file_len));
    }
    let mut src = OpenOptions::new().read(true).write(true).open(path)?;
    src.seek(SeekFrom::Start(offset))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dest)?;
    let copied = io::copy(&mut src, &mut out)?;
    out.sync_all()?;
    src.set_len(offset)?;
    src.sync_all()?;
    Ok((dest, copied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_dir_is_refused_while_the_first_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = || SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
            segment_bytes: 1 << 16,
        };
        let (first, _) = Spool::open(cfg()).unwrap();
        let err = Spool::open(cfg()).unwrap_err();
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(first);
        assert!(Spool::open(cfg()).is_ok(), "the lock goes with the spool");
    }
    use std::time::Duration;

    fn cfg(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
        }
    }

    fn open(dir: &Path) -> (Spool, RecoveryReport) {
        Spool::open(cfg(dir, 1 << 30, 1 << 20)).expect("open spool")
    }

    async fn put(spool: &Spool, bytes: &[u8]) -> u64 {
        spool
            .append(bytes.to_vec())
            .expect("enqueue")
            .await
            .expect("durable")
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("event-{i:04}-payload").into_bytes()
    }

    fn seqs(entries: &[SpoolEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    /// Segment files in the directory, sorted, with their sizes.
    fn segment_files(dir: &Path) -> Vec<(PathBuf, u64)> {
        let mut out: Vec<(PathBuf, u64)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_str().unwrap().ends_with(SEGMENT_SUFFIX))
            .map(|p| {
                let len = fs::metadata(&p).unwrap().len();
                (p, len)
            })
            .collect();
        out.sort();
        out
    }

    /// The one non-empty segment file (tests that use it write one segment).
    fn only_data_segment(dir: &Path) -> PathBuf {
        let data: Vec<_> = segment_files(dir)
            .into_iter()
            .filter(|(_, len)| *len > 0)
            .collect();
        assert_eq!(data.len(), 1, "expected one data segment: {data:?}");
        data[0].0.clone()
    }

    /// Writes entries 1..=n (payload(i)), closes, returns the data segment.
    async fn write_and_close(dir: &Path, n: u64) -> PathBuf {
        let (spool, _) = open(dir);
        for i in 1..=n {
            assert_eq!(put(&spool, &payload(i)).await, i);
        }
        spool.close();
        drop(spool);
        only_data_segment(dir)
    }

    fn record_len(i: u64) -> u64 {
        HEADER_LEN + payload(i).len() as u64
    }

    /// Byte offset at which record `i` (1-based) starts.
    fn record_offset(i: u64) -> u64 {
        (1..i).map(record_len).sum()
    }

    /// Reopens and checks that exactly `expect` survive, the tail was
    /// reported, and the spool still takes appends that survive a reopen.
    async fn assert_recovers_to(dir: &Path, expect: &[u64], discarded: u64) {
        let (spool, report) = open(dir);
        assert_eq!(report.records, expect.len() as u64);
        assert_eq!(report.corrupt_files.len(), 1, "{report:?}");
        assert!(report.corrupt_files[0].exists());
        assert!(report.corrupt_files[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .contains(".seg.corrupt-"));
        assert_eq!(report.discarded_bytes, discarded);
        assert_eq!(
            fs::metadata(&report.corrupt_files[0]).unwrap().len(),
            discarded
        );
        let got = spool.peek(100).unwrap();
        assert_eq!(seqs(&got), expect);
        for e in &got {
            assert_eq!(e.bytes, payload(e.seq));
        }
        let new_seq = put(&spool, b"after-recovery").await;
        assert!(new_seq > *expect.last().unwrap_or(&0));
        drop(spool);

        let (spool, report) = open(dir);
        assert!(report.corrupt_files.is_empty(), "{report:?}");
        assert_eq!(report.discarded_bytes, 0);
        let got = spool.peek(100).unwrap();
        let mut want = expect.to_vec();
        want.push(new_seq);
        assert_eq!(seqs(&got), want);
        assert_eq!(got.last().unwrap().bytes, b"after-recovery");
    }

    #[tokio::test]
    async fn round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, report) = open(dir.path());
        assert_eq!(report, RecoveryReport::default());
        assert!(spool.peek(10).unwrap().is_empty());
        for i in 1..=5 {
            assert_eq!(put(&spool, &payload(i)).await, i);
        }
        let got = spool.peek(10).unwrap();
        assert_eq!(seqs(&got), vec![1, 2, 3, 4, 5]);
        for e in &got {
            assert_eq!(e.bytes, payload(e.seq));
        }
        assert_eq!(seqs(&spool.peek(2).unwrap()), vec![1, 2]);
        spool.ack(2).unwrap();
        assert_eq!(seqs(&spool.peek(10).unwrap()), vec![3, 4, 5]);
        // Empty payloads are fine too.
        let s = put(&spool, b"").await;
        assert_eq!(spool.peek(10).unwrap().last().unwrap().bytes, b"");
        assert_eq!(s, 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_peek_in_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(cfg(dir.path(), 1 << 30, 4096)).unwrap();
        let spool = Arc::new(spool);
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let spool = Arc::clone(&spool);
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..25u64 {
                    let body = format!("t{t}-i{i}").into_bytes();
                    let seq = spool.append(body.clone()).unwrap().await.unwrap();
                    got.push((seq, body));
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        let peeked = spool.peek(1000).unwrap();
        assert_eq!(peeked.len(), 400);
        let want: Vec<SpoolEntry> = all
            .into_iter()
            .map(|(seq, bytes)| SpoolEntry { seq, bytes })
            .collect();
        assert_eq!(peeked, want);
        assert_eq!(seqs(&peeked), (1..=400).collect::<Vec<_>>());
        assert!(segment_files(dir.path()).len() > 1, "should have rotated");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn order_is_call_order_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = open(dir.path());
        let spool = Arc::new(spool);
        // Futures are awaited only after all enqueues: seq must follow enqueue order
        // per thread and the payloads must match the returned seqs.
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let spool = Arc::clone(&spool);
                std::thread::spawn(move || {
                    (0..50u64)
                        .map(|i| {
                            let body = format!("{t}:{i}").into_bytes();
                            (body.clone(), spool.append(body).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut by_seq = Vec::new();
        for h in handles {
            let mut last = 0;
            for (body, fut) in h.join().unwrap() {
                let seq = fut.await.unwrap();
                assert!(seq > last);
                last = seq;
                by_seq.push(SpoolEntry { seq, bytes: body });
            }
        }
        by_seq.sort_by_key(|e| e.seq);
        assert_eq!(spool.peek(1000).unwrap(), by_seq);
    }

    #[tokio::test]
    async fn reopen_after_close_keeps_unacked_and_drops_acked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, _) = open(dir.path());
            for i in 1..=6 {
                put(&spool, &payload(i)).await;
            }
            spool.ack(3).unwrap();
            spool.close();
            spool.close(); // idempotent
            assert!(matches!(
                spool.append(b"x".to_vec()),
                Err(SpoolError::Closed)
            ));
        }
        let (spool, report) = open(dir.path());
        assert_eq!(report.records, 3);
        assert_eq!(report.bytes, (4..=6).map(record_len).sum::<u64>());
        assert!(report.corrupt_files.is_empty());
        let got = spool.peek(10).unwrap();
        assert_eq!(seqs(&got), vec![4, 5, 6]);
        assert_eq!(got[0].bytes, payload(4));
        assert_eq!(put(&spool, b"seven").await, 7);
        assert_eq!(spool.pending(), 4);
    }

    #[tokio::test]
    async fn seq_continues_past_cursor_when_everything_was_acked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, _) = open(dir.path());
            for i in 1..=4 {
                put(&spool, &payload(i)).await;
            }
            spool.ack(4).unwrap();
        }
        // The first reopen deletes the fully acked segment, so the second one
        // finds no records at all and only the cursor remembers seq 4.
        drop(open(dir.path()));
        assert!(segment_files(dir.path()).iter().all(|(_, len)| *len == 0));
        {
            let (spool, report) = open(dir.path());
            assert_eq!(report.records, 0);
            // Reusing seq 1..=4 would make these invisible after the next restart.
            assert_eq!(put(&spool, b"new").await, 5);
        }
        let (spool, _) = open(dir.path());
        assert_eq!(seqs(&spool.peek(10).unwrap()), vec![5]);
    }

    #[tokio::test]
    async fn ack_deletes_fully_acked_segments() {
        let dir = tempfile::tempdir().unwrap();
        // Each record is 20 + 19 = 39 bytes: two per 100-byte segment.
        let (spool, _) = Spool::open(cfg(dir.path(), 1 << 20, 100)).unwrap();
        for i in 1..=6 {
            put(&spool, &payload(i)).await;
        }
        let names = |d: &Path| -> Vec<String> {
            segment_files(d)
                .into_iter()
                .map(|(p, _)| p.file_name().unwrap().to_str().unwrap().to_string())
                .collect()
        };
        // The empty segment created at open is kept until something is acked.
        assert_eq!(
            names(dir.path()),
            vec![
                "00000000000000000001.seg",
                "00000000000000000003.seg",
                "00000000000000000005.seg"
            ]
        );
        spool.ack(1).unwrap();
        assert_eq!(names(dir.path()).len(), 3, "segment 1 still holds seq 2");
        spool.ack(3).unwrap();
        assert_eq!(
            names(dir.path()),
            vec!["00000000000000000003.seg", "00000000000000000005.seg"]
        );
        spool.ack(6).unwrap();
        // The active segment is never deleted, even when fully acked.
        assert_eq!(names(dir.path()), vec!["00000000000000000005.seg"]);
        assert_eq!(spool.used_bytes(), 0);
        assert_eq!(spool.pending(), 0);
        drop(spool);
        let (spool, report) = Spool::open(cfg(dir.path(), 1 << 20, 100)).unwrap();
        assert_eq!(report.records, 0);
        assert!(spool.peek(10).unwrap().is_empty());
        // Fully acked leftovers are removed at open; only the new active one remains.
        assert_eq!(names(dir.path()), vec!["00000000000000000007.seg"]);
    }

    #[tokio::test]
    async fn ack_beyond_durable_is_clamped_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = open(dir.path());
        for i in 1..=3 {
            put(&spool, &payload(i)).await;
        }
        spool.ack(100).unwrap();
        spool.ack(2).unwrap(); // going backwards is a no-op
        assert_eq!(put(&spool, b"four").await, 4);
        assert_eq!(seqs(&spool.peek(10).unwrap()), vec![4]);
        drop(spool);
        let (spool, _) = open(dir.path());
        assert_eq!(seqs(&spool.peek(10).unwrap()), vec![4]);
    }

    #[tokio::test]
    async fn torn_write_mid_payload() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_close(dir.path(), 5).await;
        let cut = record_offset(5) + HEADER_LEN + 3;
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        assert_recovers_to(dir.path(), &[1, 2, 3, 4], HEADER_LEN + 3).await;
        assert_eq!(fs::metadata(&seg).unwrap().len(), record_offset(5));
    }

    #[tokio::test]
    async fn torn_write_mid_header() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_close(dir.path(), 5).await;
        let cut = record_offset(5) + 7;
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        assert_recovers_to(dir.path(), &[1, 2, 3, 4], 7).await;
    }

    #[tokio::test]
    async fn torn_first_record_moves_whole_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_close(dir.path(), 1).await;
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert_recovers_to(dir.path(), &[], 10).await;
    }

    fn flip_byte(path: &Path, at: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at as usize] ^= 0x40;
        fs::write(path, bytes).unwrap();
    }

    #[tokio::test]
    async fn checksum_mismatch_in_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_close(dir.path(), 5).await;
        flip_byte(&seg, record_offset(5) + HEADER_LEN + 2);
        assert_recovers_to(dir.path(), &[1, 2, 3, 4], record_len(5)).await;
    }

    #[tokio::test]
    async fn corrupt_middle_record_keeps_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_close(dir.path(), 5).await;
        flip_byte(&seg, record_offset(3) + HEADER_LEN + 1);
        let tail = record_len(3) + record_len(4) + record_len(5);
        assert_recovers_to(dir.path(), &[1, 2], tail).await;
    }

    #[tokio::test]
    async fn corrupt_length_field_is_handled() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_and_close(dir.path(), 3).await;
        // Top byte of len: claims ~1 GiB, far past the end of the file.
        flip_byte(&seg, record_offset(2) + 7);
        assert_recovers_to(dir.path(), &[1], record_len(2) + record_len(3)).await;
    }

    #[tokio::test]
    async fn corruption_in_older_segment_keeps_later_segments() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, _) = Spool::open(cfg(dir.path(), 1 << 20, 100)).unwrap();
            for i in 1..=6 {
                put(&spool, &payload(i)).await;
            }
        }
        let first = segment_path(dir.path(), 1);
        flip_byte(&first, record_offset(2) + HEADER_LEN);
        let (spool, report) = Spool::open(cfg(dir.path(), 1 << 20, 100)).unwrap();
        assert_eq!(report.corrupt_files.len(), 1);
        assert_eq!(report.discarded_bytes, record_len(2));
        assert_eq!(seqs(&spool.peek(10).unwrap()), vec![1, 3, 4, 5, 6]);
        assert_eq!(put(&spool, b"seven").await, 7);
    }

    #[tokio::test]
    async fn empty_segments_and_missing_cursor() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 1), b"").unwrap();
        fs::write(segment_path(dir.path(), 9), b"").unwrap();
        fs::write(dir.path().join("unrelated.txt"), b"hello").unwrap();
        let (spool, report) = open(dir.path());
        assert_eq!(report, RecoveryReport::default());
        assert!(!segment_path(dir.path(), 9).exists());
        assert_eq!(put(&spool, b"one").await, 1);
        drop(spool);
        let seg = only_data_segment(dir.path());
        fs::remove_file(dir.path().join(CURSOR_FILE)).ok();
        let (spool, report) = open(dir.path());
        assert_eq!(report.records, 1);
        assert_eq!(spool.peek(10).unwrap()[0].bytes, b"one");
        assert!(seg.exists());
    }

    #[tokio::test]
    async fn corrupt_cursor_is_reported_and_means_nothing_acked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, _) = open(dir.path());
            for i in 1..=4 {
                put(&spool, &payload(i)).await;
            }
            spool.ack(2).unwrap();
        }
        flip_byte(&dir.path().join(CURSOR_FILE), 5);
        let (spool, report) = open(dir.path());
        assert_eq!(report.corrupt_files.len(), 1);
        assert!(report.corrupt_files[0]
            .to_str()
            .unwrap()
            .contains("ack.cursor.corrupt-"));
        assert_eq!(report.discarded_bytes, 0);
        assert_eq!(seqs(&spool.peek(10).unwrap()), vec![1, 2, 3, 4]);
        assert_eq!(put(&spool, b"five").await, 5);
        spool.ack(1).unwrap();
        drop(spool);
        let (spool, report) = open(dir.path());
        assert!(report.corrupt_files.is_empty());
        assert_eq!(seqs(&spool.peek(10).unwrap()), vec![2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn full_then_ack_frees_space() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![7u8; 80];
        let framed = HEADER_LEN + 80;
        let (spool, _) = Spool::open(cfg(dir.path(), framed * 3, 1 << 20)).unwrap();
        assert_eq!(spool.max_bytes(), framed * 3);
        for _ in 0..3 {
            spool.append(body.clone()).unwrap().await.unwrap();
        }
        match spool.append(body.clone()) {
            Err(SpoolError::Full { used, max }) => {
                assert_eq!(used, framed * 3);
                assert_eq!(max, framed * 3);
            }
            Err(e) => panic!("expected Full, got {e}"),
            Ok(_) => panic!("expected Full, got Ok"),
        }
        // A smaller entry that still does not fit is refused too.
        assert!(matches!(
            spool.append(vec![1]),
            Err(SpoolError::Full { .. })
        ));
        assert_eq!(spool.pending(), 3);
        spool.ack(1).unwrap();
        let seq = spool.append(body.clone()).unwrap().await.unwrap();
        assert_eq!(seq, 4);
        assert!(spool.append(vec![1]).is_err());
        assert_eq!(seqs(&spool.peek(10).unwrap()), vec![2, 3, 4]);
    }

    #[tokio::test]
    async fn pending_and_used_bytes_track_queued_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = open(dir.path());
        assert_eq!((spool.pending(), spool.used_bytes()), (0, 0));
        // Counted from the moment of enqueue, before the fsync.
        let a = spool.append(vec![0; 100]).unwrap();
        let b = spool.append(vec![0; 50]).unwrap();
        assert_eq!(spool.pending(), 2);
        assert_eq!(spool.used_bytes(), 2 * HEADER_LEN + 150);
        a.await.unwrap();
        b.await.unwrap();
        assert_eq!(spool.pending(), 2);
        assert_eq!(spool.used_bytes(), 2 * HEADER_LEN + 150);
        spool.ack(1).unwrap();
        assert_eq!(spool.pending(), 1);
        assert_eq!(spool.used_bytes(), HEADER_LEN + 50);
        drop(spool);
        let (spool, report) = open(dir.path());
        assert_eq!((report.records, report.bytes), (1, HEADER_LEN + 50));
        assert_eq!((spool.pending(), spool.used_bytes()), (1, HEADER_LEN + 50));
    }

    #[tokio::test]
    async fn close_flushes_queued_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = open(dir.path());
        let futs: Vec<_> = (1..=20)
            .map(|i| spool.append(payload(i)).unwrap())
            .collect();
        spool.close();
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.await.unwrap(), i as u64 + 1);
        }
        drop(spool);
        let (spool, report) = open(dir.path());
        assert_eq!(report.records, 20);
        assert_eq!(
            seqs(&spool.peek(100).unwrap()),
            (1..=20).collect::<Vec<_>>()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_for_entries_wakes_on_durable_append_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = open(dir.path());
        let spool = Arc::new(spool);
        let waiter = {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move {
                spool.wait_for_entries().await;
                spool.peek(10).unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        put(&spool, b"hello").await;
        let seen = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(seqs(&seen), vec![1]);

        // The append may have left a permit (spurious wake-ups are allowed);
        // consume it so the next wait really blocks.
        let _ = tokio::time::timeout(Duration::from_millis(100), spool.wait_for_entries()).await;
        let waiter = {
            let spool = Arc::clone(&spool);
            tokio::spawn(async move { spool.wait_for_entries().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        spool.close();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by close")
            .unwrap();
        // After close it never blocks.
        tokio::time::timeout(Duration::from_secs(1), spool.wait_for_entries())
            .await
            .expect("closed spool does not block");
    }

    #[test]
    fn open_fails_on_unusable_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            Spool::open(cfg(&file, 1 << 20, 1 << 20)),
            Err(SpoolError::Io(_))
        ));
    }

    #[test]
    fn garbage_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 0x1234_5678_u64;
        for (n, len) in [0usize, 1, 19, 20, 21, 64, 500].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            fs::write(segment_path(dir.path(), n as u64 * 10), &bytes).unwrap();
        }
        fs::write(dir.path().join(CURSOR_FILE), b"short").unwrap();
        let (spool, report) = open(dir.path());
        assert_eq!(report.records, 0);
        assert!(spool.peek(10).unwrap().is_empty());
    }

    /// `cargo test -- --ignored --nocapture throughput` prints appends/s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn throughput_64_concurrent_appenders_1kib() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let (spool, _) = Spool::open(cfg(dir.path(), 8 << 30, 64 << 20)).unwrap();
        let spool = Arc::new(spool);
        let run_for = Duration::from_secs(5);
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let spool = Arc::clone(&spool);
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while start.elapsed() < run_for {
                        spool.append(vec![0xAB; 1024]).unwrap().await.unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "spool throughput: {total} appends in {secs:.2}s = {:.0} appends/s (64 appenders, 1 KiB)",
            total as f64 / secs
        );
    }
}
