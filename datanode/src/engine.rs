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

use crate::codec::{decode_rows, encode_rows};
use crate::manifest::{
    sst_dir, sst_key, Edit, LoadError, ManifestStore, RegionManifest, EDITS_PER_CHECKPOINT,
};
use crate::memtable::{Memtable, SeriesKey};
use crate::merge::{merge_series, Merge, SequencedSeries};
use crate::scan::{Run, ScanStream};
use crate::sst::{self, SstMeta};
use crate::sst_cache::SstCache;
use crate::wal::{Wal, WalConfig, WalError, WalRecovery};
use metronome_wire::ShardStats;

/// How a shard engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Writes are refused as overloaded while the shard's memtables hold more than this.
    pub memory_bytes_max: usize,
    /// Past this, the shard flushes its largest memtable to an SST.
    pub memory_bytes_flush: usize,
    /// Compaction groups SSTs by the window of their first timestamp...
    pub compaction_window_ms: i64,
    /// ...and merges a window's files of one size tier into one once it holds this many.
    pub files_per_window_max: usize,
    /// Bytes of SST files a shard keeps in memory for reads.
    pub sst_cache_bytes: usize,
    /// Files below this size form size tier 0; each tier above holds files up to 4×
    /// larger than the one below (see [`EngineConfig::size_tier`]).
    pub tier_base_bytes: u64,
    /// Past this many WAL segments, the shard flushes the regions that pin the oldest one,
    /// so a rarely written region cannot make the WAL grow without bound.
    pub wal_segments_max: usize,
    /// The WAL; its `dir` is relative to the shard root.
    pub wal: WalConfig,
    /// Where SSTs live.
    pub sst_store: SstStore,
    /// Bytes of a remote SST store's objects the shard keeps as local files
    /// (`<shard>/object-cache`), so a file read once is not fetched again.
    pub object_cache_bytes: u64,
}

impl EngineConfig {
    /// The size tier of a file of `bytes`. Compaction merges only files of one tier, so
    /// merging a tier's files yields one of the next and a row is rewritten once per
    /// tier it climbs (O(log n) times), not by every merge into its window.
    pub fn size_tier(&self, bytes: u64) -> u32 {
        let mut tier = 0;
        let mut bound = self.tier_base_bytes.max(1);
        while bytes >= bound {
            tier += 1;
            bound = bound.saturating_mul(4);
        }
        tier
    }
}

/// Where a datanode keeps its SSTs and manifests (the WAL stays on the local disk).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SstStore {
    /// The data directory.
    #[default]
    Local,
    /// An S3 bucket or S3-compatible service.
    #[cfg(not(madsim))]
    S3(metronome_core::rt::object::S3Config),
    /// A simulated store with injected errors and latency (tests and the simulation).
    Sim(metronome_core::rt::object::SimObjectStore),
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memory_bytes_max: 512 * 1024 * 1024,
            memory_bytes_flush: 256 * 1024 * 1024,
            compaction_window_ms: 2 * 3600 * 1000,
            files_per_window_max: 4,
            tier_base_bytes: 4 * 1024 * 1024,
            sst_cache_bytes: 256 * 1024 * 1024,
            wal_segments_max: 16,
            wal: WalConfig::new("wal"),
            sst_store: SstStore::Local,
            object_cache_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// Why a request to a region failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("region {0} does not exist")]
    RegionNotFound(RegionId),
    #[error("region {0} already exists with a different schema")]
    RegionExists(RegionId),
    #[error("region {0} is closed on this datanode (open it to serve it again)")]
    RegionClosed(RegionId),
    #[error("region {region} is quarantined: {reason}")]
    Quarantined { region: RegionId, reason: String },
    #[error("invalid write to region {region}, row {row}: {reason}")]
    InvalidRow {
        region: RegionId,
        row: usize,
        reason: String,
    },
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("invalid scan of region {region}: {reason}")]
    InvalidScan { region: RegionId, reason: String },
    #[error(
        "the shard is overloaded ({memory_bytes} bytes in memtables, limit {limit}); retry later"
    )]
    Overloaded { memory_bytes: usize, limit: usize },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("storage error: {0}")]
    Io(String),
    /// A stored file failed its checks (it does not parse, or its contents do not
    /// decode): retrying reads the same bytes.
    #[error("corrupt {file}: {reason}")]
    Corrupt { file: String, reason: String },
    #[error("the datanode is unavailable: {0}")]
    Unavailable(String),
}

impl EngineError {
    /// The kind of failure, as every layer above sees it: the engine's one mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::RegionNotFound(_) => ErrorKind::NotFound,
            // A closed region is not served here: a client with a route to it should
            // learn where it is now.
            EngineError::RegionClosed(_) => ErrorKind::WrongRoute,
            EngineError::Quarantined { .. } => ErrorKind::Quarantined,
            EngineError::RegionExists(_)
            | EngineError::InvalidRow { .. }
            | EngineError::InvalidSchema(_)
            | EngineError::InvalidScan { .. }
            | EngineError::Wal(WalError::TooLarge { .. }) => ErrorKind::Invalid,
            EngineError::Overloaded { .. } | EngineError::Wal(WalError::Overloaded { .. }) => {
                ErrorKind::Overloaded
            }
            // A failed WAL makes the shard restart; the same request succeeds afterwards.
            EngineError::Unavailable(_) | EngineError::Wal(WalError::Failed(_)) => {
                ErrorKind::Unavailable
            }
            EngineError::Corrupt { .. } => ErrorKind::Corrupt,
            EngineError::Wal(WalError::Io(_)) | EngineError::Io(_) => ErrorKind::Internal,
        }
    }

    /// Whether the client should retry the same request later.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// An SST's bytes that failed their checks.
fn corrupt_sst(key: &str) -> impl FnOnce(String) -> EngineError + '_ {
    move |reason| EngineError::Corrupt {
        file: format!("SST {key}"),
        reason,
    }
}

impl From<std::io::Error> for EngineError {
    fn from(error: std::io::Error) -> EngineError {
        EngineError::Io(error.to_string())
    }
}

struct Region {
    manifest: RegionManifest,
    memtable: Memtable,
    /// Memtables being flushed: still read by scans until their SST is in the manifest.
    frozen: Vec<Rc<Memtable>>,
    /// Sequences taken by writes not yet applied (or failed): a flush may only claim the
    /// sequences below the lowest of them.
    in_flight: BTreeSet<u64>,
    flushing: bool,
    /// A compaction is under way. A second one would pick the same inputs while the
    /// first yields, and write their rows again.
    compacting: bool,
    quarantined: Option<String>,
    /// The version of the checkpoint on disk; edits since then are in its edit log.
    checkpoint_version: u64,
    /// A close is under way: writes are refused while the region drains and flushes.
    closing: bool,
    /// Tells this life of the region from a later one after a drop and re-create: a
    /// flush or compaction of the dropped incarnation that finishes late must not record
    /// its file in the new one's manifest.
    incarnation: u64,
}

