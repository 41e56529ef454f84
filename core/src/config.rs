//! Process configuration: defaults, overridden by a TOML file, overridden by
//! `METRONOME_*` environment variables and command-line flags (the binary applies those).
//!
//! Unknown keys are errors that name the key: a typo in a config file must not silently
//! fall back to a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::rt::shard::IoDriverChoice;

/// Configuration of every role (`metronome standalone`, `metasrv`, `datanode`,
/// `frontend`). Each role reads some sections and refuses a file that sets any other
/// ([`Config::check_role`]), naming the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where every byte Metronome stores lives.
    pub data_dir: PathBuf,
    pub shards: ShardsSection,
    pub http: HttpSection,
    pub postgres: PostgresSection,
    pub query: QuerySection,
    pub ingest: IngestSection,
    pub log: LogSection,
    pub storage: StorageSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metasrv: Option<MetasrvSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datanode: Option<DatanodeSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontend: Option<FrontendSection>,
}

/// Which process reads a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Metasrv,
    Datanode,
    Frontend,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Metasrv => "metasrv",
            Role::Datanode => "datanode",
            Role::Frontend => "frontend",
        }
    }
}

/// `[metasrv]`: one replica of the metasrv's raft (`metronome metasrv`). Its flags
/// override these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetasrvSection {
    /// This replica's raft id, at least 1.
    pub node_id: Option<u64>,
    /// Where it serves the protocol (catalog commands, heartbeats, raft).
    pub rpc_addr: Option<SocketAddr>,
    /// Every replica as `"id=addr"`, this one included.
    pub peers: Vec<String>,
    /// How uneven the datanodes' copies and leaderships may get before the metasrv
    /// moves regions to even them out: the most one datanode holds as a multiple of the
    /// fewest another holds (counts one apart are always even). 1 to 100, or 0 for no
    /// rebalancing; 1.25 if unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebalance_ratio: Option<f64>,
}

/// `[datanode]`: a datanode of a cluster (`metronome datanode`). Its flags override these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatanodeSection {
    /// Unique in the cluster; routes name it.
    pub node_id: Option<u64>,
    /// Where it serves its regions.
    pub rpc_addr: Option<SocketAddr>,
    /// The address others reach it at, when `rpc_addr` is `0.0.0.0`.
    pub advertise_addr: Option<SocketAddr>,
    /// Every metasrv replica's address.
    pub metasrv: Vec<SocketAddr>,
}

/// `[frontend]`: a frontend of a cluster (`metronome frontend`). Its flags override these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendSection {
    /// Every metasrv replica's address.
    pub metasrv: Vec<SocketAddr>,
    /// Copies of each new region (the metric regions and tables that set no `replicas`
    /// option), the leader's included: 1 to 3, and at most the datanodes registered.
    /// Every frontend of a cluster should say the same. Default 1.
    pub replicas: Option<u8>,
    /// Where its queries read a replicated region: `leader` (the default), `follower`
    /// (a follower, as of the leader's commit point; a region without one fails the
    /// query), or `follower_preferred` (a follower, else the leader).
    pub read_preference: ReadPreference,
}

/// Where a frontend's queries read a replicated region (`[frontend] read_preference`).
/// A follower's answer is the leader's as of its commit point (read index): as fresh,
/// off the leader's core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPreference {
    #[default]
    Leader,
    Follower,
    FollowerPreferred,
}

impl std::str::FromStr for ReadPreference {
    type Err = String;

    fn from_str(text: &str) -> Result<ReadPreference, String> {
        match text {
            "leader" => Ok(ReadPreference::Leader),
            "follower" => Ok(ReadPreference::Follower),
            "follower_preferred" => Ok(ReadPreference::FollowerPreferred),
            other => Err(format!(
                "{other:?} is no read preference: leader, follower or follower_preferred"
            )),
        }
    }
}

