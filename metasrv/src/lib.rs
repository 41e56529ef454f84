//! The metadata service: the cluster's control plane.
//!
//! This crate owns the catalog ([`catalog`]: databases, tables, schemas, regions and their
//! routes) as a state machine; its durable single-replica store ([`store`]) on
//! `metronome_core::rt::disk`; the service that serves it over the protocol
//! ([`service`], with datanode heartbeats) and its client ([`client`]); and its one
//! request and one reply type with their wire form ([`request`]). Still to come with the cluster work:
//! replication with openraft, leases, placement, and the failover and migration
//! procedures.
//!
//! It must not: hold data rows; decide anything outside its state machine; or perform
//! I/O except through `metronome_core::rt`.

pub mod catalog;
pub mod client;
pub mod request;
pub mod service;
pub mod store;
