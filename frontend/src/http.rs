//! The HTTP API: Prometheus remote write, the Prometheus query API, `/metrics` and
//! `/health`, served with axum.
//!
//! Every rejection carries a message that names what was wrong: remote write answers in
//! plain text with the spec's status codes (400 bad body, 415 wrong content type, 503
//! overloaded so that Prometheus retries); the query API answers in Prometheus' JSON
//! error format (`errorType` `bad_data` 400, `execution` 422, `unavailable` 503,
//! `internal` 500).

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metronome_core::data::MatchOp;
use metronome_core::rt::time;
use serde_json::{json, Value as Json};

use metronome_core::error::ErrorKind;

use crate::prom_store::{label_matcher, PromStore};
use crate::promql::{self, EvalRange, QueryError, QueryLimits, QueryValue, ResultSeries};
use crate::remote_write::{self, DecodeError, Protocol, BODY_BYTES_MAX};
use crate::self_metrics::{Format, HandlerLabels, RequestLabels, SelfMetrics};
use crate::sql::{SqlEngine, SqlOutput};
use crate::table_store::TableStore;

/// Reads the datanode's figures for `/metrics`.
pub type ShardFiguresSource = Arc<
    dyn Fn() -> metronome_wire::BoxFuture<'static, Vec<metronome_wire::ShardStats>> + Send + Sync,
>;

/// What the HTTP handlers share.
pub struct Frontend {
    pub store: Arc<PromStore>,
    pub sql: Arc<SqlEngine>,
    pub tables: Arc<TableStore>,
    pub metrics: SelfMetrics,
    pub shard_figures: Option<ShardFiguresSource>,
    pub query_limits: QueryLimits,
}

/// The earliest and latest times a query may name, as in Prometheus (`minTime`/`maxTime`
/// are ±2^63/1000 ms there; these keep arithmetic on them from overflowing).
const TIME_MS_MIN: i64 = i64::MIN / 4;
const TIME_MS_MAX: i64 = i64::MAX / 4;

