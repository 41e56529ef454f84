//! The raft log and vote on disk: openraft's `RaftLogStorage`, as a
//! [`metronome_core::journal`] state machine of its own.
//!
//! The state is the vote, the last committed and last purged log ids, and the entries
//! after the last purged one; it lives in memory and each change to it is an edit appended
//! to the journal and synced before openraft hears it is done (`append` calls back only
//! after the sync). Every [`EDITS_PER_CHECKPOINT`] edits the whole state is checkpointed,
//! which drops the edits behind it: the log stays as small as the entries openraft keeps
//! between snapshots.
//!
//! `committed` is persisted too: a replica that restarts re-applies every committed entry
//! instead of showing an older catalog until the next commit (openraft #1246, #1511).
//!
//! A purge never passes the last snapshot that is durable ([`SnapshotWatermark`]): on a
//! follower that installs a snapshot, openraft asks for the purge before the state
//! machine has written the snapshot, and a power loss between the two would leave a
//! replica whose log and snapshot leave a gap it can never restart across. A purge
//! beyond the watermark is held back (the entries kept are harmless) and written once an
//! append needs it: an append that leaves a gap after the entries kept waits until the
//! snapshot covering the gap is durable and records the held purge first, so the disk
//! never holds a log with a hole that no snapshot covers.
//!
//! An edit is checked before it is written (entries contiguous, purges forward): one that
//! would break the log is an error openraft stops on, never a record that makes every
//! later start fail. A failed write or checkpoint poisons the store: its memory may no
//! longer match its disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use metronome_core::journal::{self, JournalLimits};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use super::worker::DiskWorker;
use super::{RaftTuning, TypeConfig};

/// The last log id covered by a snapshot that is on disk, shared by the state machine
/// (which raises it once a snapshot is synced) and the log (which purges no further).
pub type SnapshotWatermark = std::sync::Arc<super::watched::Watched<Option<LogId<u64>>>>;

/// How long an append that follows a snapshot's install waits for the snapshot to be
/// durable before it fails (and openraft stops the replica).
const SNAPSHOT_DURABLE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);

const LIMITS: JournalLimits = JournalLimits {
    checkpoint_bytes_max: 256 * 1024 * 1024,
    edits_bytes_max: 256 * 1024 * 1024,
};
const CHECKPOINT_NAME: &str = "log";

/// The log's whole state, as a checkpoint stores it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LogCheckpoint {
    /// Which edit log follows this checkpoint.
    generation: u64,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    entries: Vec<Entry<TypeConfig>>,
}

/// One change to the log's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum LogEdit {
    Append(Vec<Entry<TypeConfig>>),
    /// Removes the entries from this index on.
    Truncate(u64),
    /// Removes the entries up to and including this log id.
    Purge(LogId<u64>),
    Vote(Vote<u64>),
    Committed(Option<LogId<u64>>),
}

