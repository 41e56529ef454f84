//! One shard's region engine: the regions it owns, its WAL, its memory budget.
//!
//! A write is validated, appended to the WAL (its sequence taken and its record queued in
//! one synchronous step, so a region's records reach the log in sequence order), awaited
//! until durable, applied to the memtable, and only then acknowledged.
//!
//! Recovery loads every region's manifest, then replays the WAL into the memtables.
//! Damage quarantines regions instead of stopping the shard: a region whose manifest is
//! unreadable, or whose WAL records were corrupted before the tail, refuses reads and
//! writes with an error that names the file and offset, and the shard serves the rest.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use metronome_core::data::{
    FieldColumn, MatchOp, RegionId, RegionSchema, Row, ScanRequest, SeriesRows, TagMatcher,
    TimeUnit, Value, TS_END,
};
use metronome_core::error::ErrorKind;
use metronome_core::re2;
use metronome_core::rt::disk::Disk;
use metronome_core::rt::object::ObjectStore;
use regex::Regex;

use crate::manifest::{
    sst_dir, sst_key, Edit, LoadError, ManifestStore, RegionManifest, EDITS_PER_CHECKPOINT,
};
use crate::memtable::{Memtable, SeriesKey};
use crate::merge::{merge_series, Merge, SequencedSeries};
use crate::scan::{Run, ScanStream};
use crate::sst::{self, SstMeta};
use crate::sst_cache::SstCache;
use crate::wal::{Wal, WalConfig, WalError, WalRecovery};
use metronome_core::write_batch::{BatchFault, WriteBatch};
use metronome_wire::write_batch;
use metronome_wire::ShardStats;

mod compaction;
mod config;
mod error;
mod flush;
mod follower_read;
mod install;
mod lifecycle;
mod read;
mod recovery;
mod region;
pub mod replica;

pub use config::{EngineConfig, SstStore};
use error::corrupt_sst;
pub use error::EngineError;
pub use install::{install_batches, Piece};
use read::*;
use recovery::*;
use region::*;

/// Rows a flush or compaction encodes between two yields to the shard: one chunk's
/// encoding (a few milliseconds) is the longest pause it imposes on the shard's writes.
const ENCODE_CHUNK_ROWS: usize = 16 * 1024;

/// `Region::checkpoint_version` after a failed edit append: the log must not be
/// appended to again.
const LOG_ABANDONED: u64 = u64::MAX;

/// How long a close waits for a region's writes in flight and flushes to finish.
const CLOSE_DRAIN_MS_MAX: u64 = 30_000;

/// What recovery did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineRecovery {
    pub regions: usize,
    pub rows_replayed: u64,
    pub quarantined: Vec<(RegionId, String)>,
    pub wal: WalRecovery,
}

pub struct ShardEngine {
    store: ObjectStore,
    manifests: ManifestStore,
    root: PathBuf,
    config: EngineConfig,
    wal: Wal,
    regions: RefCell<BTreeMap<RegionId, Region>>,
    memory_bytes: Cell<usize>,
    /// Serializes manifest writes: each stores the current state with its change, so no
    /// two writes can interleave and lose one another's update.
    manifest_lock: futures::lock::Mutex<()>,
    flushes_running: Cell<usize>,
    /// The last [`Region::incarnation`] handed out (recovered regions have 0).
    incarnations: Cell<u64>,
    flushes_done: Cell<u64>,
    compactions_done: Cell<u64>,
    sst_cache: RefCell<SstCache>,
    /// Set when the shard replaces this engine: from then on it changes nothing on disk,
    /// so it cannot race the engine that replaces it.
    stopped: Cell<bool>,
    /// Where a leader's writes go to their followers (a cluster datanode's); none in
    /// standalone and in tests of the engine alone.
    shipping: RefCell<replica::Shipping>,
    /// Learners' installs under way, by region.
    installs: RefCell<BTreeMap<RegionId, install::Staging>>,
}

fn parse_region_dir(name: &str) -> Option<RegionId> {
    let (table, number) = name.split_once('_')?;
    Some(RegionId::new(table.parse().ok()?, number.parse().ok()?))
}

