//! The catalog as every role links it: the state machine of databases, tables, regions
//! and routes ([`Catalog`], [`Command`], `Catalog::apply`), with the datanode registry and
//! the placement of new regions ([`placement`]), the regions' configurations of leader
//! and followers ([`replicas`]), their migrations ([`migration`]), the moves that even
//! out the datanodes' load ([`rebalance`]) and the drain of a datanode ([`drain`]), the region leases the metasrv grants and datanodes hold
//! ([`lease`]), the metasrv's one request and
//! one reply type with their wire form ([`request`]), and the client that reaches a
//! metasrv ([`client`]). Frontends and datanodes link this crate; only the metasrv
//! (`metronome-metasrv`) links the server and the store, and whatever consensus they
//! come to need.
//!
//! It must not: store or serve the catalog (the metasrv's job); hold data rows; or
//! perform I/O except through `metronome_core::rt` (the client's calls go through
//! `metronome_wire::rpc`).

mod catalog;
pub mod client;
pub mod drain;
pub mod lease;
pub mod migration;
pub mod placement;
pub mod rebalance;
pub mod replicas;
pub mod request;

pub use catalog::*;
