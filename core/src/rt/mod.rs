//! The I/O seam: the only module that names `monoio`, `madsim`, `tokio`'s runtime,
//! `std::fs`, `std::net`, `Instant::now`, `SystemTime::now` or an OS random source.
//!
//! Everything else in Metronome reaches the outside world through these modules, so that
//! one build flag (`RUSTFLAGS="--cfg madsim"`) swaps the whole world for a deterministic
//! simulation in which a seed replays any failure exactly.
//!
//! # Two execution contexts
//!
//! Metronome runs two kinds of executors in production, and this module is honest about it
//! instead of pretending one API serves both:
//!
//! - **Shared context** (frontend, metasrv): a multi-threaded tokio runtime; futures must be
//!   `Send`. APIs: [`task::spawn`], [`time::sleep`], [`time::timeout`], [`time::interval`],
//!   [`net::Connection`], [`net::Listener`].
//! - **Shard context** (datanode): one single-threaded monoio executor per core, driven by
//!   io_uring (epoll fallback). Futures are `!Send` because monoio's driver handles are
//!   `Rc`s; a shard owns its data outright and nothing crosses threads except messages.
//!   APIs: [`shard::start`], [`task::spawn_local`], [`time::sleep_local`],
//!   [`time::timeout_local`], [`net::local`], [`disk`] and [`object`].
//!
//! Under `--cfg madsim` both contexts are madsim's single-threaded simulated runtime, and
//! disk I/O goes to [`disk::SimDisk`].
//!
//! Messages between the contexts travel over runtime-agnostic channels (`async-channel`),
//! whose wakers work from any thread (monoio's `sync` feature makes cross-thread wakes
//! safe).
//!
//! # What is deliberately absent
//!
//! - No `spawn_blocking`: blocking work on a shard stalls every region the shard owns.
//! - No global registries (of in-process listeners, disks, seeds): madsim does not reset
//!   statics between the two runs of its determinism check, so every such object is an
//!   explicit value passed to whoever needs it.

// This module is the one place allowed to call the raw runtime.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod disk;
pub mod net;
pub mod object;
#[cfg(feature = "raft")]
pub mod raft;
pub mod rand;
pub mod shard;
pub mod task;
pub mod time;

/// True when this build is the deterministic simulation (`--cfg madsim`).
pub const SIMULATION: bool = cfg!(madsim);
