//! Metronome's shared vocabulary and its only I/O seam.
//!
//! This crate owns:
//! - [`rt`], the one module through which every clock, timer, task spawn, random number,
//!   socket and file operation passes. It compiles to the production runtimes (monoio with
//!   io_uring on datanode shards, tokio elsewhere) and, under `--cfg madsim`, to the
//!   deterministic simulator, together with [`rt::disk::SimDisk`], our crash-faithful
//!   simulated disk.
//! - [`config`], the process configuration shared by the binary and the components;
//! - [`error`], the one classification of failures, and what each kind means to a
//!   client (retry, HTTP status, SQLSTATE);
//! - [`data`], the data model: region ids, schemas, rows and values, and [`time_unit`],
//!   the unit of a table's timestamps with the only conversions between units, and
//!   [`write_batch`], the one form of a write from the frontend's decoders to a memtable;
//! - [`re2`], label regular expressions in Go's syntax, as Prometheus reads them,
//!   translated for the `regex` crate (every label regex is compiled through it);
//! - [`journal`], the on-disk format of a checkpointed state machine (region manifests,
//!   the catalog): checksummed checkpoints plus an edit log, through `rt::disk`.
//!
//! It must not: hold component logic (storage, protocols, planning, consensus);
//! depend on another Metronome crate; or let a raw runtime call escape `rt` (clippy's
//! `disallowed-methods` in `clippy.toml` enforces that for every other crate).

pub mod config;
pub mod data;
pub mod error;
pub mod journal;
pub mod re2;
pub mod rt;
pub mod time_unit;
pub mod write_batch;