pub fn router(frontend: Arc<Frontend>) -> Router {
    Router::new()
        .route("/api/v1/write", post(remote_write))
        .route("/v1/prometheus/write", post(remote_write))
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/v1/sql", get(sql).post(sql))
        .route("/api/v2/write", post(influx_write))
        .route("/write", post(influx_write))
        .route("/metrics", get(self_metrics))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(catch_panics))
        .layer(axum::middleware::from_fn_with_state(
            frontend.clone(),
            observe_requests,
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

/// The id of one request: in its log lines, its `x-request-id` response header, and (for
/// a panic) the panic's log line, so that a client's report finds the server's side.
#[derive(Debug, Clone, Copy)]
struct RequestId(u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Error messages in log lines are cut to this many bytes (at a character boundary): a
/// rejected query or statement may quote a long input back.
const LOGGED_MESSAGE_BYTES_MAX: usize = 512;
/// Error bodies longer than this are not read back for the log line.
const LOGGED_BODY_BYTES_MAX: u64 = 64 << 10;

/// Counts, times and logs every request, and tags it with a request id. A success is
/// logged at `debug`; a client error (4xx) at `info` and a server error (5xx) at
/// `error`, once each, with the message the response carries.
async fn observe_requests(
    State(frontend): State<Arc<Frontend>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = time::now();
    let id = RequestId(metronome_core::rt::rand::random());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let handler = handler_name(&path);
    request.extensions_mut().insert(id);
    let mut response = next.run(request).await;
    let status = response.status();
    let latency = started.elapsed();
    frontend
        .metrics
        .http_requests
        .get_or_create(&RequestLabels {
            handler,
            code: status.as_u16(),
        })
        .inc();
    frontend
        .metrics
        .http_request_seconds
        .get_or_create(&HandlerLabels { handler })
        .observe(latency.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    // Milliseconds to the microsecond: more digits are noise in a log line.
    let latency_ms = latency.as_micros() as f64 / 1e3;
    if !(status.is_client_error() || status.is_server_error()) {
        tracing::debug!(request_id = %id, %method, %path, status = status.as_u16(), latency_ms, "request");
        return response;
    }
    let (response, message) = error_message(response).await;
    if status.is_server_error() {
        tracing::error!(request_id = %id, %method, %path, status = status.as_u16(), latency_ms, %message, "request failed");
    } else {
        tracing::info!(request_id = %id, %method, %path, status = status.as_u16(), latency_ms, %message, "request rejected");
    }
    response
}

/// The error message an error response carries (the `error` or `message` field of a
/// JSON body, or a plain-text body), cut for a log line; and the response, unchanged.
async fn error_message(response: Response) -> (Response, String) {
    use axum::body::HttpBody;
    let (parts, body) = response.into_parts();
    // Only a body whose size is known and small is read: the error bodies the handlers
    // build are, and a stream must reach the client as it is.
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|size| size <= LOGGED_BODY_BYTES_MAX);
    if !small {
        return (Response::from_parts(parts, body), String::new());
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let message = format!("the response body could not be read: {error}");
            return (
                Response::from_parts(parts, axum::body::Body::empty()),
                message,
            );
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let message = serde_json::from_str::<Json>(&text)
        .ok()
        .and_then(|json| {
            ["error", "message"]
                .iter()
                .find_map(|key| json.get(key)?.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| text.trim().to_string());
    let message = logged_message(&message);
    (
        Response::from_parts(parts, axum::body::Body::from(bytes)),
        message,
    )
}

/// An error message as a log line carries it: cut to [`LOGGED_MESSAGE_BYTES_MAX`] bytes at
/// a character boundary, marked when cut.
pub(crate) fn logged_message(text: &str) -> String {
    if text.len() <= LOGGED_MESSAGE_BYTES_MAX {
        return text.to_string();
    }
    let mut end = LOGGED_MESSAGE_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An HTTP status from its number (`ErrorKind::http_status` and friends give valid ones).
fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A bug in a handler answers 500 with a message instead of dropping the connection.
async fn catch_panics(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use futures::FutureExt;
    let path = request.uri().path().to_string();
    let request_id = request.extensions().get::<RequestId>().copied();
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            match request_id {
                Some(id) => {
                    tracing::error!(request_id = %id, %path, %message, "a request handler panicked")
                }
                None => tracing::error!(%path, %message, "a request handler panicked"),
            }
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error while serving {path}: {message}\n"),
            )
                .into_response()
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes the requests
/// in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn remote_write(
    State(frontend): State<Arc<Frontend>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let outcome = async {
        let protocol =
            remote_write::negotiate(text(header::CONTENT_TYPE), text(header::CONTENT_ENCODING))?;
        let decoded = remote_write::decode(protocol, &body)?;
        Ok::<_, DecodeError>((protocol, decoded))
    }
    .await;
    let (protocol, decoded) = match outcome {
        Ok(decoded) => decoded,
        Err(error) => {
            let status = match error {
                DecodeError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                DecodeError::Invalid(_) => StatusCode::BAD_REQUEST,
            };
            return (status, format!("{error}\n")).into_response();
        }
    };
    let written = match frontend.store.write(&decoded.series).await {
        Ok(summary) => frontend
            .store
            .set_metadata(&decoded.metadata)
            .await
            .map(|()| summary),
        Err(error) => Err(error),
    };
    match written {
        Ok(summary) => {
            frontend
                .metrics
                .samples_ingested
                .inc_by(summary.samples as u64);
            frontend
                .metrics
                .series_ingested
                .inc_by(summary.series as u64);
            let mut response = StatusCode::NO_CONTENT.into_response();
            if protocol == Protocol::V2 {
                let headers = response.headers_mut();
                headers.insert(
                    "X-Prometheus-Remote-Write-Samples-Written",
                    HeaderValue::from(summary.samples),
                );
                headers.insert(
                    "X-Prometheus-Remote-Write-Histograms-Written",
                    HeaderValue::from(0),
                );
                headers.insert(
                    "X-Prometheus-Remote-Write-Exemplars-Written",
                    HeaderValue::from(0),
                );
            }
            response
        }
        Err(error) => {
            let status = status_code(error.kind.http_status());
            (status, format!("{error}\n")).into_response()
        }
    }
}

/// Query parameters from the URL and, for a form POST, the body.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Params {
        let mut pairs: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(pairs)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
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

/// A time as Prometheus takes it: Unix seconds (fractions allowed) or RFC 3339.
pub fn parse_time_ms(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() || seconds.abs() > (TIME_MS_MAX / 1000) as f64 {
            return Err(format!("cannot parse {text:?} to a valid timestamp"));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|_| format!("cannot parse {text:?} to a valid timestamp"))
}

/// A duration as Prometheus takes it: seconds (fractions allowed) or `1m30s` style.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() || seconds.abs() > (TIME_MS_MAX / 1000) as f64 {
            return Err(format!("cannot parse {text:?} to a valid duration"));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(text)
        .ok()
        .and_then(|duration| i64::try_from(duration.as_millis()).ok())
        .ok_or_else(|| format!("cannot parse {text:?} to a valid duration"))
}

fn api_error(error: &QueryError) -> Response {
    let (status, kind) = match error {
        QueryError::BadData(_) => (StatusCode::BAD_REQUEST, "bad_data"),
        QueryError::Execution(_) => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
        QueryError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        QueryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        QueryError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
    };
    let body = json!({"status": "error", "errorType": kind, "error": error.to_string()});
    (status, axum::Json(body)).into_response()
}

fn api_success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Answers an API request from `outcome`.
fn api_response(outcome: Result<Json, QueryError>) -> Response {
    match outcome {
        Ok(data) => api_success(data),
        Err(error) => api_error(&error),
    }
}

/// A timestamp as Prometheus writes it: Unix seconds, a fraction only where needed.
fn json_time(ms: i64) -> Json {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// A sample value as Prometheus writes it (Go's `FormatFloat(v, 'f', -1, 64)`).
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{value}")
    }
}

fn json_labels(labels: &[(String, String)]) -> Json {
    Json::Object(
        labels
            .iter()
            .map(|(name, value)| (name.clone(), Json::String(value.clone())))
            .collect(),
    )
}

fn json_point((ts, value): (i64, f64)) -> Json {
    json!([json_time(ts), format_value(value)])
}

fn json_value(value: QueryValue) -> Json {
    let series = |all: Vec<ResultSeries>, vector: bool| -> Json {
        Json::Array(
            all.into_iter()
                .map(|one| {
                    if vector {
                        json!({"metric": json_labels(&one.labels), "value": json_point(one.points[0])})
                    } else {
                        let values: Vec<Json> = one.points.into_iter().map(json_point).collect();
                        json!({"metric": json_labels(&one.labels), "values": values})
                    }
                })
                .collect(),
        )
    };
    match value {
        QueryValue::Vector(all) => json!({"resultType": "vector", "result": series(all, true)}),
        QueryValue::Matrix(all) => json!({"resultType": "matrix", "result": series(all, false)}),
        QueryValue::Scalar(ts, value) => {
            json!({"resultType": "scalar", "result": json_point((ts, value))})
        }
        QueryValue::String(ts, text) => {
            json!({"resultType": "string", "result": [json_time(ts), text]})
        }
    }
}

fn lookback(params: &Params) -> Result<i64, QueryError> {
    match params.get("lookback_delta") {
        None | Some("") => Ok(promql::LOOKBACK_MS_DEFAULT),
        Some(text) => parse_duration_ms(text).map_err(|reason| {
            QueryError::BadData(format!("invalid parameter \"lookback_delta\": {reason}"))
        }),
    }
}

async fn query(
    State(frontend): State<Arc<Frontend>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw.as_deref(), &headers, &body);
    let outcome = async {
        let text = params
            .get("query")
            .ok_or_else(|| QueryError::BadData("invalid parameter \"query\": missing".into()))?;
        let mut range = EvalRange::instant(params.time("time", time::unix_time_ms())?);
        range.lookback_ms = lookback(&params)?;
        Ok(json_value(
            promql::evaluate(&frontend.store, text, range, frontend.query_limits).await?,
        ))
    }
    .await;
    api_response(outcome)
}

async fn query_range(
    State(frontend): State<Arc<Frontend>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw.as_deref(), &headers, &body);
    let outcome = async {
        let text = params
            .get("query")
            .ok_or_else(|| QueryError::BadData("invalid parameter \"query\": missing".into()))?;
        let missing = |key: &str| QueryError::BadData(format!("invalid parameter {key:?}: missing"));
        let start = params.time("start", i64::MIN).and_then(|t| {
            if t == i64::MIN { Err(missing("start")) } else { Ok(t) }
        })?;
        let end = params.time("end", i64::MIN).and_then(|t| {
            if t == i64::MIN { Err(missing("end")) } else { Ok(t) }
        })?;
        let step_text = params.get("step").ok_or_else(|| missing("step"))?;
        let step = parse_duration_ms(step_text)
            .map_err(|reason| QueryError::BadData(format!("invalid parameter \"step\": {reason}")))?;
        if end < start {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".to_string(),
            ));
        }
        if step <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer"
                    .to_string(),
            ));
        }
        let range = EvalRange {
            start_ms: start,
            end_ms: end,
            step_ms: step,
            lookback_ms: lookback(&params)?,
        };
        Ok(json_value(promql::evaluate(&frontend.store, text, range, frontend.query_limits).await?))
    }
    .await;
    api_response(outcome)
}

