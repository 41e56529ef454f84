//! `information_schema`: DataFusion's tables (`tables`, `columns`, `schemata`, …) and the
//! cluster's, under GreptimeDB's names:
//!
//! - `cluster_info`: one row per metasrv replica (its raft state as it reports it) and per
//!   registered datanode (its liveness from the metasrv leader's heartbeats);
//! - `region_peers`: one row per copy of a region (its role: leader, follower or learner)
//!   with the datanode shard that holds it, that datanode's liveness (`status`: `ALIVE`,
//!   `DOWNGRADED`, or `QUARANTINED` for a copy its datanode found damaged), and how far behind
//!   the leader the copy is (`lag_writes`, `lag_bytes`, `lag_ms`: the writes queued for
//!   it that it has not made durable, as the leader tells; null if it did not answer).
//!
//! Both are read from [`ClusterView`] when a query names them, as `/v1/cluster` is.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::MemTable;

use crate::cluster_view::{ClusterView, RegionView};
use crate::datanode_figures::DatanodeFigures;
use crate::meta::Meta;

pub const CLUSTER_INFO: &str = "cluster_info";
pub const REGION_PEERS: &str = "region_peers";

/// DataFusion's `information_schema` with the cluster's two tables beside its own.
pub struct InformationSchema {
    inner: InformationSchemaProvider,
    meta: Arc<Meta>,
    datanodes: Arc<dyn DatanodeFigures>,
}

impl std::fmt::Debug for InformationSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InformationSchema")
    }
}

impl InformationSchema {
    pub fn new(
        catalogs: Arc<dyn CatalogProviderList>,
        meta: Arc<Meta>,
        datanodes: Arc<dyn DatanodeFigures>,
    ) -> InformationSchema {
        InformationSchema {
            inner: InformationSchemaProvider::new(catalogs),
            meta,
            datanodes,
        }
    }

    /// The cluster's view; with how far behind each copy is for `replication` only (it
    /// asks every datanode).
    async fn view(&self, replication: bool) -> DfResult<ClusterView> {
        let datanodes = replication.then_some(self.datanodes.as_ref());
        ClusterView::gather(&self.meta, datanodes)
            .await
            .map_err(|error| {
                DataFusionError::Execution(format!("cannot read the cluster's state: {error}"))
            })
    }
}

fn int(values: impl IntoIterator<Item = Option<u64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(values.into_iter().map(|value| {
        value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
    })))
}

