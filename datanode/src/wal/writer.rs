//! The WAL on disk: segment files and group commit.
//!
//! One writer task per shard takes every append queued since its last commit, encodes
//! them as one commit, writes it with one `write_at` and makes it durable with one
//! `fdatasync`; appends that arrive while that sync is in flight ride the next commit.
//! An append completes only after its commit is durable.
//!
//! Segments are named by their first commit number (`00000000000000000042.wal`),
//! preallocated to `segment_bytes`, and written with O_DIRECT where the filesystem allows.
//! The WAL never appends to a segment it did not create in this run: recovery truncates a
//! torn tail, and writing starts in a fresh segment.
//!
//! A failed write or sync stops the WAL for good (fail-stop): after an `fdatasync` error
//! the kernel may have dropped the unsynced pages, so nothing after the last successful
//! sync can be trusted. The shard must be restarted and recover from what is durable.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use futures::channel::oneshot;
use metronome_core::data::RegionId;
use metronome_core::rt::disk::{os_error_code, AlignedBuf, Disk, File, OpenOptions};
use metronome_core::rt::{task, time};

use super::record::{
    encode_record, pad_to_block, RecordHeader, BLOCK_BYTES, HEADER_BYTES, PAYLOAD_BYTES_MAX,
};
use super::replay::{scan_segment, Corruption, SegmentEnd};

/// How the WAL lays out and batches its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Directory of the segments, relative to the disk root.
    pub dir: PathBuf,
    /// Bytes per segment file (a multiple of the block size).
    pub segment_bytes: u64,
    /// A commit takes queued records up to about this many bytes; the rest wait for the next.
    pub commit_bytes_max: usize,
    /// Appends queued (not yet committed) beyond this are refused as overloaded.
    pub queue_bytes_max: usize,
    /// Write segments with O_DIRECT (falls back to buffered where the filesystem refuses).
    pub direct_io: bool,
}

impl WalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            commit_bytes_max: 1024 * 1024,
            queue_bytes_max: 64 * 1024 * 1024,
            direct_io: true,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !self.segment_bytes.is_multiple_of(BLOCK_BYTES as u64)
            || self.segment_bytes < 4 * BLOCK_BYTES as u64
        {
            return Err(format!(
                "segment_bytes = {} must be a multiple of {BLOCK_BYTES} and at least 4 blocks",
                self.segment_bytes
            ));
        }
        if self.commit_bytes_max == 0 || self.queue_bytes_max < self.commit_bytes_max {
            return Err(
                "commit_bytes_max must be positive and at most queue_bytes_max".to_string(),
            );
        }
        // A commit of records up to `commit_bytes_max`, padded to a block, must fit a
        // fresh segment, or the writer would write past a segment's end.
        if self.commit_bytes_max as u64 + BLOCK_BYTES as u64 > self.segment_bytes {
            return Err(format!(
                "commit_bytes_max = {} must leave a block ({BLOCK_BYTES} bytes) of a \
                 segment_bytes = {} segment",
                self.commit_bytes_max, self.segment_bytes
            ));
        }
        Ok(())
    }

    /// The largest payload one record may carry in this configuration.
    pub fn payload_bytes_max(&self) -> usize {
        let fits_segment = self.segment_bytes as usize - HEADER_BYTES - BLOCK_BYTES;
        fits_segment.min(PAYLOAD_BYTES_MAX as usize)
    }
}

/// Why an append failed. Cloneable, because one failure answers every append of a commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    #[error(
        "the WAL stopped after an I/O error and accepts no writes until the shard restarts: {0}"
    )]
    Failed(String),
    #[error("the WAL queue is full ({queued_bytes} bytes waiting); retry later")]
    Overloaded { queued_bytes: usize },
    #[error("a WAL record of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("WAL I/O error: {0}")]
    Io(String),
}

impl From<io::Error> for WalError {
    fn from(error: io::Error) -> WalError {
        WalError::Io(error.to_string())
    }
}

/// What recovery found, for the shard to act on and to log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WalRecovery {
    pub segments: usize,
    pub records: u64,
    /// A torn tail that was truncated: (segment, offset).
    pub truncated: Option<(PathBuf, u64)>,
    /// Damage before the tail: (segment, what). Affected regions must be quarantined.
    pub corruptions: Vec<(PathBuf, Corruption)>,
}

