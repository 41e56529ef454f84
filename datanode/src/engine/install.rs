//! Catch-up's part in the engine (`crate::catch_up` is the datanode's): a leader's
//! snapshot of a region — its rows as of a sequence — and a learner's install of one in
//! place of whatever copy it had.
//!
//! The snapshot holds every write at or below its sequence and perhaps some later ones;
//! the learner takes the leader's writes above the sequence afterwards, again if it has
//! them: a write puts the same rows at the same (series, timestamp), the later winning,
//! so the copy ends up equal to the leader's.
//!
//! An install writes the rows as SSTs first, one per piece, then makes them the region's
//! files in one manifest edit (`Edit::Installed`) whose sequence the region continues
//! from. A copy replaced may hold WAL records at sequences the leader gave to other
//! writes (it led once, or followed a leader since replaced): the edit records the WAL
//! commit from which the region's records are its own, and recovery skips those before.

use futures::channel::oneshot;
use metronome_core::write_batch::SeriesWrite;

use super::*;

/// An install under way: the pieces stored so far.
pub(super) struct Staging {
    leader: u64,
    epoch: u64,
    sequence: u64,
    schema: RegionSchema,
    next_chunk: u32,
    files: Vec<SstMeta>,
}

/// Which piece of which install a request carries.
#[derive(Debug, Clone, Copy)]
pub struct Piece {
    pub leader: u64,
    pub epoch: u64,
    pub sequence: u64,
    pub chunk: u32,
    pub chunks: u32,
}

impl ShardEngine {
    /// The rows of region `id` as of its last write now, with that write's sequence and
    /// the region's schema: every write at or below the sequence is in the rows (later
    /// ones may be too).
    pub async fn snapshot(
        &self,
        id: RegionId,
    ) -> Result<(RegionSchema, u64, Vec<SeriesRows>), EngineError> {
        let (sequence, applied) = {
            let mut regions = self.regions.borrow_mut();
            let region = region_mut(&mut regions, id, Need::Writable)?;
            let sequence = region.manifest.last_sequence;
            let applied = region
                .in_flight
                .range(..=sequence)
                .next()
                .is_some()
                .then(|| {
                    let (told, applied) = oneshot::channel();
                    region.durable_waiters.push((sequence, told));
                    applied
                });
            (sequence, applied)
        };
        // Told once no write at or below `sequence` is in flight: each is then in the
        // memtable, or failed with the WAL, which the check below sees.
        if let Some(applied) = applied {
            applied
                .await
                .map_err(|_| EngineError::Unavailable(format!("region {id}: the shard stopped")))?;
        }
        if let Some(reason) = self.wal.failure() {
            return Err(EngineError::Wal(WalError::Failed(reason)));
        }
        let schema = self.schema(id)?;
        let rows = self.scan_series(id, &ScanRequest::all()).await?;
        Ok((schema, sequence, rows))
    }

    /// Takes piece `piece.chunk` of `piece.chunks` of a leader's copy of region `id`, in
    /// order; the last one installs them all. The first piece starts the install over,
    /// creating the region if this shard has none.
    pub async fn install_piece(
        &self,
        id: RegionId,
        schema: RegionSchema,
        piece: Piece,
        batch: &[u8],
    ) -> Result<(), EngineError> {
        self.check_running()?;
        let out_of_order = || {
            EngineError::Unavailable(format!(
                "region {id}: piece {} of {} of an install at sequence {} came out of \
                 order; the install starts again",
                piece.chunk, piece.chunks, piece.sequence
            ))
        };
        if piece.chunk >= piece.chunks {
            return Err(out_of_order());
        }
        if piece.chunk == 0 {
            // An install started over: the pieces stored for the last one go.
            let abandoned = self.installs.borrow_mut().remove(&id);
            for file in abandoned.map(|staging| staging.files).unwrap_or_default() {
                let key = sst_key(&self.root, id, file.file_id);
                let _ = self.store.delete(&key).await;
            }
            let exists = self
                .regions
                .borrow()
                .get(&id)
                .is_some_and(|r| r.state() != &RegionState::Dropped);
            if !exists {
                self.create_region(id, schema.clone()).await?;
            }
            self.installs.borrow_mut().insert(
                id,
                Staging {
                    leader: piece.leader,
                    epoch: piece.epoch,
                    sequence: piece.sequence,
                    schema: schema.clone(),
                    next_chunk: 0,
                    files: Vec::new(),
                },
            );
        }
        let staged = |installs: &BTreeMap<RegionId, Staging>| {
            installs.get(&id).is_some_and(|staging| {
                (
                    staging.leader,
                    staging.epoch,
                    staging.sequence,
                    staging.next_chunk,
                ) == (piece.leader, piece.epoch, piece.sequence, piece.chunk)
                    && staging.schema == schema
            })
        };
        if !staged(&self.installs.borrow()) {
            return Err(out_of_order());
        }
        let batch = write_batch::decode(batch).map_err(|error| {
            EngineError::Internal(format!(
                "region {id}: an install piece does not decode: {error}"
            ))
        })?;
        batch
            .check(&schema)
            .map_err(|fault| EngineError::InvalidWrite { region: id, fault })?;
        let mut rows = Memtable::default();
        for series in batch.series {
            rows.insert_series(piece.sequence, &series.tags, series.rows);
        }
        if !rows.is_empty() {
            let file_id = {
                let mut regions = self.regions.borrow_mut();
                let region = region_mut(&mut regions, id, Need::Exists)?;
                let file_id = region.manifest.next_file_id;
                region.manifest.next_file_id += 1;
                file_id
            };
            let meta = self.store_sst(id, &rows, file_id, &schema).await?;
            if !staged(&self.installs.borrow()) {
                // Started over meanwhile: the file belongs to no install.
                let _ = self.store.delete(&sst_key(&self.root, id, file_id)).await;
                return Err(out_of_order());
            }
            self.installs
                .borrow_mut()
                .get_mut(&id)
                .expect("staged")
                .files
                .push(meta);
        }
        let done = {
            let mut installs = self.installs.borrow_mut();
            let staging = installs.get_mut(&id).expect("checked above");
            staging.next_chunk += 1;
            staging.next_chunk == piece.chunks
        };
        if done {
            let staging = self.installs.borrow_mut().remove(&id).expect("staged");
            self.install(id, staging).await?;
        }
        Ok(())
    }

