//! The evaluator: a PromQL expression over already fetched series, one evaluation time
//! at a time.
//!
//! Prometheus evaluates a range query step by step too (its `rangeEval`): every operator,
//! aggregation and function sees one instant vector per step. Evaluating each step on its
//! own keeps this code a direct reading of Prometheus' semantics; range vectors and
//! subqueries are cut from the fetched samples per step. A range evaluation merges the
//! steps' vectors into series by label set.
//!
//! No I/O happens here: [`super::evaluate`] fetches every selector's series first (see
//! [`fetch_windows`]) and hands them in as [`Fetched`]. The only outside input is the
//! clock read that enforces the query's deadline.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant, UNIX_EPOCH};

use metronome_core::rt::time;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use super::value::{drop_metric_name, format_labels, Labels, RangeSeries, Sample, Value};
use super::{aggregate, binary, functions, is_stale_marker, QueryError};

/// Identifies a selector node of the parsed expression (its address, stable while the
/// expression is borrowed by the evaluator).
pub type SelectorKey = usize;

pub fn selector_key(selector: &VectorSelector) -> SelectorKey {
    selector as *const VectorSelector as usize
}

/// One fetched series: labels sorted by name, samples in time order (staleness markers
/// included: they end a series for instant selectors).
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
    /// The samples without staleness markers, when there are markers (range vectors
    /// leave them out).
    without_markers: Option<Vec<(i64, f64)>>,
}

impl FetchedSeries {
    pub fn new(labels: Labels, samples: Vec<(i64, f64)>) -> FetchedSeries {
        let without_markers = samples
            .iter()
            .any(|(_, value)| is_stale_marker(*value))
            .then(|| {
                samples
                    .iter()
                    .filter(|(_, value)| !is_stale_marker(*value))
                    .copied()
                    .collect()
            });
        FetchedSeries {
            labels,
            samples,
            without_markers,
        }
    }

    /// The samples a range vector takes from: all but staleness markers.
    pub fn range_samples(&self) -> &[(i64, f64)] {
        self.without_markers.as_deref().unwrap_or(&self.samples)
    }
}

/// Where a range selector's windows were in each of its series at its last read time:
/// consecutive steps move the windows forward, so they are advanced rather than searched.
struct Cursors {
    read: i64,
    /// Per series: the window's first and past-the-end sample indexes.
    at: Vec<(usize, usize)>,
}

/// Every selector's series, by selector.
pub type Fetched = HashMap<SelectorKey, Vec<FetchedSeries>>;

/// What a selector needs fetched: its node and the closed time range of samples any
/// step may read.
#[derive(Debug, Clone, Copy)]
pub struct FetchWindow<'e> {
    pub selector: &'e VectorSelector,
    pub from_ms: i64,
    pub to_ms: i64,
}

pub fn duration_ms(duration: Duration) -> Result<i64, QueryError> {
    i64::try_from(duration.as_millis())
        .map_err(|_| QueryError::BadData(format!("duration {duration:?} is too long")))
}

pub fn offset_ms(offset: &Option<Offset>) -> Result<i64, QueryError> {
    Ok(match offset {
        None => 0,
        Some(Offset::Pos(duration)) => duration_ms(*duration)?,
        Some(Offset::Neg(duration)) => -duration_ms(*duration)?,
    })
}

/// The fixed time an `@` modifier names, given the query's start and end.
fn at_ms(at: &Option<AtModifier>, start_ms: i64, end_ms: i64) -> Result<Option<i64>, QueryError> {
    Ok(match at {
        None => None,
        Some(AtModifier::Start) => Some(start_ms),
        Some(AtModifier::End) => Some(end_ms),
        Some(AtModifier::At(time)) => Some(match time.duration_since(UNIX_EPOCH) {
            Ok(after) => duration_ms(after)?,
            Err(before) => -duration_ms(before.duration())?,
        }),
    })
}

