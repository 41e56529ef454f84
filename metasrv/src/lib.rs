//! The metadata service: the cluster's control plane.
//!
//! This crate owns the catalog's durable single-replica store ([`store`]) on
//! `metronome_core::rt::disk`, and the service that serves it over the protocol
//! ([`service`], with datanode heartbeats). The catalog itself (its state machine, its
//! requests and the client) is `metronome-catalog`, which the other roles link without
//! this server. Still to come with the cluster work: replication with openraft, leases,
//! placement, and the failover and migration procedures.
//!
//! It must not: hold data rows; decide anything outside the catalog's state machine; or
//! perform I/O except through `metronome_core::rt`.

pub mod service;
pub mod store;
