//! `GET /v1/cluster`: the cluster as this frontend sees it — each metasrv replica with its
//! raft state (asked of each replica), the datanodes that registered with their liveness
//! (from the leader's heartbeats), and every region with its route.
//!
//! ```json
//! {"nodes": [{"role": "metasrv", "id": 1, "addr": "…", "alive": true, "leader": true,
//!             "state": "Leader", "term": 3, "last_applied_index": 42},
//!            {"role": "datanode", "id": 1, "addr": "…", "shards": 2, "alive": true,
//!             "since_heartbeat_ms": 1200}],
//!  "regions": [{"table": "public.cpu", "region": "7.0", "leader": 1, "shard": 0,
//!               "followers": [], "epoch": 0}]}
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use metronome_catalog::client::MetaError;
use metronome_catalog::request::RaftStatus;
use metronome_catalog::{Catalog, TableKind};
use metronome_core::error::{Error, ErrorKind};
use serde_json::{json, Value as Json};

use super::{status_code, Frontend};

/// A datanode is alive while its last heartbeat is at most this old: three heartbeats
/// and a second, the lease GreptimeDB gives a region. The metasrv places new regions by
/// the same bound (`MetaService::place`).
pub const ALIVE_SINCE_HEARTBEAT_MS_MAX: u64 = 3 * 5_000 + 1_000;

pub(super) async fn cluster(State(frontend): State<Arc<Frontend>>) -> Response {
    let meta = &frontend.meta;
    let liveness = match meta.liveness().await {
        Ok(liveness) => liveness,
        Err(error) => {
            let error = Error::from(error);
            let body =
                json!({"status": "error", "errorType": "unavailable", "error": error.message});
            let status = match error.kind {
                ErrorKind::Invalid => status_code(400),
                kind => status_code(kind.http_status()),
            };
            return (status, axum::Json(body)).into_response();
        }
    };
    let replicas = meta.raft_statuses().await;
    let catalog = meta.catalog();
    axum::Json(describe(&catalog, &replicas, &liveness)).into_response()
}

/// The document `/v1/cluster` answers, from the catalog, the metasrv replicas' raft states
/// (by address; an error for one that did not answer) and the leader's liveness.
pub fn describe(
    catalog: &Catalog,
    replicas: &[(String, Result<RaftStatus, MetaError>)],
    liveness: &[(u64, u64)],
) -> Json {
    let since: BTreeMap<u64, u64> = liveness.iter().copied().collect();
    let mut nodes = Vec::new();
    for (addr, status) in replicas {
        nodes.push(match status {
            Ok(status) => json!({
                "role": "metasrv",
                "id": status.node_id,
                "addr": addr,
                "alive": true,
                "leader": status.state == "Leader",
                "state": status.state,
                "term": status.term,
                "leader_id": status.leader,
                "last_log_index": status.last_log_index,
                "last_applied_index": status.last_applied_index,
                "catalog_version": status.catalog_version,
                "voters": status.voters,
            }),
            Err(error) => json!({
                "role": "metasrv",
                "addr": addr,
                "alive": false,
                "leader": false,
                "error": error.to_string(),
            }),
        });
    }
    for (id, info) in &catalog.datanodes {
        let since_heartbeat_ms = since.get(id).copied();
        nodes.push(json!({
            "role": "datanode",
            "id": id,
            "addr": info.addr,
            "shards": info.shards,
            "alive": since_heartbeat_ms.is_some_and(|ms| ms <= ALIVE_SINCE_HEARTBEAT_MS_MAX),
            "since_heartbeat_ms": since_heartbeat_ms,
        }));
    }
    let mut regions = Vec::new();
    for (database_name, database) in &catalog.databases {
        let metric_regions = database.metrics.iter().flat_map(|metrics| {
            metrics
                .regions
                .iter()
                .map(|region| (format!("{database_name}.<metrics>"), region))
        });
        let table_regions = database.tables.values().flat_map(|table| {
            let regions = match &table.kind {
                TableKind::Regular { regions, .. } => regions.as_slice(),
                TableKind::Metric { .. } => &[],
            };
            regions
                .iter()
                .map(move |region| (format!("{database_name}.{}", table.name), region))
        });
        for (table, (region, route)) in metric_regions.chain(table_regions) {
            regions.push(json!({
                "table": table,
                "region": region.to_string(),
                "leader": route.datanode,
                "shard": route.shard,
                // No replication yet: every region has its one copy, and no epoch.
                "followers": [],
                "epoch": 0,
            }));
        }
    }
    json!({"nodes": nodes, "regions": regions})
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_catalog::{Command, DEFAULT_DATABASE};

    #[test]
    fn nodes_carry_their_liveness_and_regions_their_routes() {
        let mut catalog = Catalog::default();
        for id in [1, 2] {
            catalog
                .apply(&Command::RegisterDatanode {
                    id,
                    addr: format!("10.0.0.{id}:4100"),
                    shards: 1,
                })
                .unwrap();
        }
        catalog
            .apply(&Command::CreateMetricRegions {
                database: DEFAULT_DATABASE.to_string(),
                routes: catalog.place_among(2, None).unwrap(),
            })
            .unwrap();
        let replicas = [
            (
                "10.0.0.9:4000".to_string(),
                Ok(RaftStatus {
                    node_id: 1,
                    term: 2,
                    leader: Some(1),
                    state: "Leader".into(),
                    last_log_index: 7,
                    last_applied_index: 7,
                    voters: vec![1, 2],
                    catalog_version: 3,
                }),
            ),
            (
                "10.0.0.10:4000".to_string(),
                Err(MetaError::Unavailable("connection refused".into())),
            ),
        ];
        let document = describe(&catalog, &replicas, &[(1, 900), (2, 60_000)]);
        let nodes = document["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0]["role"], "metasrv");
        assert_eq!(nodes[0]["leader"], true, "{document}");
        assert_eq!(nodes[0]["term"], 2, "{document}");
        assert_eq!(nodes[1]["alive"], false, "{document}");
        assert_eq!(nodes[1]["error"], "connection refused", "{document}");
        assert_eq!(nodes[2]["alive"], true, "{document}");
        assert_eq!(
            nodes[3]["alive"], false,
            "a minute without a heartbeat: {document}"
        );
        let regions = document["regions"].as_array().unwrap();
        let leaders: Vec<u64> = regions
            .iter()
            .map(|r| r["leader"].as_u64().unwrap())
            .collect();
        assert_eq!(leaders, [1, 2]);
        assert_eq!(regions[0]["table"], "public.<metrics>");
    }
}
