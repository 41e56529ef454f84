//! Flushes: a region's frozen memtable written as an SST, under memory and WAL pressure or on request.

use super::*;

impl ShardEngine {
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
                        r.check(*id, Need::Serving).is_ok() && r.manifest.flushed_sequence < *max
                    })
                })
                .map(|(id, _)| id)
                .collect()
        } else {
            self.regions
                .borrow()
                .iter()
                .filter(|(id, r)| r.check(**id, Need::Serving).is_ok() && !r.flushing)
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
            let region = region_mut(&mut regions, id, Need::Serving)?;
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
                Err(_) if region.state() != &RegionState::Dropped => {
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

    pub(super) async fn finish_flush(
        &self,
        id: RegionId,
        incarnation: u64,
        frozen: &Memtable,
        flushed_sequence: u64,
        file_id: u64,
        schema: &RegionSchema,
    ) -> Result<Option<SstMeta>, EngineError> {
        let meta = self.store_sst(id, frozen, file_id, schema).await?;
        let key = sst_key(&self.root, id, file_id);
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

    /// Encodes `frozen` as SST `file_id` of region `id` and stores it (not yet in the
    /// manifest).
    pub(super) async fn store_sst(
        &self,
        id: RegionId,
        frozen: &Memtable,
        file_id: u64,
        schema: &RegionSchema,
    ) -> Result<SstMeta, EngineError> {
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
        Ok(meta)
    }
}