/// The sample ranges every selector of `expr` needs when `expr` is evaluated at times in
/// `[lo, hi]` of a query spanning `query_start..=query_end`.
pub fn fetch_windows<'e>(
    expr: &'e Expr,
    (lo, hi): (i64, i64),
    query: (i64, i64),
    lookback_ms: i64,
    out: &mut Vec<FetchWindow<'e>>,
) -> Result<(), QueryError> {
    // The read times of a node with `@`/`offset` evaluated at times in [lo, hi].
    let read =
        |at: &Option<AtModifier>, offset: &Option<Offset>| -> Result<(i64, i64), QueryError> {
            let offset = offset_ms(offset)?;
            Ok(match at_ms(at, query.0, query.1)? {
                Some(fixed) => (fixed.saturating_sub(offset), fixed.saturating_sub(offset)),
                None => (lo.saturating_sub(offset), hi.saturating_sub(offset)),
            })
        };
    match expr {
        Expr::VectorSelector(selector) => {
            let (first, last) = read(&selector.at, &selector.offset)?;
            out.push(FetchWindow {
                selector,
                from_ms: first.saturating_sub(lookback_ms),
                to_ms: last,
            });
        }
        Expr::MatrixSelector(matrix) => {
            let (first, last) = read(&matrix.vs.at, &matrix.vs.offset)?;
            out.push(FetchWindow {
                selector: &matrix.vs,
                from_ms: first.saturating_sub(duration_ms(matrix.range)?),
                to_ms: last,
            });
        }
        Expr::Subquery(subquery) => {
            let (first, last) = read(&subquery.at, &subquery.offset)?;
            let range = duration_ms(subquery.range)?;
            fetch_windows(
                &subquery.expr,
                (first.saturating_sub(range), last),
                query,
                lookback_ms,
                out,
            )?;
        }
        Expr::Paren(paren) => fetch_windows(&paren.expr, (lo, hi), query, lookback_ms, out)?,
        Expr::Unary(unary) => fetch_windows(&unary.expr, (lo, hi), query, lookback_ms, out)?,
        Expr::Binary(binary) => {
            fetch_windows(&binary.lhs, (lo, hi), query, lookback_ms, out)?;
            fetch_windows(&binary.rhs, (lo, hi), query, lookback_ms, out)?;
        }
        Expr::Aggregate(aggregate) => {
            if let Some(param) = &aggregate.param {
                fetch_windows(param, (lo, hi), query, lookback_ms, out)?;
            }
            fetch_windows(&aggregate.expr, (lo, hi), query, lookback_ms, out)?;
        }
        Expr::Call(call) => {
            for arg in &call.args.args {
                fetch_windows(arg, (lo, hi), query, lookback_ms, out)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
    Ok(())
}

/// Bounds on one query's work.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Samples fetched plus points produced, at most.
    pub samples_max: usize,
    pub deadline: Option<Instant>,
}

pub struct Evaluator<'a> {
    fetched: &'a Fetched,
    query_start_ms: i64,
    query_end_ms: i64,
    lookback_ms: i64,
    /// A subquery's step when it names none (Prometheus: the evaluation interval).
    subquery_step_ms: i64,
    limits: Limits,
    /// Samples fetched and points produced so far, for `limits.samples_max`.
    samples: Cell<usize>,
    /// Range selectors' windows at their last read, by (selector, range).
    cursors: RefCell<HashMap<(SelectorKey, i64), Cursors>>,
    /// Derived label sets by (what derived them, the source set's address): a series'
    /// labels without its name are computed once per query, not once per step. The
    /// source set is kept alive with its entry, so its address cannot be reused.
    derived_labels: RefCell<HashMap<(usize, usize), (Labels, Labels)>>,
}

/// At most this many derived label sets are remembered per query; beyond, they are
/// computed each time.
const DERIVED_LABELS_MAX: usize = 1 << 20;

/// The read window of a range vector at one step, for the functions that extrapolate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl<'a> Evaluator<'a> {
    pub fn new(
        fetched: &'a Fetched,
        (query_start_ms, query_end_ms): (i64, i64),
        lookback_ms: i64,
        subquery_step_ms: i64,
        limits: Limits,
    ) -> Result<Evaluator<'a>, QueryError> {
        assert!(subquery_step_ms > 0, "a subquery step must be positive");
        let evaluator = Evaluator {
            fetched,
            query_start_ms,
            query_end_ms,
            lookback_ms,
            subquery_step_ms,
            limits,
            samples: Cell::new(0),
            derived_labels: RefCell::new(HashMap::new()),
            cursors: RefCell::new(HashMap::new()),
        };
        let fetched_samples = fetched
            .values()
            .flatten()
            .map(|series| series.samples.len())
            .sum();
        evaluator.count_samples(fetched_samples)?;
        Ok(evaluator)
    }

    pub fn query_range(&self) -> (i64, i64) {
        (self.query_start_ms, self.query_end_ms)
    }

    fn count_samples(&self, more: usize) -> Result<(), QueryError> {
        let total = self.samples.get().saturating_add(more);
        self.samples.set(total);
        if total > self.limits.samples_max {
            return Err(QueryError::Execution(
                "query processing would load too many samples into memory in query execution"
                    .to_string(),
            ));
        }
        Ok(())
    }

    fn check_deadline(&self) -> Result<(), QueryError> {
        match self.limits.deadline {
            Some(deadline) if time::now() >= deadline => Err(QueryError::Timeout(
                "query timed out in query execution".to_string(),
            )),
            _ => Ok(()),
        }
    }

    /// `derive(labels)`, remembered for the query under `context` (0 for dropping the
    /// metric name; an expression node's address for what that node derives).
    pub fn derived_labels(
        &self,
        context: usize,
        labels: &Labels,
        derive: impl FnOnce(&Labels) -> Labels,
    ) -> Labels {
        let key = (
            context,
            std::sync::Arc::as_ptr(labels) as *const u8 as usize,
        );
        if let Some((_, derived)) = self.derived_labels.borrow().get(&key) {
            return derived.clone();
        }
        let derived = derive(labels);
        let mut cache = self.derived_labels.borrow_mut();
        if cache.len() < DERIVED_LABELS_MAX {
            cache.insert(key, (labels.clone(), derived.clone()));
        }
        derived
    }

    /// `labels` without `__name__`.
    pub fn without_name(&self, labels: &Labels) -> Labels {
        self.derived_labels(0, labels, drop_metric_name)
    }

    /// The time a node with `@`/`offset` reads at when evaluated at `t`.
    pub fn read_time(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        t: i64,
    ) -> Result<i64, QueryError> {
        let base = at_ms(at, self.query_start_ms, self.query_end_ms)?.unwrap_or(t);
        Ok(base.saturating_sub(offset_ms(offset)?))
    }

    fn series(&self, selector: &VectorSelector) -> Result<&'a [FetchedSeries], QueryError> {
        self.fetched
            .get(&selector_key(selector))
            .map(Vec::as_slice)
            .ok_or_else(|| QueryError::Internal(format!("selector {selector} was not fetched")))
    }

    /// Evaluates `expr` at `t`.
    pub fn instant(&self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        match expr {
            Expr::Paren(paren) => self.instant(&paren.expr, t),
            Expr::NumberLiteral(number) => Ok(Value::Scalar(number.val)),
            Expr::StringLiteral(text) => Ok(Value::String(text.val.clone())),
            Expr::VectorSelector(selector) => Ok(Value::Vector(
                self.select_instant(selector, t)?
                    .into_iter()
                    .map(|(labels, _, value)| Sample { labels, value })
                    .collect(),
            )),
            Expr::MatrixSelector(matrix) => {
                let read = self.read_time(&matrix.vs.at, &matrix.vs.offset, t)?;
                let range = duration_ms(matrix.range)?;
                Ok(Value::Matrix(self.select_range(&matrix.vs, read, range)?))
            }
            Expr::Subquery(subquery) => Ok(Value::Matrix(self.subquery(subquery, t)?.0)),
            Expr::Unary(unary) => match self.instant(&unary.expr, t)? {
                Value::Scalar(value) => Ok(Value::Scalar(-value)),
                Value::Vector(samples) => {
                    let negated: Vec<Sample> = samples
                        .into_iter()
                        .map(|sample| Sample {
                            labels: self.without_name(&sample.labels),
                            value: -sample.value,
                        })
                        .collect();
                    check_unique_labels(&negated)?;
                    Ok(Value::Vector(negated))
                }
                other => Err(type_error("unary minus", &other)),
            },
            Expr::Binary(expr) => binary::evaluate(self, expr, t),
            Expr::Aggregate(expr) => aggregate::evaluate(self, expr, t),
            Expr::Call(call) => functions::evaluate(self, call, t),
            Expr::Extension(_) => Err(QueryError::Execution(
                "extension expressions are not part of PromQL".to_string(),
            )),
        }
    }

    /// Evaluates `expr` (an instant vector or scalar expression) at every step from
    /// `start` to `end`, merging the steps into series by label set.
    pub fn range(
        &self,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<RangeSeries>, QueryError> {
        assert!(step > 0, "a range evaluation's step must be positive");
        let mut series: Vec<RangeSeries> = Vec::new();
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut t = start;
        while t <= end {
            self.check_deadline()?;
            let produced = match self.instant(expr, t)? {
                Value::Scalar(value) => vec![Sample {
                    labels: super::value::empty_labels(),
                    value,
                }],
                Value::Vector(samples) => samples,
                other => return Err(type_error("a range evaluation", &other)),
            };
            self.count_samples(produced.len())?;
            for sample in produced {
                let at = *index.entry(sample.labels.clone()).or_insert_with(|| {
                    series.push(RangeSeries {
                        labels: sample.labels,
                        points: Vec::new(),
                    });
                    series.len() - 1
                });
                let points = &mut series[at].points;
                // Two samples of one step with the same labels.
                if points.last().is_some_and(|(last, _)| *last == t) {
                    return Err(QueryError::Execution(format!(
                        "vector cannot contain metrics with the same labelset (duplicate: {})",
                        format_labels(&series[at].labels)
                    )));
                }
                points.push((t, sample.value));
            }
            t = match t.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
        Ok(series)
    }

    /// Each series' latest sample in `[read - lookback, read]` (`read` the selector's
    /// read time at `t`), unless it is a staleness marker: (labels, sample time, value).
    pub fn select_instant(
        &self,
        selector: &VectorSelector,
        t: i64,
    ) -> Result<Vec<(Labels, i64, f64)>, QueryError> {
        let read = self.read_time(&selector.at, &selector.offset, t)?;
        let oldest = read.saturating_sub(self.lookback_ms);
        let mut out = Vec::new();
        for series in self.series(selector)? {
            let after = series.samples.partition_point(|(ts, _)| *ts <= read);
            let Some(&(ts, value)) = after.checked_sub(1).map(|i| &series.samples[i]) else {
                continue;
            };
            if ts < oldest || is_stale_marker(value) {
                continue;
            }
            out.push((series.labels.clone(), ts, value));
        }
        Ok(out)
    }

    /// Each series' samples in the closed window `[read - range, read]`, staleness
    /// markers left out; series without samples there are left out.
    pub fn select_range(
        &self,
        selector: &VectorSelector,
        read: i64,
        range_ms: i64,
    ) -> Result<Vec<RangeSeries>, QueryError> {
        let from = read.saturating_sub(range_ms);
        let mut out = Vec::new();
        for series in self.series(selector)? {
            let samples = series.range_samples();
            let first = samples.partition_point(|(ts, _)| *ts < from);
            let last = samples.partition_point(|(ts, _)| *ts <= read);
            let points: Vec<(i64, f64)> = samples[first..last.max(first)].to_vec();
            if !points.is_empty() {
                out.push(RangeSeries {
                    labels: series.labels.clone(),
                    points,
                });
            }
        }
        self.count_samples(out.iter().map(|s| s.points.len()).sum())?;
        Ok(out)
    }

    /// Calls `each` with every series of `selector` that has samples in the closed window
    /// `[read - range, read]`, and those samples (staleness markers left out), without
    /// copying them. Windows advance from where the previous read left them when reads
    /// move forward, as a range query's steps do.
    pub fn for_each_window(
        &self,
        selector: &VectorSelector,
        read: i64,
        range_ms: i64,
        mut each: impl FnMut(&Labels, &[(i64, f64)]),
    ) -> Result<(), QueryError> {
        let series = self.series(selector)?;
        let from = read.saturating_sub(range_ms);
        let mut cursors = self.cursors.borrow_mut();
        let cursor = cursors
            .entry((selector_key(selector), range_ms))
            .or_insert_with(|| Cursors {
                read: i64::MAX,
                at: vec![(0, 0); series.len()],
            });
        let forward = read >= cursor.read;
        let mut taken = 0usize;
        for (one, at) in series.iter().zip(cursor.at.iter_mut()) {
            let samples = one.range_samples();
            let (mut first, mut end) = if forward {
                *at
            } else {
                let first = samples.partition_point(|(ts, _)| *ts < from);
                (first, first)
            };
            while first < samples.len() && samples[first].0 < from {
                first += 1;
            }
            end = end.max(first);
            while end < samples.len() && samples[end].0 <= read {
                end += 1;
            }
            *at = (first, end);
            if first < end {
                taken += end - first;
                each(&one.labels, &samples[first..end]);
            }
        }
        cursor.read = read;
        drop(cursors);
        self.count_samples(taken)
    }

    /// A subquery evaluated at `t`: its inner expression at every multiple of its step
    /// in `[read - range, read]`, and that window.
    pub fn subquery(
        &self,
        subquery: &SubqueryExpr,
        t: i64,
    ) -> Result<(Vec<RangeSeries>, Window), QueryError> {
        let end = self.read_time(&subquery.at, &subquery.offset, t)?;
        let range = duration_ms(subquery.range)?;
        let step = match subquery.step {
            Some(step) if !step.is_zero() => duration_ms(step)?,
            _ => self.subquery_step_ms,
        };
        let start = end.saturating_sub(range);
        // The first multiple of the step at or after the window's start: subquery steps
        // are aligned to absolute time, not to the query.
        let mut first = start.div_euclid(step).saturating_mul(step);
        if first < start {
            first = first.saturating_add(step);
        }
        let window = Window {
            start_ms: start,
            end_ms: end,
        };
        if first > end {
            return Ok((Vec::new(), window));
        }
        Ok((self.range(&subquery.expr, first, end, step)?, window))
    }
}

/// "vector cannot contain metrics with the same labelset", as Prometheus reports it.
pub fn check_unique_labels(samples: &[Sample]) -> Result<(), QueryError> {
    if samples.len() < 2 {
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(samples.len());
    for sample in samples {
        if !seen.insert(&sample.labels) {
            return Err(QueryError::Execution(format!(
                "vector cannot contain metrics with the same labelset (duplicate: {})",
                format_labels(&sample.labels)
            )));
        }
    }
    Ok(())
}

pub fn type_error(context: &str, value: &Value) -> QueryError {
    QueryError::Execution(format!(
        "{context} cannot take a {} here (the parser should have rejected this)",
        value.kind()
    ))
}
