//! The metadata service as a server: one replica of the raft-replicated catalog, datanode
//! heartbeats, and the protocol requests that reach them ([`MetaService`] implements
//! `metronome_wire::rpc::Dispatch`).
//!
//! Commands are raft entries: a replica answers one only once it is committed (on a
//! majority's disks) and applied, and a replica that does not lead answers `NotLeader`
//! naming the leader if it knows it. Reads of the catalog are linearizable: the leader
//! confirms with a quorum that it still leads (`ensure_linearizable`) and waits until its
//! state machine has applied everything committed before it, so a client never reads a
//! catalog older than a command it saw acknowledged. Heartbeats are soft state held by the
//! leader (liveness, shard figures), as GreptimeDB's metasrv holds them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metronome_core::data::RegionId;
use metronome_core::rt::disk::Disk;
use metronome_core::rt::shard::Shards;
use metronome_core::rt::{task, time};
use metronome_wire::fb;
use metronome_wire::frame::{self, Body};
use metronome_wire::rpc::{BoxFuture, Dispatch, RpcClient};
use metronome_wire::ShardStats;
use openraft::error::{ClientWriteError, ForwardToLeader, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::Serialize;

use crate::raft::election::GreaterLog;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Dial, Network};
use crate::raft::state_machine::{snapshot_dir, Legacy, StateMachine};
use crate::raft::worker::DiskThread;
use crate::raft::{self, MetaRaft, RaftTuning};
use metronome_catalog::lease::{Grant, ALIVE_SINCE_HEARTBEAT_MAX};
use metronome_catalog::replicas::ReplicationGrants;
use metronome_catalog::request::{
    Liveness, MembershipChange, MetaReply, MetaRequest, RaftKind, RaftStatus,
};
use metronome_catalog::{Catalog, Command, Route};

/// Datanodes whose heartbeats are remembered; more is a misconfiguration or an attack.
const DATANODES_MAX: usize = 4096;
/// How long a new replica may take to catch up as a learner before it votes.
const LEARNER_CATCH_UP_MAX: Duration = Duration::from_secs(60);
/// How long openraft may take to load the membership from the raft log at start.
const MEMBERSHIP_LOAD_MAX: Duration = Duration::from_secs(30);
/// How long a command or a linearizable read may wait for a quorum before the replica
/// answers that it is unavailable (a leader cut off from the others holds both until
/// then; the client tries another replica).
const QUORUM_WAIT_MAX: Duration = Duration::from_secs(5);
/// How long the leader holds a `WatchCatalog` whose version has not moved: under the
/// clients' try timeout (`MetaClient`'s 6 s), so that a quiet catalog is not a failure.
const WATCH_WAIT_MAX: Duration = Duration::from_secs(4);
/// How long a single-replica metasrv waits to elect itself at start.
const SINGLE_REPLICA_ELECTION_MAX: Duration = Duration::from_secs(30);

/// What the metasrv last heard from a datanode.
#[derive(Debug, Clone)]
pub struct DatanodeStatus {
    pub last_heartbeat: Instant,
    pub shards: Vec<ShardStats>,
    /// The regions whose copy it holds quarantined, as its last heartbeat said.
    pub quarantined: BTreeSet<RegionId>,
}

/// Which replica this is and who its peers are.
pub struct ReplicaConfig {
    /// This replica's raft node id (at least 1).
    pub node_id: u64,
    /// Every replica by id (this one included) with the address it serves the protocol
    /// at. Replicas started with the same peers form a cluster by themselves; a replica
    /// with a raft log rejoins with the membership its log holds.
    pub peers: BTreeMap<u64, String>,
    /// Opens a client to another replica.
    pub dial: Dial,
    /// Raft's timers and the snapshot and checkpoint intervals.
    pub tuning: RaftTuning,
    /// Whether a replica with an empty raft log initializes the cluster of `peers` (a new
    /// cluster), or waits to be added to a running one (`false`: `metronome metasrv
    /// --join`, then a membership change).
    pub initialize: bool,
}