/// Counters for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalStats {
    pub commits: u64,
    pub records: u64,
    pub bytes_written: u64,
    pub segments_created: u64,
    pub segments_deleted: u64,
    /// Time spent writing and syncing commits, in microseconds.
    pub commit_micros_total: u64,
}

struct Pending {
    region: RegionId,
    sequence: u64,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<(), WalError>>,
}

#[derive(Debug, Default)]
struct SegmentInfo {
    /// The highest sequence each region wrote into this segment.
    max_sequence: BTreeMap<RegionId, u64>,
}

struct Shared {
    disk: Disk,
    config: WalConfig,
    queue: RefCell<VecDeque<Pending>>,
    queued_bytes: Cell<usize>,
    wake: async_channel::Sender<()>,
    failed: RefCell<Option<String>>,
    /// Segments by first commit; the last one is being written.
    segments: RefCell<BTreeMap<u64, SegmentInfo>>,
    stats: Cell<WalStats>,
    /// Each region's last queued sequence in this run, to assert their order.
    last_sequences: RefCell<BTreeMap<RegionId, u64>>,
    /// The number the next commit gets: a record queued from now on is in it or a later
    /// one.
    next_commit: Cell<u64>,
}

/// A shard's WAL. Cheap to clone; all clones feed the same writer task.
#[derive(Clone)]
pub struct Wal {
    shared: Rc<Shared>,
}

