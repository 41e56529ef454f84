//! A region's manifest: what the region is (schema, retention), which SSTs hold its data,
//! and how far its WAL records are already accounted for (`flushed_sequence`).
//!
//! On disk, in the region's directory, as a [`metronome_core::journal`]: the checkpoint
//! `manifest` and the log `edits-<version>.log` of the edits since. Recovery loads the
//! checkpoint and applies its log (a torn record at the end is cut off). Every
//! [`EDITS_PER_CHECKPOINT`] edits a new checkpoint replaces the log. A checkpoint that
//! fails its checksum or does not parse is an error naming the file: the region is
//! quarantined, never opened from guesswork.

use std::path::{Path, PathBuf};

use metronome_core::data::{RegionId, RegionSchema};
use metronome_core::journal::{self, JournalLimits};
use metronome_core::rt::disk::Disk;
use serde::{Deserialize, Serialize};

use crate::sst::SstMeta;

/// The manifest file of a region, relative to its shard's root.
pub fn manifest_path(shard_root: &Path, region: RegionId) -> PathBuf {
    region_dir(shard_root, region).join("manifest")
}

/// The object key of a region's SST.
pub fn sst_key(shard_root: &Path, region: RegionId, file_id: u64) -> String {
    format!(
        "{}/{file_id:016}.parquet",
        sst_dir(shard_root, region).display()
    )
}

/// The object prefix of a region's SSTs.
pub fn sst_dir(shard_root: &Path, region: RegionId) -> PathBuf {
    region_dir(shard_root, region).join("sst")
}

/// A region's directory, relative to the disk root.
pub fn region_dir(shard_root: &Path, region: RegionId) -> PathBuf {
    shard_root
        .join("regions")
        .join(format!("{}_{}", region.table, region.number))
}

/// A manifest larger than this is corrupt (a schema of thousands of columns is ~100 KiB).
const MANIFEST_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// An edit log larger than this is corrupt (it is checkpointed every few edits).
const EDITS_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Edits appended before the manifest is checkpointed again.
pub const EDITS_PER_CHECKPOINT: u64 = 16;

/// The edit log that follows the checkpoint of `version`.
pub fn edits_path(shard_root: &Path, region: RegionId, version: u64) -> PathBuf {
    journal::edits_path(&region_dir(shard_root, region), version)
}

/// One change to a region's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Edit {
    /// A flush wrote `file`; WAL records up to `flushed_sequence` are in SSTs now.
    Flushed {
        file: SstMeta,
        flushed_sequence: u64,
    },
    /// A compaction replaced `removed` by `added` (none if everything expired).
    Compacted {
        added: Option<SstMeta>,
        removed: Vec<u64>,
    },
    /// The schema changed (a field was added).
    Schema(RegionSchema),
    /// The retention changed.
    Ttl(Option<i64>),
    /// The region was closed (it stops serving, its data stays) or opened again.
    Closed(bool),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionManifest {
    pub region: RegionId,
    pub schema: RegionSchema,
    /// WAL records of this region with a sequence at or below this are not replayed:
    /// flushed to SSTs, or discarded by a drop.
    pub flushed_sequence: u64,
    /// The highest sequence ever assigned when this checkpoint was written; sequences
    /// continue above it (also across a drop and re-create).
    pub last_sequence: u64,
    /// A dropped region keeps its manifest as a tombstone, so stale WAL records of the
    /// old incarnation are never replayed into a new one.
    pub dropped: bool,
    /// The region's SST files, oldest first.
    #[serde(default)]
    pub files: Vec<SstMeta>,
    /// The id the next SST gets.
    #[serde(default)]
    pub next_file_id: u64,
    /// Retention: rows older than this (by their timestamp, against the wall clock) are
    /// no longer returned and are dropped by compaction. `None` keeps everything.
    #[serde(default)]
    pub ttl_ms: Option<i64>,
    /// The number of edits this state includes; a checkpoint's edit log continues from it.
    #[serde(default)]
    pub version: u64,
    /// A closed region keeps its data but serves nothing until it is opened again. It
    /// was flushed completely before closing, so no WAL record of it needs replaying.
    #[serde(default)]
    pub closed: bool,
}