impl Region {
    fn new(manifest: RegionManifest, incarnation: u64) -> Region {
        Region {
            incarnation,
            checkpoint_version: manifest.version,
            manifest,
            memtable: Memtable::default(),
            frozen: Vec::new(),
            in_flight: BTreeSet::new(),
            flushing: false,
            compacting: false,
            quarantined: None,
            closing: false,
        }
    }
}

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
        let mut regions = BTreeMap::new();
        for name in manifests.region_dirs(&root).await? {
            let Some(id) = parse_region_dir(&name) else {
                tracing::warn!(dir = %regions_dir.display(), entry = %name, "ignoring an entry that is not a region");
                continue;
            };
            let region = match RegionManifest::load(&manifests, &root, id).await {
                Ok(Some((mut manifest, edits))) if manifest.region == id => {
                    // Sequences continue above everything stored, whatever the checkpoint
                    // recorded: the flushed point and every SST's rows.
                    let stored = manifest
                        .files
                        .iter()
                        .map(|f| f.max_sequence)
                        .max()
                        .unwrap_or(0);
                    manifest.last_sequence = manifest
                        .last_sequence
                        .max(manifest.flushed_sequence)
                        .max(stored);
                    tracing::debug!(region = %id, version = manifest.version, edits, flushed = manifest.flushed_sequence, files = manifest.files.len(), "manifest loaded");
                    if edits > 0 {
                        // Fold the edit log into a fresh checkpoint.
                        manifest.store(&manifests, &root).await?;
                    }
                    Region::new(manifest, 0)
                }
                Ok(Some((manifest, _))) => quarantined_region(
                    id,
                    format!(
                        "the manifest of region {id} names region {}",
                        manifest.region
                    ),
                ),
                // A region whose creation never completed (the manifest was never renamed
                // into place) does not exist.
                Ok(None) => continue,
                Err(LoadError::Damaged(reason)) => quarantined_region(id, reason),
                Err(LoadError::Unavailable(error)) => {
                    return Err(EngineError::Io(format!(
                        "loading the manifest of region {id}: {error}"
                    )))
                }
            };
            regions.insert(id, region);
        }

        let mut wal_config = config.wal.clone();
        wal_config.dir = root.join(&config.wal.dir);
        let mut rows_replayed = 0u64;
        let (wal, wal_recovery) = Wal::open(disk.clone(), wal_config, |header, payload| {
            let Some(region) = regions.get_mut(&header.region) else { return };
            // Sequences continue above every record ever logged, replayed or not.
            region.manifest.last_sequence = region.manifest.last_sequence.max(header.sequence);
            if region.quarantined.is_some() || region.manifest.dropped || header.sequence <= region.manifest.flushed_sequence {
                return;
            }
            if region.manifest.closed {
                // A region is flushed completely before it closes and refuses writes
                // while closing: a record above its flushed point breaks that rule, and
                // skipping it would lose it silently.
                region.quarantined = Some(format!("WAL record (sequence {}) is above the flushed sequence {} of the closed region", header.sequence, region.manifest.flushed_sequence));
                return;
            }
            match decode_rows(payload) {
                Ok(rows) => {
                    for (index, mut row) in rows.into_iter().enumerate() {
                        // Records written before an ALTER ADD COLUMN lack the new fields.
                        while row.fields.len() < region.manifest.schema.fields.len() {
                            row.fields.push(Value::Null);
                        }
                        if let Err(reason) = region.manifest.schema.check_row(&row) {
                            region.quarantined = Some(format!("WAL record (sequence {}) row {index} does not fit the schema: {reason}", header.sequence));
                            return;
                        }
                        region.memtable.insert(header.sequence, row);
                        rows_replayed += 1;
                    }
                }
                Err(error) => {
                    region.quarantined = Some(format!("WAL record (sequence {}) does not decode: {error}", header.sequence));
                }
            }
        })
        .await?;

        for (path, corruption) in &wal_recovery.corruptions {
            let reason = format!(
                "WAL corruption in {} at offset {}",
                path.display(),
                corruption.offset
            );
            match corruption.region {
                Some(id) => {
                    if let Some(region) = regions.get_mut(&id) {
                        region.quarantined.get_or_insert(reason);
                    }
                }
                // The damaged header hides whose record it was: every region may be hurt.
                None => {
                    for region in regions.values_mut().filter(|r| !r.manifest.dropped) {
                        region
                            .quarantined
                            .get_or_insert(format!("{reason} (the record's region is unreadable)"));
                    }
                }
            }
        }
        for (id, region) in &regions {
            if let Some(reason) = &region.quarantined {
                tracing::error!(region = %id, %reason, "region quarantined");
                recovery.quarantined.push((*id, reason.clone()));
            }
        }
        recovery.regions = regions.values().filter(|r| !r.manifest.dropped).count();
        recovery.rows_replayed = rows_replayed;
        recovery.wal = wal_recovery;
        let memory = regions.values().map(|r| r.memtable.bytes()).sum();
        // An SST written by a flush that crashed before its manifest was stored belongs
        // to no one: delete it.
        for (id, region) in &regions {
            let listed = store
                .list(&sst_dir(&root, *id).display().to_string())
                .await?;
            for key in listed {
                let known = region
                    .manifest
                    .files
                    .iter()
                    .any(|f| sst_key(&root, *id, f.file_id) == key);
                if !known && region.quarantined.is_none() {
                    tracing::info!(%key, "deleting an SST no manifest refers to");
                    store.delete(&key).await?;
                }
            }
        }
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
        };
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
        let before = match self
            .regions
            .borrow()
            .get(&id)
            .filter(|r| !r.manifest.dropped && incarnation.is_none_or(|i| i == r.incarnation))
        {
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
            region.manifest.apply(&edit);
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
            // Regions this shard serves: not dropped, not closed.
            regions: self
                .regions
                .borrow()
                .values()
                .filter(|r| !r.manifest.dropped && !r.manifest.closed)
                .count() as u64,
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes.get()
    }

    /// Why the shard's WAL stopped, if it did: the engine must be reopened from disk.
    pub fn wal_failure(&self) -> Option<String> {
        self.wal.failure()
    }

    /// Creates a region. Creating an existing region with the same schema succeeds (so a
    /// retried request is harmless); a dropped region's id may be reused.
    pub async fn create_region(
        &self,
        id: RegionId,
        schema: RegionSchema,
    ) -> Result<(), EngineError> {
        schema.validate().map_err(EngineError::InvalidSchema)?;
        let manifest = {
            let regions = self.regions.borrow();
            match regions.get(&id) {
                Some(existing) if existing.manifest.closed && !existing.manifest.dropped => {
                    return Err(EngineError::RegionClosed(id));
                }
                Some(existing) if !existing.manifest.dropped => {
                    return if existing.manifest.schema == schema {
                        Ok(())
                    } else {
                        Err(EngineError::RegionExists(id))
                    };
                }
                // Sequences continue past the old incarnation, whose WAL records are then
                // below `flushed_sequence` and never replayed into the new one.
                Some(tombstone) => RegionManifest {
                    region: id,
                    schema,
                    flushed_sequence: tombstone.manifest.last_sequence,
                    last_sequence: tombstone.manifest.last_sequence,
                    dropped: false,
                    files: Vec::new(),
                    next_file_id: tombstone.manifest.next_file_id,
                    ttl_ms: None,
                    // Past the tombstone's, so its edit logs are superseded.
                    version: tombstone.manifest.version + 1,
                    closed: false,
                },
                None => RegionManifest::new(id, schema),
            }
        };
        manifest.store(&self.manifests, &self.root).await?;
        let incarnation = self.incarnations.get() + 1;
        self.incarnations.set(incarnation);
        self.regions
            .borrow_mut()
            .insert(id, Region::new(manifest, incarnation));
        Ok(())
    }

    /// Drops a region: its data is discarded, its manifest stays as a tombstone.
    pub async fn drop_region(&self, id: RegionId) -> Result<(), EngineError> {
        // Under the manifest lock, so that no edit lands between the state the tombstone
        // is made from and the tombstone.
        let _manifest_guard = self.manifest_lock.lock().await;
        live_region(&self.regions.borrow(), id)?;
        // Above every version and file id stored: a quarantined region's manifest in
        // memory is a placeholder, and a tombstone below the damaged checkpoint would
        // lose to it at recovery.
        let version_floor = self
            .manifests
            .version_floor(&self.root, id)
            .await
            .map_err(|e| EngineError::Io(format!("listing region {id}'s manifest: {e}")))?;
        let file_id_floor = self.stored_file_id_floor(id).await?;
        let tombstone = {
            let regions = self.regions.borrow();
            let region = live_region(&regions, id)?;
            RegionManifest {
                dropped: true,
                flushed_sequence: region.manifest.last_sequence,
                version: (region.manifest.version + 1).max(version_floor),
                next_file_id: region.manifest.next_file_id.max(file_id_floor),
                ..region.manifest.clone()
            }
        };
        if let Err(error) = tombstone.store(&self.manifests, &self.root).await {
            // The tombstone may be stored although the store said otherwise: the region
            // serves nothing more (a write acknowledged now could be lost to a drop that
            // recovery finds) until a drop succeeds.
            if let Some(region) = self.regions.borrow_mut().get_mut(&id) {
                region.quarantined.get_or_insert_with(|| {
                    format!("a drop failed and may have taken effect ({error}); drop it again")
                });
            }
            return Err(error.into());
        }
        let mut regions = self.regions.borrow_mut();
        if let Some(region) = regions.get_mut(&id) {
            region.checkpoint_version = tombstone.version;
            self.memory_bytes.set(
                self.memory_bytes
                    .get()
                    .saturating_sub(region.memtable.bytes()),
            );
            region.manifest = tombstone;
            region.memtable = Memtable::default();
            region.quarantined = None;
        }
        Ok(())
    }

    /// Adds a field column; existing rows read it as null.
    pub async fn add_field(&self, id: RegionId, column: FieldColumn) -> Result<(), EngineError> {
        self.alter_schema(id, |schema| schema.fields.push(column))
            .await?;
        if let Some(region) = self.regions.borrow_mut().get_mut(&id) {
            // A frozen memtable being flushed keeps its rows' old shape; the flush pads
            // them, and reads fill the new field with nulls.
            region.memtable.add_null_field();
        }
        Ok(())
    }

    /// Adds tag columns, in order, at the end of the primary key; existing series have
    /// the empty value for them, so no stored row changes and series keep their order.
    /// One manifest edit however many tags: a request that brings k new labels costs one
    /// schema change of the region's n columns, not k of them (O(n + k), not O(n·k)).
    pub async fn add_tags(&self, id: RegionId, tags: Vec<String>) -> Result<(), EngineError> {
        if tags.is_empty() {
            usable_region(&self.regions.borrow(), id)?;
            return Ok(());
        }
        self.alter_schema(id, |schema| schema.tags.extend(tags))
            .await
    }

    /// Commits the schema `change` makes to the region's current one, if it is valid.
    async fn alter_schema(
        &self,
        id: RegionId,
        change: impl FnOnce(&mut RegionSchema),
    ) -> Result<(), EngineError> {
        usable_region(&self.regions.borrow(), id)?;
        let added = self
            .commit_edit(id, None, |manifest| {
                let mut schema = manifest.schema.clone();
                change(&mut schema);
                schema.validate().map_err(EngineError::InvalidSchema)?;
                Ok(Edit::Schema(schema))
            })
            .await?;
        if !added {
            return Err(EngineError::RegionNotFound(id));
        }
        Ok(())
    }

    /// Sets (or clears) the region's retention.
    pub async fn set_ttl(&self, id: RegionId, ttl_ms: Option<i64>) -> Result<(), EngineError> {
        if ttl_ms.is_some_and(|ttl| ttl <= 0) {
            return Err(EngineError::InvalidSchema(format!(
                "a TTL must be positive, got {ttl_ms:?} ms"
            )));
        }
        usable_region(&self.regions.borrow(), id)?;
        if self
            .commit_edit(id, None, |_| Ok(Edit::Ttl(ttl_ms)))
            .await?
        {
            Ok(())
        } else {
            Err(EngineError::RegionNotFound(id))
        }
    }

    /// Closes a region: refuses new writes, waits for those in flight, flushes its
    /// memtable completely, and records the close in its manifest. Its data stays on
    /// disk; it serves nothing (and is not replayed at recovery) until it is opened again.
    /// Closing a closed region succeeds.
    pub async fn close_region(&self, id: RegionId) -> Result<(), EngineError> {
        self.check_running()?;
        {
            let mut regions = self.regions.borrow_mut();
            let region = match usable_region_mut(&mut regions, id) {
                Err(EngineError::RegionClosed(_)) => return Ok(()),
                other => other?,
            };
            region.closing = true;
        }
        let drained = self.drain_for_close(id).await;
        let closed = match drained {
            // Drained: nothing in flight, nothing in memory, writes refused. Every
            // sequence taken so far was flushed or belongs to a write that failed.
            Ok(()) => {
                let committed = self
                    .commit_edit(id, None, |manifest| {
                        Ok(Edit::Close {
                            flushed_sequence: manifest.last_sequence,
                        })
                    })
                    .await;
                if committed.is_err() {
                    // The edit may be durable although the store said otherwise (a put
                    // that failed after storing the object, a sync error after the bytes
                    // reached the disk). So the region stays closed, as recovery may find
                    // it: a write accepted now would sit above the flushed point of a
                    // closed region. Opening it again settles the doubt.
                    if let Some(region) = self.regions.borrow_mut().get_mut(&id) {
                        if !region.manifest.dropped && !region.manifest.closed {
                            let flushed_sequence = region.manifest.last_sequence;
                            region.manifest.apply(&Edit::Close { flushed_sequence });
                        }
                    }
                }
                committed
            }
            Err(error) => Err(error),
        };
        if let Some(region) = self.regions.borrow_mut().get_mut(&id) {
            region.closing = false;
        }
        match closed? {
            true => {
                tracing::info!(region = %id, "region closed");
                Ok(())
            }
            false => Err(EngineError::RegionNotFound(id)),
        }
    }

    /// Waits until a closing region has no write in flight, no flush running and nothing
    /// in memory, flushing what is there; bounded by [`CLOSE_DRAIN_MS_MAX`].
    async fn drain_for_close(&self, id: RegionId) -> Result<(), EngineError> {
        let started = metronome_core::rt::time::now();
        loop {
            let flush_now = {
                let regions = self.regions.borrow();
                let region = usable_region(&regions, id)?;
                let drained = region.in_flight.is_empty()
                    && !region.flushing
                    && region.memtable.is_empty()
                    && region.frozen.is_empty();
                if drained {
                    return Ok(());
                }
                region.in_flight.is_empty() && !region.flushing && !region.memtable.is_empty()
            };
            if flush_now {
                self.flush_region(id).await?;
                continue;
            }
            if started.elapsed() > Duration::from_millis(CLOSE_DRAIN_MS_MAX) {
                return Err(EngineError::Unavailable(format!(
                    "region {id} did not drain within {CLOSE_DRAIN_MS_MAX} ms to close; retry"
                )));
            }
            metronome_core::rt::time::sleep_local(Duration::from_millis(1)).await;
        }
    }

    /// Opens a closed region again; opening an open region succeeds.
    pub async fn open_region(&self, id: RegionId) -> Result<(), EngineError> {
        self.check_running()?;
        let closed = live_region(&self.regions.borrow(), id)?.manifest.closed;
        if !closed {
            return Ok(());
        }
        if self
            .commit_edit(id, None, |_| Ok(Edit::Closed(false)))
            .await?
        {
            tracing::info!(region = %id, "region opened");
            Ok(())
        } else {
            Err(EngineError::RegionNotFound(id))
        }
    }

    /// Compacts the region's fullest time window if it holds `files_per_window_max` files
    /// or more, and deletes files wholly past the retention. Returns the files removed.
    pub async fn compact_region(&self, id: RegionId) -> Result<usize, EngineError> {
        self.check_running()?;
        let incarnation = {
            let mut regions = self.regions.borrow_mut();
            let region = usable_region_mut(&mut regions, id)?;
            if region.compacting {
                return Ok(0);
            }
            region.compacting = true;
            region.incarnation
        };
        let outcome = self.compact_region_now(id).await;
        if let Some(region) = self
            .regions
            .borrow_mut()
            .get_mut(&id)
            .filter(|r| r.incarnation == incarnation)
        {
            region.compacting = false;
        }
        outcome
    }

    /// [`ShardEngine::compact_region`] once it holds the region's compaction flag.
    async fn compact_region_now(&self, id: RegionId) -> Result<usize, EngineError> {
        let cutoff = retention_cutoff(&self.regions.borrow(), id)?;
        let (schema, expired, inputs, incarnation) = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            // The window in the region's unit: a nanosecond region's files are windowed by
            // the same two hours as a millisecond one's.
            let window = TimeUnit::Millisecond
                .convert_floor(
                    self.config.compaction_window_ms,
                    region.manifest.schema.time_unit,
                )
                .max(1);
            let expired: Vec<SstMeta> = region
                .manifest
                .files
                .iter()
                .filter(|f| f.max_ts < cutoff)
                .cloned()
                .collect();
            // Files of one window and one size tier merge together: merging a window's
            // big file with every new small one would rewrite it at every flush.
            let mut windows: BTreeMap<(i64, u32), Vec<SstMeta>> = BTreeMap::new();
            for file in region.manifest.files.iter().filter(|f| f.max_ts >= cutoff) {
                windows
                    .entry((
                        file.min_ts.div_euclid(window),
                        self.config.size_tier(file.bytes),
                    ))
                    .or_default()
                    .push(file.clone());
            }
            let fullest = windows
                .into_values()
                .filter(|files| files.len() >= self.config.files_per_window_max)
                .max_by_key(Vec::len);
            (
                region.manifest.schema.clone(),
                expired,
                fullest.unwrap_or_default(),
                region.incarnation,
            )
        };
        if expired.is_empty() && inputs.is_empty() {
            return Ok(0);
        }
        tracing::debug!(region = %id, merging = inputs.len(), expired = expired.len(), "compacting");
        let mut output = None;
        if !inputs.is_empty() {
            let mut runs = Vec::with_capacity(inputs.len());
            for file in &inputs {
                let (key, parsed) = self.read_sst(id, file).await?;
                let reader = sst::SstReader::open(&parsed, &schema, cutoff, i64::MAX, |_| true)
                    .map_err(corrupt_sst(&key))?;
                runs.push(Run::Sst { key, reader });
            }
            // A streaming merge, a chunk at a time with a yield after each: decoding,
            // merging and encoding are CPU work on the shard's only thread, and writes
            // arriving meanwhile wait at most one chunk.
            let mut merge = Merge::new(runs);
            let mut writer: Option<sst::SstWriter> = None;
            loop {
                let chunk = merge
                    .next_chunk(ENCODE_CHUNK_ROWS)
                    .map_err(EngineError::Io)?;
                if chunk.is_empty() {
                    break;
                }
                let writer = match &mut writer {
                    Some(writer) => writer,
                    None => {
                        let file_id = {
                            let mut regions = self.regions.borrow_mut();
                            let region = regions
                                .get_mut(&id)
                                .ok_or(EngineError::RegionNotFound(id))?;
                            region.manifest.next_file_id += 1;
                            region.manifest.next_file_id - 1
                        };
                        writer
                            .insert(sst::SstWriter::new(&schema, file_id).map_err(EngineError::Io)?)
                    }
                };
                writer.write(&chunk).map_err(EngineError::Io)?;
                metronome_core::rt::task::yield_now().await;
            }
            if let Some(writer) = writer {
                let (bytes, meta) = writer.finish().map_err(EngineError::Io)?;
                let key = sst_key(&self.root, id, meta.file_id);
                self.sst_cache.borrow_mut().remove(&key);
                self.store.put(&key, bytes).await?;
                output = Some(meta);
            }
        }
        let removed: Vec<u64> = inputs.iter().chain(&expired).map(|f| f.file_id).collect();
        let edit = Edit::Compacted {
            added: output.clone(),
            removed: removed.clone(),
        };
        if !self
            .commit_edit(id, Some(incarnation), |_| Ok(edit))
            .await?
        {
            return Ok(0);
        }
        for file_id in &removed {
            // Best effort: a file left behind is an orphan the next recovery deletes.
            let key = sst_key(&self.root, id, *file_id);
            self.sst_cache.borrow_mut().remove(&key);
            let _ = self.store.delete(&key).await;
        }
        self.compactions_done.set(self.compactions_done.get() + 1);
        tracing::debug!(region = %id, merged = inputs.len(), expired = expired.len(), "compacted");
        Ok(removed.len())
    }

    /// One above the highest SST file id stored for the region (0 if none).
    async fn stored_file_id_floor(&self, id: RegionId) -> Result<u64, EngineError> {
        let listed = self
            .store
            .list(&sst_dir(&self.root, id).display().to_string())
            .await
            .map_err(|e| EngineError::Io(format!("listing region {id}'s SSTs: {e}")))?;
        Ok(listed
            .iter()
            .filter_map(|key| {
                let name = key.rsplit('/').next()?;
                name.strip_suffix(".parquet")?.parse::<u64>().ok()
            })
            .map(|file_id| file_id + 1)
            .max()
            .unwrap_or(0))
    }

    pub fn file_count(&self, id: RegionId) -> Result<usize, EngineError> {
        Ok(live_region(&self.regions.borrow(), id)?
            .manifest
            .files
            .len())
    }

    pub fn schema(&self, id: RegionId) -> Result<RegionSchema, EngineError> {
        Ok(live_region(&self.regions.borrow(), id)?
            .manifest
            .schema
            .clone())
    }

    /// Writes rows to a region; returns the write's sequence once it is durable.
    pub async fn write(&self, id: RegionId, mut rows: Vec<Row>) -> Result<u64, EngineError> {
        let (sequence, durable) = {
            let mut regions = self.regions.borrow_mut();
            let region = usable_region_mut(&mut regions, id)?;
            if region.closing {
                return Err(EngineError::RegionClosed(id));
            }
            for (index, row) in rows.iter().enumerate() {
                region
                    .manifest
                    .schema
                    .check_row(row)
                    .and_then(|()| check_new_ts(row.ts))
                    .map_err(|reason| EngineError::InvalidRow {
                        region: id,
                        row: index,
                        reason,
                    })?;
            }
            rows.iter_mut().for_each(Row::canonical_tags);
            let limit = self.config.memory_bytes_max;
            if self.memory_bytes.get() >= limit {
                return Err(EngineError::Overloaded {
                    memory_bytes: self.memory_bytes.get(),
                    limit,
                });
            }
            let sequence = region.manifest.last_sequence + 1;
            assert!(
                sequence > region.manifest.flushed_sequence,
                "region {id}: a write's sequence {sequence} stays above the flushed {}",
                region.manifest.flushed_sequence
            );
            let durable = self.wal.enqueue(id, sequence, encode_rows(&rows))?;
            region.manifest.last_sequence = sequence;
            region.in_flight.insert(sequence);
            (sequence, durable)
        };
        let outcome = durable
            .await
            .unwrap_or_else(|_| Err(WalError::Failed("the WAL writer stopped".to_string())));
        let mut regions = self.regions.borrow_mut();
        let Some(region) = regions.get_mut(&id) else {
            outcome?;
            return Ok(sequence);
        };
        region.in_flight.remove(&sequence);
        outcome?;
        // A region dropped while the write was in flight has nothing to apply it to.
        if !region.manifest.dropped {
            let mut grown = 0isize;
            for row in rows {
                grown += region.memtable.insert(sequence, row);
            }
            self.memory_bytes
                .set((self.memory_bytes.get() as isize + grown) as usize);
        }
        Ok(sequence)
    }

    /// Whether memory or the WAL has outgrown its budget and no flush is running.
    pub fn wants_flush(&self) -> bool {
        self.flushes_running.get() == 0
            && (self.memory_bytes.get() > self.config.memory_bytes_flush
                || self.wal.segment_count() > self.config.wal_segments_max)
    }

    /// Relieves the pressure [`ShardEngine::wants_flush`] reports: flushes the regions that
    /// pin the oldest WAL segment if the WAL is over budget, else the largest memtable;
    /// compacts what it flushed. Returns the regions flushed.
    pub async fn flush_for_pressure(&self) -> Result<Vec<RegionId>, EngineError> {
        let candidates: Vec<RegionId> = if self.wal.segment_count() > self.config.wal_segments_max {
            let regions = self.regions.borrow();
            self.wal
                .oldest_segment_regions()
                .into_iter()
                .filter(|(id, max)| {
                    regions.get(id).is_some_and(|r| {
                        !r.manifest.dropped
                            && !r.manifest.closed
                            && r.quarantined.is_none()
                            && r.manifest.flushed_sequence < *max
                    })
                })
                .map(|(id, _)| id)
                .collect()
        } else {
            self.regions
                .borrow()
                .iter()
                .filter(|(_, r)| {
                    !r.manifest.dropped
                        && !r.manifest.closed
                        && r.quarantined.is_none()
                        && !r.flushing
                })
                .max_by_key(|(_, r)| r.memtable.bytes())
                .map(|(id, _)| *id)
                .into_iter()
                .collect()
        };
        let mut flushed = Vec::new();
        for id in candidates {
            if self.flush_region(id).await?.is_some() {
                self.compact_region(id).await?;
                flushed.push(id);
            }
        }
        Ok(flushed)
    }

    /// Writes a region's memtable to an SST and records it in the manifest; the WAL
    /// segments it no longer needs are deleted. `None` if there was nothing to flush.
    pub async fn flush_region(&self, id: RegionId) -> Result<Option<SstMeta>, EngineError> {
        self.check_running()?;
        let (frozen, flushed_sequence, file_id, schema, incarnation) = {
            let mut regions = self.regions.borrow_mut();
            let region = usable_region_mut(&mut regions, id)?;
            if region.flushing || region.memtable.is_empty() {
                return Ok(None);
            }
            // Every write at or below this sequence is applied, so in the frozen memtable.
            // The frozen memtable may also hold later writes; the WAL still has them too,
            // and merges keep the highest sequence, so the duplicate is harmless.
            let flushed_sequence = region
                .in_flight
                .first()
                .map_or(region.manifest.last_sequence, |s| s - 1);
            let frozen = Rc::new(std::mem::take(&mut region.memtable));
            region.frozen.push(frozen.clone());
            region.flushing = true;
            let file_id = region.manifest.next_file_id;
            region.manifest.next_file_id += 1;
            (
                frozen,
                flushed_sequence,
                file_id,
                region.manifest.schema.clone(),
                region.incarnation,
            )
        };
        tracing::debug!(region = %id, file_id, bytes = frozen.bytes(), flushed_sequence, "flushing a memtable");
        self.flushes_running.set(self.flushes_running.get() + 1);
        let outcome = self
            .finish_flush(id, incarnation, &frozen, flushed_sequence, file_id, &schema)
            .await;
        self.flushes_running.set(self.flushes_running.get() - 1);
        // A region dropped and created again meanwhile is another region.
        if let Some(region) = self
            .regions
            .borrow_mut()
            .get_mut(&id)
            .filter(|r| r.incarnation == incarnation)
        {
            region.flushing = false;
            region.frozen.retain(|m| !Rc::ptr_eq(m, &frozen));
            let released = frozen.bytes();
            match &outcome {
                Ok(_) => self
                    .memory_bytes
                    .set(self.memory_bytes.get().saturating_sub(released)),
                // The rows stay in memory (and in the WAL): put them back.
                Err(_) if !region.manifest.dropped => {
                    let before = region.memtable.bytes();
                    for (sequence, row) in frozen.scan_sequenced(i64::MIN, i64::MAX, |_| true, &[])
                    {
                        region.memtable.insert(sequence, row);
                    }
                    let grown = region.memtable.bytes() - before;
                    self.memory_bytes
                        .set(self.memory_bytes.get().saturating_sub(released) + grown);
                }
                Err(_) => {}
            }
        }
        let meta = outcome?;
        if meta.is_some() && !self.stopped.get() {
            let regions = &self.regions;
            self.wal
                .purge(|region| {
                    // Records of a region that no longer exists are never replayed.
                    regions
                        .borrow()
                        .get(&region)
                        .map_or(u64::MAX, |r| r.manifest.flushed_sequence)
                })
                .await?;
        }
        Ok(meta)
    }

    async fn finish_flush(
        &self,
        id: RegionId,
        incarnation: u64,
        frozen: &Memtable,
        flushed_sequence: u64,
        file_id: u64,
        schema: &RegionSchema,
    ) -> Result<Option<SstMeta>, EngineError> {
        // In chunks, yielding between them: encoding is CPU work on the shard's only
        // thread, and the writes that arrive meanwhile must not wait for all of it.
        let mut writer = sst::SstWriter::new(schema, file_id).map_err(EngineError::Io)?;
        let mut after: Option<SeriesKey> = None;
        loop {
            let (mut rows, last) = frozen.chunk_after(after.as_deref(), ENCODE_CHUNK_ROWS);
            if rows.is_empty() {
                break;
            }
            // Rows written before an ALTER ADD COLUMN lack the new fields.
            for (_, row) in &mut rows {
                row.fields.resize(schema.fields.len(), Value::Null);
            }
            writer.write(&rows).map_err(EngineError::Io)?;
            after = last;
            metronome_core::rt::task::yield_now().await;
        }
        assert_eq!(
            writer.rows(),
            frozen.rows() as u64,
            "a flush writes every row of the frozen memtable"
        );
        let (bytes, meta) = writer.finish().map_err(EngineError::Io)?;
        let key = sst_key(&self.root, id, file_id);
        self.sst_cache.borrow_mut().remove(&key);
        self.store.put(&key, bytes).await?;

        let edit = Edit::Flushed {
            file: meta.clone(),
            flushed_sequence,
        };
        if !self
            .commit_edit(id, Some(incarnation), |_| Ok(edit))
            .await?
        {
            // Dropped while flushing: the file belongs to no one.
            self.sst_cache.borrow_mut().remove(&key);
            let _ = self.store.delete(&key).await;
            return Ok(None);
        }
        self.flushes_done.set(self.flushes_done.get() + 1);
        tracing::debug!(region = %id, file_id, rows = meta.rows, bytes = meta.bytes, "flushed a memtable");
        Ok(Some(meta))
    }

    /// Rows of a region matching the request, in (series, ts) order: the memtables and
    /// the SSTs merged, the latest write of each (series, ts) winning.
    pub async fn scan(&self, id: RegionId, request: &ScanRequest) -> Result<Vec<Row>, EngineError> {
        let request = &self.retained(id, request)?;
        if request.series_only {
            return self.scan_series_only(id, request).await;
        }
        let (filter, projection, mut rows, files, one_memtable) = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            let (projection, filter) = plan_scan(id, &region.manifest.schema, request)?;
            let keep = |tags: &[String]| filter.keeps(tags);
            let equal = filter.equalities();
            let mut rows = region
                .memtable
                .scan_sequenced(request.start, request.end, keep, &equal);
            for frozen in &region.frozen {
                rows.extend(frozen.scan_sequenced(request.start, request.end, keep, &equal));
            }
            for (_, row) in rows.iter_mut() {
                projection.apply(&mut row.fields);
            }
            let files = files_in_range(region, request);
            let one_memtable = region.frozen.is_empty() && files.is_empty();
            (filter, projection, rows, files, one_memtable)
        };
        for file in files {
            let (key, parsed) = self.read_sst(id, &file).await?;
            // Shaped to the projection by the reader, which decodes no other field.
            let read = sst::read_file(
                &parsed,
                &projection.schema,
                request.start,
                request.end,
                |tags| filter.keeps(tags),
            )
            .map_err(corrupt_sst(&key))?;
            rows.extend(read);
        }
        let limit = request.limit.unwrap_or(usize::MAX);
        if one_memtable {
            // One memtable yields its rows in (series, ts) order, one per (series, ts):
            // already merged. Sorting them again was a query profile's top shard cost.
            debug_assert!(rows
                .windows(2)
                .all(|pair| { (&pair[0].1.tags, pair[0].1.ts) < (&pair[1].1.tags, pair[1].1.ts) }));
            return Ok(rows.into_iter().take(limit).map(|(_, row)| row).collect());
        }
        Ok(merge_latest(rows, limit))
    }
}

