//! PromQL evaluation, as plain code over plain data.
//!
//! Today this covers what the query API needs to answer dashboards' raw selectors:
//! instant vector selectors and range vector selectors with label matchers, `offset` and
//! `@`, number and string literals, in instant and range queries. Every other expression
//! is refused with an `execution` error saying so; the full engine (functions,
//! operators, aggregations) is its own piece of work.
//!
//! Semantics follow Prometheus 2.x (the version Debian ships and our comparison oracle):
//! an instant selector at `t` takes each series' latest sample in `[t - lookback, t]`,
//! unless that sample is a staleness marker; a range selector `[r]` takes the samples in
//! `[t - r, t]`, staleness markers left out.

use std::time::{Duration, UNIX_EPOCH};

use metronome_core::data::{MatchOp, TagMatcher};
use promql_parser::label::MatchOp as PromMatchOp;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use crate::prom_store::{PromStore, SeriesSamples, StoreError};
use crate::remote_write::STALE_NAN_BITS;

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
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> QueryError {
        match error {
            StoreError::Invalid(message) => QueryError::BadData(message),
            StoreError::Unavailable(message) => QueryError::Unavailable(message),
            StoreError::Internal(message) => QueryError::Internal(message),
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

    fn steps(&self) -> impl Iterator<Item = i64> + '_ {
        let step = self.step_ms.max(1);
        (0..)
            .map(move |i| self.start_ms + i * step)
            .take_while(move |t| *t <= self.end_ms)
    }
}

/// What a parsed query asks for, in the subset evaluated today.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    Selector {
        matchers: Vec<TagMatcher>,
        /// Subtracted from the evaluation time (negative for `offset -5m`).
        offset_ms: i64,
        at: Option<At>,
        /// `Some` for a range selector.
        range_ms: Option<i64>,
    },
    Number(f64),
    String(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum At {
    Start,
    End,
    Time(i64),
}

/// Parses a query into a selector's label matchers (for `/api/v1/series` and friends);
/// only plain instant vector selectors are accepted there.
pub fn parse_series_selector(text: &str) -> Result<Vec<TagMatcher>, QueryError> {
    let expr = parser::parse(text)
        .map_err(|error| QueryError::BadData(format!("invalid parameter \"match[]\": {error}")))?;
    match expr {
        Expr::VectorSelector(selector) => selector_matchers(&selector),
        _ => Err(QueryError::BadData(format!(
            "invalid parameter \"match[]\": {text:?} is not a series selector"
        ))),
    }
}

fn plan(expr: &Expr) -> Result<Plan, QueryError> {
    match expr {
        Expr::Paren(inner) => plan(&inner.expr),
        Expr::NumberLiteral(number) => Ok(Plan::Number(number.val)),
        Expr::StringLiteral(text) => Ok(Plan::String(text.val.clone())),
        Expr::VectorSelector(selector) => selector_plan(selector, None),
        Expr::MatrixSelector(matrix) => selector_plan(&matrix.vs, Some(duration_ms(matrix.range)?)),
        other => Err(QueryError::Execution(format!(
            "{} is not supported yet: this version evaluates selectors and literals only",
            expression_kind(other)
        ))),
    }
}

fn expression_kind(expr: &Expr) -> &'static str {
    match expr {
        Expr::Aggregate(_) => "aggregation",
        Expr::Unary(_) => "unary expression",
        Expr::Binary(_) => "binary expression",
        Expr::Subquery(_) => "subquery",
        Expr::Call(_) => "function call",
        _ => "this expression",
    }
}

fn duration_ms(duration: Duration) -> Result<i64, QueryError> {
    i64::try_from(duration.as_millis())
        .map_err(|_| QueryError::BadData(format!("duration {duration:?} is too long")))
}

