//! PromQL evaluation with Prometheus 2.42's semantics, as plain code over plain data.
//!
//! [`evaluate`] parses a query (`promql-parser`), works out which samples each selector
//! can read ([`eval::fetch_windows`]: matchers and time ranges pushed down to the region
//! scans, so a selective query never reads a whole table), fetches them, and hands them
//! to the [`eval::Evaluator`], which computes instant and range queries step by step as
//! Prometheus does: selectors with the lookback delta, staleness markers, `offset` and
//! `@`; subqueries; [`binary`] operators with vector matching; [`aggregate`]
//! operators; and the [`functions`]. The evaluator does no I/O and is tested with
//! hand-computed results; `tests/promql_compliance.rs` compares the whole engine with a
//! real Prometheus on the same data.
//!
//! Semantics follow Prometheus 2.x (the version Debian ships and our comparison oracle):
//! an instant selector at `t` takes each series' latest sample in `[t - lookback, t]`,
//! unless that sample is a staleness marker; a range selector `[r]` takes the samples in
//! `[t - r, t]`, staleness markers left out (Prometheus 3 made the left edge open).
//!
//! Deliberately absent: native histograms (Metronome stores float samples), and the
//! functions and modifiers Prometheus added after 2.42 (`limitk`, `sort_by_label`, …),
//! which are refused as unknown, as 2.42 would.

mod aggregate;
mod binary;
pub mod eval;
mod functions;
mod quoting;
pub mod value;

use foldhash::{HashMap, HashMapExt};
use std::time::{Duration, Instant};

use metronome_core::data::{MatchOp, TagMatcher};
use metronome_core::rt::time;
use promql_parser::label::MatchOp as PromMatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};

use metronome_core::error::{Error, ErrorKind};

use crate::prom_model::STALE_NAN_BITS;
use crate::prom_store::PromStore;
use eval::{Evaluator, Fetched, FetchedSeries, Limits};
use value::Value;

/// How deeply a query may nest parentheses, brackets and braces, and how many operator
/// characters and words it may hold. Parsing, evaluating and dropping an expression
/// recurse over its depth; past these bounds a query is refused before parsing, where a
/// deeper one would overflow the thread's stack and take the process down.
pub const NESTING_MAX: usize = 256;
pub const OPERATORS_MAX: usize = 4096;

/// Prometheus' default lookback delta.
pub const LOOKBACK_MS_DEFAULT: i64 = 5 * 60 * 1000;
/// A range query may have at most this many steps per series (Prometheus' limit).
pub const STEPS_MAX: i64 = 11_000;

/// Why a query failed, in Prometheus' error types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `bad_data` (400): the query or its parameters are malformed.
    #[error("{0}")]
    BadData(String),
    /// `execution` (422): the query is valid but cannot be evaluated.
    #[error("{0}")]
    Execution(String),
    /// `unavailable` (503).
    #[error("{0}")]
    Unavailable(String),
    /// `internal` (500).
    #[error("{0}")]
    Internal(String),
    /// `timeout` (503): the query ran out of time.
    #[error("{0}")]
    Timeout(String),
}

impl From<Error> for QueryError {
    /// Prometheus' error type for a failure of the store beneath.
    fn from(error: Error) -> QueryError {
        match error.kind {
            ErrorKind::Invalid => QueryError::BadData(error.message),
            ErrorKind::Timeout => QueryError::Timeout(error.message),
            kind if kind.is_retryable() => QueryError::Unavailable(error.message),
            _ => QueryError::Internal(error.message),
        }
    }
}

/// One series of a result: labels sorted by name, and (timestamp ms, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSeries {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(i64, f64)>,
}

/// A query result, as the Prometheus API types it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    /// One point per series, at the evaluation time.
    Vector(Vec<ResultSeries>),
    Matrix(Vec<ResultSeries>),
    Scalar(i64, f64),
    String(i64, String),
}

/// When a query is evaluated: one instant, or every step from `start_ms` to `end_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalRange {
    pub start_ms: i64,
    pub end_ms: i64,
    /// 0 for an instant query.
    pub step_ms: i64,
    pub lookback_ms: i64,
}

impl EvalRange {
    pub fn instant(time_ms: i64) -> EvalRange {
        EvalRange {
            start_ms: time_ms,
            end_ms: time_ms,
            step_ms: 0,
            lookback_ms: LOOKBACK_MS_DEFAULT,
        }
    }
}

