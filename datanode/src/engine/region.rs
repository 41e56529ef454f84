//! A region as its shard holds it, and how requests find a usable one.

use super::*;

pub(super) struct Region {
    pub(super) manifest: RegionManifest,
    pub(super) memtable: Memtable,
    /// Memtables being flushed: still read by scans until their SST is in the manifest.
    pub(super) frozen: Vec<Rc<Memtable>>,
    /// Sequences taken by writes not yet applied (or failed): a flush may only claim the
    /// sequences below the lowest of them.
    pub(super) in_flight: BTreeSet<u64>,
    pub(super) flushing: bool,
    /// A compaction is under way. A second one would pick the same inputs while the
    /// first yields, and write their rows again.
    pub(super) compacting: bool,
    pub(super) quarantined: Option<String>,
    /// The version of the checkpoint on disk; edits since then are in its edit log.
    pub(super) checkpoint_version: u64,
    /// A close is under way: writes are refused while the region drains and flushes.
    pub(super) closing: bool,
    /// Tells this life of the region from a later one after a drop and re-create: a
    /// flush or compaction of the dropped incarnation that finishes late must not record
    /// its file in the new one's manifest.
    pub(super) incarnation: u64,
}

impl Region {
    pub(super) fn new(manifest: RegionManifest, incarnation: u64) -> Region {
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

pub(super) fn quarantined_region(id: RegionId, reason: String) -> Region {
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

pub(super) fn live_region(
    regions: &BTreeMap<RegionId, Region>,
    id: RegionId,
) -> Result<&Region, EngineError> {
    regions
        .get(&id)
        .filter(|r| !r.manifest.dropped)
        .ok_or(EngineError::RegionNotFound(id))
}

pub(super) fn usable_region_mut(
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

pub(super) fn usable_region(
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
