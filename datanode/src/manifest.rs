//! A region's manifest: what the region is (schema, retention), which SSTs hold its data,
//! and how far its WAL records are already accounted for (`flushed_sequence`).
//!
//! It lives where the region's SSTs live ([`ManifestStore`]), so that the files and the
//! list naming them are lost or kept together:
//!
//! - **On the local disk**, in the region's directory, as a [`metronome_core::journal`]:
//!   the checkpoint `manifest` and the log `edits-<version>.log` of the edits since.
//!   Recovery loads the checkpoint and applies its log (a torn record at the end is cut
//!   off).
//! - **In a remote object store**, as objects under `<region>/manifest/`:
//!   `<version>.checkpoint` and one `<version>.edit` per edit, `<version>` being the
//!   manifest's version once the object applies. A put is atomic, so there is no torn
//!   record; an edit put that failed may still have taken effect, and the engine then
//!   moves on to a checkpoint of a higher version, which makes the doubtful edit moot.
//!   Recovery loads the highest checkpoint and applies the edits that follow it, which
//!   must be consecutive. Such a manifest does not depend on the node's disk: another
//!   node can open the region from the bucket alone (its unflushed WAL records aside).
//!
//! Every [`EDITS_PER_CHECKPOINT`] edits a new checkpoint replaces the edits. A checkpoint
//! or edit that fails its checksum or does not parse is an error naming the file or
//! object: the region is quarantined, never opened from guesswork.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use metronome_core::data::{RegionId, RegionSchema};
use metronome_core::journal::{self, JournalLimits};
use metronome_core::rt::disk::Disk;
use metronome_core::rt::object::ObjectStore;
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

/// Where a shard keeps its regions' manifests.
#[derive(Clone)]
pub enum ManifestStore {
    /// Journals in the region directories on the local disk (SSTs in the data directory).
    Disk(Disk),
    /// Objects in the remote store that holds the SSTs.
    Object(ObjectStore),
}

/// Why a manifest could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The store could not be read (now): the open fails and may be retried.
    Unavailable(io::Error),
    /// What is stored is damaged, named: the region is quarantined.
    Damaged(String),
}

/// The prefix of a region's manifest objects in an object store.
pub fn manifest_prefix(shard_root: &Path, region: RegionId) -> String {
    format!("{}/manifest", region_dir(shard_root, region).display())
}

/// What a manifest object is: a checkpoint or an edit, and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ManifestObject {
    Checkpoint(u64),
    Edit(u64),
}

impl ManifestObject {
    fn key(self, prefix: &str) -> String {
        match self {
            ManifestObject::Checkpoint(version) => format!("{prefix}/{version:020}.checkpoint"),
            ManifestObject::Edit(version) => format!("{prefix}/{version:020}.edit"),
        }
    }

    fn parse(prefix: &str, key: &str) -> Option<ManifestObject> {
        let name = key.strip_prefix(prefix)?.strip_prefix('/')?;
        if let Some(version) = name.strip_suffix(".checkpoint") {
            return version.parse().ok().map(ManifestObject::Checkpoint);
        }
        name.strip_suffix(".edit")?
            .parse()
            .ok()
            .map(ManifestObject::Edit)
    }

    fn version(self) -> u64 {
        match self {
            ManifestObject::Checkpoint(version) | ManifestObject::Edit(version) => version,
        }
    }
}

impl ManifestStore {
    /// A version above every manifest object stored for `region` (0 on the local disk,
    /// whose one checkpoint file is replaced whatever its version).
    pub async fn version_floor(&self, shard_root: &Path, region: RegionId) -> io::Result<u64> {
        match self {
            ManifestStore::Disk(_) => Ok(0),
            ManifestStore::Object(objects) => {
                let prefix = manifest_prefix(shard_root, region);
                Ok(objects
                    .list(&prefix)
                    .await?
                    .iter()
                    .filter_map(|key| ManifestObject::parse(&prefix, key))
                    .map(|object| object.version() + 1)
                    .max()
                    .unwrap_or(0))
            }
        }
    }

