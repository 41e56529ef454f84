//! How a shard engine runs: its configuration and where its SSTs live.

use super::*;

/// How a shard engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Writes are refused as overloaded while the shard's memtables hold more than this.
    pub memory_bytes_max: usize,
    /// Past this, the shard flushes its largest memtable to an SST.
    pub memory_bytes_flush: usize,
    /// Compaction groups SSTs by the window of their first timestamp...
    pub compaction_window_ms: i64,
    /// ...and merges a window's files of one size tier into one once it holds this many.
    pub files_per_window_max: usize,
    /// Bytes of SST files a shard keeps in memory for reads.
    pub sst_cache_bytes: usize,
    /// Files below this size form size tier 0; each tier above holds files up to 4×
    /// larger than the one below (see [`EngineConfig::size_tier`]).
    pub tier_base_bytes: u64,
    /// Past this many WAL segments, the shard flushes the regions that pin the oldest one,
    /// so a rarely written region cannot make the WAL grow without bound.
    pub wal_segments_max: usize,
    /// The WAL; its `dir` is relative to the shard root.
    pub wal: WalConfig,
    /// Where SSTs live.
    pub sst_store: SstStore,
    /// Bytes of a remote SST store's objects the shard keeps as local files
    /// (`<shard>/object-cache`), so a file read once is not fetched again.
    pub object_cache_bytes: u64,
}

impl EngineConfig {
    /// The size tier of a file of `bytes`. Compaction merges only files of one tier, so
    /// merging a tier's files yields one of the next and a row is rewritten once per
    /// tier it climbs (O(log n) times), not by every merge into its window.
    pub fn size_tier(&self, bytes: u64) -> u32 {
        let mut tier = 0;
        let mut bound = self.tier_base_bytes.max(1);
        while bytes >= bound {
            tier += 1;
            bound = bound.saturating_mul(4);
        }
        tier
    }
}

/// Where a datanode keeps its SSTs and manifests (the WAL stays on the local disk).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SstStore {
    /// The data directory.
    #[default]
    Local,
    /// An S3 bucket or S3-compatible service.
    #[cfg(not(madsim))]
    S3(metronome_core::rt::object::S3Config),
    /// A simulated store with injected errors and latency (tests and the simulation).
    Sim(metronome_core::rt::object::SimObjectStore),
}

impl EngineConfig {
    /// A shard engine configured by `[storage]` (the binary fills its S3 credentials from
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` when the environment has them).
    pub fn from_section(
        storage: &metronome_core::config::StorageSection,
    ) -> Result<EngineConfig, String> {
        use metronome_core::config::StoreKind;
        let bytes = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        let sst_store = match storage.store {
            StoreKind::Local => SstStore::Local,
            #[cfg(not(madsim))]
            StoreKind::S3 => {
                let s3 = &storage.s3;
                if s3.access_key_id.is_empty() || s3.secret_access_key.is_empty() {
                    return Err("storage.s3 needs credentials: access_key_id and \
                                secret_access_key in the file, or AWS_ACCESS_KEY_ID and \
                                AWS_SECRET_ACCESS_KEY in the environment"
                        .to_string());
                }
                SstStore::S3(metronome_core::rt::object::S3Config {
                    bucket: s3.bucket.clone(),
                    prefix: s3.prefix.clone(),
                    region: s3.region.clone(),
                    endpoint: (!s3.endpoint.is_empty()).then(|| s3.endpoint.clone()),
                    access_key_id: s3.access_key_id.clone(),
                    secret_access_key: s3.secret_access_key.clone(),
                    force_path_style: s3.force_path_style,
                })
            }
            #[cfg(madsim)]
            StoreKind::S3 => return Err("S3 is not available in the simulation".to_string()),
        };
        Ok(EngineConfig {
            memory_bytes_max: bytes(storage.memory_bytes_max),
            memory_bytes_flush: bytes(storage.memory_bytes_flush),
            compaction_window_ms: i64::try_from(storage.compaction_window_ms).unwrap_or(i64::MAX),
            files_per_window_max: storage.files_per_window_max,
            sst_cache_bytes: bytes(storage.sst_cache_bytes),
            object_cache_bytes: storage.object_cache_bytes,
            sst_store,
            ..EngineConfig::default()
        })
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memory_bytes_max: 512 * 1024 * 1024,
            memory_bytes_flush: 256 * 1024 * 1024,
            compaction_window_ms: 2 * 3600 * 1000,
            files_per_window_max: 4,
            tier_base_bytes: 4 * 1024 * 1024,
            sst_cache_bytes: 256 * 1024 * 1024,
            wal_segments_max: 16,
            wal: WalConfig::new("wal"),
            sst_store: SstStore::Local,
            object_cache_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}