    /// Makes `staging`'s files region `id`'s, in place of the copy it had.
    async fn install(&self, id: RegionId, staging: Staging) -> Result<(), EngineError> {
        let incarnation = {
            let mut regions = self.regions.borrow_mut();
            let region = region_mut(&mut regions, id, Need::Writable)?;
            if !region.in_flight.is_empty() {
                return Err(EngineError::Unavailable(format!(
                    "region {id}: writes are in flight to the copy an install would replace"
                )));
            }
            if let Some(reason) = self.wal.failure() {
                // Its next commit number may be one a recovered record has.
                return Err(EngineError::Wal(WalError::Failed(reason)));
            }
            // A new life: the replaced copy's flushes and compactions still running
            // record nothing in it, and its rows leave memory. None starts until the
            // install is recorded: it would plan from the files replaced.
            let incarnation = self.incarnations.get() + 1;
            self.incarnations.set(incarnation);
            region.incarnation = incarnation;
            let released =
                region.memtable.bytes() + region.frozen.iter().map(|m| m.bytes()).sum::<usize>();
            self.memory_bytes
                .set(self.memory_bytes.get().saturating_sub(released));
            region.memtable = Memtable::default();
            region.frozen.clear();
            region.flushing = true;
            region.compacting = true;
            incarnation
        };
        let outcome = self.record_install(id, incarnation, staging).await;
        if let Some(region) = self
            .regions
            .borrow_mut()
            .get_mut(&id)
            .filter(|r| r.incarnation == incarnation)
        {
            region.flushing = false;
            region.compacting = false;
        }
        outcome
    }

    /// Records an install in the manifest, and deletes the files it replaced.
    async fn record_install(
        &self,
        id: RegionId,
        incarnation: u64,
        staging: Staging,
    ) -> Result<(), EngineError> {
        // No record of the region is queued (none in flight), so each one queued from
        // now on is in a commit at or above this; each record of the replaced copy is
        // below it.
        let wal_commit_floor = self.wal.next_commit();
        let replaced: Vec<u64> = self
            .regions
            .borrow()
            .get(&id)
            .map(|r| r.manifest.files.iter().map(|f| f.file_id).collect())
            .unwrap_or_default();
        let files = staging.files;
        let installed = Edit::Installed {
            files: files.clone(),
            sequence: staging.sequence,
            schema: staging.schema,
            wal_commit_floor,
        };
        if !self
            .commit_edit(id, Some(incarnation), |_| Ok(installed))
            .await?
        {
            return Err(EngineError::Unavailable(format!(
                "region {id} was dropped or replaced during its install"
            )));
        }
        self.wal.restart_sequences(id);
        assert_eq!(
            self.regions
                .borrow()
                .get(&id)
                .map(|r| r.manifest.last_sequence),
            Some(staging.sequence),
            "region {id}: an install sets the sequence its writes continue from"
        );
        for file_id in replaced {
            if files.iter().all(|f| f.file_id != file_id) {
                let key = sst_key(&self.root, id, file_id);
                self.sst_cache.borrow_mut().remove(&key);
                // An orphan left by a failure here is deleted at the next open.
                let _ = self.store.delete(&key).await;
            }
        }
        tracing::info!(
            region = %id,
            leader = staging.leader,
            epoch = staging.epoch,
            sequence = staging.sequence,
            files = files.len(),
            wal_commit_floor,
            "installed the leader's copy of a region"
        );
        Ok(())
    }
}

/// Region rows as write batches of at most `rows_max` rows each (a series longer than
/// that is split), for an install's pieces; at least one, empty for no rows.
pub fn install_batches(series: Vec<SeriesRows>, rows_max: usize) -> Vec<WriteBatch> {
    assert!(rows_max > 0, "a piece holds rows");
    let mut batches = vec![WriteBatch::default()];
    let mut rows_in_last = 0;
    for one in series {
        let tags = SeriesWrite::sparse_tags(&one.tags);
        let mut rows = one.rows.into_iter().peekable();
        while rows.peek().is_some() {
            if rows_in_last == rows_max {
                batches.push(WriteBatch::default());
                rows_in_last = 0;
            }
            let take: Vec<(i64, Vec<Value>)> =
                rows.by_ref().take(rows_max - rows_in_last).collect();
            rows_in_last += take.len();
            batches
                .last_mut()
                .expect("one at least")
                .series
                .push(SeriesWrite {
                    tags: tags.clone(),
                    rows: take,
                });
        }
    }
    batches
}
