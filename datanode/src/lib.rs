//! The datanode: a region server of one shard per core.
//!
//! This crate owns the region engine: the per-shard WAL with group commit ([`wal`]),
//! memtables under a memory budget, Parquet SSTs, the manifest, compaction, the object
//! store cache, and region scans. Each shard ([`metronome_core::rt::shard`]) owns its
//! regions outright; a request for a region is served only by its shard.
//!
//! It also owns the datanode's side of the control plane: its registration and
//! [`heartbeat`] to the metasrv (through `metronome-catalog`'s client, never the
//! metasrv's server), the region [`lease`]s a cluster datanode serves under, and the
//! [`replication`] of a leader's writes to its followers, and the [`catch_up`] that makes
//! a learner a follower.
//!
//! It must not: acknowledge a write before it is durable on every replica of its
//! region's configuration; share a lock between shards;
//! perform I/O except through `metronome_core::rt`; or import `frontend` (they meet
//! through `wire`).

pub mod catch_up;
pub mod datanode;
pub mod engine;
pub mod heartbeat;
pub mod incarnation;
pub mod lease;
pub mod manifest;
pub mod memtable;
pub mod merge;
pub mod replication;
pub mod scan;
pub mod series_chunk;
pub mod series_index;
pub mod service;
pub mod sst;
pub mod sst_cache;
pub mod wal;