/// The label sets of every series matching any `match[]` selector in the range.
async fn matching_series(
    store: &PromStore,
    selectors: &[&str],
    start: i64,
    end: i64,
) -> Result<Vec<Vec<(String, String)>>, QueryError> {
    let mut all = std::collections::BTreeSet::new();
    for selector in selectors {
        let matchers = promql::parse_series_selector(selector)?;
        all.extend(
            store
                .series(&matchers, start, end.saturating_add(1))
                .await?,
        );
    }
    Ok(all.into_iter().collect())
}

async fn series(
    State(frontend): State<Arc<Frontend>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw.as_deref(), &headers, &body);
    let outcome = async {
        let selectors = params.all("match[]");
        if selectors.is_empty() {
            return Err(QueryError::BadData(
                "no match[] parameter provided".to_string(),
            ));
        }
        let start = params.time("start", TIME_MS_MIN)?;
        let end = params.time("end", TIME_MS_MAX)?;
        let all = matching_series(&frontend.store, &selectors, start, end).await?;
        Ok(Json::Array(
            all.iter().map(|labels| json_labels(labels)).collect(),
        ))
    }
    .await;
    api_response(outcome)
}

async fn labels(
    State(frontend): State<Arc<Frontend>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw.as_deref(), &headers, &body);
    let outcome = async {
        let selectors = params.all("match[]");
        if selectors.is_empty() {
            // Every label name the catalog knows, whatever its time range.
            return Ok(json!(frontend.store.label_names()));
        }
        let start = params.time("start", TIME_MS_MIN)?;
        let end = params.time("end", TIME_MS_MAX)?;
        let mut names = std::collections::BTreeSet::new();
        for labels in matching_series(&frontend.store, &selectors, start, end).await? {
            names.extend(labels.into_iter().map(|(name, _)| name));
        }
        Ok(json!(names))
    }
    .await;
    api_response(outcome)
}

