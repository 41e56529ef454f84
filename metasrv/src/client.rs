//! The metasrv's clients' end: catalog commands, the catalog itself, and heartbeats,
//! over the protocol.

use metronome_wire::fb;
use metronome_wire::frame::{self, Body};
use metronome_wire::region_request::shard_stats;
use metronome_wire::rpc::{RpcClient, RpcError};
use metronome_wire::ShardStats;

use crate::catalog::{Catalog, Command};
use crate::codec;

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

pub struct MetaClient {
    rpc: RpcClient,
}

impl MetaClient {
    pub fn new(rpc: RpcClient) -> MetaClient {
        MetaClient { rpc }
    }

    fn unexpected(&self, reply: fb::Reply) -> MetaError {
        MetaError::Internal(format!(
            "bad reply from {}: unexpected {reply:?}",
            self.rpc.peer()
        ))
    }

    async fn call<T>(
        &self,
        request: Body,
        read: impl FnOnce(fb::ReplyMessage<'_>) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        self.rpc
            .call_one(request, |reply| {
                if let Some(error) = reply.body_as_error() {
                    return Ok(Err(read_error(error)));
                }
                Ok(read(reply))
            })
            .await?
    }

    /// Executes a command durably; returns the catalog's version after it (unchanged if
    /// the command changed nothing).
    pub async fn execute(&self, command: &Command) -> Result<u64, MetaError> {
        let request = frame::request_body(|builder| {
            let table = codec::command(builder, command);
            (fb::Request::ExecuteCatalogCommand, table.as_union_value())
        });
        self.call(request, |reply| {
            match reply.body_as_catalog_command_reply() {
                Some(done) => Ok(done.version()),
                None => Err(self.unexpected(reply.body_type())),
            }
        })
        .await
    }

    /// The whole catalog.
    pub async fn catalog(&self) -> Result<Catalog, MetaError> {
        let request = frame::request_body(|builder| {
            let table = fb::GetCatalog::create(builder, &fb::GetCatalogArgs {});
            (fb::Request::GetCatalog, table.as_union_value())
        });
        self.call(request, |reply| match reply.body_as_catalog() {
            Some(catalog) => codec::read_catalog(catalog).map_err(|error| {
                MetaError::Internal(format!("bad catalog from {}: {error}", self.rpc.peer()))
            }),
            None => Err(self.unexpected(reply.body_type())),
        })
        .await
    }

    /// Reports that `datanode` is alive, with its shards' figures; returns the catalog
    /// version the metasrv has reached.
    pub async fn heartbeat(&self, datanode: u64, shards: &[ShardStats]) -> Result<u64, MetaError> {
        let request = frame::request_body(|builder| {
            let stats: Vec<fb::ShardStats> = shards.iter().map(shard_stats).collect();
            let shards = builder.create_vector(&stats);
            let table = fb::Heartbeat::create(
                builder,
                &fb::HeartbeatArgs {
                    datanode,
                    shards: Some(shards),
                },
            );
            (fb::Request::Heartbeat, table.as_union_value())
        });
        self.call(request, |reply| match reply.body_as_heartbeat_reply() {
            Some(ack) => Ok(ack.catalog_version()),
            None => Err(self.unexpected(reply.body_type())),
        })
        .await
    }
}