/// Where a datanode keeps its files and how much memory its shards use (per shard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Where SSTs and region manifests live: `local` (the data directory) or `s3` (the
    /// `[storage.s3]` bucket). The WAL is always on the local disk.
    pub store: StoreKind,
    /// Per shard: writes are refused as overloaded (retryable) while its memtables hold
    /// more than this...
    pub memory_bytes_max: u64,
    /// ...and past this, the shard flushes its largest memtable.
    pub memory_bytes_flush: u64,
    /// Compaction merges files of one time window of this length (and one size tier)...
    pub compaction_window_ms: u64,
    /// ...once the window holds this many.
    pub files_per_window_max: usize,
    /// Per shard: bytes of SSTs kept in memory for reads.
    pub sst_cache_bytes: u64,
    /// Per shard, with `store = "s3"`: bytes of fetched objects kept as local files.
    pub object_cache_bytes: u64,
    pub s3: S3Section,
}

/// Where SSTs and manifests live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Local,
    S3,
}

/// An S3 bucket or S3-compatible service (MinIO, Ceph).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Section {
    pub bucket: String,
    /// Keys are stored under `<prefix>/`; empty for the bucket root.
    pub prefix: String,
    pub region: String,
    /// A custom endpoint (`http://127.0.0.1:9000`); empty for AWS.
    pub endpoint: String,
    /// The binary takes them from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` too
    /// (which override the file, as every environment variable does), keeping the
    /// secret out of the file.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Address buckets as `endpoint/bucket` (MinIO and most S3-compatible services).
    pub force_path_style: bool,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            store: StoreKind::Local,
            memory_bytes_max: 512 << 20,
            memory_bytes_flush: 256 << 20,
            compaction_window_ms: 2 * 3600 * 1000,
            files_per_window_max: 4,
            sst_cache_bytes: 256 << 20,
            object_cache_bytes: 4 << 30,
            s3: S3Section::default(),
        }
    }
}

/// Bounds on what writes may make the metric regions carry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    /// Labels one series may have besides `__name__`. A remote-write series with more is
    /// refused (400 naming this key) while the rest of its request is stored, as
    /// Prometheus' own receiver does with samples it cannot take. Every label name is a
    /// column of every metric region, so an unbounded series could make every write
    /// slow (VictoriaMetrics and Mimir default to a few dozen).
    pub labels_per_series_max: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            labels_per_series_max: 64,
        }
    }
}

/// Bounds on one PromQL query (Prometheus' `--query.max-samples` and `--query.timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySection {
    /// Samples a query may fetch plus points it may compute; beyond, it fails with
    /// Prometheus' "too many samples" error instead of exhausting memory.
    pub samples_max: u64,
    /// How long a query (PromQL or SQL) may run before it fails with a timeout error.
    pub timeout_ms: u64,
    /// Memory the operators of all running SQL queries may hold together (DataFusion's
    /// memory pool: sorts, joins, aggregations); a query that needs more fails.
    pub sql_memory_bytes_max: u64,
    /// Bytes of Arrow data one SQL query's result may hold; a larger result fails.
    pub sql_result_bytes_max: u64,
}

