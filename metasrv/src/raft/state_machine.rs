//! The catalog as openraft's state machine: every replica applies the same committed
//! commands in the same order to the same [`Catalog`], so every replica holds the same
//! catalog at each log index.
//!
//! Applying is in memory; what makes the state durable is the raft log (committed entries
//! are re-applied on restart) and the snapshot, a checkpoint of the whole state. Snapshots
//! on disk only move forward (a build of an older state that finishes after an install
//! of a newer one is not written), and each one written raises the watermark the raft
//! log purges no further than. A replica opens at its snapshot.
//!
//! A command the catalog refuses (say, two frontends create the same table at once and the
//! second is committed after the first) changes nothing, on every replica alike, and its
//! reply says why.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use metronome_catalog::{Catalog, Command};
use metronome_core::journal::{self, JournalLimits};
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::log_store::SnapshotWatermark;
use super::watched::Watched;
use super::worker::DiskWorker;
use super::{Applied, TypeConfig};

const LIMITS: JournalLimits = JournalLimits {
    checkpoint_bytes_max: 256 * 1024 * 1024,
    edits_bytes_max: 64 * 1024 * 1024,
};
const SNAPSHOT_NAME: &str = "snapshot";
/// The single-replica catalog store of earlier versions (`meta/catalog` and its edits):
/// a single-voter replica (standalone's) with no snapshot starts from it, so a standalone
/// data directory keeps its catalog across the upgrade. A replica of several refuses to
/// start on one: each replica would start from its own catalog, and they would diverge.
const LEGACY_CATALOG_NAME: &str = "catalog";

/// What the state machine holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaState {
    pub catalog: Arc<Catalog>,
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
}

/// A snapshot as it is stored: its identity and the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, BasicNode>,
    state: MetaState,
}

/// Whether a catalog of an earlier version may be the starting state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    /// The replica is the only voter: it may start from it.
    Import,
    /// The replica is one of several: finding one is an error.
    Refuse,
}

/// The state machine; clones share it (the snapshot builder is a clone).
#[derive(Clone)]
pub struct StateMachine {
    state: Arc<Mutex<MetaState>>,
    worker: DiskWorker,
    dir: PathBuf,
    snapshots_built: Arc<std::sync::atomic::AtomicU64>,
    /// The last log id of the snapshot on disk.
    durable: SnapshotWatermark,
    /// The catalog's version as applied, for those who wait for it to change.
    version: Arc<CatalogVersion>,
}

/// The catalog's version as applied, which frontends' watches wait on.
pub type CatalogVersion = Watched<u64>;

impl StateMachine {
    /// Opens the state machine at the snapshot under `dir`; with none, at the legacy
    /// catalog under `legacy_dir` if there is one, else empty.
    pub async fn open(
        worker: DiskWorker,
        dir: PathBuf,
        legacy_dir: PathBuf,
        legacy_policy: Legacy,
    ) -> Result<StateMachine, String> {
        let path = dir.join(SNAPSHOT_NAME);
        let legacy = legacy_dir.join(LEGACY_CATALOG_NAME);
        let state = worker
            .run(move |disk| async move {
                let snapshot = journal::load::<SnapshotFile, ()>(&disk, &path, LIMITS, |_| 0).await;
                if let Some((file, _)) = snapshot.map_err(io::Error::other)? {
                    return Ok(file.state);
                }
                if legacy_policy == Legacy::Refuse
                    && disk
                        .open(&legacy, metronome_core::rt::disk::OpenOptions::read())
                        .await
                        .is_ok()
                {
                    return Err(io::Error::other(format!(
                        "{} holds the single-replica catalog of an earlier version; start \
                         this data directory as a single replica (standalone, or metasrv \
                         without --peers) to carry it over, or give the replica an empty \
                         directory",
                        legacy.display()
                    )));
                }
                let loaded =
                    journal::load::<Catalog, Command>(&disk, &legacy, LIMITS, |c| c.version)
                        .await
                        .map_err(io::Error::other)?;
                let mut state = MetaState::default();
                if let Some((mut catalog, commands)) = loaded {
                    for command in &commands {
                        catalog.apply(command).map_err(|error| {
                            io::Error::other(format!(
                                "legacy catalog edit in {} no longer applies: {error}",
                                legacy.display()
                            ))
                        })?;
                    }
                    tracing::info!(
                        version = catalog.version,
                        "starting from the single-replica catalog of an earlier version"
                    );
                    state.catalog = Arc::new(catalog);
                }
                Ok(state)
            })
            .await
            .map_err(|error| {
                format!(
                    "cannot open the metasrv's state in {}: {error}",
                    dir.display()
                )
            })?;
        // With no snapshot on disk (a new replica, or one started from the legacy
        // catalog), nothing may be purged yet.
        let has_snapshot = dir.join(SNAPSHOT_NAME);
        let found = worker
            .run(move |disk| async move {
                Ok(disk
                    .open(&has_snapshot, metronome_core::rt::disk::OpenOptions::read())
                    .await
                    .is_ok())
            })
            .await
            .unwrap_or(false);
        let durable = Arc::new(Watched::new(if found { state.last_applied } else { None }));
        let version = Arc::new(CatalogVersion::new(state.catalog.version));
        Ok(StateMachine {
            state: Arc::new(Mutex::new(state)),
            worker,
            dir,
            snapshots_built: Arc::default(),
            durable,
            version,
        })
    }

