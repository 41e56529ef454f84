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
//!
//! `POST /v1/admin/migrate_region?region=7.0&to=2`: moves region 7.0's leadership to
//! datanode 2 (`crate::admin`) and answers once it has,
//! `{"status": "success", "data": {"region": "7.0", "from": 1, "to": 2, "shard": 0,
//! "epoch": 4, "took_ms": 812}}`, or with an error and its status (400 for a bad
//! request, 503 for one that did not complete).
//!
//! `POST /v1/admin/drain_datanode?id=2`: moves every copy off datanode 2 and answers
//! once none is left, `{"status": "success", "data": {"datanode": 2, "draining": true,
//! "regions_held": 0, "regions_moved": 4, "took_ms": 9120}}`; `POST /v1/admin/undrain_datanode?id=2` takes
//! the mark away and answers at once.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use metronome_core::error::{Error, ErrorKind};
use serde_json::json;

use super::{status_code, Frontend, Params};
use crate::cluster_view::ClusterView;

pub(super) async fn cluster(State(frontend): State<Arc<Frontend>>) -> Response {
    match ClusterView::gather(&frontend.meta, Some(frontend.datanodes.as_ref())).await {
        Ok(view) => axum::Json(view.to_json()).into_response(),
        Err(error) => {
            let error = Error::from(error);
            let body =
                json!({"status": "error", "errorType": "unavailable", "error": error.message});
            let status = match error.kind {
                ErrorKind::Invalid => status_code(400),
                kind => status_code(kind.http_status()),
            };
            (status, axum::Json(body)).into_response()
        }
    }
}

pub(super) async fn migrate_region(
    State(frontend): State<Arc<Frontend>>,
    params: Params,
) -> Response {
    let migrated = async {
        let region = params
            .get("region")
            .ok_or_else(|| Error::invalid("the parameter \"region\" is missing (as \"7.0\")"))?;
        let region = crate::admin::parse_region(region)?;
        let to = params
            .get("to")
            .ok_or_else(|| Error::invalid("the parameter \"to\" (a datanode id) is missing"))?;
        let to: u64 = to
            .parse()
            .map_err(|_| Error::invalid(format!("\"to\" = {to:?} is not a datanode id")))?;
        crate::admin::migrate_region(&frontend.meta, region, to).await
    }
    .await;
    match migrated {
        Ok(done) => axum::Json(json!({"status": "success", "data": {
            "region": done.region.to_string(),
            "from": done.from,
            "to": done.to,
            "shard": done.shard,
            "epoch": done.epoch,
            "took_ms": done.took_ms,
        }}))
        .into_response(),
        Err(error) => {
            let body = json!({"status": "error", "error": error.message});
            (status_code(error.kind.http_status()), axum::Json(body)).into_response()
        }
    }
}

pub(super) async fn drain_datanode(
    State(frontend): State<Arc<Frontend>>,
    params: Params,
) -> Response {
    drain(frontend, params, true).await
}

pub(super) async fn undrain_datanode(
    State(frontend): State<Arc<Frontend>>,
    params: Params,
) -> Response {
    drain(frontend, params, false).await
}

async fn drain(frontend: Arc<Frontend>, params: Params, drain: bool) -> Response {
    let drained = async {
        let id = params
            .get("id")
            .ok_or_else(|| Error::invalid("the parameter \"id\" (a datanode id) is missing"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| Error::invalid(format!("\"id\" = {id:?} is not a datanode id")))?;
        crate::admin::drain_datanode(&frontend.meta, id, drain).await
    }
    .await;
    match drained {
        Ok(done) => axum::Json(json!({"status": "success", "data": {
            "datanode": done.datanode,
            "draining": done.draining,
            "regions_held": done.copies,
            "regions_moved": done.moved,
            "took_ms": done.took_ms,
        }}))
        .into_response(),
        Err(error) => {
            let body = json!({"status": "error", "error": error.message});
            (status_code(error.kind.http_status()), axum::Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_catalog::client::MetaError;
    use metronome_catalog::request::RaftStatus;

    #[test]
    fn nodes_carry_their_liveness_and_regions_their_routes() {
        let catalog = crate::cluster_view::test_catalog(2, 2, 1);
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
        let document =
            ClusterView::of(&catalog, replicas.to_vec(), &[(1, 900), (2, 60_000)]).to_json();
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
