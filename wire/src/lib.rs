//! The inter-node protocol: the only language frontend, datanode and metasrv share.
//!
//! This crate will own the FlatBuffers schemas of every request and response (write, scan,
//! region lifecycle, heartbeat, catalog operations), their versioned framing on top of
//! [`metronome_core::rt::net`] frames, Arrow IPC payloads for row data, and the RPC client
//! and server loops. It arrives with the standalone issue; today it is empty on purpose.
//!
//! It must not: contain component logic (it encodes, decodes and routes messages only);
//! trust a byte it decodes (every buffer is verified and bounded, never a panic); or
//! depend on `datanode`, `metasrv` or `frontend`, which meet only through it.