fn segment_name(first_commit: u64) -> String {
    format!("{first_commit:020}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let number = name.strip_suffix(".wal")?;
    if number.len() != 20 {
        return None;
    }
    number.parse().ok().filter(|&commit| commit >= 1)
}

impl Wal {
    /// Recovers the WAL in `config.dir`, calling `on_record` for every intact record in
    /// commit order, then starts the writer task on the current shard.
    pub async fn open(
        disk: Disk,
        config: WalConfig,
        mut on_record: impl FnMut(&RecordHeader, &[u8]),
    ) -> Result<(Wal, WalRecovery), WalError> {
        config.validate().map_err(WalError::Io)?;
        disk.create_dir_all_synced(&config.dir).await?;

        let mut names: Vec<(u64, String)> = Vec::new();
        for name in disk.list_dir(&config.dir).await? {
            match parse_segment_name(&name) {
                Some(first_commit) => names.push((first_commit, name)),
                None => {
                    tracing::warn!(dir = %config.dir.display(), file = %name, "ignoring a file that is not a WAL segment")
                }
            }
        }
        names.sort();

        let mut recovery = WalRecovery::default();
        let mut segments = BTreeMap::new();
        let mut last_commit: Option<u64> = None;
        // (path, offset, last intact commit before it) of a torn tail; an error unless it
        // turns out to be the very end of the log.
        let mut torn: Option<(PathBuf, u64)> = None;
        // The blocks of the last intact commit: (segment, start, end, bytes).
        let mut last_commit_blocks: Option<(PathBuf, u64, Vec<u8>)> = None;
        for (first_commit, name) in &names {
            let path = config.dir.join(name);
            let file = disk.open(&path, OpenOptions::read()).await?;
            let bytes = file.read_at(file.len() as usize, 0).await?;
            let mut info = SegmentInfo::default();
            // (commit, offset of its first record, end of its last record) of the last commit.
            let mut last: Option<(u64, usize, usize)> = None;
            let scan = scan_segment(&bytes, *first_commit, |header, payload, offset| {
                let max = info.max_sequence.entry(header.region).or_insert(0);
                *max = (*max).max(header.sequence);
                recovery.records += 1;
                let end = offset as usize + HEADER_BYTES + payload.len();
                last = match last {
                    Some((commit, start, _)) if commit == header.commit => {
                        Some((commit, start, end))
                    }
                    _ => Some((header.commit, offset as usize, end)),
                };
                on_record(header, payload);
            });
            if let Some((_, start, end)) = last {
                // Only the commit's intact records, then zeros to the block boundary (its
                // padding): never bytes read beyond them, which may be a torn tail.
                let mut blocks = bytes[start..end].to_vec();
                pad_to_block(&mut blocks);
                last_commit_blocks = Some((path.clone(), start as u64, blocks));
            }
            recovery.segments += 1;
            if let Some((first, last)) = scan.commits {
                if let Some((torn_path, torn_offset)) = torn.take() {
                    // A later segment has intact commits: the earlier "torn tail" was damage.
                    recovery.corruptions.push((
                        torn_path,
                        Corruption {
                            offset: torn_offset,
                            region: None,
                        },
                    ));
                }
                if let Some(previous) = last_commit {
                    if first != previous + 1 {
                        recovery.corruptions.push((
                            path.clone(),
                            Corruption {
                                offset: 0,
                                region: None,
                            },
                        ));
                    }
                }
                last_commit = Some(last);
            }
            recovery
                .corruptions
                .extend(scan.corruptions.into_iter().map(|c| (path.clone(), c)));
            if let SegmentEnd::Torn { offset } = scan.end {
                torn = Some((path.clone(), offset));
            }
            segments.insert(*first_commit, info);
        }
        if let Some((path, offset)) = torn {
            // The last commit was being written when the process stopped; it was never
            // acknowledged. Cut it off so the segment ends cleanly from now on.
            let file = disk.open(&path, OpenOptions::write()).await?;
            file.set_len(offset).await?;
            file.sync_data().await?;
            tracing::warn!(segment = %path.display(), offset, "truncated a torn WAL tail");
            recovery.truncated = Some((path, offset));
        }
        if let Some((path, offset, blocks)) = last_commit_blocks {
            // Replay read the last commit, but a read proves only that it is in the page
            // cache: after a failed fdatasync the kernel keeps the pages readable while
            // the disk may never get them. The WAL stops at the first failed sync, so only
            // the last commit can be in that state; writing it again and syncing makes
            // what was replayed durable before anything is written after it.
            let file = disk.open(&path, OpenOptions::write()).await?;
            file.write_at(blocks, offset).await?;
            file.sync_data().await?;
        }
        for (path, corruption) in &recovery.corruptions {
            tracing::error!(segment = %path.display(), offset = corruption.offset, region = ?corruption.region, "WAL corruption before the tail");
        }

        let next_commit =
            last_commit.map_or_else(|| names.last().map_or(1, |(first, _)| *first), |c| c + 1);
        let (wake, woken) = async_channel::bounded(1);
        let shared = Rc::new(Shared {
            disk,
            config,
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            wake,
            failed: RefCell::new(None),
            segments: RefCell::new(segments),
            stats: Cell::new(WalStats::default()),
            last_sequences: RefCell::new(BTreeMap::new()),
            next_commit: Cell::new(next_commit),
        });
        let writer = Writer::start(shared.clone(), next_commit).await?;
        task::spawn_local(writer.run(woken));
        Ok((Wal { shared }, recovery))
    }

    /// The commit that a record queued now would be part of, or an earlier one: every
    /// record queued from now on is in a commit at or above it.
    pub fn next_commit(&self) -> u64 {
        self.shared.next_commit.get()
    }

    /// Forgets the order of `region`'s sequences: an install restarts them, perhaps
    /// below those queued before (which must all be done).
    pub fn restart_sequences(&self, region: RegionId) {
        self.shared.last_sequences.borrow_mut().remove(&region);
    }

    /// Appends a record and waits until it is durable.
    pub async fn append(
        &self,
        region: RegionId,
        sequence: u64,
        payload: Vec<u8>,
    ) -> Result<(), WalError> {
        let done = self.enqueue(region, sequence, payload)?;
        done.await
            .unwrap_or_else(|_| Err(WalError::Failed("the WAL writer stopped".to_string())))
    }

    /// Queues a record for the next commit and returns what will tell its outcome. Queueing
    /// in the caller's order is what orders records of one region in the log.
    pub fn enqueue(
        &self,
        region: RegionId,
        sequence: u64,
        payload: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<(), WalError>>, WalError> {
        let shared = &self.shared;
        if let Some(reason) = shared.failed.borrow().as_ref() {
            return Err(WalError::Failed(reason.clone()));
        }
        let max = shared.config.payload_bytes_max();
        if payload.len() > max {
            return Err(WalError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let queued_bytes = shared.queued_bytes.get();
        if queued_bytes + payload.len() > shared.config.queue_bytes_max {
            return Err(WalError::Overloaded { queued_bytes });
        }
        // A region's records reach the log in the order of their sequences: the engine
        // takes a sequence and queues its record in one synchronous step.
        let mut last = shared.last_sequences.borrow_mut();
        let previous = last.entry(region).or_insert(0);
        assert!(
            sequence > *previous,
            "region {region}: sequence {sequence} queued after {previous}"
        );
        *previous = sequence;
        drop(last);
        let (done, outcome) = oneshot::channel();
        shared
            .queued_bytes
            .set(queued_bytes + HEADER_BYTES + payload.len());
        shared.queue.borrow_mut().push_back(Pending {
            region,
            sequence,
            payload,
            done,
        });
        // A full wake channel already holds a wake-up; the writer drains the whole queue.
        let _ = shared.wake.try_send(());
        Ok(outcome)
    }

    pub fn stats(&self) -> WalStats {
        self.shared.stats.get()
    }

    /// Segments on disk, the current one included.
    pub fn segment_count(&self) -> usize {
        self.shared.segments.borrow().len()
    }

    /// The regions with records in the oldest segment (unless it is the current one),
    /// each with the highest sequence it wrote there: flushing them past that lets
    /// `purge` delete the segment.
    pub fn oldest_segment_regions(&self) -> Vec<(RegionId, u64)> {
        let segments = self.shared.segments.borrow();
        if segments.len() < 2 {
            return Vec::new();
        }
        segments
            .values()
            .next()
            .map(|info| {
                info.max_sequence
                    .iter()
                    .map(|(region, max)| (*region, *max))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Why the WAL stopped, if it did (it then refuses every append until reopened).
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.borrow().clone()
    }

    /// Deletes the oldest segments whose records are all at or below `flushed(region)`
    /// (their data lives in SSTs now), stopping at the first that is still needed and never
    /// touching the current one. Only a prefix of the log is ever deleted, one segment at a
    /// time with the directory synced after each, so that even a crash mid-purge leaves the
    /// remaining commits contiguous. Returns the segments deleted.
    pub async fn purge(&self, flushed: impl Fn(RegionId) -> u64) -> Result<usize, WalError> {
        let obsolete: Vec<u64> = {
            let segments = self.shared.segments.borrow();
            let current = segments.keys().next_back().copied();
            segments
                .iter()
                .take_while(|(first, info)| {
                    Some(**first) != current
                        && info
                            .max_sequence
                            .iter()
                            .all(|(region, max)| *max <= flushed(*region))
                })
                .map(|(first, _)| *first)
                .collect()
        };
        let dir = &self.shared.config.dir;
        for first in &obsolete {
            self.shared
                .disk
                .remove(dir.join(segment_name(*first)))
                .await?;
            self.shared.disk.sync_dir(dir).await?;
            self.shared.segments.borrow_mut().remove(first);
            let mut stats = self.shared.stats.get();
            stats.segments_deleted += 1;
            self.shared.stats.set(stats);
        }
        Ok(obsolete.len())
    }
}

/// The writer task's own state.
struct Writer {
    shared: Rc<Shared>,
    file: File,
    direct: bool,
    offset: u64,
    next_commit: u64,
}

impl Writer {
    async fn start(shared: Rc<Shared>, next_commit: u64) -> Result<Writer, WalError> {
        let (file, direct) = create_segment(&shared, next_commit).await?;
        Ok(Writer {
            shared,
            file,
            direct,
            offset: 0,
            next_commit,
        })
    }

    async fn run(mut self, woken: async_channel::Receiver<()>) {
        while woken.recv().await.is_ok() {
            loop {
                let batch = self.take_batch();
                if batch.is_empty() {
                    break;
                }
                let outcome = self.commit(&batch).await;
                if let Err(error) = &outcome {
                    let reason = error.to_string();
                    tracing::error!(%reason, "WAL commit failed; the WAL stops");
                    *self.shared.failed.borrow_mut() = Some(reason.clone());
                    for pending in self.shared.queue.borrow_mut().drain(..) {
                        let _ = pending.done.send(Err(WalError::Failed(reason.clone())));
                    }
                    self.shared.queued_bytes.set(0);
                }
                for pending in batch {
                    let _ = pending.done.send(outcome.clone());
                }
                if outcome.is_err() {
                    return;
                }
            }
        }
    }

    /// Takes queued records up to the commit size (always at least one).
    fn take_batch(&mut self) -> Vec<Pending> {
        let mut queue = self.shared.queue.borrow_mut();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some(next) = queue.front() {
            let len = HEADER_BYTES + next.payload.len();
            if !batch.is_empty() && bytes + len > self.shared.config.commit_bytes_max {
                break;
            }
            bytes += len;
            batch.push(queue.pop_front().expect("front exists"));
        }
        let queued = self.shared.queued_bytes.get();
        assert!(
            queued >= bytes,
            "the queue's byte count covers what it held"
        );
        self.shared.queued_bytes.set(queued - bytes);
        assert!(
            !batch.is_empty() || queue.is_empty(),
            "a batch takes at least one record"
        );
        batch
    }

    async fn commit(&mut self, batch: &[Pending]) -> Result<(), WalError> {
        let commit = self.next_commit;
        let mut bytes = Vec::with_capacity(
            batch
                .iter()
                .map(|p| HEADER_BYTES + p.payload.len())
                .sum::<usize>()
                + BLOCK_BYTES,
        );
        for pending in batch {
            encode_record(
                &mut bytes,
                pending.region,
                pending.sequence,
                commit,
                &pending.payload,
            );
        }
        pad_to_block(&mut bytes);
        assert!(
            bytes.len().is_multiple_of(BLOCK_BYTES),
            "a commit is whole blocks"
        );
        assert!(
            self.offset.is_multiple_of(BLOCK_BYTES as u64),
            "a commit starts at a block"
        );
        if self.offset + bytes.len() as u64 > self.shared.config.segment_bytes {
            let (file, direct) = create_segment(&self.shared, commit).await?;
            self.file = file;
            self.direct = direct;
            self.offset = 0;
        }
        let len = bytes.len() as u64;
        assert!(
            self.offset + len <= self.shared.config.segment_bytes,
            "commit {commit} of {len} bytes fits its segment (validate bounds a commit)"
        );
        let started = time::now();
        if self.direct {
            self.file
                .write_at(AlignedBuf::padded_copy(&bytes), self.offset)
                .await?;
        } else {
            self.file.write_at(bytes, self.offset).await?;
        }
        // Rare but legal: a sync that stalls (a busy disk), so that whatever else the
        // datanode does meanwhile — shipping to followers, say — meets a power cut between
        // the write and its sync.
        if metronome_core::buggify!(0.01) {
            let stall_ms = metronome_core::rt::rand::gen_range(20..1000);
            time::sleep(std::time::Duration::from_millis(stall_ms)).await;
        }
        self.file.sync_data().await?;

        self.offset += len;
        self.next_commit += 1;
        self.shared.next_commit.set(self.next_commit);
        let mut segments = self.shared.segments.borrow_mut();
        let info = segments
            .values_mut()
            .next_back()
            .expect("the current segment is registered");
        for pending in batch {
            let max = info.max_sequence.entry(pending.region).or_insert(0);
            *max = (*max).max(pending.sequence);
        }
        let mut stats = self.shared.stats.get();
        stats.commits += 1;
        stats.records += batch.len() as u64;
        stats.bytes_written += len;
        stats.commit_micros_total += metronome_core::rt::time::elapsed(started).as_micros() as u64;
        self.shared.stats.set(stats);
        Ok(())
    }
}

/// Creates, preallocates and durably names a new segment starting at `first_commit`.
async fn create_segment(shared: &Shared, first_commit: u64) -> Result<(File, bool), WalError> {
    let config = &shared.config;
    let path = config.dir.join(segment_name(first_commit));
    let options = OpenOptions::create().with_truncate(true);
    let (file, direct) = if config.direct_io {
        match shared.disk.open(&path, options.with_direct(true)).await {
            Ok(file) => (file, true),
            // EINVAL is how open(O_DIRECT) says the filesystem has no direct I/O.
            Err(error) if os_error_code(&error) == Some(libc::EINVAL) => {
                tracing::warn!(segment = %path.display(), "O_DIRECT unsupported here; the WAL writes through the page cache");
                (shared.disk.open(&path, options).await?, false)
            }
            Err(error) => return Err(error.into()),
        }
    } else {
        (shared.disk.open(&path, options).await?, false)
    };
    file.set_len(config.segment_bytes).await?;
    file.sync_data().await?;
    shared.disk.sync_dir(&config.dir).await?;
    shared
        .segments
        .borrow_mut()
        .insert(first_commit, SegmentInfo::default());
    let mut stats = shared.stats.get();
    stats.segments_created += 1;
    shared.stats.set(stats);
    Ok((file, direct))
}
