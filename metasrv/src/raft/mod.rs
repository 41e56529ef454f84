//! The catalog replicated with openraft 0.9 (storage v2): the raft log and vote on disk
//! ([`log_store`]), the catalog as the state machine ([`state_machine`]), the messages over
//! the protocol ([`network`]), values that others wait on ([`watched`]), and the thread that does the disk I/O ([`worker`]).
//!
//! openraft runs on `metronome_core::rt::raft::RaftRuntime`, so its timers and random
//! election timeouts are the simulation's under madsim.

pub mod election;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod watched;
pub mod worker;

use std::io::Cursor;
use std::time::Duration;

use metronome_catalog::{Catalog, Command};
use metronome_core::rt::raft::RaftRuntime;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The metasrv's raft: catalog commands in, [`Applied`] out, replicas by `u64` id.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = RaftRuntime,
);

pub type MetaRaft = openraft::Raft<TypeConfig>;

/// What applying one log entry did to the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The catalog's version after the entry.
    pub version: u64,
    /// Whether the entry changed the catalog.
    pub applied: bool,
    /// Why the catalog refused the command, if it did (it then changed nothing).
    pub refused: Option<String>,
}

impl Applied {
    fn unchanged(catalog: &Catalog) -> Applied {
        Applied {
            version: catalog.version,
            applied: false,
            refused: None,
        }
    }
}

/// The metasrv's raft settings. The defaults are production's; the simulation shrinks
/// the snapshot and checkpoint intervals so that every seed builds, installs and purges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTuning {
    /// How often the leader heartbeats its followers. openraft also gives each
    /// AppendEntries this long to be answered, and a follower answers after its fsync:
    /// 250 ms leaves room for a slow disk.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in this range starts an
    /// election. Wide against the heartbeat, so that a loaded machine (two cores shared by
    /// a whole cluster in the tests) or a slow fsync does not depose a healthy leader.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Entries applied between snapshots...
    pub logs_per_snapshot: u64,
    /// ...and entries the log keeps behind a snapshot, for followers that lag a little.
    pub logs_kept_behind_snapshot: u64,
    /// Raft log edits between checkpoints of the log's state.
    pub edits_per_checkpoint: u64,
}

impl Default for RaftTuning {
    fn default() -> RaftTuning {
        RaftTuning {
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            logs_per_snapshot: 1024,
            logs_kept_behind_snapshot: 256,
            edits_per_checkpoint: 1024,
        }
    }
}

/// openraft's configuration for the metasrv.
pub fn config(tuning: &RaftTuning) -> openraft::Config {
    let config = openraft::Config {
        cluster_name: "metronome-metasrv".to_string(),
        heartbeat_interval: tuning.heartbeat_interval.as_millis() as u64,
        election_timeout_min: tuning.election_timeout_min.as_millis() as u64,
        election_timeout_max: tuning.election_timeout_max.as_millis() as u64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(tuning.logs_per_snapshot),
        max_in_snapshot_log_to_keep: tuning.logs_kept_behind_snapshot,
        // A snapshot chunk is JSON (bytes as numbers, about 3.5 times larger) and the
        // last one waits for the follower's decode and fsync.
        snapshot_max_chunk_size: 1 << 20,
        install_snapshot_timeout: 10_000,
        // `election::drive` decides when a replica stands, with a timeout drawn afresh
        // for each election (openraft 0.9 draws one per replica).
        enable_elect: false,
        ..openraft::Config::default()
    };
    config
        .validate()
        .expect("the metasrv's raft configuration is valid")
}
