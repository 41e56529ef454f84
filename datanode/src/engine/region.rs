//! A region as its shard holds it, and how requests find a usable one.

use super::*;

/// Where a region is in its life, as its shard serves it. Closed and Dropped are also
/// recorded in the manifest (`RegionManifest::closed`, `dropped`), which is what
/// survives a restart; this is the one place the engine asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RegionState {
    /// Serves reads and writes.
    Open,
    /// A close is under way: it refuses writes while it drains and flushes, and still
    /// serves reads.
    Closing,
    /// Closed: its data stays, it serves nothing until opened again.
    Closed,
    /// Its data failed a check (or a drop may have taken effect): it serves nothing until
    /// dropped. The reason is the first one found.
    Quarantined(String),
    /// Dropped: its manifest stays as a tombstone; the id may be created again.
    Dropped,
}

impl RegionState {
    /// Whether a region goes from `self` to `to`. Anything else is a bug in the engine.
    fn may_become(&self, to: &RegionState) -> bool {
        use RegionState::*;
        match (self, to) {
            (Open, Closing) | (Closing, Open) | (Closing, Closed) | (Closed, Open) => true,
            (Dropped, _) => false,
            (_, Quarantined(_)) | (_, Dropped) => true,
            _ => false,
        }
    }
}

/// What a request needs of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// That it exists (not dropped): drops, opens, schema and file lookups.
    Exists,
    /// That it serves: open or closing (reads, alters, flushes, compactions).
    Serving,
    /// That it takes writes: open.
    Writable,
}

pub(super) struct Region {
    pub(super) manifest: RegionManifest,
    state: RegionState,
    pub(super) memtable: Memtable,
    /// Memtables being flushed: still read by scans until their SST is in the manifest.
    pub(super) frozen: Vec<Rc<Memtable>>,
    /// Sequences taken by writes not yet applied (or failed): a flush may only claim the
    /// sequences below the lowest of them.
    pub(super) in_flight: BTreeSet<u64>,
    /// The highest sequence of a write this copy, as a leader, acknowledged: durable on
    /// every member of its configuration, and so is every write below it (each member
    /// takes writes in sequence order). Writes complete out of order, so the applied
    /// prefix may lag it (`super::follower_read`). In memory: 0 at open.
    pub(super) acknowledged_max: u64,
    /// A follower's waits for a write already queued in the WAL to become durable (a
    /// leader's shipment sent again while the first was still being synced): each is told
    /// once no sequence at or below its own is in flight.
    pub(super) durable_waiters: Vec<(u64, futures::channel::oneshot::Sender<()>)>,
    /// A flush is under way. Flushes and compactions are jobs that run alongside each
    /// other in any state that serves, so they are not states of the region.
    pub(super) flushing: bool,
    /// A compaction is under way. A second one would pick the same inputs while the
    /// first yields, and write their rows again.
    pub(super) compacting: bool,
    /// The version of the checkpoint on disk; edits since then are in its edit log.
    pub(super) checkpoint_version: u64,
    /// Tells this life of the region from a later one after a drop and re-create: a
    /// flush or compaction of the dropped incarnation that finishes late must not record
    /// its file in the new one's manifest.
    pub(super) incarnation: u64,
}

impl Region {
    /// A region as its manifest left it.
    pub(super) fn new(manifest: RegionManifest, incarnation: u64) -> Region {
        let state = if manifest.dropped {
            RegionState::Dropped
        } else if manifest.closed {
            RegionState::Closed
        } else {
            RegionState::Open
        };
        Region {
            incarnation,
            checkpoint_version: manifest.version,
            manifest,
            state,
            memtable: Memtable::default(),
            frozen: Vec::new(),
            in_flight: BTreeSet::new(),
            acknowledged_max: 0,
            durable_waiters: Vec::new(),
            flushing: false,
            compacting: false,
        }
    }

    pub(super) fn state(&self) -> &RegionState {
        &self.state
    }

    /// Moves the region to `to`, which must be a transition a region makes, and one that
    /// agrees with its manifest.
    pub(super) fn enter(&mut self, to: RegionState) {
        assert!(
            self.state.may_become(&to),
            "region {}: {:?} → {to:?} is no transition a region makes",
            self.manifest.region,
            self.state
        );
        self.state = to;
        self.assert_agrees_with_manifest();
    }

    /// Quarantines the region for `reason`, unless it already is (the first reason
    /// stays) or is dropped (nothing of it is served to protect).
    pub(super) fn quarantine(&mut self, reason: impl FnOnce() -> String) {
        if !matches!(
            self.state,
            RegionState::Quarantined(_) | RegionState::Dropped
        ) {
            self.enter(RegionState::Quarantined(reason()));
        }
    }

    /// Applies a manifest edit; an edit that closes or opens the region moves it too.
    pub(super) fn apply(&mut self, edit: &Edit) {
        self.manifest.apply(edit);
        let closes = matches!(edit, Edit::Close { .. } | Edit::Closed(true));
        let opens = matches!(edit, Edit::Closed(false));
        if closes && matches!(self.state, RegionState::Open | RegionState::Closing) {
            self.enter(RegionState::Closed);
        } else if opens && self.state == RegionState::Closed {
            self.enter(RegionState::Open);
        }
        self.assert_agrees_with_manifest();
    }

    /// Replaces the manifest with its tombstone and forgets the region's rows.
    pub(super) fn drop_to(&mut self, tombstone: RegionManifest) {
        assert!(
            tombstone.dropped,
            "a dropped region's manifest is a tombstone"
        );
        self.checkpoint_version = tombstone.version;
        self.manifest = tombstone;
        self.memtable = Memtable::default();
        self.enter(RegionState::Dropped);
    }

