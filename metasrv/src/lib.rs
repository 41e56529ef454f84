//! The metadata service: the cluster's control plane.
//!
//! This crate owns the catalog's replication with openraft ([`raft`]: the raft log on
//! `metronome_core::rt::disk`, the catalog as the state machine, raft messages over the
//! protocol) and the service that serves it ([`service`], with datanode heartbeats). The
//! catalog itself (its state machine, its requests and the client) is
//! `metronome-catalog`, which the other roles link without this server. Still to come with
//! the cluster work: the migration procedures. Its [`failover`] detector promotes a
//! follower of a region whose leader's lease lapsed, [`quarantine`] replaces the copies
//! datanodes found damaged, and [`repair`] gives a region short of copies a learner to
//! catch up and rebalances, remembering its moves that failed ([`moves`]).
//!
//! It must not: hold data rows; decide anything outside the catalog's state machine; or
//! perform I/O except through `metronome_core::rt`.

pub mod failover;
pub mod moves;
pub mod quarantine;
pub mod raft;
pub mod repair;
pub mod service;
