//! The metadata service: the cluster's control plane.
//!
//! This crate owns the catalog ([`catalog`]: databases, tables, schemas, regions and their
//! routes) as a state machine; its durable single-replica store ([`store`]) on
//! `metronome_core::rt::disk`; the service that serves it over the protocol
//! ([`service`], with datanode heartbeats) and its client ([`client`]); and the
//! catalog's FlatBuffers conversion ([`codec`]). Still to come with the cluster work:
//! replication with openraft, leases, placement, and the failover and migration
//! procedures.
//!
//! It must not: hold data rows; decide anything outside its state machine; or perform
//! I/O except through `metronome_core::rt`.

pub mod catalog;
pub mod client;
pub mod codec;
pub mod service;
pub mod store;