    /// The region directory names under the shard root that may hold a manifest.
    pub async fn region_dirs(&self, shard_root: &Path) -> io::Result<Vec<String>> {
        let regions_dir = shard_root.join("regions");
        match self {
            ManifestStore::Disk(disk) => disk.list_dir(&regions_dir).await,
            ManifestStore::Object(store) => {
                let prefix = regions_dir.display().to_string();
                let mut names = BTreeSet::new();
                for key in store.list(&prefix).await? {
                    let Some(rest) = key
                        .strip_prefix(prefix.as_str())
                        .and_then(|rest| rest.strip_prefix('/'))
                    else {
                        continue;
                    };
                    // Remote stores list every key below the prefix, a local one the
                    // directory's entries: the region's directory is the first part.
                    if let Some(name) = rest.split('/').next().filter(|name| !name.is_empty()) {
                        names.insert(name.to_string());
                    }
                }
                Ok(names.into_iter().collect())
            }
        }
    }
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
    /// The region was drained and closed: each of its WAL records up to
    /// `flushed_sequence` is in an SST or belongs to a write that failed. Without this, a
    /// failed write's record that reached the disk anyway sat above the flushed point of
    /// a closed region, and recovery quarantined the region for it (the simulation found
    /// this).
    Close { flushed_sequence: u64 },
    /// A learner installed its leader's copy (`engine::install`): `files` replace the
    /// region's files and hold every write up to `sequence`, which the region's
    /// sequences restart from; its WAL records from commits before `wal_commit_floor`
    /// belong to the copy replaced, whose sequences the leader gave to other writes, and
    /// are never replayed.
    Installed {
        files: Vec<SstMeta>,
        sequence: u64,
        schema: RegionSchema,
        wal_commit_floor: u64,
    },
    /// Recovery found the region's copy damaged (a WAL record that no longer reads
    /// back): it stays quarantined across restarts, after the WAL segment that held the
    /// damage is gone, until it is dropped.
    Quarantined { reason: String },
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
    /// WAL records of this region from commits below this are not replayed: they belong
    /// to a copy an install replaced ([`Edit::Installed`]). 0: none was.
    #[serde(default)]
    pub wal_commit_floor: u64,
    /// Why recovery quarantined the region, if it did ([`Edit::Quarantined`]).
    #[serde(default)]
    pub quarantined: Option<String>,
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
            wal_commit_floor: 0,
            quarantined: None,
        }
    }

    /// Applies one edit (and counts it in `version`). Asserts what an edit may assume
    /// of the state (a compaction removes files the region has) and what every edit
    /// leaves true (file ids unique and below `next_file_id`, each file's time range in
    /// order).
    pub fn apply(&mut self, edit: &Edit) {
        match edit {
            Edit::Flushed {
                file,
                flushed_sequence,
            } => {
                assert!(
                    self.files.iter().all(|f| f.file_id != file.file_id),
                    "region {}: flushed file {} is already listed",
                    self.region,
                    file.file_id
                );
                self.files.push(file.clone());
                self.flushed_sequence = self.flushed_sequence.max(*flushed_sequence);
                self.next_file_id = self.next_file_id.max(file.file_id + 1);
            }
            Edit::Compacted { added, removed } => {
                let before = self.files.len();
                self.files.retain(|f| !removed.contains(&f.file_id));
                assert_eq!(
                    before - self.files.len(),
                    removed.len(),
                    "region {}: a compaction removes files the region has, each once",
                    self.region
                );
                if let Some(file) = added {
                    self.next_file_id = self.next_file_id.max(file.file_id + 1);
                    self.files.push(file.clone());
                }
            }
            Edit::Schema(schema) => self.schema = schema.clone(),
            Edit::Ttl(ttl_ms) => self.ttl_ms = *ttl_ms,
            Edit::Closed(closed) => self.closed = *closed,
            Edit::Close { flushed_sequence } => {
                self.closed = true;
                self.flushed_sequence = self.flushed_sequence.max(*flushed_sequence);
            }
            Edit::Installed {
                files,
                sequence,
                schema,
                wal_commit_floor,
            } => {
                assert!(
                    *wal_commit_floor >= self.wal_commit_floor,
                    "region {}: an install's WAL floor only rises",
                    self.region
                );
                self.files = files.clone();
                self.flushed_sequence = *sequence;
                self.last_sequence = *sequence;
                self.schema = schema.clone();
                self.wal_commit_floor = *wal_commit_floor;
                let above = files.iter().map(|f| f.file_id + 1).max().unwrap_or(0);
                self.next_file_id = self.next_file_id.max(above);
            }
            // The first reason stays.
            Edit::Quarantined { reason } => {
                self.quarantined.get_or_insert_with(|| reason.clone());
            }
        }
        self.version += 1;
        let mut ids: Vec<u64> = Vec::with_capacity(self.files.len());
        for file in &self.files {
            assert!(
                file.file_id < self.next_file_id,
                "region {}: file {} is not below next_file_id {}",
                self.region,
                file.file_id,
                self.next_file_id
            );
            assert!(
                file.rows == 0 || file.min_ts <= file.max_ts,
                "region {}: file {} has its time range reversed",
                self.region,
                file.file_id
            );
            ids.push(file.file_id);
        }
        ids.sort_unstable();
        assert!(
            ids.windows(2).all(|pair| pair[0] != pair[1]),
            "region {}: a file is listed twice",
            self.region
        );
    }

    pub fn encode(&self) -> Vec<u8> {
        journal::encode_checkpoint(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<RegionManifest, String> {
        journal::decode_checkpoint(bytes)
    }

    /// Writes this manifest as the region's checkpoint, atomically and durably, and
    /// deletes the edits it supersedes.
    pub async fn store(&self, store: &ManifestStore, shard_root: &Path) -> io::Result<()> {
        match store {
            ManifestStore::Disk(disk) => {
                let dir = region_dir(shard_root, self.region);
                journal::store_checkpoint(disk, &dir, "manifest", self, self.version).await
            }
            ManifestStore::Object(objects) => {
                let prefix = manifest_prefix(shard_root, self.region);
                let checkpoint = ManifestObject::Checkpoint(self.version);
                objects.put(&checkpoint.key(&prefix), self.encode()).await?;
                // What the checkpoint supersedes is ignored by recovery from now on, so
                // a delete that fails only leaves garbage for the next checkpoint.
                for key in objects.list(&prefix).await.unwrap_or_default() {
                    let superseded = ManifestObject::parse(&prefix, &key).is_some_and(|object| {
                        object.version() < self.version
                            || object == ManifestObject::Edit(self.version)
                    });
                    if superseded {
                        if let Err(error) = objects.delete(&key).await {
                            tracing::warn!(%key, %error, "could not delete a superseded manifest object");
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Makes `edit` durable after the checkpoint of `checkpoint_version` (appended to the
    /// log on disk, or put as the object of the version it leads to); the caller applies
    /// the edit in memory only after this returns.
    pub async fn append_edit(
        &self,
        store: &ManifestStore,
        shard_root: &Path,
        checkpoint_version: u64,
        edit: &Edit,
    ) -> io::Result<()> {
        match store {
            ManifestStore::Disk(disk) => {
                let dir = region_dir(shard_root, self.region);
                journal::append_edit(disk, &dir, checkpoint_version, edit).await
            }
            ManifestStore::Object(objects) => {
                let prefix = manifest_prefix(shard_root, self.region);
                let object = ManifestObject::Edit(self.version + 1);
                objects
                    .put(&object.key(&prefix), journal::encode_checkpoint(edit))
                    .await
            }
        }
    }

    /// Loads the manifest of `region`: its checkpoint and the edits since (on disk, a torn
    /// record at the log's end is cut off), and the number of those edits. `None` if there
    /// is no checkpoint (a region whose creation never completed).
    pub async fn load(
        store: &ManifestStore,
        shard_root: &Path,
        region: RegionId,
    ) -> Result<Option<(RegionManifest, u64)>, LoadError> {
        let loaded = match store {
            ManifestStore::Disk(disk) => {
                let limits = JournalLimits {
                    checkpoint_bytes_max: MANIFEST_BYTES_MAX,
                    edits_bytes_max: EDITS_BYTES_MAX,
                };
                let path = manifest_path(shard_root, region);
                journal::load::<RegionManifest, Edit>(disk, &path, limits, |m| m.version)
                    .await
                    .map_err(|error| LoadError::Damaged(format!("manifest: {error}")))?
            }
            ManifestStore::Object(objects) => {
                load_objects(objects, &manifest_prefix(shard_root, region)).await?
            }
        };
        Ok(loaded.map(|(mut manifest, edits)| {
            for edit in &edits {
                manifest.apply(edit);
            }
            (manifest, edits.len() as u64)
        }))
    }
}

/// The highest checkpoint under `prefix` and the consecutive edits that follow it.
async fn load_objects(
    objects: &ObjectStore,
    prefix: &str,
) -> Result<Option<(RegionManifest, Vec<Edit>)>, LoadError> {
    let mut listed: Vec<ManifestObject> = objects
        .list(prefix)
        .await
        .map_err(LoadError::Unavailable)?
        .iter()
        .filter_map(|key| ManifestObject::parse(prefix, key))
        .collect();
    listed.sort_unstable();
    let Some(checkpoint) = listed
        .iter()
        .filter_map(|object| match object {
            ManifestObject::Checkpoint(version) => Some(*version),
            ManifestObject::Edit(_) => None,
        })
        .max()
    else {
        return Ok(None);
    };
    let fetch = |object: ManifestObject| async move {
        let key = object.key(prefix);
        let bytes = objects.get(&key).await.map_err(LoadError::Unavailable)?;
        if bytes.len() as u64 > MANIFEST_BYTES_MAX {
            return Err(LoadError::Damaged(format!(
                "manifest object {key}: {} bytes is over the limit",
                bytes.len()
            )));
        }
        Ok((key, bytes))
    };
    let (key, bytes) = fetch(ManifestObject::Checkpoint(checkpoint)).await?;
    let manifest: RegionManifest = journal::decode_checkpoint(&bytes)
        .map_err(|error| LoadError::Damaged(format!("manifest object {key}: {error}")))?;
    if manifest.version != checkpoint {
        return Err(LoadError::Damaged(format!(
            "manifest object {key} holds version {}",
            manifest.version
        )));
    }
    let mut edits = Vec::new();
    let mut next = checkpoint + 1;
    for object in listed {
        let ManifestObject::Edit(version) = object else {
            continue;
        };
        if version < next {
            continue;
        }
        if version > next {
            // Each edit is put only once the one before it, or a checkpoint, is stored.
            return Err(LoadError::Damaged(format!(
                "manifest object {} follows version {} with no edit between",
                object.key(prefix),
                next - 1
            )));
        }
        let (key, bytes) = fetch(object).await?;
        edits.push(
            journal::decode_checkpoint(&bytes)
                .map_err(|error| LoadError::Damaged(format!("manifest object {key}: {error}")))?,
        );
        next += 1;
    }
    Ok(Some((manifest, edits)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::data::{FieldColumn, FieldType, TimeUnit};

    #[test]
    fn manifests_round_trip_and_damage_is_named() {
        let manifest = RegionManifest {
            region: RegionId::new(4, 2),
            schema: RegionSchema {
                tags: vec!["host".into()],
                time_index: "ts".into(),
                time_unit: TimeUnit::Millisecond,
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
            wal_commit_floor: 3,
            quarantined: Some("WAL corruption in 1.wal at offset 0".into()),
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