    /// The manifest records what survives a restart: a dropped region is dropped there,
    /// and an open or closing one is neither closed nor dropped there.
    fn assert_agrees_with_manifest(&self) {
        let agrees = match self.state {
            RegionState::Dropped => self.manifest.dropped,
            RegionState::Closed => self.manifest.closed && !self.manifest.dropped,
            RegionState::Open | RegionState::Closing => {
                !self.manifest.closed && !self.manifest.dropped
            }
            RegionState::Quarantined(_) => true,
        };
        assert!(
            agrees,
            "region {}: state {:?} disagrees with its manifest (closed {}, dropped {})",
            self.manifest.region, self.state, self.manifest.closed, self.manifest.dropped
        );
    }

    /// Whether the region serves a request that needs `need`; the error says why not.
    pub(super) fn check(&self, id: RegionId, need: Need) -> Result<(), EngineError> {
        match (&self.state, need) {
            (RegionState::Dropped, _) => Err(EngineError::RegionNotFound(id)),
            (_, Need::Exists) => Ok(()),
            (RegionState::Quarantined(reason), _) => Err(EngineError::Quarantined {
                region: id,
                reason: reason.clone(),
            }),
            (RegionState::Closed, _) | (RegionState::Closing, Need::Writable) => {
                Err(EngineError::RegionClosed(id))
            }
            (RegionState::Open, _) | (RegionState::Closing, Need::Serving) => Ok(()),
        }
    }
}

pub(super) fn quarantined_region(id: RegionId, reason: String) -> Region {
    let manifest = RegionManifest {
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
    };
    let mut region = Region::new(manifest, 0);
    region.checkpoint_version = 0;
    region.enter(RegionState::Quarantined(reason));
    region
}

/// The region `id`, if it meets `need`.
pub(super) fn region(
    regions: &BTreeMap<RegionId, Region>,
    id: RegionId,
    need: Need,
) -> Result<&Region, EngineError> {
    let region = regions.get(&id).ok_or(EngineError::RegionNotFound(id))?;
    region.check(id, need)?;
    Ok(region)
}

/// [`region`], to change it.
pub(super) fn region_mut(
    regions: &mut BTreeMap<RegionId, Region>,
    id: RegionId,
    need: Need,
) -> Result<&mut Region, EngineError> {
    let region = regions
        .get_mut(&id)
        .ok_or(EngineError::RegionNotFound(id))?;
    region.check(id, need)?;
    Ok(region)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use metronome_core::data::{FieldColumn, FieldType};

    pub(in crate::engine) fn region() -> Region {
        let schema = RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![FieldColumn {
                name: "value".into(),
                field_type: FieldType::Float64,
            }],
        };
        Region::new(RegionManifest::new(RegionId::new(1, 1), schema), 1)
    }

    /// What each state answers to each need: the one table every request goes through.
    #[test]
    fn each_state_serves_exactly_what_it_should() {
        let id = RegionId::new(1, 1);
        let answers = |region: &Region| {
            [Need::Exists, Need::Serving, Need::Writable].map(|need| match region.check(id, need) {
                Ok(()) => "ok",
                Err(EngineError::RegionNotFound(_)) => "not found",
                Err(EngineError::RegionClosed(_)) => "closed",
                Err(EngineError::Quarantined { .. }) => "quarantined",
                Err(other) => panic!("{other}"),
            })
        };
        let mut open = region();
        assert_eq!(answers(&open), ["ok", "ok", "ok"]);
        open.enter(RegionState::Closing);
        assert_eq!(
            answers(&open),
            ["ok", "ok", "closed"],
            "closing: reads, no writes"
        );
        let mut closed = region();
        closed.enter(RegionState::Closing);
        closed.apply(&Edit::Close {
            flushed_sequence: 0,
        });
        assert_eq!(closed.state(), &RegionState::Closed);
        assert_eq!(answers(&closed), ["ok", "closed", "closed"]);
        closed.apply(&Edit::Closed(false));
        assert_eq!(
            closed.state(),
            &RegionState::Open,
            "an open edit reopens it"
        );
        let mut quarantined = region();
        quarantined.quarantine(|| "first".into());
        quarantined.quarantine(|| "second".into());
        assert_eq!(
            quarantined.state(),
            &RegionState::Quarantined("first".into()),
            "the first reason stays"
        );
        assert_eq!(answers(&quarantined), ["ok", "quarantined", "quarantined"]);
        let tombstone = RegionManifest {
            dropped: true,
            ..quarantined.manifest.clone()
        };
        quarantined.drop_to(tombstone);
        assert_eq!(answers(&quarantined), ["not found"; 3]);
        quarantined.quarantine(|| "after the drop".into());
        assert_eq!(
            quarantined.state(),
            &RegionState::Dropped,
            "nothing to protect"
        );
    }

    #[test]
    #[should_panic(expected = "is no transition a region makes")]
    fn a_dropped_region_never_serves_again() {
        let mut dropped = region();
        let tombstone = RegionManifest {
            dropped: true,
            ..dropped.manifest.clone()
        };
        dropped.drop_to(tombstone);
        dropped.enter(RegionState::Open);
    }

    #[test]
    #[should_panic(expected = "disagrees with its manifest")]
    fn a_state_that_contradicts_the_manifest_is_caught() {
        let mut open = region();
        open.manifest.closed = true;
        open.enter(RegionState::Closing);
    }
}