impl Default for QuerySection {
    fn default() -> Self {
        QuerySection {
            samples_max: 50_000_000,
            timeout_ms: 120_000,
            sql_memory_bytes_max: 1 << 30,
            sql_result_bytes_max: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSection {
    /// Where the PostgreSQL wire protocol listens; port 0 picks a free port, which the
    /// ready log line names. There is no authentication yet: keep it on a trusted network.
    pub addr: SocketAddr,
}

impl Default for PostgresSection {
    fn default() -> Self {
        PostgresSection {
            addr: SocketAddr::from(([127, 0, 0, 1], 4003)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Where the HTTP API (remote write, Prometheus queries, `/metrics`) listens; port 0
    /// picks a free port, which the ready log line names.
    pub addr: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            addr: SocketAddr::from(([127, 0, 0, 1], 4000)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardsSection {
    /// Datanode shards; 0 means one per available core.
    pub count: u16,
    pub pin_to_cores: bool,
    pub io_driver: IoDriverChoice,
    pub uring_entries: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// A `tracing` filter, e.g. `info` or `info,metronome_core=debug`.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("metronome-data"),
            shards: ShardsSection::default(),
            http: HttpSection::default(),
            postgres: PostgresSection::default(),
            query: QuerySection::default(),
            ingest: IngestSection::default(),
            log: LogSection::default(),
            storage: StorageSection::default(),
            metasrv: None,
            datanode: None,
            frontend: None,
        }
    }
}

impl Default for ShardsSection {
    fn default() -> Self {
        ShardsSection {
            count: 0,
            pin_to_cores: true,
            io_driver: IoDriverChoice::Auto,
            uring_entries: 1024,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            filter: "info".to_string(),
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration in {source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

impl Config {
    /// Parses a TOML document; `source_name` (usually the file path) is named in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError {
            source_name: source_name.to_string(),
            message: error.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError {
            source_name: source_name.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".to_string());
        }
        if !(2..=32768).contains(&self.shards.uring_entries)
            || !self.shards.uring_entries.is_power_of_two()
        {
            return Err(format!(
                "shards.uring_entries = {} must be a power of two between 2 and 32768",
                self.shards.uring_entries
            ));
        }
        if self.query.samples_max == 0 || self.query.timeout_ms == 0 {
            return Err("query.samples_max and query.timeout_ms must be positive".to_string());
        }
        let storage = &self.storage;
        if storage.memory_bytes_flush == 0 || storage.memory_bytes_flush > storage.memory_bytes_max
        {
            return Err(format!(
                "storage.memory_bytes_flush = {} must be positive and at most \
                 storage.memory_bytes_max = {}",
                storage.memory_bytes_flush, storage.memory_bytes_max
            ));
        }
        if storage.compaction_window_ms == 0 || storage.files_per_window_max < 2 {
            return Err(
                "storage.compaction_window_ms must be positive and storage.files_per_window_max \
                 at least 2"
                    .to_string(),
            );
        }
        if storage.store == StoreKind::S3
            && (storage.s3.bucket.is_empty() || storage.s3.region.is_empty())
        {
            return Err(
                "storage.store = \"s3\" needs storage.s3.bucket and storage.s3.region".to_string(),
            );
        }
        Ok(())
    }

    /// Refuses a file that sets a section `role` does not read (a datanode's file with a
    /// `[query]` section, a frontend's with `[metasrv]`), naming the key: a setting that
    /// would silently do nothing is as wrong as a typo.
    pub fn check_role(&self, role: Role) -> Result<(), String> {
        let defaults = Config::default();
        // (key, set in this file, the roles that read it)
        let sections: [(&str, bool, &[Role]); 11] = [
            (
                "data_dir",
                self.data_dir != defaults.data_dir,
                &[Role::Standalone, Role::Metasrv, Role::Datanode],
            ),
            (
                "shards",
                self.shards != defaults.shards,
                &[Role::Standalone, Role::Datanode],
            ),
            (
                "storage",
                self.storage != defaults.storage,
                &[Role::Standalone, Role::Datanode],
            ),
            (
                "http",
                self.http != defaults.http,
                &[Role::Standalone, Role::Frontend],
            ),
            (
                "postgres",
                self.postgres != defaults.postgres,
                &[Role::Standalone, Role::Frontend],
            ),
            (
                "query",
                self.query != defaults.query,
                &[Role::Standalone, Role::Frontend],
            ),
            (
                "ingest",
                self.ingest != defaults.ingest,
                &[Role::Standalone, Role::Frontend],
            ),
            ("log", false, &[]),
            ("metasrv", self.metasrv.is_some(), &[Role::Metasrv]),
            ("datanode", self.datanode.is_some(), &[Role::Datanode]),
            ("frontend", self.frontend.is_some(), &[Role::Frontend]),
        ];
        for (key, set, readers) in sections {
            if set && !readers.contains(&role) {
                let readers: Vec<&str> = readers.iter().map(|role| role.name()).collect();
                return Err(format!(
                    "`{key}` does not apply to a {}: only {} read it",
                    role.name(),
                    readers.join(" and ")
                ));
            }
        }
        Ok(())
    }

    /// The shard count to run: the configured one, or one per core.
    pub fn shard_count(&self) -> u16 {
        if self.shards.count == 0 {
            crate::rt::shard::available_cores()
        } else {
            self.shards.count
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults() {
        let config = Config::from_toml(
            "data_dir = \"/var/lib/metronome\"\n[shards]\ncount = 3\nio_driver = \"epoll\"\n",
            "test.toml",
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/metronome"));
        assert_eq!(config.shards.count, 3);
        assert_eq!(config.shards.io_driver, IoDriverChoice::Epoll);
        assert!(config.shards.pin_to_cores, "unset keys keep their defaults");
        assert_eq!(config.shard_count(), 3);
    }

    /// The documented file of each cluster role parses, is accepted by its role and
    /// refused by the others, naming a section they do not read.
    #[test]
    fn each_role_file_is_its_role_s_alone() {
        let files = [
            (
                Role::Metasrv,
                include_str!("../../config/metasrv.toml"),
                "metasrv",
            ),
            (
                Role::Datanode,
                include_str!("../../config/datanode.toml"),
                "datanode",
            ),
            (
                Role::Frontend,
                include_str!("../../config/frontend.toml"),
                "frontend",
            ),
        ];
        for (role, text, key) in files {
            let config = Config::from_toml(text, key).unwrap();
            config.check_role(role).unwrap();
            for other in [
                Role::Standalone,
                Role::Metasrv,
                Role::Datanode,
                Role::Frontend,
            ] {
                if other != role {
                    let error = config.check_role(other).unwrap_err();
                    assert!(error.contains('`'), "{error}");
                }
            }
        }
        let metasrv = Config::from_toml(files[0].1, "metasrv").unwrap();
        let section = metasrv.metasrv.unwrap();
        assert_eq!((section.node_id, section.peers.len()), (Some(1), 3));
        assert_eq!(section.rebalance_ratio, Some(1.25));
        let frontend = Config::from_toml(files[2].1, "frontend").unwrap();
        assert_eq!(
            frontend.frontend.unwrap().read_preference,
            ReadPreference::Leader
        );
        for (text, preference) in [
            ("follower", ReadPreference::Follower),
            ("follower_preferred", ReadPreference::FollowerPreferred),
        ] {
            let config = Config::from_toml(
                &format!("[frontend]\nread_preference = \"{text}\"\n"),
                "fe.toml",
            )
            .unwrap();
            assert_eq!(config.frontend.unwrap().read_preference, preference);
            assert_eq!(text.parse::<ReadPreference>(), Ok(preference));
        }
        let error = "followers".parse::<ReadPreference>().unwrap_err();
        assert!(error.contains("follower_preferred"), "{error}");
        let datanode = Config::from_toml(files[1].1, "datanode").unwrap();
        assert_eq!(datanode.datanode.unwrap().metasrv.len(), 3);

        let error = Config::from_toml(
            "[query]
timeout_ms = 5
",
            "dn.toml",
        )
        .unwrap()
        .check_role(Role::Datanode)
        .unwrap_err();
        assert!(
            error.contains("`query`") && error.contains("datanode"),
            "{error}"
        );
        let error = Config::from_toml(
            "[frontend]
metasrv = [\"10.0.0.1:4100\"]\n",
            "m.toml",
        )
        .unwrap()
        .check_role(Role::Metasrv)
        .unwrap_err();
        assert!(error.contains("`frontend`"), "{error}");
        let error = Config::from_toml(
            "[datanode]
node_ib = 3
",
            "dn.toml",
        )
        .unwrap_err();
        assert!(error.to_string().contains("node_ib"), "{error}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let error = Config::from_toml("[shards]\ncuont = 3\n", "typo.toml").unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("typo.toml") && text.contains("cuont"),
            "{text}"
        );

        let error = Config::from_toml("[shards]\nio_driver = \"kqueue\"\n", "x.toml").unwrap_err();
        assert!(error.to_string().contains("kqueue"), "{error}");

        let error = Config::from_toml("[shards]\nuring_entries = 1000\n", "x.toml").unwrap_err();
        assert!(error.to_string().contains("uring_entries"), "{error}");

        let error = Config::from_toml("[storage]\nstore = \"s3\"\n", "x.toml").unwrap_err();
        assert!(error.to_string().contains("storage.s3.bucket"), "{error}");
        let error = Config::from_toml("[storage]\nmemory_bytes_flush = 0\n", "x.toml").unwrap_err();
        assert!(error.to_string().contains("memory_bytes_flush"), "{error}");
        let s3 = Config::from_toml(
            "[storage]\nstore = \"s3\"\n[storage.s3]\nbucket = \"b\"\nregion = \"r\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(s3.storage.store, StoreKind::S3);
        assert_eq!(s3.storage.s3.bucket, "b");
    }
}