impl ReplicaConfig {
    /// A metasrv of one replica (standalone's, a test's): it never dials anyone.
    pub fn single() -> ReplicaConfig {
        ReplicaConfig {
            node_id: 1,
            peers: BTreeMap::from([(1, "local".to_string())]),
            dial: Arc::new(|addr: &str| {
                let addr = addr.to_string();
                RpcClient::new(
                    addr.clone(),
                    Arc::new(move || {
                        let addr = addr.clone();
                        Box::pin(async move {
                            Err(std::io::Error::other(format!(
                                "a single-replica metasrv has no peer at {addr}"
                            )))
                        })
                    }),
                    Duration::from_secs(1),
                )
            }),
            tuning: RaftTuning::default(),
            initialize: true,
        }
    }
}

/// Why a command did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// The catalog refused it; the message names what and why.
    #[error("{0}")]
    Refused(String),
    /// This replica does not lead: the leader's id and address, if known.
    #[error("this metasrv replica is not the leader")]
    NotLeader(Option<(u64, Option<String>)>),
    /// The command may or may not have been committed (the replica is stopping, lost its
    /// disk, or lost the leadership while the command was in flight).
    #[error("{0}")]
    Unavailable(String),
}

pub struct MetaService {
    node_id: u64,
    raft: MetaRaft,
    state: StateMachine,
    datanodes: Mutex<BTreeMap<u64, DatanodeStatus>>,
    /// Datanodes whose regions the failure detector is moving (`crate::failover`): their
    /// heartbeats renew no lease until it is done. Locked after `datanodes`, never before.
    failing_over: Mutex<BTreeSet<u64>>,
    disk_thread: DiskThread,
    /// `raft::election::drive`, which ends when the raft stops; aborted on drop, since it
    /// holds a handle that would otherwise keep the raft alive.
    _elections: Elections,
}

/// The election task, aborted when dropped: also when `MetaService::start` fails after
/// spawning it, whose raft would otherwise live on and stand for election.
struct Elections(task::JoinHandle<()>);

impl Drop for Elections {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn not_leader(forward: ForwardToLeader<u64, BasicNode>) -> ExecuteError {
    ExecuteError::NotLeader(
        forward
            .leader_id
            .map(|id| (id, forward.leader_node.map(|node| node.addr))),
    )
}

impl MetaService {
    /// Opens this replica's raft log and catalog under `dir` on `disk` and starts its raft.
    pub async fn start(
        disk: Disk,
        dir: impl Into<PathBuf>,
        replica: ReplicaConfig,
    ) -> Result<MetaService, String> {
        let dir = dir.into();
        let node_id = replica.node_id;
        let tuning = &replica.tuning;
        if tuning.election_timeout_min >= tuning.election_timeout_max
            || tuning.heartbeat_interval >= tuning.election_timeout_min
        {
            return Err(format!(
                "the metasrv's raft needs heartbeat < election timeout min < max, got \
                 {:?} < {:?} < {:?}",
                tuning.heartbeat_interval, tuning.election_timeout_min, tuning.election_timeout_max
            ));
        }
        if node_id == 0 || !replica.peers.contains_key(&node_id) {
            return Err(format!(
                "metasrv node id {node_id} must be at least 1 and among the peers {:?}",
                replica.peers
            ));
        }
        let (disk_thread, worker) = DiskThread::start(disk)?;
        // Only a replica that is (or, new, will be) the sole voter may start from a
        // single-replica catalog of an earlier version.
        let legacy = if replica.peers.len() == 1 && replica.initialize {
            Legacy::Import
        } else {
            Legacy::Refuse
        };
        let state =
            StateMachine::open(worker.clone(), snapshot_dir(&dir), dir.clone(), legacy).await?;
        let log = LogStore::open(
            worker,
            dir.join("raft-log"),
            state.snapshot_watermark(),
            &replica.tuning,
        )
        .await?;
        let pristine = log.is_pristine();
        let greater_log = GreaterLog::default();
        let raft = MetaRaft::new(
            node_id,
            Arc::new(raft::config(&replica.tuning)),
            Network::new(replica.dial, greater_log.clone()),
            log,
            state.clone(),
        )
        .await
        .map_err(|error| format!("cannot start the metasrv's raft: {error}"))?;
        let elections = Elections(task::spawn(raft::election::drive(
            raft.clone(),
            node_id,
            replica.tuning.clone(),
            greater_log,
        )));
        if pristine && replica.initialize {
            // Every replica of a new cluster initializes with the same members: openraft
            // allows that, and no replica has to be started first.
            let members: BTreeMap<u64, BasicNode> = replica
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(format!("cannot initialize the metasrv's raft: {error}")),
            }
        }
        // A replica that is the only voter elects itself at once: wait for it, so that a
        // standalone process is ready when it says so. Which replicas vote is what the
        // raft log says (not `peers`, for a replica that rejoins), once openraft has
        // loaded it and reported it.
        // A replica waiting to join has no membership until it is added.
        if !pristine || replica.initialize {
            let loaded = raft
                .wait(Some(MEMBERSHIP_LOAD_MAX))
                .metrics(
                    |metrics| metrics.membership_config.log_id().is_some(),
                    "the membership is loaded",
                )
                .await
                .map_err(|error| {
                    format!("the metasrv's raft did not load its membership: {error}")
                })?;
            let voters: Vec<u64> = loaded.membership_config.membership().voter_ids().collect();
            let listed: Vec<u64> = replica.peers.keys().copied().collect();
            if !pristine && voters != listed && replica.peers.len() > 1 {
                tracing::warn!(
                    ?voters,
                    peers = ?listed,
                    "the raft log's voters differ from the peers given; the raft log's rule"
                );
            }
            if voters == [node_id] {
                raft.wait(Some(SINGLE_REPLICA_ELECTION_MAX))
                    .current_leader(node_id, "the single replica leads")
                    .await
                    .map_err(|error| format!("the single metasrv replica did not lead: {error}"))?;
            }
        }
        Ok(MetaService {
            node_id,
            raft,
            state,
            datanodes: Mutex::new(BTreeMap::new()),
            failing_over: Mutex::new(BTreeSet::new()),
            disk_thread,
            _elections: elections,
        })
    }