/// How much one query may cost, answered with Prometheus' errors when exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Samples fetched plus points computed (Prometheus' `--query.max-samples`).
    pub samples_max: usize,
    /// Prometheus' `--query.timeout`.
    pub timeout: Duration,
    /// A subquery's step when it names none (Prometheus' evaluation interval).
    pub subquery_step_ms: i64,
}

impl Default for QueryLimits {
    /// Prometheus' defaults.
    fn default() -> QueryLimits {
        QueryLimits {
            samples_max: 50_000_000,
            timeout: Duration::from_secs(120),
            subquery_step_ms: 60_000,
        }
    }
}

/// Refuses a query deeper than [`NESTING_MAX`] or with more than [`OPERATORS_MAX`]
/// operators (counted generously: characters of `+-*/%^=!<>` and the words `and`, `or`,
/// `unless`, `atan2` outside string literals).
fn check_depth(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let end_word = |word: &mut String, operators: &mut usize| {
        if matches!(word.as_str(), "and" | "or" | "unless" | "atan2") {
            *operators += 1;
        }
        word.clear();
    };
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        end_word(&mut word, &mut operators);
        match c {
            '"' | '\'' | '`' => {
                // Skip the string literal; only `"` and `'` strings have escapes.
                while let Some(inner) = chars.next() {
                    if inner == '\\' && c != '`' {
                        chars.next();
                    } else if inner == c {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > NESTING_MAX {
                    return Err(format!(
                        "the query nests deeper than {NESTING_MAX} parentheses, brackets or braces"
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '+' | '-' | '*' | '/' | '%' | '^' | '=' | '!' | '<' | '>' => operators += 1,
            _ => {}
        }
        if operators > OPERATORS_MAX {
            return Err(format!("the query has more than {OPERATORS_MAX} operators"));
        }
    }
    end_word(&mut word, &mut operators);
    if operators > OPERATORS_MAX {
        return Err(format!("the query has more than {OPERATORS_MAX} operators"));
    }
    Ok(())
}

/// Parses PromQL as Prometheus 2.42 does. `promql-parser` follows Prometheus 3, which
/// renamed `holt_winters` to `double_exponential_smoothing`; 2.42's name is registered
/// once, with 2.42's signature. Backtick strings and label regexes go through
/// [`quoting`], so that they mean what they mean in Prometheus (raw text; Go's regex
/// syntax).
fn parse(text: &str) -> Result<Expr, String> {
    static HOLT_WINTERS: std::sync::Once = std::sync::Once::new();
    HOLT_WINTERS.call_once(|| {
        use promql_parser::parser::value::ValueType;
        // Only fails if the name is built in, in which case the parser knows it anyway.
        let _ = parser::register_extra_functions(vec![parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
    check_depth(text)?;
    let prepared = quoting::prepare(text)?;
    let mut expr = parser::parse(&prepared.text)?;
    quoting::restore(&mut expr, &prepared);
    Ok(expr)
}

/// Parses a query into a selector's label matchers (for `/api/v1/series` and friends);
/// only plain instant vector selectors are accepted there.
pub fn parse_series_selector(text: &str) -> Result<Vec<TagMatcher>, QueryError> {
    let expr = parse(text)
        .map_err(|error| QueryError::BadData(format!("invalid parameter \"match[]\": {error}")))?;
    match expr {
        Expr::VectorSelector(selector) => selector_matchers(&selector),
        _ => Err(QueryError::BadData(format!(
            "invalid parameter \"match[]\": {text:?} is not a series selector"
        ))),
    }
}

fn selector_matchers(selector: &VectorSelector) -> Result<Vec<TagMatcher>, QueryError> {
    if !selector.matchers.or_matchers.is_empty() {
        return Err(QueryError::BadData(
            "\"or\" inside a selector is not part of Prometheus 2.42's PromQL".to_string(),
        ));
    }
    let mut matchers = Vec::new();
    if let Some(name) = &selector.name {
        matchers.push(TagMatcher {
            tag: "__name__".to_string(),
            op: MatchOp::Equal,
            value: name.clone(),
        });
    }
    for matcher in &selector.matchers.matchers {
        let op = match matcher.op {
            PromMatchOp::Equal => MatchOp::Equal,
            PromMatchOp::NotEqual => MatchOp::NotEqual,
            PromMatchOp::Re(_) => MatchOp::Regex,
            PromMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        matchers.push(TagMatcher {
            tag: matcher.name.clone(),
            op,
            value: matcher.value.clone(),
        });
    }
    Ok(matchers)
}

/// Evaluates `query` over `range` against `store`, within `limits`.
pub async fn evaluate(
    store: &PromStore,
    query: &str,
    range: EvalRange,
    limits: QueryLimits,
) -> Result<QueryValue, QueryError> {
    let deadline = time::now() + limits.timeout;
    let expr = parse(query)
        .map_err(|error| QueryError::BadData(format!("invalid parameter \"query\": {error}")))?;
    let instant = range.step_ms == 0;
    if !instant {
        let steps = (range.end_ms - range.start_ms) / range.step_ms.max(1);
        if steps >= STEPS_MAX {
            return Err(QueryError::BadData(format!(
                "exceeded maximum resolution of {STEPS_MAX} points per timeseries. Try \
                 decreasing the query resolution (?step=XX)"
            )));
        }
        check_range_query_type(&expr)?;
    }
    let mut windows = Vec::new();
    eval::fetch_windows(
        &expr,
        (range.start_ms, range.end_ms),
        (range.start_ms, range.end_ms),
        range.lookback_ms,
        &mut windows,
    )?;
    // Every selector's scans at once: a query's latency is its slowest fetch, not the sum.
    let selects = windows
        .iter()
        .map(|window| {
            let matchers = selector_matchers(window.selector)?;
            Ok(async move {
                store
                    .select(&matchers, window.from_ms, window.to_ms.saturating_add(1))
                    .await
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    let all = time::timeout(
        deadline.saturating_duration_since(time::now()),
        futures::future::join_all(selects),
    )
    .await
    .map_err(|_| timeout_error())?;
    let mut fetched: Fetched = HashMap::with_capacity(windows.len());
    for (window, series) in windows.iter().zip(all) {
        fetched.insert(
            eval::selector_key(window.selector),
            series?
                .into_iter()
                .map(|one| FetchedSeries::new(one.labels.into(), one.samples))
                .collect(),
        );
    }
    run(&expr, &fetched, range, limits, Some(deadline))
}

fn timeout_error() -> QueryError {
    QueryError::Timeout("query timed out in query execution".to_string())
}

/// A range query must evaluate to a scalar or an instant vector.
fn check_range_query_type(expr: &Expr) -> Result<(), QueryError> {
    let kind = match expr {
        Expr::Paren(paren) => return check_range_query_type(&paren.expr),
        Expr::StringLiteral(_) => "string",
        Expr::MatrixSelector(_) | Expr::Subquery(_) => "range vector",
        _ => return Ok(()),
    };
    Err(QueryError::BadData(format!(
        "invalid expression type {kind:?} for range query, must be Scalar or instant Vector"
    )))
}

/// Evaluates a parsed query over fetched series.
fn run(
    expr: &Expr,
    fetched: &Fetched,
    range: EvalRange,
    limits: QueryLimits,
    deadline: Option<Instant>,
) -> Result<QueryValue, QueryError> {
    let evaluator = Evaluator::new(
        fetched,
        (range.start_ms, range.end_ms),
        range.lookback_ms,
        limits.subquery_step_ms,
        Limits {
            samples_max: limits.samples_max,
            deadline,
        },
    )?;
    let labels = |labels: value::Labels| labels.to_vec();
    if range.step_ms == 0 {
        let t = range.start_ms;
        return Ok(match evaluator.instant(expr, t)? {
            Value::Scalar(value) => QueryValue::Scalar(t, value),
            Value::String(text) => QueryValue::String(t, text),
            Value::Vector(samples) => {
                eval::check_unique_labels(&samples)?;
                QueryValue::Vector(
                    samples
                        .into_iter()
                        .map(|sample| ResultSeries {
                            labels: labels(sample.labels),
                            points: vec![(t, sample.value)],
                        })
                        .collect(),
                )
            }
            Value::Matrix(series) => QueryValue::Matrix(
                series
                    .into_iter()
                    .map(|one| ResultSeries {
                        labels: labels(one.labels),
                        points: one.points,
                    })
                    .collect(),
            ),
        });
    }
    let mut series: Vec<ResultSeries> = evaluator
        .range(expr, range.start_ms, range.end_ms, range.step_ms)?
        .into_iter()
        .map(|one| ResultSeries {
            labels: labels(one.labels),
            points: one.points,
        })
        .collect();
    // Prometheus sorts a range query's series by their labels.
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(QueryValue::Matrix(series))
}

pub fn is_stale_marker(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}
#[cfg(test)]
mod tests;