/// A new row's timestamp must lie before [`TS_END`]: every range ends there, exclusive,
/// so a row at it could be written but never read. (Replay does not check: a row written
/// before this rule stays where it is rather than quarantining its region.)
fn check_new_ts(ts: i64) -> Result<(), String> {
    if ts == TS_END {
        return Err(format!(
            "timestamp {ts} is the end of every time range; the latest is {}",
            TS_END - 1
        ));
    }
    Ok(())
}

/// The region's SSTs whose time range overlaps the request's.
fn files_in_range(region: &Region, request: &ScanRequest) -> Vec<SstMeta> {
    region
        .manifest
        .files
        .iter()
        .filter(|f| f.max_ts >= request.start && f.min_ts < request.end)
        .cloned()
        .collect()
}

impl ShardEngine {
    /// `request` without what lies past the region's retention: rows past it are gone
    /// for readers at once, whenever compaction gets to deleting them.
    fn retained(&self, id: RegionId, request: &ScanRequest) -> Result<ScanRequest, EngineError> {
        let cutoff = retention_cutoff(&self.regions.borrow(), id)?;
        Ok(ScanRequest {
            start: request.start.max(cutoff),
            ..request.clone()
        })
    }

    /// Like [`ShardEngine::scan`], grouped by series, without building a `Row` per
    /// sample (a query profile's top cost on the shards): a lone live memtable answers
    /// with its series as they are; otherwise every memtable and SST gives its series
    /// with sequences and [`merge_series`] merges them, comparing tags once per series.
    pub async fn scan_series(
        &self,
        id: RegionId,
        request: &ScanRequest,
    ) -> Result<Vec<SeriesRows>, EngineError> {
        if request.series_only || request.limit.is_some() {
            return Ok(SeriesRows::group(self.scan(id, request).await?));
        }
        let request = &self.retained(id, request)?;
        let (filter, projection, mut sources, files) = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            let schema = &region.manifest.schema;
            let (projection, filter) = plan_scan(id, schema, request)?;
            let keep = |tags: &[String]| filter.keeps(tags);
            let equal = filter.equalities();
            let files = files_in_range(region, request);
            if region.frozen.is_empty() && files.is_empty() {
                // Only the live memtable: its series as they are, no merge.
                let mut series =
                    region
                        .memtable
                        .scan_series(request.start, request.end, keep, &equal);
                // An ALTER ADD COLUMN gives the memtable's rows their null field at once.
                debug_assert!(series.iter().all(|one| {
                    one.rows
                        .iter()
                        .all(|(_, fields)| fields.len() == schema.fields.len())
                }));
                if !projection.identity {
                    for one in &mut series {
                        for (_, fields) in &mut one.rows {
                            projection.apply(fields);
                        }
                    }
                }
                return Ok(series);
            }
            let mut sources: Vec<Vec<SequencedSeries>> = std::iter::once(&region.memtable)
                .chain(region.frozen.iter().map(|m| &**m))
                .map(|memtable| {
                    memtable.scan_series_sequenced(request.start, request.end, keep, &equal)
                })
                .collect();
            for (_, samples) in sources.iter_mut().flatten() {
                for (_, _, fields) in samples {
                    projection.apply(fields);
                }
            }
            (filter, projection, sources, files)
        };
        for file in files {
            let (key, parsed) = self.read_sst(id, &file).await?;
            sources.push(
                sst::read_series(
                    &parsed,
                    &projection.schema,
                    request.start,
                    request.end,
                    |tags| filter.keeps(tags),
                )
                .map_err(corrupt_sst(&key))?,
            );
        }
        Ok(merge_series(sources, projection.schema.fields.len()))
    }

    /// An SST's object key and bytes.
    async fn read_sst(
        &self,
        id: RegionId,
        file: &SstMeta,
    ) -> Result<(String, Rc<sst::SstFile>), EngineError> {
        let key = sst_key(&self.root, id, file.file_id);
        if let Some(parsed) = self.sst_cache.borrow_mut().get(&key) {
            return Ok((key, parsed));
        }
        let bytes: bytes::Bytes = self
            .store
            .get(&key)
            .await
            .map_err(|error| EngineError::Io(format!("reading {key}: {error}")))?
            .into();
        let parsed = Rc::new(sst::SstFile::parse(bytes).map_err(corrupt_sst(&key))?);
        self.sst_cache
            .borrow_mut()
            .insert(key.clone(), parsed.clone());
        Ok((key, parsed))
    }

    /// A series-only scan (see [`ScanRequest::series_only`]): one row per series, with
    /// null fields, from the memtables and the SSTs' series indexes.
    async fn scan_series_only(
        &self,
        id: RegionId,
        request: &ScanRequest,
    ) -> Result<Vec<Row>, EngineError> {
        let (filter, schema, mut series, files) = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            let schema = region.manifest.schema.clone();
            let projection = Projection::of(id, &schema, request)?;
            let filter = SeriesFilter::compile_for(id, &schema, &request.matchers)?;
            let keep = |tags: &[String]| filter.keeps(tags);
            let mut series: BTreeMap<Vec<String>, i64> = BTreeMap::new();
            for memtable in
                std::iter::once(&region.memtable).chain(region.frozen.iter().map(|m| &**m))
            {
                let equal = filter.equalities();
                for (tags, ts) in memtable.series(request.start, request.end, keep, &equal) {
                    let first = series.entry(tags).or_insert(ts);
                    *first = (*first).min(ts);
                }
            }
            let files = files_in_range(region, request);
            (filter, projection.schema, series, files)
        };
        for file in files {
            let (key, parsed) = self.read_sst(id, &file).await?;
            let found = sst::series(&parsed, &schema, request.start, request.end, |tags| {
                filter.keeps(tags)
            })
            .map_err(corrupt_sst(&key))?;
            let ts = file.min_ts.max(request.start);
            for tags in found {
                series.entry(tags).or_insert(ts);
            }
        }
        Ok(series
            .into_iter()
            .take(request.limit.unwrap_or(usize::MAX))
            .map(|(tags, ts)| Row {
                tags,
                ts,
                fields: vec![Value::Null; schema.fields.len()],
            })
            .collect())
    }

    /// Like [`ShardEngine::scan`], as a stream of Arrow batches of at most `batch_rows`
    /// rows in the region's row schema ([`sst::row_schema`]), projected: the memtables
    /// as they are now and the SSTs in range, merged as the batches are taken, so no
    /// more than a batch of each SST is decoded at a time.
    pub async fn scan_stream(
        &self,
        id: RegionId,
        request: &ScanRequest,
        batch_rows: usize,
    ) -> Result<ScanStream, EngineError> {
        assert!(batch_rows > 0, "batches hold at least one row");
        let request = &self.retained(id, request)?;
        let limit = request.limit.unwrap_or(usize::MAX);
        if request.series_only {
            let schema = Projection::of(id, &self.schema(id)?, request)?.schema;
            let rows = self.scan_series_only(id, request).await?;
            let rows = rows.into_iter().map(|row| (0, row)).collect();
            return Ok(ScanStream::new(
                vec![Run::Rows(Some(rows))],
                schema,
                batch_rows,
                limit,
            ));
        }
        // The memtables and the file list are taken in one step, so that no row flushed
        // meanwhile is missed or read twice from different places.
        let (filter, projection, mut runs, files) = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            let schema = &region.manifest.schema;
            let (projection, filter) = plan_scan(id, schema, request)?;
            let keep = |tags: &[String]| filter.keeps(tags);
            let equal = filter.equalities();
            let runs: Vec<Run> = std::iter::once(&region.memtable)
                .chain(region.frozen.iter().map(|m| &**m))
                .map(|memtable| {
                    let mut rows =
                        memtable.scan_sequenced(request.start, request.end, keep, &equal);
                    for (_, row) in &mut rows {
                        projection.apply(&mut row.fields);
                    }
                    Run::Rows(Some(rows))
                })
                .collect();
            (filter, projection, runs, files_in_range(region, request))
        };
        for file in files {
            let (key, parsed) = self.read_sst(id, &file).await?;
            let reader = sst::SstReader::open(
                &parsed,
                &projection.schema,
                request.start,
                request.end,
                |tags| filter.keeps(tags),
            )
            .map_err(corrupt_sst(&key))?;
            runs.push(Run::Sst { key, reader });
        }
        Ok(ScanStream::new(runs, projection.schema, batch_rows, limit))
    }

    /// [`ShardEngine::scan_stream`], every batch of it.
    pub async fn scan_batches(
        &self,
        id: RegionId,
        request: &ScanRequest,
        batch_rows: usize,
    ) -> Result<Vec<arrow_array::RecordBatch>, EngineError> {
        let mut stream = self.scan_stream(id, request, batch_rows).await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next_batch().map_err(EngineError::Io)? {
            batches.push(batch);
        }
        Ok(batches)
    }
}

