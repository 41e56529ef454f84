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
use super::TypeConfig;

/// Edits appended before the state is checkpointed again.
const EDITS_PER_CHECKPOINT: u64 = 1024;
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
    generation: u64,
    edits_since_checkpoint: u64,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

impl LogMemory {
    fn apply(&mut self, edit: LogEdit) {
        match edit {
            LogEdit::Append(entries) => {
                for entry in entries {
                    if let Some(last) = self.entries.keys().next_back() {
                        assert_eq!(entry.log_id.index, last + 1, "log entries are contiguous");
                    }
                    self.entries.insert(entry.log_id.index, entry);
                }
            }
            LogEdit::Truncate(index) => {
                self.entries.split_off(&index);
            }
            LogEdit::Purge(log_id) => {
                assert!(
                    self.last_purged <= Some(log_id),
                    "a purge never goes back ({:?} after {:?})",
                    log_id,
                    self.last_purged
                );
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
}

fn write_error(error: io::Error) -> StorageError<u64> {
    StorageIOError::write_logs(&error).into()
}

impl LogStore {
    /// Opens the log under `dir`, creating it empty if there is none.
    pub async fn open(worker: DiskWorker, dir: PathBuf) -> Result<LogStore, String> {
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
        })
    }

    /// Whether nothing was ever written: no vote and no entry (a replica to initialize).
    pub fn is_pristine(&self) -> bool {
        let memory = self.memory.lock().expect("raft log");
        memory.vote.is_none() && memory.entries.is_empty() && memory.last_purged.is_none()
    }

    /// Makes `edit` durable, then applies it; checkpoints when the edit log is long.
    async fn record(&self, edit: LogEdit) -> io::Result<()> {
        let generation = self.memory.lock().expect("raft log").generation;
        let (dir, logged) = (self.dir.clone(), edit.clone());
        self.worker
            .run(move |disk| async move {
                journal::append_edit(&disk, &dir, generation, &logged).await
            })
            .await?;
        let checkpoint = {
            let mut memory = self.memory.lock().expect("raft log");
            memory.apply(edit);
            memory.edits_since_checkpoint += 1;
            (memory.edits_since_checkpoint >= EDITS_PER_CHECKPOINT)
                .then(|| memory.checkpoint(generation + 1))
        };
        if let Some(state) = checkpoint {
            let dir = self.dir.clone();
            let next = state.generation;
            self.worker
                .run(move |disk| async move {
                    journal::store_checkpoint(&disk, &dir, CHECKPOINT_NAME, &state, next).await
                })
                .await?;
            let mut memory = self.memory.lock().expect("raft log");
            memory.generation = next;
            memory.edits_since_checkpoint = 0;
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
        self.record(LogEdit::Purge(log_id))
            .await
            .map_err(write_error)
    }
}
