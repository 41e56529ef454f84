//! The frontend: Metronome's stateless access layer.
//!
//! This crate will own the client protocols (Prometheus remote write and HTTP API,
//! InfluxDB line protocol, SQL over HTTP and the PostgreSQL wire protocol), validation,
//! write routing by region, the PromQL engine and SQL planning with DataFusion, and the
//! merging of partial results. It arrives with the standalone and PromQL issues; today it
//! is empty on purpose.
//!
//! It must not: store data; import `datanode` (they meet through `wire`); or let bad input
//! panic, hang or allocate without bound: every rejection names what and where.
