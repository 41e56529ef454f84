//! The metasrv's clients' end: catalog commands, the catalog itself, and heartbeats,
//! over the protocol.

use metronome_wire::fb;
use metronome_wire::rpc::{RpcClient, RpcError};
use metronome_wire::ShardStats;
use std::sync::Arc;

use crate::catalog::{Catalog, Command};
use crate::request::{MetaReply, MetaRequest};

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

pub struct MetaClient {
    rpc: RpcClient,
}

impl MetaClient {
    pub fn new(rpc: RpcClient) -> MetaClient {
        MetaClient { rpc }
    }

    /// The metasrv's address, for messages.
    pub fn peer(&self) -> &str {
        self.rpc.peer()
    }

    /// Sends a request and reads its reply: an `Error` becomes its error.
    pub async fn call(&self, request: &MetaRequest) -> Result<MetaReply, MetaError> {
        let peer = self.rpc.peer();
        self.rpc
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
            "bad reply from {}: unexpected {reply:?}",
            self.rpc.peer()
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
    /// has heard from since it started.
    pub async fn liveness(&self) -> Result<Vec<(u64, u64)>, MetaError> {
        match self.call(&MetaRequest::Liveness).await? {
            MetaReply::Liveness(datanodes) => Ok(datanodes),
            other => Err(MetaError::Internal(format!(
                "a liveness request was answered with {other:?}"
            ))),
        }
    }

    /// Reports that `datanode` is alive, with its shards' figures; returns the catalog
    /// version the metasrv has reached.
    pub async fn heartbeat(&self, datanode: u64, shards: &[ShardStats]) -> Result<u64, MetaError> {
        let request = MetaRequest::Heartbeat {
            datanode,
            shards: shards.to_vec(),
        };
        match self.call(&request).await? {
            MetaReply::Heartbeat { catalog_version } => Ok(catalog_version),
            other => Err(self.unexpected(&other)),
        }
    }
}
