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
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use metronome_core::data::{
    FieldColumn, MatchOp, RegionId, RegionSchema, Row, ScanRequest, TagMatcher, Value,
};
use metronome_core::rt::disk::Disk;
use regex::Regex;

use crate::codec::{decode_rows, encode_rows};
use crate::manifest::{manifest_path, RegionManifest};
use crate::memtable::Memtable;
use crate::wal::{Wal, WalConfig, WalError, WalRecovery};

/// How a shard engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Writes are refused as overloaded while the shard's memtables hold more than this.
    pub memory_bytes_max: usize,
    /// The WAL; its `dir` is relative to the shard root.
    pub wal: WalConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memory_bytes_max: 512 * 1024 * 1024,
            wal: WalConfig::new("wal"),
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
    #[error("the datanode is unavailable: {0}")]
    Unavailable(String),
}

impl EngineError {
    /// Whether the client should retry the same request later (HTTP 429/503).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EngineError::Overloaded { .. }
                | EngineError::Wal(WalError::Overloaded { .. })
                | EngineError::Unavailable(_)
        )
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
    quarantined: Option<String>,
}

/// What recovery did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineRecovery {
    pub regions: usize,
    pub rows_replayed: u64,
    pub quarantined: Vec<(RegionId, String)>,
    pub wal: WalRecovery,
}

pub struct ShardEngine {
    disk: Disk,
    root: PathBuf,
    config: EngineConfig,
    wal: Wal,
    regions: RefCell<BTreeMap<RegionId, Region>>,
    memory_bytes: Cell<usize>,
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
        let mut recovery = EngineRecovery::default();
        let mut regions = BTreeMap::new();
        for name in disk.list_dir(&regions_dir).await? {
            let Some(id) = parse_region_dir(&name) else {
                tracing::warn!(dir = %regions_dir.display(), entry = %name, "ignoring an entry that is not a region");
                continue;
            };
            let path = manifest_path(&root, id);
            let region = match RegionManifest::load(&disk, &path).await {
                Ok(Some(manifest)) if manifest.region == id => Region {
                    manifest,
                    memtable: Memtable::default(),
                    quarantined: None,
                },
                Ok(Some(manifest)) => quarantined_region(
                    id,
                    format!(
                        "manifest {} names region {}",
                        path.display(),
                        manifest.region
                    ),
                ),
                // A region whose creation never completed (the manifest was never renamed
                // into place) does not exist.
                Ok(None) => continue,
                Err(reason) => quarantined_region(id, reason),
            };
            regions.insert(id, region);
        }