    /// The raft node, for introspection and tests.
    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    /// The catalog as this replica last applied it, which may be behind the leader's.
    pub fn local_catalog(&self) -> Arc<Catalog> {
        self.state.catalog()
    }

    /// The catalog as of every command acknowledged before this call: only the leader
    /// answers, after confirming with a quorum that it still leads.
    pub async fn catalog(&self) -> Result<Arc<Catalog>, ExecuteError> {
        let confirmed = time::timeout(QUORUM_WAIT_MAX, self.raft.ensure_linearizable())
            .await
            .map_err(|_| {
                ExecuteError::Unavailable(format!(
                    "the metasrv could not confirm its leadership within {QUORUM_WAIT_MAX:?}"
                ))
            })?;
        match confirmed {
            Ok(_) => Ok(self.state.catalog()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                forward,
            ))) => Err(not_leader(forward)),
            Err(error) => Err(ExecuteError::Unavailable(format!(
                "the metasrv cannot confirm its leadership: {error}"
            ))),
        }
    }

    /// Commits a command through raft and applies it; returns the catalog's version after
    /// it, and whether it changed the catalog.
    pub async fn execute(&self, command: Command) -> Result<(u64, bool), ExecuteError> {
        let committed = time::timeout(QUORUM_WAIT_MAX, self.raft.client_write(command))
            .await
            .map_err(|_| {
                ExecuteError::Unavailable(format!(
                    "the metasrv could not commit the command within {QUORUM_WAIT_MAX:?}; \
                     it may still take effect"
                ))
            })?;
        match committed {
            Ok(response) => match response.data.refused {
                Some(reason) => Err(ExecuteError::Refused(reason)),
                None => Ok((response.data.version, response.data.applied)),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(not_leader(forward))
            }
            Err(error) => Err(ExecuteError::Unavailable(format!(
                "the metasrv could not commit the command: {error}"
            ))),
        }
    }

    /// The raft term in which this replica leads, by its own (not linearizable) view.
    pub fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics().borrow().clone();
        (metrics.current_leader == Some(self.node_id)).then_some(metrics.current_term)
    }

    /// Whether this replica leads now, by its own (not linearizable) view; else whom it
    /// believes leads.
    fn leads(&self) -> Result<(), ExecuteError> {
        let metrics = self.raft.metrics().borrow().clone();
        match metrics.current_leader {
            Some(leader) if leader == self.node_id => Ok(()),
            leader => Err(ExecuteError::NotLeader(leader.map(|id| {
                let addr = metrics
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|node| node.addr.clone());
                (id, addr)
            }))),
        }
    }

    /// This replica's raft state as it sees it.
    pub fn raft_status(&self) -> RaftStatus {
        let metrics = self.raft.metrics().borrow().clone();
        RaftStatus {
            node_id: self.node_id,
            term: metrics.current_term,
            leader: metrics.current_leader,
            state: format!("{:?}", metrics.state),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            last_applied_index: metrics.last_applied.map_or(0, |log_id| log_id.index),
            voters: metrics.membership_config.membership().voter_ids().collect(),
            catalog_version: self.state.catalog().version,
        }
    }

    /// Adds a replica (it catches up as a learner first, then votes) or removes one, as
    /// openraft's joint consensus does: one change at a time.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), ExecuteError> {
        self.leads()?;
        let changed = match change {
            MembershipChange::Add { id, addr } => {
                let learner = time::timeout(
                    LEARNER_CATCH_UP_MAX,
                    self.raft.add_learner(id, BasicNode::new(addr), true),
                )
                .await
                .map_err(|_| {
                    ExecuteError::Unavailable(format!(
                        "replica {id} did not catch up within {LEARNER_CATCH_UP_MAX:?}; it \
                         stays a learner (is it running, with --join?)"
                    ))
                })?;
                match learner {
                    Ok(_) => {
                        self.raft
                            .change_membership(
                                ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                                false,
                            )
                            .await
                    }
                    Err(error) => Err(error),
                }
            }
            MembershipChange::Remove { id } => {
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
            }
        };
        match changed {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(not_leader(forward))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => Err(
                ExecuteError::Refused(format!("the membership change was refused: {error}")),
            ),
            Err(error) => Err(ExecuteError::Unavailable(format!(
                "the membership change did not complete: {error}"
            ))),
        }
    }

    /// Routes for `count` new regions over the datanodes that heartbeated to this leader
    /// within [`ALIVE_SINCE_HEARTBEAT_MAX`] (every registered one, if it heard none yet:
    /// a new leader learns liveness within a heartbeat). Advice, not a command: the
    /// command that creates the regions carries the routes, and two placements at once may
    /// choose the same shards.
    pub fn place(&self, count: u32) -> Result<Vec<Route>, ExecuteError> {
        self.leads()?;
        let now = time::now();
        let alive: BTreeSet<u64> = self
            .datanodes()
            .into_iter()
            .filter(|(_, status)| {
                now.saturating_duration_since(status.last_heartbeat) <= ALIVE_SINCE_HEARTBEAT_MAX
            })
            .map(|(id, _)| id)
            .collect();
        self.state
            .catalog()
            .place_among(count, Some(&alive))
            .map_err(|error| ExecuteError::Refused(error.to_string()))
    }

    /// Records a datanode's heartbeat and answers with the catalog's version and the
    /// regions it routes to the datanode, which the datanode then holds for a lease from
    /// when it sent the heartbeat (`metronome_catalog::lease`). Only the leader answers,
    /// once a quorum confirmed it still leads: a deposed leader, whose catalog may miss a
    /// region's move, must not renew a lease on it.
    pub async fn heartbeat(
        &self,
        datanode: u64,
        shards: Vec<ShardStats>,
        quarantined: BTreeSet<RegionId>,
    ) -> Result<(u64, Vec<Grant>, ReplicationGrants), ExecuteError> {
        // Recorded before the catalog is read: whatever later decides from the heartbeats
        // that a datanode is gone (failover) sees this one before its grants could be
        // read from a catalog older than that decision.
        // A datanode whose regions are being failed over gets no lease meanwhile: the
        // detector decided it was silent for a lease, and a grant read from the catalog
        // before its change commits would hand the old leader a fresh lease on a region
        // its follower is about to lead.
        self.leads()?;
        if self.record_heartbeat(datanode, shards, quarantined)? {
            return Err(ExecuteError::Unavailable(format!(
                "the regions of datanode {datanode} are being failed over (it was silent \
                 for a lease, or holds a quarantined copy); it holds no lease until that \
                 is done"
            )));
        }
        let catalog = self.catalog().await?;
        let (leases, replication) = catalog.grants(datanode);
        Ok((catalog.version, leases, replication))
    }

    /// Marks `datanode` as being failed over if no heartbeat of it arrived within
    /// `silent_for` (counting from `since` for one never heard); false if one did.
    /// Atomic with [`MetaService::heartbeat`]'s record: either the heartbeat is seen here,
    /// or it is refused its lease.
    pub(crate) fn begin_failover(
        &self,
        datanode: u64,
        since: Instant,
        silent_for: Duration,
    ) -> bool {
        let datanodes = self.datanodes.lock().expect("datanodes");
        let last = datanodes
            .get(&datanode)
            .map(|status| status.last_heartbeat.max(since))
            .unwrap_or(since);
        if time::now().saturating_duration_since(last) < silent_for {
            return false;
        }
        self.failing_over
            .lock()
            .expect("failing over")
            .insert(datanode);
        true
    }

    /// Marks `datanode` as being failed over if its last heartbeat still named `region`'s
    /// copy quarantined (`crate::quarantine`); false if not.
    pub(crate) fn begin_replacing(&self, datanode: u64, region: RegionId) -> bool {
        let datanodes = self.datanodes.lock().expect("datanodes");
        let names = datanodes
            .get(&datanode)
            .is_some_and(|status| status.quarantined.contains(&region));
        if names {
            self.failing_over
                .lock()
                .expect("failing over")
                .insert(datanode);
        }
        names
    }

    /// Lets `datanode`'s heartbeats renew leases again, from the catalog as it now is.
    pub(crate) fn end_failover(&self, datanode: u64) {
        self.failing_over
            .lock()
            .expect("failing over")
            .remove(&datanode);
    }

    /// Records a heartbeat; true if its datanode is being failed over.
    fn record_heartbeat(
        &self,
        datanode: u64,
        shards: Vec<ShardStats>,
        quarantined: BTreeSet<RegionId>,
    ) -> Result<bool, ExecuteError> {
        let mut datanodes = self.datanodes.lock().expect("datanodes");
        if !datanodes.contains_key(&datanode) && datanodes.len() >= DATANODES_MAX {
            return Err(ExecuteError::Refused(format!(
                "datanode {datanode} refused: already {DATANODES_MAX} datanodes"
            )));
        }
        datanodes.insert(
            datanode,
            DatanodeStatus {
                last_heartbeat: time::now(),
                shards,
                quarantined,
            },
        );
        let failing_over = self.failing_over.lock().expect("failing over");
        Ok(failing_over.contains(&datanode))
    }

    /// The catalog's version once it is past `since`, or as it is after
    /// [`WATCH_WAIT_MAX`]; only the leader answers, once a quorum confirmed it still leads
    /// (a deposed leader cut off from the others would otherwise answer "unchanged"
    /// forever, and its watchers would never turn to the new one).
    pub async fn watch_catalog(&self, since: u64) -> Result<u64, ExecuteError> {
        let confirmed = self.catalog().await?.version;
        if confirmed > since {
            return Ok(confirmed);
        }
        let versions = self.state.catalog_version();
        // Rare but legal: an answer before anything changed, as when the wait runs out.
        if metronome_core::buggify!(0.05) {
            return Ok(versions.get());
        }
        match time::timeout(WATCH_WAIT_MAX, versions.reached(|version| version > since)).await {
            Ok(version) => Ok(version),
            Err(_) => Ok(versions.get()),
        }
    }

    /// What each datanode last reported to this replica.
    pub fn datanodes(&self) -> BTreeMap<u64, DatanodeStatus> {
        self.datanodes.lock().expect("datanodes").clone()
    }

    /// Stops the raft node and refuses further commands; hands back the disk thread,
    /// which ends once the writes in flight are done; the caller joins it.
    pub async fn stop(&self) -> Option<Shards> {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "the metasrv's raft did not stop cleanly");
        }
        self.disk_thread.stop()
    }

    /// Hands an openraft message to this replica's raft; its `Result` is the reply.
    async fn raft_message(&self, kind: RaftKind, payload: &[u8]) -> Result<Vec<u8>, String> {
        fn encode<T: Serialize>(reply: &T) -> Vec<u8> {
            serde_json::to_vec(reply).expect("a raft reply serializes")
        }
        let invalid = |error: serde_json::Error| format!("an invalid raft {kind:?}: {error}");
        Ok(match kind {
            RaftKind::AppendEntries => {
                let request = serde_json::from_slice(payload).map_err(invalid)?;
                encode(&self.raft.append_entries(request).await)
            }
            RaftKind::Vote => {
                let request = serde_json::from_slice(payload).map_err(invalid)?;
                encode(&self.raft.vote(request).await)
            }
            RaftKind::InstallSnapshot => {
                let request = serde_json::from_slice(payload).map_err(invalid)?;
                encode(&self.raft.install_snapshot(request).await)
            }
        })
    }
}