fn text<S: AsRef<str>>(values: impl IntoIterator<Item = Option<S>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn table(fields: Vec<Field>, columns: Vec<ArrayRef>) -> DfResult<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// `cluster_info`: metasrv replicas first, then datanodes.
pub fn cluster_info(view: &ClusterView) -> DfResult<Arc<dyn TableProvider>> {
    let metasrvs = &view.metasrvs;
    let datanodes = &view.datanodes;
    let status = |index: usize| metasrvs[index].status.as_ref().ok();
    let rows = 0..metasrvs.len();
    let peer_id = int(rows
        .clone()
        .map(|i| status(i).map(|s| s.node_id))
        .chain(datanodes.iter().map(|d| Some(d.id))));
    let peer_type = text(
        rows.clone()
            .map(|_| Some("METASRV"))
            .chain(datanodes.iter().map(|_| Some("DATANODE"))),
    );
    let peer_addr = text(
        metasrvs
            .iter()
            .map(|m| Some(m.addr.clone()))
            .chain(datanodes.iter().map(|d| Some(d.addr.clone()))),
    );
    let alive: ArrayRef = Arc::new(BooleanArray::from_iter(
        metasrvs
            .iter()
            .map(|m| Some(m.status.is_ok()))
            .chain(datanodes.iter().map(|d| Some(d.alive()))),
    ));
    let is_leader: ArrayRef = Arc::new(BooleanArray::from_iter(
        rows.clone()
            .map(|i| Some(status(i).is_some_and(|s| s.state == "Leader")))
            .chain(datanodes.iter().map(|_| None)),
    ));
    let raft_state = text(
        rows.clone()
            .map(|i| status(i).map(|s| s.state.clone()))
            .chain(datanodes.iter().map(|_| None)),
    );
    let raft_term = int(rows
        .clone()
        .map(|i| status(i).map(|s| s.term))
        .chain(datanodes.iter().map(|_| None)));
    let applied = int(rows
        .clone()
        .map(|i| status(i).map(|s| s.last_applied_index))
        .chain(datanodes.iter().map(|_| None)));
    let shards = int(rows
        .clone()
        .map(|_| None)
        .chain(datanodes.iter().map(|d| Some(u64::from(d.shards)))));
    let since = int(rows
        .clone()
        .map(|_| None)
        .chain(datanodes.iter().map(|d| d.since_heartbeat_ms)));
    let error = text(
        metasrvs
            .iter()
            .map(|m| m.status.as_ref().err().cloned())
            .chain(datanodes.iter().map(|_| None)),
    );
    let draining: ArrayRef = Arc::new(BooleanArray::from_iter(
        rows.clone()
            .map(|_| None)
            .chain(datanodes.iter().map(|d| Some(d.draining))),
    ));
    table(
        vec![
            Field::new("peer_id", DataType::Int64, true),
            Field::new("peer_type", DataType::Utf8, false),
            Field::new("peer_addr", DataType::Utf8, false),
            Field::new("alive", DataType::Boolean, false),
            Field::new("is_leader", DataType::Boolean, true),
            Field::new("raft_state", DataType::Utf8, true),
            Field::new("raft_term", DataType::Int64, true),
            Field::new("last_applied_index", DataType::Int64, true),
            Field::new("shards", DataType::Int64, true),
            Field::new("since_heartbeat_ms", DataType::Int64, true),
            Field::new("error", DataType::Utf8, true),
            Field::new("draining", DataType::Boolean, true),
        ],
        vec![
            peer_id, peer_type, peer_addr, alive, is_leader, raft_state, raft_term, applied,
            shards, since, error, draining,
        ],
    )
}

/// `region_peers`: every copy of every region, its datanode shard, that datanode's
/// liveness and the copy's lag.
pub fn region_peers(view: &ClusterView) -> DfResult<Arc<dyn TableProvider>> {
    // A row per copy: the leader's, then each follower's, then the learner's.
    let peers: Vec<(&RegionView, u64, u16, &str)> = view
        .regions
        .iter()
        .flat_map(|r| {
            std::iter::once((r, r.datanode, r.shard, "LEADER"))
                .chain(
                    r.followers
                        .iter()
                        .map(move |f| (r, f.datanode, f.shard, "FOLLOWER")),
                )
                .chain(r.learner.map(|l| (r, l.datanode, l.shard, "LEARNER")))
        })
        .collect();
    let regions = &peers;
    let datanode = |id: u64| view.datanode(id);
    // Writes queued for the copy that it has not made durable, as its leader told.
    let lags: Vec<_> = regions
        .iter()
        .map(|(r, peer, ..)| view.lag(r, *peer))
        .collect();
    table(
        vec![
            Field::new("table_schema", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("region_id", DataType::Utf8, false),
            Field::new("peer_id", DataType::Int64, false),
            Field::new("peer_addr", DataType::Utf8, true),
            Field::new("shard", DataType::Int64, false),
            Field::new("is_leader", DataType::Boolean, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("down_seconds", DataType::Int64, true),
            Field::new("epoch", DataType::Int64, false),
            Field::new("role", DataType::Utf8, false),
            Field::new("lag_writes", DataType::Int64, true),
            Field::new("lag_bytes", DataType::Int64, true),
            Field::new("lag_ms", DataType::Int64, true),
        ],
        vec![
            text(regions.iter().map(|(r, ..)| Some(r.database.clone()))),
            text(regions.iter().map(|(r, ..)| Some(r.table.clone()))),
            text(regions.iter().map(|(r, ..)| Some(r.region.to_string()))),
            int(regions.iter().map(|(_, peer, ..)| Some(*peer))),
            text(
                regions
                    .iter()
                    .map(|(_, peer, ..)| datanode(*peer).map(|d| d.addr.clone())),
            ),
            int(regions
                .iter()
                .map(|(_, _, shard, _)| Some(u64::from(*shard)))),
            Arc::new(BooleanArray::from_iter(
                regions.iter().map(|(.., role)| Some(*role == "LEADER")),
            )),
            text(regions.iter().map(|(r, peer, ..)| {
                let alive = datanode(*peer).is_some_and(|d| d.alive());
                Some(if view.quarantined.contains(&(r.region, *peer)) {
                    "QUARANTINED"
                } else if alive {
                    "ALIVE"
                } else {
                    "DOWNGRADED"
                })
            })),
            int(regions.iter().map(|(_, peer, ..)| {
                datanode(*peer)
                    .filter(|d| !d.alive())
                    .and_then(|d| d.since_heartbeat_ms)
                    .map(|ms| ms / 1000)
            })),
            int(regions.iter().map(|(r, ..)| Some(r.epoch))),
            text(regions.iter().map(|(.., role)| Some(role.to_string()))),
            int(lags.iter().map(|lag| lag.as_ref().map(|l| l.writes))),
            int(lags.iter().map(|lag| lag.as_ref().map(|l| l.bytes))),
            int(lags.iter().map(|lag| lag.as_ref().map(|l| l.oldest_ms))),
        ],
    )
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend([CLUSTER_INFO.to_string(), REGION_PEERS.to_string()]);
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match name.to_ascii_lowercase().as_str() {
            CLUSTER_INFO => Ok(Some(cluster_info(&self.view(false).await?)?)),
            REGION_PEERS => Ok(Some(region_peers(&self.view(true).await?)?)),
            _ => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        matches!(
            name.to_ascii_lowercase().as_str(),
            CLUSTER_INFO | REGION_PEERS
        ) || self.inner.table_exist(name)
    }
}
