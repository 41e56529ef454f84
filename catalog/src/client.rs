//! The metasrv's clients' end: catalog commands, the catalog itself, and heartbeats,
//! over the protocol.

use metronome_core::data::RegionId;
use metronome_core::rt::time;
use metronome_wire::fb;
use metronome_wire::rpc::{RpcClient, RpcError};
use metronome_wire::ShardStats;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::catalog::{Catalog, Command, Route};
use crate::lease::Grant;
use crate::replicas::ReplicationGrants;
use crate::request::{Liveness, MembershipChange, MetaReply, MetaRequest, RaftStatus};

/// Why a metasrv request did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The catalog refused the command; the message names what and why.
    #[error("{0}")]
    Refused(String),
    /// The metasrv could not be reached or cannot write its catalog now: retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<MetaError> for metronome_core::error::Error {
    fn from(error: MetaError) -> metronome_core::error::Error {
        use metronome_core::error::{Error, ErrorKind};
        match error {
            MetaError::Refused(message) => Error::new(ErrorKind::Invalid, message),
            MetaError::Unavailable(message) => Error::new(ErrorKind::Unavailable, message),
            MetaError::Internal(message) => Error::new(ErrorKind::Internal, message),
        }
    }
}

impl From<RpcError> for MetaError {
    fn from(error: RpcError) -> MetaError {
        match error {
            RpcError::Unavailable(message) => MetaError::Unavailable(message),
            RpcError::Protocol(message) => MetaError::Internal(message),
        }
    }
}

fn read_error(error: fb::Error<'_>) -> MetaError {
    let message = error.message().to_string();
    match error.kind() {
        fb::ErrorKind::Refused => MetaError::Refused(message),
        fb::ErrorKind::Unavailable | fb::ErrorKind::Overloaded => MetaError::Unavailable(message),
        _ => MetaError::Internal(message),
    }
}

/// What a command did at the metasrv: the catalog's version after it, and whether it
/// changed the catalog (to that version) or changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Executed {
    pub version: u64,
    pub applied: bool,
}

/// How long a call keeps trying the replicas before it gives up: more than two election
/// timeouts of the metasrv's raft, so that a call made as the leader dies is answered by
/// the next one.
const CALL_BUDGET: Duration = Duration::from_secs(8);
/// How long one try at one replica may take: a replica cut off from the others holds a
/// command for up to 5 s before it answers that it is unavailable.
const TRY_TIMEOUT_MAX: Duration = Duration::from_secs(6);
/// Between rounds over every replica, a call waits for an election to end, doubling from
/// the first pause up to the last.
const ROUND_PAUSE_FIRST: Duration = Duration::from_millis(50);
const ROUND_PAUSE_MAX: Duration = Duration::from_millis(400);

/// The metasrv's replicas, and which one the client believes leads.
///
/// A call goes to the replica believed to lead. One that answers `NotLeader` names the
/// leader if it knows it, and the call follows; one that cannot be reached, or knows no
/// leader, sends the call on to the next replica. A command that reached a replica that
/// went down may have been committed, and a retry of it then finds it done (commands are
/// idempotent or refused on repeat, as `CREATE TABLE` without `IF NOT EXISTS` is).
///
/// A leader named at an address the client was not given (a replica added since) is
/// dialed and kept, when the client can dial ([`MetaClient::with_dial`]).
pub struct MetaClient {
    replicas: RwLock<Vec<Arc<RpcClient>>>,
    leader: AtomicUsize,
    dial: Option<Dial>,
}

/// Opens a client to a replica at an address a `NotLeader` reply named.
pub type Dial = Arc<dyn Fn(&str) -> Option<RpcClient> + Send + Sync>;

/// Replicas a client learns of beyond those it was given; more is a confused cluster.
const LEARNED_REPLICAS_MAX: usize = 16;

