//! The inter-node protocol: the only language frontend, datanode and metasrv share.
//!
//! - [`fb`]: the FlatBuffers messages, generated from `schema/metronome.fbs` by
//!   `codegen.sh` (committed; CI checks that they are current).
//! - [`frame`]: the frame header (magic, version, request id) and verified decoding.
//! - [`write_batch`]: a write's series as protobuf, the one form of a write on the
//!   network and in the datanode's WAL; [`rows`]: scan replies as Arrow IPC. These two
//!   are the payloads that are not FlatBuffers.
//! - [`convert`]: the data model to and from its tables.
//! - [`rpc`]: a client that multiplexes requests over one connection and a server loop,
//!   over any `metronome_core::rt::net` transport (TCP, in-process, simulated).
//! - [`RegionService`], the requests a frontend makes of a datanode's regions
//!   ([`region_request`]: one request and one reply enum), and [`region`], its client
//!   and server.
//!
//! It must not: contain component logic (it encodes, decodes and routes messages only);
//! trust a byte it decodes (every buffer is verified and bounded, never a panic); or
//! depend on `datanode`, `metasrv` or `frontend`, which meet only through it. (The
//! catalog's messages are converted in `metasrv`, which owns the catalog's types.)

use std::future::Future;
use std::pin::Pin;

/// A failed region request: its kind and a message naming what and where (the one
/// error of every layer, `metronome_core::error::Error`).
pub use metronome_core::error::{Error as RegionError, ErrorKind};
pub use region_reply::RegionReply;
pub use region_request::{ReadAt, RegionRequest, ReplicatedRegion};
pub use region_service_ext::RegionServiceExt;

/// A shard's figures for monitoring, as a datanode reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: u16,
    pub memtable_bytes: u64,
    /// WAL commits (one fdatasync each) since start.
    pub wal_commits: u64,
    /// Time spent writing and syncing those commits, in microseconds.
    pub wal_commit_micros_total: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub regions: u64,
}

/// A copy of a region its leader's datanode reports on: a follower, or the learner, with
/// the writes queued for it that it has not made durable yet (its lag behind the leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyLag {
    pub region: metronome_core::data::RegionId,
    /// The epoch of the configuration the copy belongs to.
    pub epoch: u64,
    pub datanode: u64,
    pub shard: u16,
    pub learner: bool,
    pub writes: u64,
    pub bytes: u64,
    /// How long the oldest of those writes has waited, in milliseconds; 0 with none.
    pub oldest_ms: u64,
}

/// A datanode's replication figures for monitoring: the copies of the regions it leads,
/// and what it fenced off since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replication {
    pub copies: Vec<CopyLag>,
    /// Writes refused for want of a lease at their route's epoch (a stale route, a
    /// lapsed lease: a leader cut off from the metasrv).
    pub fenced_writes: u64,
    /// Leaders' shipments refused because they came under an older epoch than the one
    /// the datanode follows the region at (each try counts).
    pub fenced_shipments: u64,
}

/// A boxed future, so that [`RegionService`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A datanode's regions, as a frontend reaches them: one request type, one reply type
/// ([`region_request`]), whichever side of a network the datanode is on. The typed
/// requests are [`RegionServiceExt`]'s.
pub trait RegionService: Send + Sync + 'static {
    fn call(&self, request: RegionRequest) -> BoxFuture<'_, Result<RegionReply, RegionError>>;
}

pub mod convert;
pub mod frame;
pub mod region;
pub mod region_reply;
pub mod region_request;
pub mod region_service_ext;
pub mod rows;
pub mod rpc;
pub mod write_batch;

#[allow(
    clippy::all,
    clippy::pedantic,
    unsafe_op_in_unsafe_fn,
    mismatched_lifetime_syntaxes,
    deprecated,
    non_camel_case_types,
    non_snake_case,
    unused_imports
)]
#[rustfmt::skip]
#[path = "generated/metronome_generated.rs"]
mod generated;

/// The generated FlatBuffers types of `schema/metronome.fbs`.
pub use generated::metronome::wire::fb;
