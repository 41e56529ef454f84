//! The catalog replicated with openraft 0.9 (storage v2): the raft log and vote on disk
//! ([`log_store`]), the catalog as the state machine ([`state_machine`]), the messages over
//! the protocol ([`network`]), and the thread that does the disk I/O ([`worker`]).
//!
//! openraft runs on `metronome_core::rt::raft::RaftRuntime`, so its timers and random
//! election timeouts are the simulation's under madsim.

pub mod log_store;
pub mod network;
pub mod state_machine;
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

/// How often the leader heartbeats its followers.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// A follower that hears no leader for a random time in this range starts an election.
/// Wide against the heartbeat, so that a loaded machine (two cores shared by a whole
/// cluster in the tests) does not depose a healthy leader.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(600);
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1200);
/// Entries applied between snapshots; the log keeps this many more behind a snapshot, for
/// followers that lag a little.
const LOGS_PER_SNAPSHOT: u64 = 1024;
const LOGS_KEPT_BEHIND_SNAPSHOT: u64 = 256;

/// openraft's configuration for the metasrv.
pub fn config() -> openraft::Config {
    let config = openraft::Config {
        cluster_name: "metronome-metasrv".to_string(),
        heartbeat_interval: HEARTBEAT_INTERVAL.as_millis() as u64,
        election_timeout_min: ELECTION_TIMEOUT_MIN.as_millis() as u64,
        election_timeout_max: ELECTION_TIMEOUT_MAX.as_millis() as u64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(LOGS_PER_SNAPSHOT),
        max_in_snapshot_log_to_keep: LOGS_KEPT_BEHIND_SNAPSHOT,
        ..openraft::Config::default()
    };
    config
        .validate()
        .expect("the metasrv's raft configuration is valid")
}