/// What every scan compiles first against the region's schema: its projection and its
/// label matchers.
fn plan_scan(
    id: RegionId,
    schema: &RegionSchema,
    request: &ScanRequest,
) -> Result<(Projection, SeriesFilter), EngineError> {
    Ok((
        Projection::of(id, schema, request)?,
        SeriesFilter::compile_for(id, schema, &request.matchers)?,
    ))
}

/// The fields a scan returns: a projection of the region's schema.
struct Projection {
    /// The region's schema with only the projected fields: what SST readers decode.
    schema: RegionSchema,
    /// Each projected field's index among the region's fields, if the region has it.
    indexes: Vec<Option<usize>>,
    /// Every field, in schema order.
    identity: bool,
}

impl Projection {
    fn of(
        id: RegionId,
        schema: &RegionSchema,
        request: &ScanRequest,
    ) -> Result<Projection, EngineError> {
        let (projected, indexes) = schema
            .project(request.projection.as_deref())
            .map_err(|reason| EngineError::InvalidScan { region: id, reason })?;
        Ok(Projection {
            identity: indexes.len() == schema.fields.len()
                && indexes
                    .iter()
                    .enumerate()
                    .all(|(i, &index)| index == Some(i)),
            schema: projected,
            indexes,
        })
    }

    /// Turns a memtable row's fields (all of them, or fewer if they predate an ALTER ADD
    /// COLUMN) into the projected ones.
    fn apply(&self, fields: &mut Vec<Value>) {
        if self.identity {
            fields.resize(self.indexes.len(), Value::Null);
            return;
        }
        let projected = self
            .indexes
            .iter()
            .map(|&index| {
                index
                    .and_then(|i| fields.get_mut(i))
                    .map_or(Value::Null, |v| std::mem::replace(v, Value::Null))
            })
            .collect();
        *fields = projected;
    }
}