#[derive(Debug, Default)]
struct LogMemory {
    /// A write failed: the store refuses everything after it.
    failed: bool,
    /// A purge openraft asked for beyond the durable snapshot, not written yet.
    held_purge: Option<LogId<u64>>,
    generation: u64,
    edits_since_checkpoint: u64,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

impl LogMemory {
    /// Whether `edit` keeps the log well formed; checked before it is written.
    fn check(&self, edit: &LogEdit) -> Result<(), String> {
        match edit {
            LogEdit::Append(entries) => {
                let mut expected = self
                    .entries
                    .keys()
                    .next_back()
                    .map(|last| last + 1)
                    .or(self.last_purged.map(|purged| purged.index + 1));
                for entry in entries {
                    if expected.is_some_and(|expected| entry.log_id.index != expected) {
                        return Err(format!(
                            "appending entry {} where entry {expected:?} comes next",
                            entry.log_id
                        ));
                    }
                    expected = Some(entry.log_id.index + 1);
                }
            }
            LogEdit::Purge(log_id) if self.last_purged > Some(*log_id) => {
                return Err(format!(
                    "purging to {log_id} after purging to {:?}",
                    self.last_purged
                ));
            }
            LogEdit::Truncate(index)
                if self
                    .last_purged
                    .is_some_and(|purged| *index <= purged.index) =>
            {
                return Err(format!(
                    "truncating from {index}, at or below the purged {:?}",
                    self.last_purged
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn apply(&mut self, edit: LogEdit) {
        match edit {
            LogEdit::Append(entries) => {
                for entry in entries {
                    if let Some(last) = self.entries.keys().next_back() {
                        assert_eq!(entry.log_id.index, last + 1, "checked before writing");
                    }
                    self.entries.insert(entry.log_id.index, entry);
                }
            }
            LogEdit::Truncate(index) => {
                self.entries.split_off(&index);
            }
            LogEdit::Purge(log_id) => {
                assert!(self.last_purged <= Some(log_id), "checked before writing");
                self.last_purged = Some(log_id);
                self.entries = self.entries.split_off(&(log_id.index + 1));
            }
            LogEdit::Vote(vote) => self.vote = Some(vote),
            LogEdit::Committed(committed) => self.committed = committed,
        }
    }

    fn checkpoint(&self, generation: u64) -> LogCheckpoint {
        LogCheckpoint {
            generation,
            vote: self.vote,
            committed: self.committed,
            last_purged: self.last_purged,
            entries: self.entries.values().cloned().collect(),
        }
    }
}

/// The raft log; clones share it (the reader openraft's replication uses is a clone).
#[derive(Clone)]
pub struct LogStore {
    memory: Arc<Mutex<LogMemory>>,
    worker: DiskWorker,
    dir: PathBuf,
    snapshot: SnapshotWatermark,
    edits_per_checkpoint: u64,
}

fn write_error(error: io::Error) -> StorageError<u64> {
    StorageIOError::write_logs(&error).into()
}

impl LogStore {
    /// Opens the log under `dir`, creating it empty if there is none.
    pub async fn open(
        worker: DiskWorker,
        dir: PathBuf,
        snapshot: SnapshotWatermark,
        tuning: &RaftTuning,
    ) -> Result<LogStore, String> {
        let path = dir.join(CHECKPOINT_NAME);
        let loaded = worker
            .run(move |disk| async move {
                journal::load::<LogCheckpoint, LogEdit>(&disk, &path, LIMITS, |checkpoint| {
                    checkpoint.generation
                })
                .await
                .map_err(io::Error::other)
            })
            .await
            .map_err(|error| format!("cannot read the raft log in {}: {error}", dir.display()))?;
        let mut memory = LogMemory::default();
        match loaded {
            Some((checkpoint, edits)) => {
                memory.generation = checkpoint.generation;
                memory.vote = checkpoint.vote;
                memory.committed = checkpoint.committed;
                memory.last_purged = checkpoint.last_purged;
                memory.apply(LogEdit::Append(checkpoint.entries));
                memory.edits_since_checkpoint = edits.len() as u64;
                for edit in edits {
                    memory.apply(edit);
                }
            }
            None => {
                let (state, target) = (memory.checkpoint(0), dir.clone());
                worker
                    .run(move |disk| async move {
                        journal::store_checkpoint(&disk, &target, CHECKPOINT_NAME, &state, 0).await
                    })
                    .await
                    .map_err(|error| {
                        format!("cannot create the raft log in {}: {error}", dir.display())
                    })?;
            }
        }
        Ok(LogStore {
            memory: Arc::new(Mutex::new(memory)),
            worker,
            dir,
            snapshot,
            edits_per_checkpoint: tuning.edits_per_checkpoint,
        })
    }

    /// Whether nothing was ever written: no vote and no entry (a replica to initialize).
    pub fn is_pristine(&self) -> bool {
        let memory = self.memory.lock().expect("raft log");
        memory.vote.is_none() && memory.entries.is_empty() && memory.last_purged.is_none()
    }

    /// Makes `edit` durable, then applies it; checkpoints when the edit log is long.
    async fn record(&self, edit: LogEdit) -> io::Result<()> {
        let generation = {
            let memory = self.memory.lock().expect("raft log");
            if memory.failed {
                return Err(io::Error::other(
                    "the raft log refuses writes after an earlier write failed",
                ));
            }
            memory.check(&edit).map_err(io::Error::other)?;
            memory.generation
        };
        let (dir, logged) = (self.dir.clone(), edit.clone());
        let written =
            self.worker
                .run(move |disk| async move {
                    journal::append_edit(&disk, &dir, generation, &logged).await
                })
                .await;
        let checkpoint = {
            let mut memory = self.memory.lock().expect("raft log");
            if let Err(error) = written {
                memory.failed = true;
                return Err(error);
            }
            memory.apply(edit);
            memory.edits_since_checkpoint += 1;
            (memory.edits_since_checkpoint >= self.edits_per_checkpoint)
                .then(|| memory.checkpoint(generation + 1))
        };
        if let Some(state) = checkpoint {
            let dir = self.dir.clone();
            let next = state.generation;
            let stored = self
                .worker
                .run(move |disk| async move {
                    journal::store_checkpoint(&disk, &dir, CHECKPOINT_NAME, &state, next).await
                })
                .await;
            let mut memory = self.memory.lock().expect("raft log");
            match stored {
                Ok(()) => {
                    memory.generation = next;
                    memory.edits_since_checkpoint = 0;
                }
                // The checkpoint of `next` may or may not be the one on disk now, so
                // neither edit log is safe to append to.
                Err(error) => {
                    memory.failed = true;
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let memory = self.memory.lock().expect("raft log");
        Ok(memory
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let memory = self.memory.lock().expect("raft log");
        let last = memory
            .entries
            .values()
            .next_back()
            .map(|entry| entry.log_id);
        Ok(LogState {
            last_purged_log_id: memory.last_purged,
            last_log_id: last.or(memory.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.record(LogEdit::Vote(*vote))
            .await
            .map_err(|error| StorageIOError::write_vote(&error).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.memory.lock().expect("raft log").vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        self.record(LogEdit::Committed(committed))
            .await
            .map_err(write_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.memory.lock().expect("raft log").committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // After an installed snapshot, the entries follow the snapshot, not the log kept:
        // the held purge (to the snapshot) goes first, once the snapshot is on disk.
        let (next, held) = {
            let memory = self.memory.lock().expect("raft log");
            let next = memory
                .entries
                .keys()
                .next_back()
                .map(|last| last + 1)
                .or(memory.last_purged.map(|purged| purged.index + 1));
            (next, memory.held_purge)
        };
        let first = entries[0].log_id.index;
        if let (Some(next), Some(held)) = (next, held) {
            if first > next && held.index + 1 == first {
                let durable = metronome_core::rt::time::timeout(
                    SNAPSHOT_DURABLE_WAIT_MAX,
                    self.snapshot.reached(|durable| durable >= Some(held)),
                )
                .await
                .is_ok();
                if !durable {
                    let error = io::Error::other(format!(
                        "entry {first} follows a snapshot to {held} that did not reach the disk"
                    ));
                    callback.log_io_completed(Err(io::Error::other(error.to_string())));
                    return Err(write_error(error));
                }
                if let Err(error) = self.record(LogEdit::Purge(held)).await {
                    callback.log_io_completed(Err(io::Error::other(error.to_string())));
                    return Err(write_error(error));
                }
            }
        }
        // The callback is openraft's signal that the entries are durable: only after the
        // sync, and with the error if there was one.
        match self.record(LogEdit::Append(entries)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let kind = error.kind();
                let message = error.to_string();
                callback.log_io_completed(Err(io::Error::new(kind, message)));
                Err(write_error(error))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.record(LogEdit::Truncate(log_id.index))
            .await
            .map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let durable = self.snapshot.get();
        let upto = {
            let mut memory = self.memory.lock().expect("raft log");
            if durable < Some(log_id) {
                memory.held_purge = memory.held_purge.max(Some(log_id));
            }
            let upto = durable.min(Some(log_id));
            match upto {
                Some(upto) if memory.last_purged < Some(upto) => upto,
                _ => return Ok(()),
            }
        };
        self.record(LogEdit::Purge(upto)).await.map_err(write_error)
    }
}
