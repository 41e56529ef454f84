//! Chaos testing against real processes: the `metronome` binary on loopback or in network
//! namespaces, with kill -9, SIGSTOP, partitions and full disks, checking the same
//! invariants as the simulation (no acknowledged write lost, no phantom data).
//!
//! It arrives with the standalone issue (kill -9 during ingest); today it is empty on
//! purpose. Like `benches`, it drives the real world and may call the OS directly; nothing
//! may depend on it.