/// The oldest timestamp the region still keeps, in its unit (rounded down: a row is
/// never hidden before its TTL has passed).
fn retention_cutoff(
    regions: &BTreeMap<RegionId, Region>,
    id: RegionId,
) -> Result<i64, EngineError> {
    let region = live_region(regions, id)?;
    Ok(match region.manifest.ttl_ms {
        Some(ttl) => {
            let cutoff_ms = metronome_core::rt::time::unix_time_ms().saturating_sub(ttl);
            TimeUnit::Millisecond.convert_floor(cutoff_ms, region.manifest.schema.time_unit)
        }
        None => i64::MIN,
    })
}

/// Like [`merge_latest`], keeping each surviving row's sequence.
fn merge_latest_sequenced(mut rows: Vec<(u64, Row)>) -> Vec<(u64, Row)> {
    // The rows arrive as a few sorted runs (one per memtable and SST); the stable sort
    // merges such runs in about n log(runs) comparisons, where an unstable sort spends
    // n log(n) comparisons of tag vectors (a query profile showed them as the shards'
    // top cost).
    rows.sort_by(|(sa, a), (sb, b)| {
        (&a.tags, a.ts, std::cmp::Reverse(*sa)).cmp(&(&b.tags, b.ts, std::cmp::Reverse(*sb)))
    });
    rows.dedup_by(|later, earlier| later.1.tags == earlier.1.tags && later.1.ts == earlier.1.ts);
    rows
}