fn selector_matchers(selector: &VectorSelector) -> Result<Vec<TagMatcher>, QueryError> {
    if !selector.matchers.or_matchers.is_empty() {
        return Err(QueryError::Execution(
            "\"or\" inside a selector is not supported".to_string(),
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

fn selector_plan(selector: &VectorSelector, range_ms: Option<i64>) -> Result<Plan, QueryError> {
    let offset_ms = match &selector.offset {
        None => 0,
        Some(Offset::Pos(duration)) => duration_ms(*duration)?,
        Some(Offset::Neg(duration)) => -duration_ms(*duration)?,
    };
    let at = match &selector.at {
        None => None,
        Some(AtModifier::Start) => Some(At::Start),
        Some(AtModifier::End) => Some(At::End),
        Some(AtModifier::At(time)) => Some(At::Time(match time.duration_since(UNIX_EPOCH) {
            Ok(after) => duration_ms(after)?,
            Err(before) => -duration_ms(before.duration())?,
        })),
    };
    Ok(Plan::Selector {
        matchers: selector_matchers(selector)?,
        offset_ms,
        at,
        range_ms,
    })
}

/// Evaluates `query` over `range` against `store`.
pub async fn evaluate(
    store: &PromStore,
    query: &str,
    range: EvalRange,
) -> Result<QueryValue, QueryError> {
    let expr = parser::parse(query)
        .map_err(|error| QueryError::BadData(format!("invalid parameter \"query\": {error}")))?;
    let plan = plan(&expr)?;
    let instant = range.step_ms == 0;
    if !instant {
        let steps = (range.end_ms - range.start_ms) / range.step_ms.max(1);
        if steps >= STEPS_MAX {
            return Err(QueryError::BadData(format!(
                "exceeded maximum resolution of {STEPS_MAX} points per timeseries. Try \
                 decreasing the query resolution (?step=XX)"
            )));
        }
    }
    match plan {
        Plan::Number(value) => Ok(if instant {
            QueryValue::Scalar(range.start_ms, value)
        } else {
            QueryValue::Matrix(vec![ResultSeries {
                labels: Vec::new(),
                points: range.steps().map(|t| (t, value)).collect(),
            }])
        }),
        Plan::String(text) => {
            if instant {
                Ok(QueryValue::String(range.start_ms, text))
            } else {
                Err(QueryError::BadData(
                    "invalid expression type \"string\" for range query, must be Scalar or \
                     instant Vector"
                        .to_string(),
                ))
            }
        }
        Plan::Selector {
            matchers,
            offset_ms,
            at,
            range_ms,
        } => {
            if range_ms.is_some() && !instant {
                return Err(QueryError::BadData(
                    "invalid expression type \"range vector\" for range query, must be Scalar \
                     or instant Vector"
                        .to_string(),
                ));
            }
            // The sample times each step reads, before and after the modifiers.
            let read_time = |t: i64| -> i64 {
                let base = match at {
                    None => t,
                    Some(At::Start) => range.start_ms,
                    Some(At::End) => range.end_ms,
                    Some(At::Time(fixed)) => fixed,
                };
                base.saturating_sub(offset_ms)
            };
            let window_ms = range_ms.unwrap_or(range.lookback_ms);
            let first = read_time(range.start_ms).min(read_time(range.end_ms));
            let last = read_time(range.start_ms).max(read_time(range.end_ms));
            let series = store
                .select(
                    &matchers,
                    first.saturating_sub(window_ms),
                    last.saturating_add(1),
                )
                .await?;
            Ok(match range_ms {
                Some(window) => {
                    QueryValue::Matrix(range_vector(&series, read_time(range.start_ms), window))
                }
                None if instant => QueryValue::Vector(instant_vector(
                    &series,
                    &[range.start_ms],
                    read_time,
                    window_ms,
                )),
                None => QueryValue::Matrix(instant_vector(
                    &series,
                    &range.steps().collect::<Vec<_>>(),
                    read_time,
                    window_ms,
                )),
            })
        }
    }
}

pub fn is_stale_marker(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// Each series' value at every step: its latest sample in `[read - lookback, read]`
/// (`read` is the step's time after `offset`/`@`), unless that sample is a staleness
/// marker. Series without any value are left out. Points carry the step's time.
fn instant_vector(
    series: &[SeriesSamples],
    steps: &[i64],
    read_time: impl Fn(i64) -> i64,
    lookback_ms: i64,
) -> Vec<ResultSeries> {
    let mut out = Vec::new();
    for one in series {
        let mut points = Vec::new();
        for &step in steps {
            let read = read_time(step);
            // The first sample after `read`, then step back to the latest at or before it.
            let after = one.samples.partition_point(|(ts, _)| *ts <= read);
            let Some(&(ts, value)) = after.checked_sub(1).map(|i| &one.samples[i]) else {
                continue;
            };
            if ts < read.saturating_sub(lookback_ms) || is_stale_marker(value) {
                continue;
            }
            points.push((step, value));
        }
        if !points.is_empty() {
            out.push(ResultSeries {
                labels: one.labels.clone(),
                points,
            });
        }
    }
    out
}

/// Each series' samples in `[read - window, read]`, staleness markers left out.
fn range_vector(series: &[SeriesSamples], read: i64, window_ms: i64) -> Vec<ResultSeries> {
    let from = read.saturating_sub(window_ms);
    series
        .iter()
        .filter_map(|one| {
            let points: Vec<(i64, f64)> = one
                .samples
                .iter()
                .filter(|(ts, value)| (from..=read).contains(ts) && !is_stale_marker(*value))
                .copied()
                .collect();
            (!points.is_empty()).then(|| ResultSeries {
                labels: one.labels.clone(),
                points,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(samples: &[(i64, f64)]) -> Vec<SeriesSamples> {
        vec![SeriesSamples {
            labels: vec![("__name__".into(), "up".into())],
            samples: samples.to_vec(),
        }]
    }

    const MIN: i64 = 60_000;

    #[test]
    fn an_instant_selector_takes_the_latest_sample_within_the_lookback() {
        let data = series(&[(0, 1.0), (MIN, 2.0), (2 * MIN, 3.0)]);
        let at = |t: i64| instant_vector(&data, &[t], |t| t, 5 * MIN);
        assert_eq!(
            at(MIN).first().map(|s| s.points.clone()),
            Some(vec![(MIN, 2.0)])
        );
        assert_eq!(at(MIN + 59_999)[0].points, [(MIN + 59_999, 2.0)]);
        // Exactly lookback after the last sample still sees it (2.x: closed interval) …
        assert_eq!(at(7 * MIN)[0].points, [(7 * MIN, 3.0)]);
        // … one millisecond later, nothing.
        assert!(at(7 * MIN + 1).is_empty());
        assert!(at(-1).is_empty(), "nothing before the first sample");
    }

    #[test]
    fn a_staleness_marker_ends_a_series_until_the_next_sample() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let data = series(&[(0, 1.0), (MIN, stale), (3 * MIN, 4.0)]);
        let steps: Vec<i64> = (0..=4).map(|i| i * MIN).collect();
        let out = instant_vector(&data, &steps, |t| t, 5 * MIN);
        assert_eq!(out[0].points, [(0, 1.0), (3 * MIN, 4.0), (4 * MIN, 4.0)]);
        // An ordinary NaN is a value, not a marker.
        let data = series(&[(0, f64::NAN)]);
        let out = instant_vector(&data, &[0], |t| t, 5 * MIN);
        assert!(out[0].points[0].1.is_nan());
    }

    #[test]
    fn offsets_shift_the_read_time_but_not_the_step_time() {
        let data = series(&[(0, 1.0), (10 * MIN, 2.0)]);
        let out = instant_vector(&data, &[10 * MIN], |t| t - 10 * MIN, 5 * MIN);
        assert_eq!(out[0].points, [(10 * MIN, 1.0)]);
    }

    #[test]
    fn a_range_selector_takes_the_closed_window_without_markers() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let data = series(&[(0, 1.0), (MIN, stale), (2 * MIN, 3.0), (3 * MIN, 4.0)]);
        let out = range_vector(&data, 2 * MIN, 2 * MIN);
        assert_eq!(out[0].points, [(0, 1.0), (2 * MIN, 3.0)]);
        assert!(range_vector(&data, -1, MIN).is_empty());
    }

    #[test]
    fn unsupported_expressions_are_named_and_selectors_planned() {
        let expr = parser::parse("rate(up[5m])").unwrap();
        let error = plan(&expr).unwrap_err();
        assert!(matches!(&error, QueryError::Execution(m) if m.contains("function call")));
        let expr = parser::parse("up{job=~\"a.*\"} offset -1m @ 100").unwrap();
        let Plan::Selector {
            matchers,
            offset_ms,
            at,
            range_ms,
        } = plan(&expr).unwrap()
        else {
            panic!("selector expected")
        };
        assert_eq!(offset_ms, -MIN);
        assert_eq!(at, Some(At::Time(100_000)));
        assert_eq!(range_ms, None);
        assert_eq!(matchers.len(), 2);
        assert_eq!(matchers[1].op, MatchOp::Regex);
        assert!(parse_series_selector("sum(up)").is_err());
    }
}
