//! The Prometheus query API (`/api/v1/query`, `query_range`, `series`, `labels`, label
//! values, `metadata`, build info) in Prometheus' JSON, with its error types.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use metronome_core::data::MatchOp;
use metronome_core::rt::time;
use serde_json::{json, Value as Json};

use super::{Frontend, Params};
use crate::prom_model::is_valid_label_name;
use crate::prom_store::{label_matcher, PromStore};
use crate::promql::value::format_float;
use crate::promql::{self, EvalRange, QueryError, QueryValue, ResultSeries};

/// The earliest and latest times a query may name, as in Prometheus (`minTime`/`maxTime`
/// are ±2^63/1000 ms there; these keep arithmetic on them from overflowing).
const TIME_MS_MIN: i64 = i64::MIN / 4;
const TIME_MS_MAX: i64 = i64::MAX / 4;

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

fn json_labels(labels: &[(String, String)]) -> Json {
    Json::Object(
        labels
            .iter()
            .map(|(name, value)| (name.clone(), Json::String(value.clone())))
            .collect(),
    )
}

fn json_point((ts, value): (i64, f64)) -> Json {
    json!([json_time(ts), format_float(value)])
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

pub(super) async fn query(State(frontend): State<Arc<Frontend>>, params: Params) -> Response {
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

pub(super) async fn query_range(State(frontend): State<Arc<Frontend>>, params: Params) -> Response {
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
pub(super) async fn matching_series(
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

pub(super) async fn series(State(frontend): State<Arc<Frontend>>, params: Params) -> Response {
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

pub(super) async fn labels(State(frontend): State<Arc<Frontend>>, params: Params) -> Response {
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

pub(super) async fn label_values(
    State(frontend): State<Arc<Frontend>>,
    Path(name): Path<String>,
    params: Params,
) -> Response {
    let outcome = async {
        if !is_valid_label_name(&name) {
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
pub(super) async fn metadata(State(frontend): State<Arc<Frontend>>, params: Params) -> Response {
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
pub(super) async fn buildinfo(State(frontend): State<Arc<Frontend>>) -> Response {
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
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(json_time(1_000), json!(1));
        assert_eq!(json_time(1_500), json!(1.5));
    }
}
