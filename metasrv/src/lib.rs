//! The metadata service: the cluster's control plane.
//!
//! This crate owns the catalog ([`catalog`]: databases, tables, schemas, regions and their
//! routes) as a state machine, and its durable single-replica store ([`store`]) on
//! `metronome_core::rt::disk`. Still to come with the cluster work: replication with
//! openraft, datanode membership through heartbeats and leases, placement, and the
//! failover and migration procedures.
//!
//! It must not: hold data rows; decide anything outside its state machine; or perform
//! I/O except through `metronome_core::rt`.

pub mod catalog;
pub mod store;
