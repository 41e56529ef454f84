//! The write APIs: Prometheus remote write 1.0 and 2.0, and InfluxDB line protocol
//! (v1 `/write`, v2 `/api/v2/write`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use metronome_core::error::ErrorKind;
use metronome_core::rt::time;
use serde_json::json;

use super::{status_code, Frontend, Params};
use crate::remote_write::{self, DecodeError, Protocol};

pub(super) async fn remote_write(
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

/// InfluxDB line protocol, v2 (`/api/v2/write?precision=`) and v1 (`/write?precision=`).
/// Everything lands in the default database; `bucket`/`db` are accepted and not used yet.
pub(super) async fn influx_write(
    State(frontend): State<Arc<Frontend>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = Params::from_query(raw.as_deref());
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
                metronome_catalog::DEFAULT_DATABASE,
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