impl ShardEngine {
    /// Recovers the shard rooted at `root` (relative to the disk root).
    pub async fn open(
        disk: Disk,
        root: impl Into<PathBuf>,
        config: EngineConfig,
    ) -> Result<(Rc<ShardEngine>, EngineRecovery), EngineError> {
        let root = root.into();
        let regions_dir = root.join("regions");
        disk.create_dir_all_synced(&regions_dir).await?;
        let store = match &config.sst_store {
            SstStore::Local => ObjectStore::local(disk.clone(), ""),
            SstStore::Sim(sim) => ObjectStore::sim(sim.clone()),
            #[cfg(not(madsim))]
            SstStore::S3(s3) => {
                let store = ObjectStore::s3(s3.clone())?;
                store.ensure_bucket().await?;
                store
                    .with_read_cache(
                        disk.clone(),
                        root.join("object-cache"),
                        config.object_cache_bytes,
                    )
                    .await?
            }
        };
        // Manifests live where the SSTs they name live.
        let manifests = match &config.sst_store {
            SstStore::Local => ManifestStore::Disk(disk.clone()),
            _ => ManifestStore::Object(store.clone()),
        };
        let mut recovery = EngineRecovery::default();
        let mut regions = load_regions(&manifests, &root).await?;
        let quarantined_at_load: BTreeSet<RegionId> = regions
            .iter()
            .filter(|(_, region)| matches!(region.state(), RegionState::Quarantined(_)))
            .map(|(id, _)| *id)
            .collect();
        let mut wal_config = config.wal.clone();
        wal_config.dir = root.join(&config.wal.dir);
        let mut rows_replayed = 0u64;
        let (wal, wal_recovery) = Wal::open(disk.clone(), wal_config, |header, payload| {
            if let Some(region) = regions.get_mut(&header.region) {
                rows_replayed += replay_record(region, header.sequence, header.commit, payload);
            }
        })
        .await?;

        quarantine_corrupted(&mut regions, &wal_recovery.corruptions);
        // Quarantined by the WAL's replay (a damaged record, one the region cannot take),
        // not by its manifest: what the manifest must record.
        let mut newly_quarantined = Vec::new();
        for (id, region) in &regions {
            if let RegionState::Quarantined(reason) = region.state() {
                tracing::error!(region = %id, %reason, "region quarantined");
                recovery.quarantined.push((*id, reason.clone()));
                if !quarantined_at_load.contains(id) {
                    newly_quarantined.push((*id, reason.clone()));
                }
            }
        }
        recovery.regions = regions
            .values()
            .filter(|r| r.state() != &RegionState::Dropped)
            .count();
        recovery.rows_replayed = rows_replayed;
        recovery.wal = wal_recovery;
        let memory = regions.values().map(|r| r.memtable.bytes()).sum();
        delete_orphan_ssts(&store, &root, &regions).await?;
        let sst_cache_bytes = config.sst_cache_bytes;
        let engine = ShardEngine {
            store,
            manifests,
            root,
            config,
            wal,
            regions: RefCell::new(regions),
            memory_bytes: Cell::new(memory),
            manifest_lock: futures::lock::Mutex::new(()),
            flushes_running: Cell::new(0),
            incarnations: Cell::new(0),
            flushes_done: Cell::new(0),
            compactions_done: Cell::new(0),
            sst_cache: RefCell::new(SstCache::new(sst_cache_bytes)),
            stopped: Cell::new(false),
            shipping: RefCell::new(replica::Shipping::default()),
            installs: RefCell::new(BTreeMap::new()),
        };
        // Recorded before anything can purge the WAL: once the segment holding the
        // damage is gone, only the manifest remembers that the copy lacks a write.
        for (id, reason) in newly_quarantined {
            engine
                .commit_edit(id, None, |_| Ok(Edit::Quarantined { reason }))
                .await?;
        }
        Ok((Rc::new(engine), recovery))
    }