/// Sorts rows by (series, ts) and keeps, for each, the one with the highest sequence.
fn merge_latest(rows: Vec<(u64, Row)>, limit: usize) -> Vec<Row> {
    merge_latest_sequenced(rows)
        .into_iter()
        .take(limit)
        .map(|(_, row)| row)
        .collect()
}

fn quarantined_region(id: RegionId, reason: String) -> Region {
    Region {
        manifest: RegionManifest {
            // Nothing of the WAL is replayed into a region whose manifest is unreadable.
            flushed_sequence: u64::MAX,
            ..RegionManifest::new(
                id,
                RegionSchema {
                    tags: Vec::new(),
                    time_index: "ts".to_string(),
                    time_unit: TimeUnit::Millisecond,
                    fields: Vec::new(),
                },
            )
        },
        memtable: Memtable::default(),
        frozen: Vec::new(),
        in_flight: BTreeSet::new(),
        flushing: false,
        compacting: false,
        closing: false,
        quarantined: Some(reason),
        checkpoint_version: 0,
        incarnation: 0,
    }
}

fn live_region(regions: &BTreeMap<RegionId, Region>, id: RegionId) -> Result<&Region, EngineError> {
    regions
        .get(&id)
        .filter(|r| !r.manifest.dropped)
        .ok_or(EngineError::RegionNotFound(id))
}