async fn label_values(
    State(frontend): State<Arc<Frontend>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(raw.as_deref(), &headers, &[]);
    let outcome = async {
        if !remote_write::is_valid_label_name(&name) {
            return Err(QueryError::BadData(format!("invalid label name: {name:?}")));
        }
        let mut selectors = params.all("match[]");
        if selectors.is_empty() && name == "__name__" {
            return Ok(json!(frontend.store.metric_names()));
        }
        let start = params.time("start", TIME_MS_MIN)?;
        let end = params.time("end", TIME_MS_MAX)?;
        let mut values = std::collections::BTreeSet::new();
        if selectors.is_empty() {
            let matchers = [label_matcher(&name, MatchOp::NotEqual, "")];
            for labels in frontend
                .store
                .series(&matchers, start, end.saturating_add(1))
                .await?
            {
                values.extend(
                    labels
                        .into_iter()
                        .filter(|(n, _)| *n == name)
                        .map(|(_, v)| v),
                );
            }
        } else {
            selectors.sort_unstable();
            for labels in matching_series(&frontend.store, &selectors, start, end).await? {
                values.extend(
                    labels
                        .into_iter()
                        .filter(|(n, _)| *n == name)
                        .map(|(_, v)| v),
                );
            }
        }
        Ok(json!(values))
    }
    .await;
    api_response(outcome)
}