    /// The watermark the raft log purges no further than.
    pub fn snapshot_watermark(&self) -> SnapshotWatermark {
        self.durable.clone()
    }

    /// The catalog's version as applied, changing as entries apply.
    pub fn catalog_version(&self) -> Arc<CatalogVersion> {
        self.version.clone()
    }

    /// The catalog as of the last applied entry.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.state.lock().expect("meta state").catalog.clone()
    }

    /// Writes `file` as the snapshot unless the one on disk is as new; raises the
    /// watermark. Jobs on the disk thread run one at a time, so the check and the write
    /// are one step.
    async fn store(&self, file: SnapshotFile) -> io::Result<()> {
        // Rare but legal: a snapshot slow to reach the disk, while the log is asked to
        // purge what it covers (the purge must wait for it).
        if metronome_core::buggify!(0.25) {
            metronome_core::rt::time::sleep(std::time::Duration::from_millis(
                metronome_core::rt::rand::gen_range(50..1500),
            ))
            .await;
        }
        let dir = self.dir.clone();
        let durable = self.durable.clone();
        self.worker
            .run(move |disk| async move {
                let newest = durable.get();
                if newest.is_some() && file.meta.last_log_id <= newest {
                    return Ok(());
                }
                journal::store_checkpoint(&disk, &dir, SNAPSHOT_NAME, &file, 0).await?;
                durable.set(file.meta.last_log_id);
                Ok(())
            })
            .await
    }
}

fn snapshot_error(
    meta: Option<&SnapshotMeta<u64, BasicNode>>,
    error: impl ToString,
) -> StorageError<u64> {
    let error = io::Error::other(error.to_string());
    StorageIOError::write_snapshot(meta.map(SnapshotMeta::signature), &error).into()
}

/// Applies one command to `catalog`; the reply says what it did.
pub fn apply_command(catalog: &mut Arc<Catalog>, command: &Command) -> Applied {
    if catalog.is_noop(command) {
        return Applied {
            version: catalog.version,
            applied: false,
            refused: None,
        };
    }
    let mut next = Catalog::clone(catalog);
    match next.apply(command) {
        Ok(()) => {
            *catalog = Arc::new(next);
            Applied {
                version: catalog.version,
                applied: true,
                refused: None,
            }
        }
        Err(error) => Applied {
            version: catalog.version,
            applied: false,
            refused: Some(error.to_string()),
        },
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let state = self.state.lock().expect("meta state").clone();
        let built = self
            .snapshots_built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match state.last_applied {
            Some(log_id) => format!("{}-{}-{built}", log_id.leader_id, log_id.index),
            None => format!("none-{built}"),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        let bytes = journal::encode_checkpoint(&state);
        // Durable before openraft learns of it: it purges the log up to this snapshot.
        self.store(SnapshotFile {
            meta: meta.clone(),
            state,
        })
        .await
        .map_err(|error| snapshot_error(Some(&meta), error))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let state = self.state.lock().expect("meta state");
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.state.lock().expect("meta state");
        let mut replies = Vec::new();
        for entry in entries {
            assert!(
                state.last_applied < Some(entry.log_id),
                "entries apply in log order"
            );
            state.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Applied::unchanged(&state.catalog),
                EntryPayload::Normal(command) => apply_command(&mut state.catalog, &command),
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Applied::unchanged(&state.catalog)
                }
            };
            replies.push(reply);
        }
        self.version.set(state.catalog.version);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let state: MetaState = journal::decode_checkpoint(snapshot.get_ref())
            .map_err(|error| snapshot_error(Some(meta), format!("a received snapshot: {error}")))?;
        if state.last_applied != meta.last_log_id {
            return Err(snapshot_error(
                Some(meta),
                format!(
                    "a received snapshot holds the state at {:?}, its meta says {:?}",
                    state.last_applied, meta.last_log_id
                ),
            ));
        }
        self.store(SnapshotFile {
            meta: meta.clone(),
            state: state.clone(),
        })
        .await
        .map_err(|error| snapshot_error(Some(meta), error))?;
        let version = state.catalog.version;
        *self.state.lock().expect("meta state") = state;
        self.version.set(version);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let path = self.dir.join(SNAPSHOT_NAME);
        let loaded = self
            .worker
            .run(move |disk| async move {
                journal::load::<SnapshotFile, ()>(&disk, &path, LIMITS, |_| 0)
                    .await
                    .map_err(io::Error::other)
            })
            .await
            .map_err(|error| StorageError::from(StorageIOError::read_snapshot(None, &error)))?;
        Ok(loaded.map(|(file, _)| Snapshot {
            snapshot: Box::new(Cursor::new(journal::encode_checkpoint(&file.state))),
            meta: file.meta,
        }))
    }
}

/// The directory a replica's snapshot lives in, under its metasrv directory.
pub fn snapshot_dir(meta_dir: &Path) -> PathBuf {
    meta_dir.join("raft-snapshot")
}
