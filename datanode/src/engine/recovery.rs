//! Recovery: what a shard's engine finds on disk at open, as functions over plain data —
//! the regions its manifests describe, each WAL record replayed into its region, the
//! regions a damaged WAL may have hurt, and SSTs no manifest names.

use super::*;
use crate::wal::replay::Corruption;

/// Every region whose manifest is stored under `root`: a region whose manifest cannot be
/// read is quarantined, not skipped; one whose creation never completed does not exist.
pub(super) async fn load_regions(
    manifests: &ManifestStore,
    root: &Path,
) -> Result<BTreeMap<RegionId, Region>, EngineError> {
    let regions_dir = root.join("regions");
    let mut regions = BTreeMap::new();
    for name in manifests.region_dirs(root).await? {
        let Some(id) = parse_region_dir(&name) else {
            tracing::warn!(dir = %regions_dir.display(), entry = %name, "ignoring an entry that is not a region");
            continue;
        };
        let region = match RegionManifest::load(manifests, root, id).await {
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
                    manifest.store(manifests, root).await?;
                }
                let quarantined = manifest.quarantined.clone();
                let mut region = Region::new(manifest, 0);
                if let Some(reason) = quarantined {
                    region.quarantine(|| format!("{reason} (found at an earlier start)"));
                }
                region
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
    Ok(regions)
}

/// Replays the WAL record of write `sequence` into `region`; returns the rows it applied.
/// A record the region cannot take quarantines it rather than being skipped.
pub(super) fn replay_record(
    region: &mut Region,
    sequence: u64,
    commit: u64,
    payload: &[u8],
) -> u64 {
    if commit < region.manifest.wal_commit_floor {
        // A record of the copy an install replaced: its sequence is another write's now.
        return 0;
    }
    // Sequences continue above every record ever logged, replayed or not.
    region.manifest.last_sequence = region.manifest.last_sequence.max(sequence);
    let replays = matches!(region.state(), RegionState::Open | RegionState::Closed);
    if !replays || sequence <= region.manifest.flushed_sequence {
        return 0;
    }
    if region.state() == &RegionState::Closed {
        // A region is flushed completely before it closes and refuses writes while
        // closing: a record above its flushed point breaks that rule, and skipping it
        // would lose it silently.
        let flushed = region.manifest.flushed_sequence;
        region.quarantine(|| {
            format!(
                "WAL record (sequence {sequence}) is above the flushed sequence {flushed} \
                 of the closed region"
            )
        });
        return 0;
    }
    let mut batch = match write_batch::decode(payload) {
        Ok(batch) => batch,
        Err(error) => {
            region.quarantine(|| {
                format!("WAL record (sequence {sequence}) does not decode: {error}")
            });
            return 0;
        }
    };
    // Records written before an ALTER ADD COLUMN lack the new fields.
    let width = region.manifest.schema.fields.len();
    for (_, fields) in batch.series.iter_mut().flat_map(|one| one.rows.iter_mut()) {
        while fields.len() < width {
            fields.push(Value::Null);
        }
    }
    if let Err(fault) = batch.check(&region.manifest.schema) {
        region.quarantine(|| {
            format!("WAL record (sequence {sequence}) does not fit the schema: {fault}")
        });
        return 0;
    }
    let rows = batch.rows() as u64;
    for series in batch.series {
        region
            .memtable
            .insert_series(sequence, &series.tags, series.rows);
    }
    rows
}

/// Quarantines every region a damaged WAL record may have belonged to: its own, or every
/// region when the damage hides whose record it was.
pub(super) fn quarantine_corrupted(
    regions: &mut BTreeMap<RegionId, Region>,
    corruptions: &[(PathBuf, Corruption)],
) {
    for (path, corruption) in corruptions {
        let reason = format!(
            "WAL corruption in {} at offset {}",
            path.display(),
            corruption.offset
        );
        match corruption.region {
            Some(id) => {
                if let Some(region) = regions.get_mut(&id) {
                    region.quarantine(|| reason);
                }
            }
            None => {
                for region in regions.values_mut() {
                    region.quarantine(|| format!("{reason} (the record's region is unreadable)"));
                }
            }
        }
    }
}

/// Deletes the SSTs no manifest names: those of a flush or compaction that crashed
/// before its manifest edit was stored. A quarantined region's files are kept for the
/// operator.
pub(super) async fn delete_orphan_ssts(
    store: &ObjectStore,
    root: &Path,
    regions: &BTreeMap<RegionId, Region>,
) -> Result<(), EngineError> {
    for (id, region) in regions {
        if matches!(region.state(), RegionState::Quarantined(_)) {
            continue;
        }
        let listed = store
            .list(&sst_dir(root, *id).display().to_string())
            .await?;
        for key in listed {
            let known = region
                .manifest
                .files
                .iter()
                .any(|f| sst_key(root, *id, f.file_id) == key);
            if !known {
                tracing::info!(%key, "deleting an SST no manifest refers to");
                store.delete(&key).await?;
            }
        }
    }
    Ok(())
}