/// Metric metadata as remote write reported it: `metric` picks one, `limit` caps the
/// number of metrics (Prometheus' `limit_per_metric` is moot: one entry is kept per
/// metric).
async fn metadata(
    State(frontend): State<Arc<Frontend>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(raw.as_deref(), &headers, &[]);
    let outcome = (|| {
        let limit = match params.get("limit") {
            None | Some("") => None,
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                QueryError::BadData(format!("invalid parameter \"limit\": {text:?}"))
            })?),
        }
        // Prometheus reads a negative limit as none.
        .and_then(|limit| usize::try_from(limit).ok());
        let metric = params.get("metric").filter(|m| !m.is_empty());
        let mut data = serde_json::Map::new();
        for (name, metadata) in frontend.store.metadata() {
            if metric.is_some_and(|wanted| wanted != name) {
                continue;
            }
            if limit.is_some_and(|limit| data.len() >= limit) {
                break;
            }
            data.insert(
                name,
                json!([{
                    "type": metadata.metric_type,
                    "help": metadata.help,
                    "unit": metadata.unit,
                }]),
            );
        }
        Ok(Json::Object(data))
    })();
    api_response(outcome)
}

/// What Prometheus' `buildinfo` reports, in its field names: `goVersion` holds the Rust
/// toolchain (Grafana shows it as the runtime's version); `buildUser` is left empty
/// rather than recording who built the binary.
async fn buildinfo(State(frontend): State<Arc<Frontend>>) -> Response {
    let build = frontend.metrics.build_info();
    let data = json!({
        "version": build.version,
        "revision": build.revision,
        "branch": build.branch,
        "buildUser": "",
        "buildDate": build.build_date,
        "goVersion": build.toolchain,
    });
    api_response(Ok(data))
}

/// `/metrics` in the format the scraper's `Accept` header prefers: OpenMetrics 1.0 or
/// Prometheus' text format 0.0.4.
async fn self_metrics(State(frontend): State<Arc<Frontend>>, headers: HeaderMap) -> Response {
    if let Some(source) = &frontend.shard_figures {
        frontend.metrics.set_shards(&source().await);
    }
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

/// InfluxDB line protocol, v2 (`/api/v2/write?precision=`) and v1 (`/write?precision=`).
/// Everything lands in the default database; `bucket`/`db` are accepted and not used yet.
async fn influx_write(
    State(frontend): State<Arc<Frontend>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(raw.as_deref(), &headers, &[]);
    let invalid = |message: String| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": "invalid", "message": message})),
        )
            .into_response()
    };
    match (
        crate::line_protocol::Precision::parse(params.get("precision")),
        std::str::from_utf8(&body),
    ) {
        (Err(message), _) => invalid(message),
        (_, Err(error)) => invalid(format!("the body is not UTF-8: {error}")),
        (Ok(precision), Ok(text)) => {
            let outcome = crate::line_protocol::write(
                &frontend.tables,
                metronome_metasrv::catalog::DEFAULT_DATABASE,
                text,
                precision,
                time::unix_time_ns(),
            )
            .await;
            match outcome {
                Ok(points) => {
                    frontend.metrics.samples_ingested.inc_by(points as u64);
                    StatusCode::NO_CONTENT.into_response()
                }
                Err(error) => {
                    // InfluxDB's error codes.
                    let code = match error.kind {
                        ErrorKind::Invalid => "invalid",
                        kind if kind.is_retryable() => "unavailable",
                        _ => "internal error",
                    };
                    let body = json!({"code": code, "message": error.message});
                    (status_code(error.kind.http_status()), axum::Json(body)).into_response()
                }
            }
        }
    }
}

