//! The frontend: Metronome's stateless access layer.
//!
//! This crate owns the client protocols and what they need: Prometheus remote write 1.0
//! and 2.0 ([`remote_write`]), Prometheus' naming rules and stale marker
//! ([`prom_model`], shared by ingest and PromQL, which imports neither `http` nor
//! `remote_write`), the metric layout that maps Prometheus series onto shared
//! physical regions ([`prom_store`]), the PromQL engine ([`promql`]: Prometheus 2.42's
//! operators, aggregations, functions and subqueries), the HTTP API ([`http`]: remote
//! write, the Prometheus query API, `/metrics`, `/health`), its own metrics
//! ([`self_metrics`]), and its view of the catalog ([`meta`]); regular tables on their
//! own regions ([`table_store`]) written by InfluxDB line protocol ([`line_protocol`])
//! and SQL ([`sql`], DataFusion for queries) over HTTP and the PostgreSQL wire protocol
//! ([`pg`]), whose timestamps both bring to their table's unit ([`precision`]); and
//! [`router`], the one `RegionService` the stores use, which sends each region's
//! requests to the datanode its route names and owns the partition hash; [`admin`] runs cluster administration (region migration) for SQL
//! and HTTP; [`datanode_figures`] reads what only datanodes know for monitoring. [`start`] is
//! the frontend as a role: its configuration sections and peers in, its servers out.
//!
//! It must not: store data; import `datanode` or the metasrv's server (it links the
//! catalog through `metronome-catalog`) (they meet through
//! `metronome_wire::RegionService`); or let bad input panic, hang or allocate without
//! bound: every rejection names what and where.

pub mod admin;
pub mod cluster_metrics;
pub mod cluster_view;
pub mod datanode_figures;
pub mod http;
pub mod line_protocol;
pub mod meta;
pub mod pg;
pub mod precision;
pub mod prom_model;
pub mod prom_store;
pub mod promql;
pub mod remote_write;
pub mod router;
pub mod self_metrics;
pub mod sql;
pub mod start;
pub mod table_store;
