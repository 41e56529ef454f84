//! The inter-node protocol: the only language frontend, datanode and metasrv share.
//!
//! - [`fb`]: the FlatBuffers messages, generated from `schema/metronome.fbs` by
//!   `codegen.sh` (committed; CI checks that they are current).
//! - [`frame`]: the frame header (magic, version, request id) and verified decoding.
//! - [`rows`]: row data as Arrow IPC, the one payload that is not a FlatBuffer.
//! - [`convert`]: the data model to and from its tables.
//! - [`rpc`]: a client that multiplexes requests over one connection and a server loop,
//!   over any `metronome_core::rt::net` transport (TCP, in-process, simulated).
//! - [`RegionService`], the requests a frontend makes of a datanode's regions, and
//!   [`region`], its client and server.
//!
//! It must not: contain component logic (it encodes, decodes and routes messages only);
//! trust a byte it decodes (every buffer is verified and bounded, never a panic); or
//! depend on `datanode`, `metasrv` or `frontend`, which meet only through it. (The
//! catalog's messages are converted in `metasrv`, which owns the catalog's types.)

use std::future::Future;
use std::pin::Pin;

use metronome_core::data::{FieldColumn, RegionId, RegionSchema, Row, ScanRequest, SeriesRows};

/// A failed region request: its kind and a message naming what and where (the one
/// error of every layer, `metronome_core::error::Error`).
pub use metronome_core::error::{Error as RegionError, ErrorKind};

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

/// A boxed future, so that [`RegionService`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The requests a frontend makes of the regions of one datanode.
pub trait RegionService: Send + Sync + 'static {
    /// Creates a region on `shard` (modulo the datanode's shard count); succeeds if it
    /// already exists with this schema, wherever it is.
    fn create_region(
        &self,
        region: RegionId,
        schema: RegionSchema,
        shard: u16,
    ) -> BoxFuture<'_, Result<(), RegionError>>;
    fn drop_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>>;
    /// The region's schema, or `None` if it does not exist.
    fn region_schema(
        &self,
        region: RegionId,
    ) -> BoxFuture<'_, Result<Option<RegionSchema>, RegionError>>;
    /// Appends tag columns, in order, to the region's primary key, in one schema change.
    fn add_tags(
        &self,
        region: RegionId,
        tags: Vec<String>,
    ) -> BoxFuture<'_, Result<(), RegionError>>;
    fn add_field(
        &self,
        region: RegionId,
        column: FieldColumn,
    ) -> BoxFuture<'_, Result<(), RegionError>>;
    fn set_ttl(
        &self,
        region: RegionId,
        ttl_ms: Option<i64>,
    ) -> BoxFuture<'_, Result<(), RegionError>>;
    /// Writes rows; returns once they are durable.
    fn write(&self, region: RegionId, rows: Vec<Row>) -> BoxFuture<'_, Result<(), RegionError>>;
    /// The region's rows matching `request`, in (series, ts) order. Rows may leave
    /// trailing empty tags out.
    fn scan(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> BoxFuture<'_, Result<Vec<Row>, RegionError>>;
    /// Like [`RegionService::scan`], each series' rows grouped under its tags, which
    /// spares a reader of many samples a tag vector per row.
    fn scan_series(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> BoxFuture<'_, Result<Vec<SeriesRows>, RegionError>> {
        Box::pin(async move { Ok(SeriesRows::group(self.scan(region, request).await?)) })
    }
    /// Closes a region: it finishes the writes in flight, flushes everything, and
    /// serves nothing (requests get `NotFound`) until opened again; its data stays.
    fn close_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>>;
    /// Opens a closed region again.
    fn open_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>>;
    /// Every shard's figures, for monitoring.
    fn shard_stats(&self) -> BoxFuture<'_, Result<Vec<ShardStats>, RegionError>>;
}

pub mod convert;
pub mod frame;
pub mod region;
pub mod rows;
pub mod rpc;

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