/// `POST /v1/sql` (form field or query parameter `sql`, or the statement as a
/// `text/plain` body): every statement's output as JSON.
async fn sql(
    State(frontend): State<Arc<Frontend>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = time::now();
    let params = Params::parse(raw.as_deref(), &headers, &body);
    let is_text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let text = match params.get("sql") {
        Some(text) => Some(text.to_string()),
        None if is_text => std::str::from_utf8(&body).ok().map(str::to_string),
        None => None,
    };
    match text {
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "missing parameter \"sql\""})),
        )
            .into_response(),
        Some(text) => match frontend.sql.execute(&text).await {
            Ok(outputs) => {
                let output: Vec<Json> = outputs.into_iter().map(sql_output_json).collect();
                let elapsed_ms = started.elapsed().as_millis() as u64;
                axum::Json(json!({"output": output, "execution_time_ms": elapsed_ms}))
                    .into_response()
            }
            Err(error) => {
                let status = status_code(error.http_status());
                (status, axum::Json(json!({"error": error.to_string()}))).into_response()
            }
        },
    }
}

fn sql_output_json(output: SqlOutput) -> Json {
    match output {
        SqlOutput::Done {
            rows,
            expired: Some(expired),
            ..
        } => json!({
            "affectedrows": rows,
            "expired_rows": expired.rows,
            "warning": expired.message,
        }),
        SqlOutput::Done { rows, .. } => json!({"affectedrows": rows}),
        SqlOutput::Rows { schema, batches } => {
            let columns: Vec<Json> = schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "data_type": f.data_type().to_string()}))
                .collect();
            let mut rows = Vec::new();
            for batch in &batches {
                for row in 0..batch.num_rows() {
                    rows.push(Json::Array(
                        batch
                            .columns()
                            .iter()
                            .map(|column| json_cell(column.as_ref(), row))
                            .collect(),
                    ));
                }
            }
            let total = rows.len();
            json!({"records": {"schema": {"column_schemas": columns}, "rows": rows, "total_rows": total}})
        }
    }
}

/// One value as JSON: numbers and booleans as such, timestamps as integers since the
/// Unix epoch in their column's unit (the column's `data_type` names it), everything else
/// as Arrow displays it.
fn json_cell(column: &dyn arrow_array::Array, row: usize) -> Json {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Float64Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampNanosecondType, TimestampSecondType,
    };
    use arrow_schema::{DataType, TimeUnit};
    if column.is_null(row) {
        return Json::Null;
    }
    match column.data_type() {
        DataType::Boolean => json!(column.as_boolean().value(row)),
        DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => {
            let value = column.as_primitive::<Float64Type>().value(row);
            serde_json::Number::from_f64(value)
                .map_or_else(|| json!(format_value(value)), Json::Number)
        }
        DataType::Timestamp(unit, _) => json!(match unit {
            TimeUnit::Second => column.as_primitive::<TimestampSecondType>().value(row),
            TimeUnit::Millisecond => column.as_primitive::<TimestampMillisecondType>().value(row),
            TimeUnit::Microsecond => column.as_primitive::<TimestampMicrosecondType>().value(row),
            TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(row),
        }),
        DataType::Utf8 => json!(column.as_string::<i32>().value(row)),
        _ => json!(
            datafusion::arrow::util::display::array_value_to_string(column, row)
                .unwrap_or_default()
        ),
    }
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_parse_as_prometheus_takes_them() {
        assert_eq!(parse_time_ms("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time_ms("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert!(parse_time_ms("yesterday")
            .unwrap_err()
            .contains("yesterday"));
        assert!(parse_time_ms("NaN").is_err());
        assert_eq!(parse_duration_ms("15"), Ok(15_000));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert!(parse_duration_ms("soon").is_err());
    }

    #[test]
    fn values_and_times_are_written_as_prometheus_writes_them() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(json_time(1_000), json!(1));
        assert_eq!(json_time(1_500), json!(1.5));
    }

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

    #[test]
    fn logged_messages_are_cut_at_a_character_boundary() {
        assert_eq!(logged_message("short"), "short");
        let long = "a".repeat(LOGGED_MESSAGE_BYTES_MAX + 1);
        assert_eq!(
            logged_message(&long),
            format!("{}…", &long[..LOGGED_MESSAGE_BYTES_MAX])
        );
        // "é" is two bytes: a cut inside it moves back before it.
        let accented = format!("{}é", &long[..LOGGED_MESSAGE_BYTES_MAX - 1]);
        assert_eq!(
            logged_message(&accented),
            format!("{}…", &long[..LOGGED_MESSAGE_BYTES_MAX - 1])
        );
    }
}