impl RegionManifest {
    /// A new region's manifest: no files, nothing flushed, no retention, version 0.
    pub fn new(region: RegionId, schema: RegionSchema) -> RegionManifest {
        RegionManifest {
            region,
            schema,
            flushed_sequence: 0,
            last_sequence: 0,
            dropped: false,
            files: Vec::new(),
            next_file_id: 0,
            ttl_ms: None,
            version: 0,
            closed: false,
        }
    }

    /// Applies one edit (and counts it in `version`).
    pub fn apply(&mut self, edit: &Edit) {
        match edit {
            Edit::Flushed {
                file,
                flushed_sequence,
            } => {
                self.files.push(file.clone());
                self.flushed_sequence = self.flushed_sequence.max(*flushed_sequence);
                self.next_file_id = self.next_file_id.max(file.file_id + 1);
            }
            Edit::Compacted { added, removed } => {
                self.files.retain(|f| !removed.contains(&f.file_id));
                if let Some(file) = added {
                    self.next_file_id = self.next_file_id.max(file.file_id + 1);
                    self.files.push(file.clone());
                }
            }
            Edit::Schema(schema) => self.schema = schema.clone(),
            Edit::Ttl(ttl_ms) => self.ttl_ms = *ttl_ms,
            Edit::Closed(closed) => self.closed = *closed,
        }
        self.version += 1;
    }

    pub fn encode(&self) -> Vec<u8> {
        journal::encode_checkpoint(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<RegionManifest, String> {
        journal::decode_checkpoint(bytes)
    }

    /// Writes this manifest as the region's checkpoint, atomically and durably, and
    /// deletes the edit logs it supersedes.
    pub async fn store(&self, disk: &Disk, shard_root: &Path) -> std::io::Result<()> {
        let dir = region_dir(shard_root, self.region);
        journal::store_checkpoint(disk, &dir, "manifest", self, self.version).await
    }

    /// Appends `edit` to the edit log that follows the checkpoint of `checkpoint_version`
    /// and syncs it; the caller applies the edit in memory only after this returns.
    pub async fn append_edit(
        &self,
        disk: &Disk,
        shard_root: &Path,
        checkpoint_version: u64,
        edit: &Edit,
    ) -> std::io::Result<()> {
        let dir = region_dir(shard_root, self.region);
        journal::append_edit(disk, &dir, checkpoint_version, edit).await
    }

    /// Loads the region whose checkpoint is at `path`: the checkpoint, then its edit log
    /// (a torn record at the log's end is cut off). `None` if there is no checkpoint (a
    /// region whose creation never completed); an error naming the file and the damage if
    /// the checkpoint is unreadable.
    pub async fn load(disk: &Disk, path: &Path) -> Result<Option<(RegionManifest, u64)>, String> {
        let limits = JournalLimits {
            checkpoint_bytes_max: MANIFEST_BYTES_MAX,
            edits_bytes_max: EDITS_BYTES_MAX,
        };
        let loaded = journal::load::<RegionManifest, Edit>(disk, path, limits, |m| m.version)
            .await
            .map_err(|error| format!("manifest: {error}"))?;
        Ok(loaded.map(|(mut manifest, edits)| {
            for edit in &edits {
                manifest.apply(edit);
            }
            (manifest, edits.len() as u64)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::data::{FieldColumn, FieldType};

    #[test]
    fn manifests_round_trip_and_damage_is_named() {
        let manifest = RegionManifest {
            region: RegionId::new(4, 2),
            schema: RegionSchema {
                tags: vec!["host".into()],
                time_index: "ts".into(),
                fields: vec![FieldColumn {
                    name: "v".into(),
                    field_type: FieldType::Float64,
                }],
            },
            flushed_sequence: 7,
            last_sequence: 9,
            dropped: false,
            files: Vec::new(),
            next_file_id: 0,
            ttl_ms: None,
            version: 0,
            closed: false,
        };
        let bytes = manifest.encode();
        assert_eq!(RegionManifest::decode(&bytes).unwrap(), manifest);
        let mut damaged = bytes.clone();
        let last = damaged.len() - 2;
        damaged[last] ^= 1;
        assert!(RegionManifest::decode(&damaged)
            .unwrap_err()
            .contains("checksum"));
        assert!(RegionManifest::decode(b"nonsense").is_err());
        assert_eq!(
            manifest_path(Path::new("shard-1"), manifest.region),
            PathBuf::from("shard-1/regions/4_2/manifest")
        );
    }
}