        let mut wal_config = config.wal.clone();
        wal_config.dir = root.join(&config.wal.dir);
        let mut rows_replayed = 0u64;
        let (wal, wal_recovery) = Wal::open(disk.clone(), wal_config, |header, payload| {
            let Some(region) = regions.get_mut(&header.region) else { return };
            if region.quarantined.is_some() || region.manifest.dropped || header.sequence <= region.manifest.flushed_sequence {
                return;
            }
            region.manifest.last_sequence = region.manifest.last_sequence.max(header.sequence);
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
        let engine = ShardEngine {
            disk,
            root,
            config,
            wal,
            regions: RefCell::new(regions),
            memory_bytes: Cell::new(memory),
        };
        Ok((Rc::new(engine), recovery))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every region this shard holds, dropped ones (tombstones) included.
    pub fn region_ids(&self) -> Vec<RegionId> {
        self.regions.borrow().keys().copied().collect()
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
                },
                None => RegionManifest {
                    region: id,
                    schema,
                    flushed_sequence: 0,
                    last_sequence: 0,
                    dropped: false,
                },
            }
        };
        manifest.store(&self.disk, &self.root).await?;
        self.regions.borrow_mut().insert(
            id,
            Region {
                manifest,
                memtable: Memtable::default(),
                quarantined: None,
            },
        );
        Ok(())
    }

    /// Drops a region: its data is discarded, its manifest stays as a tombstone.
    pub async fn drop_region(&self, id: RegionId) -> Result<(), EngineError> {
        let tombstone = {
            let regions = self.regions.borrow();
            let region = live_region(&regions, id)?;
            RegionManifest {
                dropped: true,
                flushed_sequence: region.manifest.last_sequence,
                ..region.manifest.clone()
            }
        };
        tombstone.store(&self.disk, &self.root).await?;
        let mut regions = self.regions.borrow_mut();
        if let Some(region) = regions.get_mut(&id) {
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
        let manifest = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            let mut manifest = region.manifest.clone();
            manifest.schema.fields.push(column);
            manifest
                .schema
                .validate()
                .map_err(EngineError::InvalidSchema)?;
            manifest
        };
        manifest.store(&self.disk, &self.root).await?;
        let mut regions = self.regions.borrow_mut();
        if let Some(region) = regions.get_mut(&id) {
            region.memtable.add_null_field();
            region.manifest.schema = manifest.schema;
        }
        Ok(())
    }

    pub fn schema(&self, id: RegionId) -> Result<RegionSchema, EngineError> {
        Ok(live_region(&self.regions.borrow(), id)?
            .manifest
            .schema
            .clone())
    }

    /// Writes rows to a region; returns the write's sequence once it is durable.
    pub async fn write(&self, id: RegionId, rows: Vec<Row>) -> Result<u64, EngineError> {
        let (sequence, durable) = {
            let mut regions = self.regions.borrow_mut();
            let region = regions
                .get_mut(&id)
                .filter(|r| !r.manifest.dropped)
                .ok_or(EngineError::RegionNotFound(id))?;
            if let Some(reason) = &region.quarantined {
                return Err(EngineError::Quarantined {
                    region: id,
                    reason: reason.clone(),
                });
            }
            for (index, row) in rows.iter().enumerate() {
                region.manifest.schema.check_row(row).map_err(|reason| {
                    EngineError::InvalidRow {
                        region: id,
                        row: index,
                        reason,
                    }
                })?;
            }
            let limit = self.config.memory_bytes_max;
            if self.memory_bytes.get() >= limit {
                return Err(EngineError::Overloaded {
                    memory_bytes: self.memory_bytes.get(),
                    limit,
                });
            }
            let sequence = region.manifest.last_sequence + 1;
            let durable = self.wal.enqueue(id, sequence, encode_rows(&rows))?;
            region.manifest.last_sequence = sequence;
            (sequence, durable)
        };
        durable
            .await
            .unwrap_or_else(|_| Err(WalError::Failed("the WAL writer stopped".to_string())))?;
        let mut regions = self.regions.borrow_mut();
        // A region dropped while the write was in flight has nothing to apply it to.
        if let Some(region) = regions.get_mut(&id).filter(|r| !r.manifest.dropped) {
            let mut grown = 0isize;
            for row in rows {
                grown += region.memtable.insert(sequence, row);
            }
            self.memory_bytes
                .set((self.memory_bytes.get() as isize + grown) as usize);
        }
        Ok(sequence)
    }

    /// Rows of a region matching the request, in (series, ts) order.
    pub fn scan(&self, id: RegionId, request: &ScanRequest) -> Result<Vec<Row>, EngineError> {
        let regions = self.regions.borrow();
        let region = usable_region(&regions, id)?;
        let filter = SeriesFilter::compile(&region.manifest.schema, &request.matchers)
            .map_err(|reason| EngineError::InvalidScan { region: id, reason })?;
        Ok(region.memtable.scan(
            request.start_ms,
            request.end_ms,
            |tags| filter.keeps(tags),
            request.limit.unwrap_or(usize::MAX),
        ))
    }
}

fn quarantined_region(id: RegionId, reason: String) -> Region {
    Region {
        manifest: RegionManifest {
            region: id,
            schema: RegionSchema {
                tags: Vec::new(),
                time_index: "ts".to_string(),
                fields: Vec::new(),
            },
            flushed_sequence: u64::MAX,
            last_sequence: 0,
            dropped: false,
        },
        memtable: Memtable::default(),
        quarantined: Some(reason),
    }
}

fn live_region(regions: &BTreeMap<RegionId, Region>, id: RegionId) -> Result<&Region, EngineError> {
    regions
        .get(&id)
        .filter(|r| !r.manifest.dropped)
        .ok_or(EngineError::RegionNotFound(id))
}

fn usable_region(
    regions: &BTreeMap<RegionId, Region>,
    id: RegionId,
) -> Result<&Region, EngineError> {
    let region = live_region(regions, id)?;
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
            let anchored = || {
                Regex::new(&format!("^(?:{})$", matcher.value)).map_err(|error| {
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

    fn keeps(&self, tags: &[String]) -> bool {
        self.conditions.iter().all(|(index, condition)| {
            // A tag the schema lacks has the empty value, as in Prometheus.
            let value = index.map_or("", |i| tags[i].as_str());
            match condition {
                Condition::Equal(expected) => value == expected,
                Condition::NotEqual(expected) => value != expected,
                Condition::Regex(regex) => regex.is_match(value),
                Condition::NotRegex(regex) => !regex.is_match(value),
            }
        })
    }
}