    /// Makes `edit` to a live region's manifest durable (appended to its edit log), then
    /// applies it in memory; checkpoints every `EDITS_PER_CHECKPOINT` edits. Manifest
    /// changes are serialized, so each edit applies to the state it was made against.
    /// `make` builds the edit from the current manifest, under the lock. Returns false if
    /// the region was dropped meanwhile, or if `incarnation` is given and the region is no
    /// longer that incarnation.
    async fn commit_edit(
        &self,
        id: RegionId,
        incarnation: Option<u64>,
        make: impl FnOnce(&RegionManifest) -> Result<Edit, EngineError>,
    ) -> Result<bool, EngineError> {
        let _manifest_guard = self.manifest_lock.lock().await;
        let before = match self.regions.borrow().get(&id).filter(|r| {
            r.state() != &RegionState::Dropped && incarnation.is_none_or(|i| i == r.incarnation)
        }) {
            Some(region) => (region.manifest.clone(), region.checkpoint_version),
            None => return Ok(false),
        };
        let (mut manifest, mut checkpoint_version) = before;
        if checkpoint_version == LOG_ABANDONED {
            // An earlier append failed: its bytes may be in the page cache but not on disk,
            // and anything appended after them could be lost behind the hole at recovery.
            // Start over from a checkpoint at a new version, which drops the old log.
            manifest.version += 1;
            manifest.store(&self.manifests, &self.root).await?;
            checkpoint_version = manifest.version;
            if let Some(region) = self.regions.borrow_mut().get_mut(&id) {
                region.manifest.version = manifest.version;
                region.checkpoint_version = checkpoint_version;
            }
        }
        let edit = make(&manifest)?;
        tracing::debug!(region = %id, checkpoint_version, version = manifest.version, ?edit, "manifest edit");
        if let Err(error) = manifest
            .append_edit(&self.manifests, &self.root, checkpoint_version, &edit)
            .await
        {
            if let Some(region) = self.regions.borrow_mut().get_mut(&id) {
                region.checkpoint_version = LOG_ABANDONED;
            }
            return Err(error.into());
        }
        let checkpoint = {
            let mut regions = self.regions.borrow_mut();
            let Some(region) = regions.get_mut(&id) else {
                return Ok(true);
            };
            region.apply(&edit);
            (region.manifest.version - region.checkpoint_version >= EDITS_PER_CHECKPOINT)
                .then(|| region.manifest.clone())
        };
        if let Some(manifest) = checkpoint {
            manifest.store(&self.manifests, &self.root).await?;
            if let Some(region) = self.regions.borrow_mut().get_mut(&id) {
                region.checkpoint_version = manifest.version;
            }
        }
        Ok(true)
    }

    /// Stops every change to disk this engine would make (manifest edits, flushes,
    /// compactions, WAL purges, region creation and removal); reads still work.
    pub fn stop(&self) {
        self.stopped.set(true);
    }

