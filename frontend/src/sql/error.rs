//! Why a statement failed, and what that is to a client: its kind, SQLSTATE and HTTP status.

use super::*;

/// Why a statement failed; the message names what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The statement is wrong (syntax, unknown table or column, bad value).
    #[error("{0}")]
    Invalid(String),
    /// The statement is the client's mistake, of a kind PostgreSQL gives its own
    /// SQLSTATE: a value out of range or undefined (division by zero, an overflow, a
    /// timestamp out of range), or a `ROLLBACK` that cannot undo what it should. HTTP
    /// answers 400 as for [`SqlError::Invalid`]; pgwire answers `sqlstate`.
    #[error("{message}")]
    Rejected {
        sqlstate: &'static str,
        message: String,
    },
    /// The statement is valid but not supported yet.
    #[error("{0}")]
    Unsupported(String),
    /// Anything else, by the kind every layer shares (a region unavailable, a
    /// deadline passed, a fault of ours).
    #[error("{0}")]
    Failed(Error),
}

impl SqlError {
    /// A fault of Metronome's own.
    pub fn internal(message: impl Into<String>) -> SqlError {
        SqlError::Failed(Error::internal(message))
    }

    /// The kind of failure, from which the HTTP status and the SQLSTATE follow.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SqlError::Invalid(_) | SqlError::Rejected { .. } | SqlError::Unsupported(_) => {
                ErrorKind::Invalid
            }
            SqlError::Failed(error) => error.kind,
        }
    }

    /// The SQLSTATE of its ErrorResponse: the statement's own where it has one,
    /// otherwise its kind's.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SqlError::Rejected { sqlstate, .. } => sqlstate,
            SqlError::Unsupported(_) => "0A000",
            other => other.kind().sqlstate(),
        }
    }

    /// The HTTP status that answers it.
    pub fn http_status(&self) -> u16 {
        match self {
            SqlError::Unsupported(_) => 501,
            other => other.kind().http_status(),
        }
    }
}

impl From<Error> for SqlError {
    fn from(error: Error) -> SqlError {
        match error.kind {
            ErrorKind::Invalid => SqlError::Invalid(error.message),
            _ => SqlError::Failed(error),
        }
    }
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(error: datafusion::error::DataFusionError) -> SqlError {
        use datafusion::error::DataFusionError as E;
        // DataFusion wraps errors in context and diagnostics; the root says what it is.
        let root = error.find_root();
        if let Some(sqlstate) = data_exception(root) {
            // The root alone: the context around it ("Optimizer rule … failed") tells
            // how DataFusion came upon the value, which the client has no use for.
            let message = match root {
                E::ArrowError(arrow, _) => match arrow.as_ref() {
                    ArrowError::DivideByZero => "division by zero".to_string(),
                    other => other.to_string(),
                },
                other => other.strip_backtrace(),
            };
            return SqlError::Rejected { sqlstate, message };
        }
        let message = error.to_string();
        match root {
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) => SqlError::Invalid(message),
            // The memory pool refused an operator: the query wants more than the SQL
            // memory budget (`query.sql_memory_bytes_max`), now or with others running.
            E::ResourcesExhausted(_) => {
                SqlError::Failed(Error::new(ErrorKind::Overloaded, message))
            }
            E::NotImplemented(_) => SqlError::Unsupported(message),
            _ => SqlError::internal(message),
        }
    }
}

/// PostgreSQL's SQLSTATEs for the client's mistakes a query can raise (mostly class 22,
/// data exceptions).
pub mod sqlstate {
    pub const DATA_EXCEPTION: &str = "22000";
    /// A result or statement past one of Metronome's limits (PostgreSQL's class 54).
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const INVALID_TRANSACTION_STATE: &str = "25000";
}

/// The SQLSTATE of an error in the values a statement computes, which is the client's
/// mistake (class 22), or `None` for every other error. Arrow says what went wrong in
/// its error kinds where it can (division by zero, overflow) and in words otherwise
/// (casts, parses, the range of a timestamp), so the words decide the rest.
pub(super) fn data_exception(root: &datafusion::error::DataFusionError) -> Option<&'static str> {
    use datafusion::error::DataFusionError as E;
    match root {
        E::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::DivideByZero => Some(sqlstate::DIVISION_BY_ZERO),
            ArrowError::ArithmeticOverflow(_) => Some(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE),
            ArrowError::CastError(message)
            | ArrowError::ParseError(message)
            | ArrowError::ComputeError(message) => {
                Some(data_exception_in_words(message, sqlstate::DATA_EXCEPTION))
            }
            ArrowError::InvalidArgumentError(message) => Some(data_exception_in_words(
                message,
                sqlstate::INVALID_PARAMETER_VALUE,
            )),
            _ => None,
        },
        // DataFusion raises errors of evaluation (a cast, a function's argument) as
        // execution errors; its own faults are internal errors.
        E::Execution(message) => Some(data_exception_in_words(
            message,
            sqlstate::INVALID_PARAMETER_VALUE,
        )),
        _ => None,
    }
}

pub(super) fn data_exception_in_words(message: &str, otherwise: &'static str) -> &'static str {
    let message = message.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|word| message.contains(word));
    let temporal = any(&["timestamp", "date", "time", "interval"]);
    if any(&["divide by zero", "division by zero"]) {
        sqlstate::DIVISION_BY_ZERO
    } else if any(&[
        "overflow",
        "out of range",
        "too large",
        "have to be between",
        "exceeds the representable",
        "can't cast value",
    ]) {
        if temporal {
            sqlstate::DATETIME_FIELD_OVERFLOW
        } else {
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE
        }
    } else if any(&["cast", "pars"]) {
        if temporal {
            sqlstate::INVALID_DATETIME_FORMAT
        } else {
            sqlstate::INVALID_TEXT_REPRESENTATION
        }
    } else {
        otherwise
    }
}
