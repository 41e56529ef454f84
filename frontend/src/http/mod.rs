//! The HTTP API, served with axum: the router and what every handler shares (the
//! [`Frontend`], query parameters, the status of an error), with one module per API:
//! [`prometheus`] (the Prometheus query API), [`write`] (Prometheus remote write and
//! InfluxDB line protocol), [`sql`] (`/v1/sql`), [`cluster`] (`/v1/cluster` and the
//! cluster's administration, `/v1/admin/…`); [`observe`] holds the layers around every
//! request (request ids, metrics, logs, caught panics).
//!
//! Every rejection carries a message that names what was wrong: remote write answers in
//! plain text with the spec's status codes (400 bad body, 415 wrong content type, 503
//! overloaded so that Prometheus retries); the query API answers in Prometheus' JSON
//! error format (`errorType` `bad_data` 400, `execution` 422, `unavailable` 503,
//! `internal` 500). A failure's status is its `ErrorKind`'s (`core::error`).

mod cluster;
mod observe;
mod prometheus;
mod sql;
mod write;

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use crate::cluster_metrics::ClusterFigures;
use crate::datanode_figures::DatanodeFigures;
use crate::meta::Meta;
use crate::prom_store::PromStore;
use crate::promql::{QueryError, QueryLimits};
use crate::remote_write::BODY_BYTES_MAX;
use crate::self_metrics::{Format, SelfMetrics};
use crate::sql::SqlEngine;
use crate::table_store::TableStore;

pub(crate) use observe::logged_message;
pub use prometheus::{parse_duration_ms, parse_time_ms};

/// What the HTTP handlers share.
pub struct Frontend {
    pub meta: Arc<Meta>,
    pub store: Arc<PromStore>,
    pub sql: Arc<SqlEngine>,
    pub tables: Arc<TableStore>,
    pub metrics: SelfMetrics,
    /// What `/metrics` and `/v1/cluster` read of the datanodes.
    pub datanodes: Arc<dyn DatanodeFigures>,
    pub query_limits: QueryLimits,
}

pub fn router(frontend: Arc<Frontend>) -> Router {
    Router::new()
        .route("/api/v1/write", post(write::remote_write))
        .route("/v1/prometheus/write", post(write::remote_write))
        .route(
            "/api/v1/query",
            get(prometheus::query).post(prometheus::query),
        )
        .route(
            "/api/v1/query_range",
            get(prometheus::query_range).post(prometheus::query_range),
        )
        .route(
            "/api/v1/series",
            get(prometheus::series).post(prometheus::series),
        )
        .route(
            "/api/v1/labels",
            get(prometheus::labels).post(prometheus::labels),
        )
        .route("/api/v1/label/{name}/values", get(prometheus::label_values))
        .route("/api/v1/metadata", get(prometheus::metadata))
        .route("/api/v1/status/buildinfo", get(prometheus::buildinfo))
        .route("/v1/sql", get(sql::sql).post(sql::sql))
        .route("/api/v2/write", post(write::influx_write))
        .route("/write", post(write::influx_write))
        .route("/metrics", get(self_metrics))
        .route("/health", get(health))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/admin/migrate_region", post(cluster::migrate_region))
        .route("/v1/admin/drain_datanode", post(cluster::drain_datanode))
        .route(
            "/v1/admin/undrain_datanode",
            post(cluster::undrain_datanode),
        )
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(observe::catch_panics))
        .layer(axum::middleware::from_fn_with_state(
            frontend.clone(),
            observe::observe_requests,
        ))
        .with_state(frontend)
}

/// The name a request is counted and logged under: its route's, so that the metrics'
/// label values stay few whatever paths clients send.
fn handler_name(path: &str) -> &'static str {
    match path {
        "/api/v1/write" | "/v1/prometheus/write" => "write",
        "/api/v1/query" => "query",
        "/api/v1/query_range" => "query_range",
        "/api/v1/series" => "series",
        "/api/v1/labels" => "labels",
        "/api/v1/metadata" => "metadata",
        "/api/v1/status/buildinfo" => "buildinfo",
        "/v1/sql" => "sql",
        "/api/v2/write" | "/write" => "influx_write",
        "/metrics" => "metrics",
        "/health" => "health",
        "/v1/cluster" => "cluster",
        _ if path
            .strip_prefix("/api/v1/label/")
            .and_then(|rest| rest.strip_suffix("/values"))
            .is_some_and(|name| !name.is_empty()) =>
        {
            "label_values"
        }
        _ => "other",
    }
}

/// An HTTP status from its number (`ErrorKind::http_status` and friends give valid ones).
fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes the requests
/// in flight.
#[cfg(not(madsim))]
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The simulation drives the frontend's engines, not its sockets: axum needs the real
/// tokio's listener. Serving is refused, saying so.
#[cfg(madsim)]
pub async fn serve(
    _listener: tokio::net::TcpListener,
    _router: Router,
    _shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    Err(std::io::Error::other("HTTP is not served in simulation"))
}

/// A request's parameters, the one extractor of the query APIs: those of the URL and, for
/// a form POST, of the body; the body and its content type stay at hand for a handler
/// that reads the body otherwise (`/v1/sql`'s `text/plain`).
struct Params {
    pairs: Vec<(String, String)>,
    content_type: Option<String>,
    body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Params, Response> {
        let query = request.uri().query().map(str::to_string);
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let mut params = Params::from_query(query.as_deref());
        if content_type
            .as_deref()
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
        {
            params
                .pairs
                .extend(form_urlencoded::parse(&body).into_owned());
        }
        params.content_type = content_type;
        params.body = body;
        Ok(params)
    }
}

impl Params {
    /// The URL's parameters only: for a body that is no form whatever its content type
    /// says (line protocol sent with `curl --data-binary`).
    fn from_query(query: Option<&str>) -> Params {
        Params {
            pairs: form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
            content_type: None,
            body: Bytes::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn time(&self, key: &str, default: i64) -> Result<i64, QueryError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(text) => parse_time_ms(text).map_err(|reason| {
                QueryError::BadData(format!("invalid parameter {key:?}: {reason}"))
            }),
        }
    }
}

/// `/metrics` in the format the scraper's `Accept` header prefers: OpenMetrics 1.0 or
/// Prometheus' text format 0.0.4.
async fn self_metrics(State(frontend): State<Arc<Frontend>>, headers: HeaderMap) -> Response {
    let (shards, replication) = futures::join!(
        frontend.datanodes.shards(),
        frontend.datanodes.replication()
    );
    frontend.metrics.set_shards(&shards);
    frontend.metrics.set_replication(&replication);
    frontend
        .metrics
        .set_cluster(ClusterFigures::of(&frontend.meta.catalog()));
    let format = Format::negotiate(
        headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok()),
    );
    (
        [(header::CONTENT_TYPE, format.content_type())],
        frontend.metrics.render(format),
    )
        .into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_under_their_routes_names() {
        assert_eq!(handler_name("/api/v1/write"), "write");
        assert_eq!(handler_name("/v1/prometheus/write"), "write");
        assert_eq!(handler_name("/api/v1/label/job/values"), "label_values");
        assert_eq!(handler_name("/api/v1/label/values"), "other");
        assert_eq!(handler_name("/metrics"), "metrics");
        // Whatever a client sends, the label's values stay few.
        assert_eq!(handler_name("/wp-admin/x"), "other");
    }
}
