//! Chaos testing against real processes: the `metronome` binary as a cluster of separate
//! processes, each in a network namespace of its own (loopback where namespaces cannot
//! be made), with real faults — kill -9, SIGSTOP past a lease, partitions and latency
//! through `ip link` and `tc netem` — checking what the simulation checks: no acknowledged
//! sample lost, none that no one wrote, DDL while a metasrv replica is down. The binary
//! `metronome-chaos` (`src/main.rs`) runs a seeded schedule of faults.
//!
//! [`topology`] places the processes, [`processes`] starts, kills and stops them,
//! [`workload`] writes and checks. Like `benches`, it drives the real world and may call
//! the OS directly; nothing may depend on it.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod processes;
pub mod topology;
pub mod workload;
