//! The one classification of failures: every layer (engine, protocol, stores, HTTP,
//! pgwire) passes an [`ErrorKind`] through unchanged, and what a kind means to a client
//! is decided here, once each: whether to retry ([`ErrorKind::is_retryable`]), the HTTP
//! status ([`ErrorKind::http_status`]) and the PostgreSQL SQLSTATE
//! ([`ErrorKind::sqlstate`]).
//!
//! A layer's own error type (the engine's, the SQL engine's) says *what* failed; its
//! `kind()` says which of these it is, in one `match` in that layer.

use std::fmt;

/// What kind of failure an [`Error`] is; it decides how a client reacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong (a bad row, schema, matcher or statement): do not retry it.
    Invalid,
    /// What the request names (a region) does not exist where its route says it is.
    /// A table a statement names that does not exist is `Invalid`, the client's
    /// mistake; this is the cluster's inconsistency, which a client cannot fix.
    NotFound,
    /// The node asked does not serve what the request names now (a closed region, one
    /// that moved, a follower asked for what its leader does): refresh the route and
    /// retry.
    WrongRoute,
    /// The region is set aside after damage on disk, until an operator acts.
    Quarantined,
    /// Too much work in flight (unflushed data, queued requests): retry later.
    Overloaded,
    /// A node or shard is down or restarting: retry later.
    Unavailable,
    /// The request ran out of time.
    Timeout,
    /// Stored data failed its checks (a damaged file): retrying will not help.
    Corrupt,
    /// A fault of Metronome's own (a bug, an I/O failure with no better name).
    Internal,
}

impl ErrorKind {
    /// Every kind, for exhaustive tests of the mappings.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Invalid,
        ErrorKind::NotFound,
        ErrorKind::WrongRoute,
        ErrorKind::Quarantined,
        ErrorKind::Overloaded,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Corrupt,
        ErrorKind::Internal,
    ];

    /// Whether the same request may succeed later (after a refresh of the route for
    /// `WrongRoute`). A client that retries backs off.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::WrongRoute | ErrorKind::Overloaded | ErrorKind::Unavailable
        )
    }

    /// The HTTP status that answers a request failed this way. 5xx are Metronome's
    /// faults or states. Prometheus retries remote write on 5xx, but on 429 only when
    /// `retry_on_http_429` is set (otherwise it drops the batch), so overload is a 503.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            // Never a 4xx: Prometheus drops a batch answered with one, and the client
            // did nothing wrong.
            ErrorKind::NotFound => 500,
            ErrorKind::WrongRoute
            | ErrorKind::Overloaded
            | ErrorKind::Unavailable
            | ErrorKind::Timeout => 503,
            ErrorKind::Quarantined | ErrorKind::Corrupt | ErrorKind::Internal => 500,
        }
    }

    /// The SQLSTATE of a PostgreSQL ErrorResponse for this kind (a statement's own
    /// mistakes may carry a more precise one, e.g. class 22 for values).
    pub fn sqlstate(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "42000",
            ErrorKind::NotFound => "XX000",
            ErrorKind::Overloaded => "53000",
            ErrorKind::WrongRoute | ErrorKind::Unavailable => "57P03",
            ErrorKind::Timeout => "57014",
            ErrorKind::Quarantined | ErrorKind::Corrupt => "XX001",
            ErrorKind::Internal => "XX000",
        }
    }
}

/// A failure: its kind and a message naming what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// Whether the same request may succeed later ([`ErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_retryable_exactly_when_its_status_is_a_server_state() {
        for kind in ErrorKind::ALL {
            let status = kind.http_status();
            assert!((400..600).contains(&status), "{kind:?}");
            // A retryable kind is one a client may send again unchanged: Prometheus'
            // remote write retries 5xx (and drops a batch answered with any 4xx, 429
            // included, by default), so every retryable kind must be a 503, and only a
            // timeout besides them may be one.
            if kind.is_retryable() {
                assert_eq!(status, 503, "{kind:?}");
            } else {
                assert!(status != 503 || kind == ErrorKind::Timeout, "{kind:?}");
            }
            let sqlstate = kind.sqlstate();
            assert_eq!(sqlstate.len(), 5, "{kind:?}");
            // Class 42 is the client's mistake, as 400 is; no other 4xx is answered,
            // since Prometheus drops a remote-write batch answered with one.
            assert_eq!(
                sqlstate.starts_with("42"),
                status == 400,
                "{kind:?}: {sqlstate} vs {status}"
            );
            assert!(status == 400 || status >= 500, "{kind:?}: {status}");
        }
    }
}
