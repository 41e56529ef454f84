//! openraft's network: its messages between metasrv replicas travel as
//! `MetaRequest::Raft` over the same protocol and connections as every other metasrv
//! request (`metronome_wire::rpc` over `rt::net`), openraft's types in serde JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metronome_catalog::request::{MetaReply, MetaRequest, RaftKind};
use metronome_core::rt::time;
use metronome_wire::rpc::RpcClient;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::election::GreaterLog;
use super::TypeConfig;

/// Opens a client to a replica's address.
pub type Dial = Arc<dyn Fn(&str) -> RpcClient + Send + Sync>;

/// Clients of the other replicas, one per address, shared by every raft stream to it.
#[derive(Clone)]
pub struct Network {
    dial: Dial,
    clients: Arc<Mutex<HashMap<String, Arc<RpcClient>>>>,
    greater_log: GreaterLog,
}

impl Network {
    /// `greater_log` hears of every vote refused by a replica with a longer log.
    pub fn new(dial: Dial, greater_log: GreaterLog) -> Network {
        Network {
            dial,
            clients: Arc::default(),
            greater_log,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerLink {
        let client = self
            .clients
            .lock()
            .expect("raft clients")
            .entry(node.addr.clone())
            .or_insert_with(|| Arc::new((self.dial)(&node.addr)))
            .clone();
        PeerLink {
            target,
            client,
            greater_log: self.greater_log.clone(),
        }
    }
}

/// The link to one replica.
pub struct PeerLink {
    target: u64,
    client: Arc<RpcClient>,
    greater_log: GreaterLog,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkError(String);

impl PeerLink {
    /// Sends one raft message; the replica's answer is openraft's `Result`, whose error
    /// becomes a remote error.
    async fn send<Req, Resp, E>(
        &self,
        kind: RaftKind,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let payload = serde_json::to_vec(request).expect("a raft message serializes");
        let call = self
            .client
            .call_one(MetaRequest::Raft { kind, payload }.encode(), |reply| {
                if let Some(error) = reply.body_as_error() {
                    return Ok(Err(format!("the replica answered: {}", error.message())));
                }
                Ok(match MetaReply::decode(reply) {
                    Some(Ok(MetaReply::Raft(payload))) => Ok(payload),
                    other => Err(format!("the replica answered with {other:?}")),
                })
            });
        let payload = match time::timeout(option.hard_ttl(), call).await {
            // A slow answer (a follower's fsync) is no reason to back off: openraft
            // retries a network error at once, while `Unreachable` silences the stream
            // for half a second, longer than a follower waits before it calls an election.
            Err(elapsed) => {
                return Err(RPCError::Network(NetworkError::new(&LinkError(format!(
                    "replica {}: {elapsed}",
                    self.target
                )))))
            }
            Ok(Err(error)) => return Err(RPCError::Unreachable(Unreachable::new(&error))),
            Ok(Ok(Err(message))) => {
                return Err(RPCError::Network(NetworkError::new(&LinkError(message))))
            }
            Ok(Ok(Ok(payload))) => payload,
        };
        let outcome: Result<Resp, E> = serde_json::from_slice(&payload).map_err(|error| {
            RPCError::Network(NetworkError::new(&LinkError(format!(
                "an undecodable raft reply from replica {}: {error}",
                self.target
            ))))
        })?;
        outcome.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.send(RaftKind::AppendEntries, &request, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.send(RaftKind::InstallSnapshot, &request, &option)
            .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let response: VoteResponse<u64> = self.send(RaftKind::Vote, &request, &option).await?;
        if !response.vote_granted && response.last_log_id > request.last_log_id {
            self.greater_log.seen();
        }
        Ok(response)
    }
}
