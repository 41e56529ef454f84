//! A region's lifecycle: create, drop, alter (tags, fields, TTL), close and open.

use super::*;

impl ShardEngine {
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
                Some(existing) if existing.state() == &RegionState::Closed => {
                    return Err(EngineError::RegionClosed(id));
                }
                Some(existing) if existing.state() != &RegionState::Dropped => {
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
                    wal_commit_floor: tombstone.manifest.wal_commit_floor,
                    // A new copy: the old one's damage went with it.
                    quarantined: None,
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
        region(&self.regions.borrow(), id, Need::Exists)?;
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
            let region = region(&regions, id, Need::Exists)?;
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
                region.quarantine(|| {
                    format!("a drop failed and may have taken effect ({error}); drop it again")
                });
            }
            return Err(error.into());
        }
        let mut regions = self.regions.borrow_mut();
        if let Some(region) = regions.get_mut(&id) {
            self.memory_bytes.set(
                self.memory_bytes
                    .get()
                    .saturating_sub(region.memtable.bytes()),
            );
            region.drop_to(tombstone);
        }
        Ok(())
    }

    /// Adds a field column; existing rows read it as null. A field the region already has,
    /// the same, is not added again: two frontends that both found it missing (each
    /// reconciling the catalog's columns with the region's) both add it, and the second
    /// must succeed.
    pub async fn add_field(&self, id: RegionId, column: FieldColumn) -> Result<(), EngineError> {
        let added = self
            .alter_schema(id, |schema| {
                match schema.fields.iter().find(|field| field.name == column.name) {
                    Some(field) if *field == column => {}
                    Some(field) => {
                        return Err(EngineError::InvalidSchema(format!(
                            "field {:?} exists as {field:?}, not {column:?}",
                            column.name
                        )))
                    }
                    None => schema.fields.push(column.clone()),
                }
                Ok(())
            })
            .await?;
        if !added {
            return Ok(());
        }
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
    ///
    /// Tags the region already has, where the request expects them, are not added again:
    /// two frontends that found the same tags missing both add them, and the second must
    /// succeed (a refusal here reached Prometheus as a 400, and it drops such a batch).
    /// Every frontend asks for a slice of the catalog's one append-only tag list (the whole
    /// list, so that a copy that missed a change gets it in its place); the region's tags
    /// are a prefix of that list, so the slice's first tag is either absent or at the
    /// position the slice then follows. Anything else (a tag present elsewhere) is
    /// refused.
    pub async fn add_tags(&self, id: RegionId, tags: Vec<String>) -> Result<(), EngineError> {
        if tags.is_empty() {
            region(&self.regions.borrow(), id, Need::Serving)?;
            return Ok(());
        }
        self.alter_schema(id, |schema| {
            let present = match schema.tags.iter().position(|tag| *tag == tags[0]) {
                Some(start) => {
                    let overlap = (schema.tags.len() - start).min(tags.len());
                    if tags[..overlap] != schema.tags[start..start + overlap] {
                        return Err(EngineError::InvalidSchema(format!(
                            "tags {tags:?} do not follow the region's {:?}",
                            schema.tags
                        )));
                    }
                    overlap
                }
                None => 0,
            };
            // What is left must be new: `validate` refuses a tag named twice.
            schema.tags.extend_from_slice(&tags[present..]);
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Commits the schema `change` makes to the region's current one, if it is valid;
    /// returns whether it changed anything. A change that leaves the schema as it is (the
    /// column is there already) writes no manifest edit, unless another change committed
    /// between the look and the commit (then an identical edit, harmless).
    pub(super) async fn alter_schema(
        &self,
        id: RegionId,
        change: impl Fn(&mut RegionSchema) -> Result<(), EngineError>,
    ) -> Result<bool, EngineError> {
        let mut looked = region(&self.regions.borrow(), id, Need::Serving)?
            .manifest
            .schema
            .clone();
        let before = looked.clone();
        change(&mut looked)?;
        if looked == before {
            return Ok(false);
        }
        let changed = std::cell::Cell::new(false);
        let found = self
            .commit_edit(id, None, |manifest| {
                let mut schema = manifest.schema.clone();
                change(&mut schema)?;
                schema.validate().map_err(EngineError::InvalidSchema)?;
                changed.set(schema != manifest.schema);
                Ok(Edit::Schema(schema))
            })
            .await?;
        if !found {
            return Err(EngineError::RegionNotFound(id));
        }
        Ok(changed.get())
    }

    /// Sets (or clears) the region's retention.
    pub async fn set_ttl(&self, id: RegionId, ttl_ms: Option<i64>) -> Result<(), EngineError> {
        if ttl_ms.is_some_and(|ttl| ttl <= 0) {
            return Err(EngineError::InvalidSchema(format!(
                "a TTL must be positive, got {ttl_ms:?} ms"
            )));
        }
        region(&self.regions.borrow(), id, Need::Serving)?;
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
            let region = match region_mut(&mut regions, id, Need::Serving) {
                Err(EngineError::RegionClosed(_)) => return Ok(()),
                other => other?,
            };
            if region.state() == &RegionState::Closing {
                return Err(EngineError::Unavailable(format!(
                    "region {id} is already closing; retry to learn when it is closed"
                )));
            }
            region.enter(RegionState::Closing);
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
                        if region.state() == &RegionState::Closing {
                            let flushed_sequence = region.manifest.last_sequence;
                            region.apply(&Edit::Close { flushed_sequence });
                        }
                    }
                }
                committed
            }
            Err(error) => Err(error),
        };
        // A close that did not get as far as its edit leaves the region open.
        if let Some(region) = self.regions.borrow_mut().get_mut(&id) {
            if region.state() == &RegionState::Closing {
                region.enter(RegionState::Open);
            }
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
    pub(super) async fn drain_for_close(&self, id: RegionId) -> Result<(), EngineError> {
        let started = metronome_core::rt::time::now();
        loop {
            let flush_now = {
                let regions = self.regions.borrow();
                let region = region(&regions, id, Need::Serving)?;
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
            if metronome_core::rt::time::elapsed(started)
                > Duration::from_millis(CLOSE_DRAIN_MS_MAX)
            {
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
        let closed = region(&self.regions.borrow(), id, Need::Exists)?
            .manifest
            .closed;
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
}
