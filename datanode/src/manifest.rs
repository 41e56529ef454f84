//! A region's manifest: what the region is (schema) and how far its WAL records are
//! already accounted for (`flushed_sequence`), written atomically as a checkpoint.
//!
//! File format: one line `crc32c=<hex>`, then the JSON document the checksum covers. A
//! manifest that fails its checksum or does not parse is an error naming the file: the
//! region is quarantined, never opened from guesswork.
//!
//! Planned with the SST work: an append-only log of version edits (files added and
//! removed) between checkpoints; today every change rewrites the checkpoint, which is
//! correct and cheap while a manifest is a few hundred bytes.

use std::path::{Path, PathBuf};

use metronome_core::data::{RegionId, RegionSchema};
use metronome_core::rt::disk::{Disk, OpenOptions};
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
}

impl RegionManifest {
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a manifest serializes");
        let mut out = format!("crc32c={:08x}\n", crc32c::crc32c(&json)).into_bytes();
        out.extend_from_slice(&json);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<RegionManifest, String> {
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no checksum line")?;
        let header =
            std::str::from_utf8(&bytes[..newline]).map_err(|_| "checksum line is not text")?;
        let expected = header
            .strip_prefix("crc32c=")
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or_else(|| format!("bad checksum line {header:?}"))?;
        let json = &bytes[newline + 1..];
        let actual = crc32c::crc32c(json);
        if actual != expected {
            return Err(format!(
                "checksum mismatch: stored {expected:08x}, computed {actual:08x}"
            ));
        }
        serde_json::from_slice(json).map_err(|error| format!("invalid manifest: {error}"))
    }

    /// Writes this manifest atomically and durably.
    pub async fn store(&self, disk: &Disk, shard_root: &Path) -> std::io::Result<()> {
        let dir = region_dir(shard_root, self.region);
        disk.create_dir_all_synced(&dir).await?;
        disk.write_atomic(manifest_path(shard_root, self.region), self.encode())
            .await
    }

    /// Loads the manifest at `path`: `None` if there is none (a region whose creation
    /// never completed), an error naming the file and the damage if it is unreadable.
    pub async fn load(disk: &Disk, path: &Path) -> Result<Option<RegionManifest>, String> {
        let describe = |what: String| format!("manifest {}: {what}", path.display());
        let file = match disk.open(path, OpenOptions::read()).await {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(describe(error.to_string())),
        };
        if file.len() > MANIFEST_BYTES_MAX {
            return Err(describe(format!("{} bytes is over the limit", file.len())));
        }
        let bytes = file
            .read_exact_at(file.len() as usize, 0)
            .await
            .map_err(|error| describe(error.to_string()))?;
        RegionManifest::decode(&bytes).map(Some).map_err(describe)
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