fn usable_region_mut(
    regions: &mut BTreeMap<RegionId, Region>,
    id: RegionId,
) -> Result<&mut Region, EngineError> {
    let region = regions
        .get_mut(&id)
        .filter(|r| !r.manifest.dropped)
        .ok_or(EngineError::RegionNotFound(id))?;
    if region.manifest.closed {
        return Err(EngineError::RegionClosed(id));
    }
    match &region.quarantined {
        Some(reason) => Err(EngineError::Quarantined {
            region: id,
            reason: reason.clone(),
        }),
        None => Ok(region),
    }
}

fn usable_region(
    regions: &BTreeMap<RegionId, Region>,
    id: RegionId,
) -> Result<&Region, EngineError> {
    let region = live_region(regions, id)?;
    if region.manifest.closed {
        return Err(EngineError::RegionClosed(id));
    }
    match &region.quarantined {
        Some(reason) => Err(EngineError::Quarantined {
            region: id,
            reason: reason.clone(),
        }),
        None => Ok(region),
    }
}

/// Label matchers compiled against a schema.
struct SeriesFilter {
    conditions: Vec<(Option<usize>, Condition)>,
}

enum Condition {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

impl SeriesFilter {
    fn compile(schema: &RegionSchema, matchers: &[TagMatcher]) -> Result<SeriesFilter, String> {
        let mut conditions = Vec::with_capacity(matchers.len());
        for matcher in matchers {
            let index = schema.tags.iter().position(|tag| *tag == matcher.tag);
            // Label regexes are Prometheus' (Go's syntax, anchored as Prometheus
            // anchors them), whichever front end sent them.
            let anchored = || {
                re2::compile_matcher(&matcher.value).map_err(|error| {
                    format!(
                        "invalid regular expression {:?} for tag {:?}: {error}",
                        matcher.value, matcher.tag
                    )
                })
            };
            let condition = match matcher.op {
                MatchOp::Equal => Condition::Equal(matcher.value.clone()),
                MatchOp::NotEqual => Condition::NotEqual(matcher.value.clone()),
                MatchOp::Regex => Condition::Regex(anchored()?),
                MatchOp::NotRegex => Condition::NotRegex(anchored()?),
            };
            conditions.push((index, condition));
        }
        Ok(SeriesFilter { conditions })
    }

