//! Compaction: expired files deleted, and a window's files of one size tier merged into one.

use super::*;

/// What one compaction of a region does.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Plan {
    /// Files wholly older than the retention cutoff: deleted.
    pub(super) expired: Vec<SstMeta>,
    /// Files merged into one: the fullest (window, size tier) group with at least
    /// `files_per_window_max` files, or none.
    pub(super) inputs: Vec<SstMeta>,
}

/// Chooses a compaction of `files`: the pure decision, apart from its I/O. Files of one
/// time window (`window`, in the region's unit, by each file's first timestamp) and one
/// size tier merge together, so that a window's big file is not rewritten with every
/// new small one; a file is in at most one of the plan's lists.
pub(super) fn pick(files: &[SstMeta], cutoff: i64, window: i64, config: &EngineConfig) -> Plan {
    assert!(window > 0, "a compaction window is at least one step");
    let expired: Vec<SstMeta> = files
        .iter()
        .filter(|f| f.max_ts < cutoff)
        .cloned()
        .collect();
    let mut windows: BTreeMap<(i64, u32), Vec<SstMeta>> = BTreeMap::new();
    for file in files.iter().filter(|f| f.max_ts >= cutoff) {
        windows
            .entry((file.min_ts.div_euclid(window), config.size_tier(file.bytes)))
            .or_default()
            .push(file.clone());
    }
    let inputs = windows
        .into_values()
        .filter(|group| group.len() >= config.files_per_window_max)
        .max_by_key(Vec::len)
        .unwrap_or_default();
    debug_assert!(inputs
        .iter()
        .all(|input| expired.iter().all(|e| e.file_id != input.file_id)));
    Plan { expired, inputs }
}

impl ShardEngine {
    /// Compacts the region's fullest time window if it holds `files_per_window_max` files
    /// or more, and deletes files wholly past the retention. Returns the files removed.
    pub async fn compact_region(&self, id: RegionId) -> Result<usize, EngineError> {
        self.check_running()?;
        let incarnation = {
            let mut regions = self.regions.borrow_mut();
            let region = region_mut(&mut regions, id, Need::Serving)?;
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
    pub(super) async fn compact_region_now(&self, id: RegionId) -> Result<usize, EngineError> {
        let cutoff = retention_cutoff(&self.regions.borrow(), id)?;
        let (schema, expired, inputs, incarnation) = {
            let regions = self.regions.borrow();
            let region = region(&regions, id, Need::Serving)?;
            // The window in the region's unit: a nanosecond region's files are windowed by
            // the same two hours as a millisecond one's.
            let window = TimeUnit::Millisecond
                .convert_floor(
                    self.config.compaction_window_ms,
                    region.manifest.schema.time_unit,
                )
                .max(1);
            let plan = pick(&region.manifest.files, cutoff, window, &self.config);
            (
                region.manifest.schema.clone(),
                plan.expired,
                plan.inputs,
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
    pub(super) async fn stored_file_id_floor(&self, id: RegionId) -> Result<u64, EngineError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(file_id: u64, min_ts: i64, max_ts: i64, bytes: u64) -> SstMeta {
        SstMeta {
            file_id,
            rows: 1,
            bytes,
            series: 1,
            min_ts,
            max_ts,
            max_sequence: file_id,
        }
    }

    #[test]
    fn the_fullest_window_of_one_tier_is_merged_and_expired_files_deleted() {
        let config = EngineConfig {
            files_per_window_max: 3,
            ..EngineConfig::default()
        };
        let small = 1_000;
        let big = config.tier_base_bytes * 1_000;
        let files = [
            file(1, 0, 5, small),     // expired: wholly before the cutoff 10
            file(2, 100, 150, small), // window 1
            file(3, 110, 120, small),
            file(4, 190, 230, small), // starts in window 1, whatever it ends in
            file(5, 120, 130, big),   // window 1, but another tier
            file(6, 200, 210, small), // window 2: alone
        ];
        let ids = |files: &[SstMeta]| files.iter().map(|f| f.file_id).collect::<Vec<_>>();
        let plan = pick(&files, 10, 100, &config);
        assert_eq!(ids(&plan.expired), [1]);
        assert_eq!(ids(&plan.inputs), [2, 3, 4]);
        // Below the threshold nothing merges; expiry does not wait for it.
        let plan = pick(&files[..3], 10, 100, &config);
        assert_eq!((ids(&plan.expired), ids(&plan.inputs)), (vec![1], vec![]));
        // Negative times window by floor, as positive ones do.
        let early = [
            file(7, -150, -120, small),
            file(8, -101, -100, small),
            file(9, -99, -1, small),
        ];
        let pairs = EngineConfig {
            files_per_window_max: 2,
            ..config
        };
        let plan = pick(&early, i64::MIN, 100, &pairs);
        assert_eq!(
            ids(&plan.inputs),
            [7, 8],
            "-150 and -101 are window -2, -99 is -1"
        );
    }
}