/// Whether two replica addresses name the same endpoint (`127.0.0.1:7001` and
/// `127.0.0.1:07001` do; hostnames compare as written).
fn same_addr(a: &str, b: &str) -> bool {
    let (a, b) = (
        a.trim_start_matches("tcp://"),
        b.trim_start_matches("tcp://"),
    );
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

impl MetaClient {
    /// A client of one metasrv replica (standalone's in-process metasrv, a test's).
    pub fn new(rpc: RpcClient) -> MetaClient {
        MetaClient::replicas(vec![rpc])
    }

    /// A client of the metasrv's replicas, each named by the address it serves at (its
    /// `peer`), as the replicas name each other in `NotLeader` replies.
    pub fn replicas(replicas: Vec<RpcClient>) -> MetaClient {
        assert!(!replicas.is_empty(), "a metasrv client needs a replica");
        MetaClient {
            replicas: RwLock::new(replicas.into_iter().map(Arc::new).collect()),
            leader: AtomicUsize::new(0),
            dial: None,
        }
    }

    /// Lets the client dial a leader at an address it was not given.
    pub fn with_dial(mut self, dial: Dial) -> MetaClient {
        self.dial = Some(dial);
        self
    }

    fn replica_list(&self) -> Vec<Arc<RpcClient>> {
        self.replicas.read().expect("metasrv replicas").clone()
    }

    /// The replica at `addr`: one the client knows, or one it dials now.
    fn replica_at(&self, addr: &str) -> Option<usize> {
        let mut replicas = self.replicas.write().expect("metasrv replicas");
        if let Some(index) = replicas
            .iter()
            .position(|replica| same_addr(replica.peer(), addr))
        {
            return Some(index);
        }
        if replicas.len() >= LEARNED_REPLICAS_MAX {
            return None;
        }
        let client = (self.dial.as_ref()?)(addr)?;
        tracing::info!(%addr, "following the metasrv leader to a replica not given");
        replicas.push(Arc::new(client));
        Some(replicas.len() - 1)
    }

    /// The metasrv's addresses, for messages.
    pub fn peer(&self) -> String {
        let replicas = self.replica_list();
        let peers: Vec<&str> = replicas.iter().map(|replica| replica.peer()).collect();
        peers.join(",")
    }

    /// Sends a request to the leader and reads its reply, following `NotLeader` replies
    /// and going round the replicas when one cannot be reached.
    pub async fn call(&self, request: &MetaRequest) -> Result<MetaReply, MetaError> {
        let mut pause = ROUND_PAUSE_FIRST;
        let mut last_error = None;
        let started = time::now();
        while time::now().saturating_duration_since(started) < CALL_BUDGET {
            // Each round tries every replica once, starting at the believed leader, plus
            // the hops that `NotLeader` replies name.
            let mut tries = 0;
            while tries < 2 * self.replica_list().len() {
                tries += 1;
                let spent = time::now().saturating_duration_since(started);
                let Some(left) = CALL_BUDGET
                    .checked_sub(spent)
                    .filter(|left| !left.is_zero())
                else {
                    break;
                };
                let replicas = self.replica_list();
                let count = replicas.len();
                let index = self.leader.load(Ordering::Relaxed) % count;
                let replica = replicas[index].clone();
                let attempt = time::timeout(
                    left.min(TRY_TIMEOUT_MAX),
                    self.call_replica(&replica, request),
                )
                .await
                .unwrap_or_else(|elapsed| {
                    Err(MetaError::Unavailable(format!(
                        "the metasrv replica at {} did not answer: {elapsed}",
                        replica.peer()
                    )))
                });
                match attempt {
                    Ok(MetaReply::NotLeader { leader }) => {
                        let named = leader
                            .and_then(|(_, addr)| addr)
                            .and_then(|addr| self.replica_at(&addr));
                        last_error = Some(MetaError::Unavailable(format!(
                            "the metasrv replica at {} is not the leader{}",
                            replica.peer(),
                            if named.is_some() {
                                ""
                            } else {
                                " and knows none"
                            }
                        )));
                        let next = named.filter(|&next| next != index);
                        self.leader
                            .store(next.unwrap_or((index + 1) % count), Ordering::Relaxed);
                    }
                    Err(MetaError::Unavailable(message)) => {
                        last_error = Some(MetaError::Unavailable(message));
                        self.leader.store((index + 1) % count, Ordering::Relaxed);
                    }
                    outcome => return outcome,
                }
            }
            time::sleep(pause).await;
            pause = (pause * 2).min(ROUND_PAUSE_MAX);
        }
        Err(last_error.unwrap_or_else(|| {
            MetaError::Unavailable(format!("no metasrv replica of {} answered", self.peer()))
        }))
    }

    /// Sends a request to one replica and reads its reply: an `Error` becomes its error.
    async fn call_replica(
        &self,
        replica: &RpcClient,
        request: &MetaRequest,
    ) -> Result<MetaReply, MetaError> {
        let peer = replica.peer();
        replica
            .call_one(request.encode(), |reply| {
                if let Some(error) = reply.body_as_error() {
                    return Ok(Err(read_error(error)));
                }
                let kind = reply.body_type();
                Ok(match MetaReply::decode(reply) {
                    Some(Ok(reply)) => Ok(reply),
                    Some(Err(error)) => Err(MetaError::Internal(format!(
                        "bad reply from {peer}: {error}"
                    ))),
                    None => Err(MetaError::Internal(format!(
                        "bad reply from {peer}: unexpected {kind:?}"
                    ))),
                })
            })
            .await?
    }

    fn unexpected(&self, reply: &MetaReply) -> MetaError {
        MetaError::Internal(format!(
            "bad reply from the metasrv at {}: unexpected {reply:?}",
            self.peer()
        ))
    }

    /// Executes a command durably; returns the catalog's version after it (unchanged if
    /// the command changed nothing).
    pub async fn execute(&self, command: &Command) -> Result<Executed, MetaError> {
        match self.call(&MetaRequest::Execute(command.clone())).await? {
            MetaReply::Executed { version, applied } => Ok(Executed { version, applied }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The whole catalog.
    pub async fn catalog(&self) -> Result<Catalog, MetaError> {
        match self.call(&MetaRequest::Catalog).await? {
            MetaReply::Catalog(catalog) => Ok(Arc::unwrap_or_clone(catalog)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// (datanode, milliseconds since its last heartbeat) of every datanode the metasrv
    /// has heard from since it started, and the copies they name quarantined.
    pub async fn liveness(&self) -> Result<Liveness, MetaError> {
        match self.call(&MetaRequest::Liveness).await? {
            MetaReply::Liveness(liveness) => Ok(liveness),
            other => Err(MetaError::Internal(format!(
                "a liveness request was answered with {other:?}"
            ))),
        }
    }

    /// Adds or removes a metasrv replica; the leader's raft state after the change.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<RaftStatus, MetaError> {
        match self.call(&MetaRequest::ChangeMembership(change)).await? {
            MetaReply::RaftStatus(status) => Ok(status),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Routes for `count` new regions, placed by the leader over the live datanodes.
    pub async fn place(&self, count: u32) -> Result<Vec<Route>, MetaError> {
        match self.call(&MetaRequest::Place { count }).await? {
            MetaReply::Placed(routes) if routes.len() == count as usize => Ok(routes),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Each replica's raft state as it sees it, by its address; an error for a replica
    /// that did not answer. Asks every replica, not the leader.
    pub async fn raft_statuses(&self) -> Vec<(String, Result<RaftStatus, MetaError>)> {
        let replicas = self.replica_list();
        let asked = replicas.iter().map(|replica| async move {
            let status = match self.call_replica(replica, &MetaRequest::RaftStatus).await {
                Ok(MetaReply::RaftStatus(status)) => Ok(status),
                Ok(other) => Err(self.unexpected(&other)),
                Err(error) => Err(error),
            };
            (
                replica.peer().trim_start_matches("tcp://").to_string(),
                status,
            )
        });
        futures::future::join_all(asked).await
    }

    /// The leader's catalog version once it is past `since`, or as it is after the
    /// metasrv's wait (a few seconds): a frontend calls it again and again to hear of
    /// other frontends' changes as they are made.
    pub async fn watch_catalog(&self, since: u64) -> Result<u64, MetaError> {
        match self.call(&MetaRequest::WatchCatalog { since }).await? {
            MetaReply::CatalogVersion(version) => Ok(version),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Reports that `datanode` is alive, with its shards' figures and the regions whose
    /// copy it holds quarantined; returns the catalog version the metasrv has reached,
    /// the regions it leases to the datanode, and what the datanode replicates.
    pub async fn heartbeat(
        &self,
        datanode: u64,
        shards: &[ShardStats],
        quarantined: &[RegionId],
    ) -> Result<(u64, Vec<Grant>, ReplicationGrants), MetaError> {
        let request = MetaRequest::Heartbeat {
            datanode,
            shards: shards.to_vec(),
            quarantined: quarantined.to_vec(),
        };
        match self.call(&request).await? {
            MetaReply::Heartbeat {
                catalog_version,
                leases,
                replication,
            } => Ok((catalog_version, leases, replication)),
            other => Err(self.unexpected(&other)),
        }
    }
}