    /// The (tag index, value) equalities every kept series satisfies, for the
    /// memtables' postings. An empty value also matches a missing tag, so it is left out.
    fn equalities(&self) -> Vec<(usize, &str)> {
        self.conditions
            .iter()
            .filter_map(|(index, condition)| match (index, condition) {
                (Some(index), Condition::Equal(value)) if !value.is_empty() => {
                    Some((*index, value.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    /// [`SeriesFilter::compile`] for a scan of `region`, its error as the engine's.
    fn compile_for(
        region: RegionId,
        schema: &RegionSchema,
        matchers: &[TagMatcher],
    ) -> Result<SeriesFilter, EngineError> {
        SeriesFilter::compile(schema, matchers)
            .map_err(|reason| EngineError::InvalidScan { region, reason })
    }

    fn keeps(&self, tags: &[String]) -> bool {
        self.conditions.iter().all(|(index, condition)| {
            // A tag the schema lacks has the empty value, as in Prometheus.
            let value = index.and_then(|i| tags.get(i)).map_or("", String::as_str);
            match condition {
                Condition::Equal(expected) => value == expected,
                Condition::NotEqual(expected) => value != expected,
                Condition::Regex(regex) => regex.is_match(value),
                Condition::NotRegex(regex) => !regex.is_match(value),
            }
        })
    }
}