    fn check_running(&self) -> Result<(), EngineError> {
        if self.stopped.get() {
            return Err(EngineError::Unavailable(
                "the shard is restarting".to_string(),
            ));
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every region this shard holds, dropped ones (tombstones) included.
    pub fn region_ids(&self) -> Vec<RegionId> {
        self.regions.borrow().keys().copied().collect()
    }

    /// The shard's figures for monitoring.
    pub fn stats(&self, shard: u16) -> ShardStats {
        let wal = self.wal.stats();
        ShardStats {
            shard,
            memtable_bytes: self.memory_bytes.get() as u64,
            wal_commits: wal.commits,
            wal_commit_micros_total: wal.commit_micros_total,
            flushes: self.flushes_done.get(),
            compactions: self.compactions_done.get(),
            // Regions this shard holds open (quarantined ones too: they wait for an operator).
            regions: self
                .regions
                .borrow()
                .values()
                .filter(|r| !matches!(r.state(), RegionState::Dropped | RegionState::Closed))
                .count() as u64,
        }
    }

    /// The regions this shard holds quarantined.
    pub fn quarantined(&self) -> Vec<RegionId> {
        self.regions
            .borrow()
            .iter()
            .filter(|(_, region)| matches!(region.state(), RegionState::Quarantined(_)))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes.get()
    }

    /// Why the shard's WAL stopped, if it did: the engine must be reopened from disk.
    pub fn wal_failure(&self) -> Option<String> {
        self.wal.failure()
    }

    pub fn file_count(&self, id: RegionId) -> Result<usize, EngineError> {
        Ok(region(&self.regions.borrow(), id, Need::Exists)?
            .manifest
            .files
            .len())
    }

    pub fn schema(&self, id: RegionId) -> Result<RegionSchema, EngineError> {
        Ok(region(&self.regions.borrow(), id, Need::Exists)?
            .manifest
            .schema
            .clone())
    }

    /// Writes a batch to a region; returns the write's sequence once it is durable.
    /// `encoded` is the batch's bytes as received (`metronome_wire::write_batch`), logged
    /// as they are; without them the batch is encoded here, once.
    pub async fn write(
        &self,
        id: RegionId,
        batch: WriteBatch,
        encoded: Option<Vec<u8>>,
    ) -> Result<u64, EngineError> {
        self.write_under(id, batch, encoded, 0).await
    }

    /// [`ShardEngine::write`] by a leader at route epoch `epoch` (0: outside a cluster):
    /// the write is also shipped to the region's followers at that epoch, if it has any
    /// ([`replica`]), and returns only once it is durable on every one of them too.
    pub async fn write_under(
        &self,
        id: RegionId,
        batch: WriteBatch,
        encoded: Option<Vec<u8>>,
        epoch: u64,
    ) -> Result<u64, EngineError> {
        let (sequence, durable, shipped) = {
            let mut regions = self.regions.borrow_mut();
            let region = region_mut(&mut regions, id, Need::Writable)?;
            let invalid = |fault| EngineError::InvalidWrite { region: id, fault };
            batch.check(&region.manifest.schema).map_err(invalid)?;
            for (series, one) in batch.series.iter().enumerate() {
                if let Some(row) = one.rows.iter().position(|(ts, _)| *ts == TS_END) {
                    return Err(invalid(BatchFault {
                        series,
                        row: Some(row),
                        reason: format!(
                            "timestamp {TS_END} is the end of every time range; the latest is {}",
                            TS_END - 1
                        ),
                    }));
                }
            }
            let limit = self.config.memory_bytes_max;
            if self.memory_bytes.get() >= limit {
                return Err(EngineError::Overloaded {
                    memory_bytes: self.memory_bytes.get(),
                    limit,
                });
            }
            let payload = match encoded {
                Some(bytes) => bytes,
                None => write_batch::encode(&batch).map_err(|error| {
                    invalid(BatchFault {
                        series: 0,
                        row: None,
                        reason: error.0,
                    })
                })?,
            };
            let sequence = region.manifest.last_sequence + 1;
            assert!(
                sequence > region.manifest.flushed_sequence,
                "region {id}: a write's sequence {sequence} stays above the flushed {}",
                region.manifest.flushed_sequence
            );
            // Queued for the followers in the step that takes the sequence, so a region's
            // writes reach its followers in sequence order, and before the WAL takes it:
            // a write that cannot be shipped takes no sequence (the follower would see a
            // gap). Each leaves once the leader's WAL made it durable (`replica::Ticket`);
            // one the WAL refuses never leaves.
            // No shipping: standalone (its in-process writes name their route's epoch,
            // and it has no followers), or a cluster datanode before it joined — which
            // holds no lease yet, so serves no write (its replication is set before its
            // first heartbeat).
            let shipping = self.shipping.borrow().get().cloned();
            let ticket = match shipping {
                Some(shipping) if epoch != 0 => shipping
                    .ship(id, epoch, sequence, &payload)
                    .map_err(|reason| replica::not_replicated(id, sequence, reason))?,
                _ => replica::Ticket::none(),
            };
            let durable = self.wal.enqueue(id, sequence, payload)?;
            region.manifest.last_sequence = sequence;
            region.in_flight.insert(sequence);
            let shipped = ticket;
            (sequence, durable, shipped)
        };
        let outcome = durable
            .await
            .unwrap_or_else(|_| Err(WalError::Failed("the WAL writer stopped".to_string())));
        let replicated = replica::await_shipped(id, sequence, outcome.is_ok(), shipped).await;
        self.apply_durable(id, sequence, batch, outcome)?;
        replicated?;
        if let Some(region) = self.regions.borrow_mut().get_mut(&id) {
            region.acknowledged_max = region.acknowledged_max.max(sequence);
        }
        Ok(sequence)
    }

    /// Applies write `sequence` of region `id` to its memtable once the WAL told its
    /// `outcome` (nothing to apply if that is an error, or if the region was dropped).
    fn apply_durable(
        &self,
        id: RegionId,
        sequence: u64,
        batch: WriteBatch,
        outcome: Result<(), WalError>,
    ) -> Result<(), EngineError> {
        let mut regions = self.regions.borrow_mut();
        let Some(region) = regions.get_mut(&id) else {
            outcome?;
            return Ok(());
        };
        region.in_flight.remove(&sequence);
        let lowest = region.in_flight.first().copied().unwrap_or(u64::MAX);
        let ready: Vec<_> = {
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut region.durable_waiters)
                .into_iter()
                .partition(|(waits_for, _)| *waits_for < lowest);
            region.durable_waiters = waiting;
            ready
        };
        for (_, waiter) in ready {
            let _ = waiter.send(());
        }
        outcome?;
        // A region dropped while the write was in flight has nothing to apply it to.
        if region.state() != &RegionState::Dropped {
            let mut grown = 0isize;
            for series in batch.series {
                grown += region
                    .memtable
                    .insert_series(sequence, &series.tags, series.rows);
            }
            self.memory_bytes
                .set((self.memory_bytes.get() as isize + grown) as usize);
        }
        Ok(())
    }
}