fn error_reply(error: ExecuteError) -> Result<MetaReply, Body> {
    match error {
        ExecuteError::NotLeader(leader) => Ok(MetaReply::NotLeader { leader }),
        ExecuteError::Refused(reason) => Err(frame::error_body(fb::ErrorKind::Refused, &reason)),
        ExecuteError::Unavailable(reason) => {
            Err(frame::error_body(fb::ErrorKind::Unavailable, &reason))
        }
    }
}

impl MetaService {
    /// Answers one request: the service's one handler, an arm per request.
    pub async fn handle(&self, request: MetaRequest) -> Result<MetaReply, Body> {
        match request {
            MetaRequest::Execute(command) => match self.execute(command).await {
                Ok((version, applied)) => Ok(MetaReply::Executed { version, applied }),
                Err(error) => error_reply(error),
            },
            MetaRequest::Catalog => match self.catalog().await {
                Ok(catalog) => Ok(MetaReply::Catalog(catalog)),
                Err(error) => error_reply(error),
            },
            MetaRequest::Heartbeat {
                datanode,
                shards,
                quarantined,
            } => {
                let quarantined = quarantined.into_iter().collect();
                match self.heartbeat(datanode, shards, quarantined).await {
                    Ok((catalog_version, leases, replication)) => Ok(MetaReply::Heartbeat {
                        catalog_version,
                        leases,
                        replication,
                    }),
                    Err(ExecuteError::Refused(reason)) => {
                        Err(frame::error_body(fb::ErrorKind::InvalidRequest, &reason))
                    }
                    Err(error) => error_reply(error),
                }
            }
            MetaRequest::Liveness => {
                if let Err(error) = self.leads() {
                    return error_reply(error);
                }
                let heard = self.datanodes();
                let quarantined = heard
                    .iter()
                    .flat_map(|(datanode, status)| {
                        status
                            .quarantined
                            .iter()
                            .map(move |region| (*datanode, *region))
                    })
                    .collect();
                let datanodes = heard
                    .into_iter()
                    .map(|(datanode, status)| {
                        let since = time::now()
                            .saturating_duration_since(status.last_heartbeat)
                            .as_millis();
                        (datanode, u64::try_from(since).unwrap_or(u64::MAX))
                    })
                    .collect();
                Ok(MetaReply::Liveness(Liveness {
                    datanodes,
                    quarantined,
                }))
            }
            MetaRequest::RaftStatus => Ok(MetaReply::RaftStatus(self.raft_status())),
            MetaRequest::ChangeMembership(change) => match self.change_membership(change).await {
                Ok(()) => Ok(MetaReply::RaftStatus(self.raft_status())),
                Err(error) => error_reply(error),
            },
            MetaRequest::WatchCatalog { since } => match self.watch_catalog(since).await {
                Ok(version) => Ok(MetaReply::CatalogVersion(version)),
                Err(error) => error_reply(error),
            },
            MetaRequest::Place { count } => match self.place(count) {
                Ok(routes) => Ok(MetaReply::Placed(routes)),
                Err(error) => error_reply(error),
            },
            MetaRequest::Raft { kind, payload } => match self.raft_message(kind, &payload).await {
                Ok(reply) => Ok(MetaReply::Raft(reply)),
                Err(error) => Err(frame::error_body(fb::ErrorKind::InvalidRequest, &error)),
            },
        }
    }
}

impl Dispatch for MetaService {
    fn dispatch<'a>(&'a self, request: fb::RequestMessage<'a>) -> BoxFuture<'a, Vec<Body>> {
        let decoded = MetaRequest::decode(request);
        Box::pin(async move {
            let reply = match decoded {
                Ok(request) => self.handle(request).await,
                Err(error) => Err(frame::error_body(fb::ErrorKind::InvalidRequest, &error)),
            };
            vec![match reply {
                Ok(reply) => reply.encode(),
                Err(error) => error,
            }]
        })
    }
}
