//! The metadata service: the cluster's control plane.
//!
//! This crate will own the catalog (databases, tables, schemas, partition rules), region
//! routes and placement, datanode membership through heartbeats and leases, and the
//! failover and migration procedures, as a state machine replicated with openraft whose
//! log lives on `metronome_core::rt::disk`. It arrives with the standalone and cluster
//! issues; today it is empty on purpose.
//!
//! It must not: hold data rows; decide anything outside its replicated state machine; or
//! perform I/O except through `metronome_core::rt`.
