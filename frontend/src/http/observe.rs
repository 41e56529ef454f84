//! The layers around every request: a request id, its count and latency in the
//! frontend's metrics, one log line (at `debug` for a success, `info` for a client error,
//! `error` for a server error), and a caught panic answered with a 500.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use metronome_core::rt::time;
use serde_json::Value as Json;

use super::{handler_name, Frontend};
use crate::self_metrics::{HandlerLabels, RequestLabels};

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
pub(super) async fn observe_requests(
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
    let latency = metronome_core::rt::time::elapsed(started);
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
pub(super) async fn error_message(response: Response) -> (Response, String) {
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

/// A bug in a handler answers 500 with a message instead of dropping the connection.
pub(super) async fn catch_panics(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

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
