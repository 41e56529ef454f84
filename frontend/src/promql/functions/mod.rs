//! PromQL's functions on float samples, as Prometheus 2.42 computes them: the range
//! functions (`rate` and its extrapolation, `*_over_time`, `deriv`, `holt_winters`, …),
//! the instant-vector functions (math, `clamp*`, `round`, `histogram_quantile`,
//! `label_replace`, `label_join`, dates, `sort*`, …) and the scalar ones.
//!
//! Every function but `last_over_time`, `label_replace`, `label_join`, `sort*`,
//! `vector` and `absent*` drops the metric name, as in Prometheus.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

mod date;
mod histogram;
mod labels;
mod range;

use date::*;
use histogram::*;
use labels::*;
use range::*;

use super::aggregate::quantile;
use super::eval::{check_unique_labels, duration_ms, type_error, Evaluator, Window};
use super::value::{
    drop_metric_name, empty_labels, go_max, go_min, is_valid_label_name, kahan_sum_inc, label,
    with_label, Labels, RangeSeries, Sample, Value, METRIC_NAME,
};
use super::QueryError;

pub fn evaluate(ev: &Evaluator, call: &Call, t: i64) -> Result<Value, QueryError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call
        .args
        .args
        .iter()
        .map(|arg| unwrap_parens(arg))
        .collect();
    match name {
        "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "vector" => Ok(Value::Vector(vec![Sample {
            labels: empty_labels(),
            value: scalar_arg(ev, args[0], t)?,
        }])),
        "scalar" => {
            let vector = vector_arg(ev, args[0], t)?;
            Ok(Value::Scalar(if vector.len() == 1 {
                vector[0].value
            } else {
                f64::NAN
            }))
        }
        "timestamp" => timestamp(ev, args[0], t),
        "absent" => {
            let vector = vector_arg(ev, args[0], t)?;
            Ok(Value::Vector(if vector.is_empty() {
                vec![Sample {
                    labels: absent_labels(args[0]),
                    value: 1.0,
                }]
            } else {
                Vec::new()
            }))
        }
        "abs" => simple(ev, &args, t, f64::abs),
        "ceil" => simple(ev, &args, t, f64::ceil),
        "floor" => simple(ev, &args, t, f64::floor),
        "exp" => simple(ev, &args, t, f64::exp),
        "sqrt" => simple(ev, &args, t, f64::sqrt),
        "ln" => simple(ev, &args, t, f64::ln),
        "log2" => simple(ev, &args, t, f64::log2),
        "log10" => simple(ev, &args, t, f64::log10),
        "sin" => simple(ev, &args, t, f64::sin),
        "cos" => simple(ev, &args, t, f64::cos),
        "tan" => simple(ev, &args, t, f64::tan),
        "asin" => simple(ev, &args, t, f64::asin),
        "acos" => simple(ev, &args, t, f64::acos),
        "atan" => simple(ev, &args, t, f64::atan),
        "sinh" => simple(ev, &args, t, f64::sinh),
        "cosh" => simple(ev, &args, t, f64::cosh),
        "tanh" => simple(ev, &args, t, f64::tanh),
        "asinh" => simple(ev, &args, t, go_asinh),
        "acosh" => simple(ev, &args, t, go_acosh),
        "atanh" => simple(ev, &args, t, go_atanh),
        "deg" => simple(ev, &args, t, |v| v * 180.0 / std::f64::consts::PI),
        "rad" => simple(ev, &args, t, |v| v * std::f64::consts::PI / 180.0),
        "sgn" => simple(ev, &args, t, |v| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                // 0, -0 and NaN are their own sign.
                v
            }
        }),
        "clamp" => {
            let min = scalar_arg(ev, args[1], t)?;
            let max = scalar_arg(ev, args[2], t)?;
            if max < min {
                return Ok(Value::Vector(Vec::new()));
            }
            simple(ev, &args[..1], t, |v| go_max(min, go_min(max, v)))
        }
        "clamp_min" => {
            let min = scalar_arg(ev, args[1], t)?;
            simple(ev, &args[..1], t, |v| go_max(min, v))
        }
        "clamp_max" => {
            let max = scalar_arg(ev, args[1], t)?;
            simple(ev, &args[..1], t, |v| go_min(max, v))
        }
        "round" => {
            let to_nearest = match args.get(1) {
                Some(arg) => scalar_arg(ev, arg, t)?,
                None => 1.0,
            };
            // Prometheus multiplies by the inverse: fewer floating-point surprises.
            let inverse = 1.0 / to_nearest;
            simple(ev, &args[..1], t, |v| (v * inverse + 0.5).floor() / inverse)
        }
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "hour" | "minute" => date_function(ev, name, &args, t),
        "histogram_quantile" => {
            let q = scalar_arg(ev, args[0], t)?;
            histogram_quantile(q, vector_arg(ev, args[1], t)?)
        }
        // Native histograms do not exist in float-only data: nothing to answer from.
        "histogram_count" | "histogram_sum" | "histogram_fraction" => {
            vector_arg(ev, args[args.len() - 1], t)?;
            Ok(Value::Vector(Vec::new()))
        }
        "label_replace" => label_replace(ev, &args, t),
        "label_join" => label_join(ev, &args, t),
        "sort" | "sort_desc" => {
            let mut vector = vector_arg(ev, args[0], t)?;
            let descending = name == "sort_desc";
            vector.sort_by(|a, b| compare_for_sort(a.value, b.value, descending));
            Ok(Value::Vector(vector))
        }
        "rate" => over_range(ev, call, &args, t, 0, |window, points, _| {
            extrapolated_rate(window, points, true, true)
        }),
        "increase" => over_range(ev, call, &args, t, 0, |window, points, _| {
            extrapolated_rate(window, points, true, false)
        }),
        "delta" => over_range(ev, call, &args, t, 0, |window, points, _| {
            extrapolated_rate(window, points, false, false)
        }),
        "irate" => over_range(ev, call, &args, t, 0, |_, points, _| {
            instant_value(points, true)
        }),
        "idelta" => over_range(ev, call, &args, t, 0, |_, points, _| {
            instant_value(points, false)
        }),
        "deriv" => over_range(ev, call, &args, t, 0, |_, points, _| {
            (points.len() >= 2).then(|| linear_regression(points, points[0].0).0)
        }),
        "predict_linear" => {
            let seconds = scalar_arg(ev, args[1], t)?;
            over_range(ev, call, &args, t, 0, |_, points, t| {
                (points.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(points, t);
                    slope * seconds + intercept
                })
            })
        }
        "holt_winters" => {
            let smoothing = scalar_arg(ev, args[1], t)?;
            let trend = scalar_arg(ev, args[2], t)?;
            // Prometheus checks the factors where it smooths a series, so only a query
            // that has a series to smooth fails.
            let smoothed_any = std::cell::Cell::new(false);
            // Written as 2.42's range checks are, so that a NaN factor passes them (every
            // comparison with NaN is false) and smooths into NaN.
            let invalid = smoothing <= 0.0 || smoothing >= 1.0 || trend <= 0.0 || trend >= 1.0;
            let out = over_range(ev, call, &args, t, 0, |_, points, _| {
                smoothed_any.set(true);
                if invalid {
                    None
                } else {
                    holt_winters(points, smoothing, trend)
                }
            })?;
            if smoothed_any.get() && (smoothing <= 0.0 || smoothing >= 1.0) {
                return Err(QueryError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {smoothing:.6}"
                )));
            }
            if smoothed_any.get() && (trend <= 0.0 || trend >= 1.0) {
                return Err(QueryError::Execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {trend:.6}"
                )));
            }
            Ok(out)
        }
        "resets" => over_range(ev, call, &args, t, 0, |_, points, _| {
            let resets = points
                .windows(2)
                .filter(|pair| pair[1].1 < pair[0].1)
                .count();
            Some(resets as f64)
        }),
        "changes" => over_range(ev, call, &args, t, 0, |_, points, _| {
            let changes = points
                .windows(2)
                .filter(|pair| {
                    let (prev, current) = (pair[0].1, pair[1].1);
                    current != prev && !(current.is_nan() && prev.is_nan())
                })
                .count();
            Some(changes as f64)
        }),
        "avg_over_time" => over_range(ev, call, &args, t, 0, |_, points, _| {
            Some(avg_over_time(points))
        }),
        "sum_over_time" => over_range(ev, call, &args, t, 0, |_, points, _| {
            let (sum, c) = points
                .iter()
                .fold((0.0, 0.0), |(sum, c), (_, v)| kahan_sum_inc(*v, sum, c));
            Some(if sum.is_infinite() { sum } else { sum + c })
        }),
        "count_over_time" => over_range(ev, call, &args, t, 0, |_, points, _| {
            Some(points.len() as f64)
        }),
        "min_over_time" => over_range(ev, call, &args, t, 0, |_, points, _| {
            let mut min = points[0].1;
            for &(_, v) in points {
                if v < min || min.is_nan() {
                    min = v;
                }
            }
            Some(min)
        }),
        "max_over_time" => over_range(ev, call, &args, t, 0, |_, points, _| {
            let mut max = points[0].1;
            for &(_, v) in points {
                if v > max || max.is_nan() {
                    max = v;
                }
            }
            Some(max)
        }),
        "last_over_time" => over_range(ev, call, &args, t, 0, |_, points, _| {
            points.last().map(|(_, v)| *v)
        }),
        "present_over_time" => over_range(ev, call, &args, t, 0, |_, _, _| Some(1.0)),
        "stddev_over_time" => over_range(ev, call, &args, t, 0, |_, points, _| {
            Some(variance_over_time(points).sqrt())
        }),
        "stdvar_over_time" => over_range(ev, call, &args, t, 0, |_, points, _| {
            Some(variance_over_time(points))
        }),
        "quantile_over_time" => {
            let q = scalar_arg(ev, args[0], t)?;
            over_range(ev, call, &args, t, 1, |_, points, _| {
                let mut values: Vec<f64> = points.iter().map(|(_, v)| *v).collect();
                Some(quantile(q, &mut values))
            })
        }
        "absent_over_time" => {
            let (series, _) = range_arg(ev, args[0], t)?;
            Ok(Value::Vector(if series.is_empty() {
                vec![Sample {
                    labels: absent_labels(args[0]),
                    value: 1.0,
                }]
            } else {
                Vec::new()
            }))
        }
        other => Err(QueryError::BadData(format!(
            "unknown function with name {other:?} (not part of Prometheus 2.42's PromQL)"
        ))),
    }
}

fn unwrap_parens(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(paren) = expr {
        expr = &paren.expr;
    }
    expr
}

fn scalar_arg(ev: &Evaluator, arg: &Expr, t: i64) -> Result<f64, QueryError> {
    match ev.instant(arg, t)? {
        Value::Scalar(value) => Ok(value),
        other => Err(type_error("a scalar argument", &other)),
    }
}

fn vector_arg(ev: &Evaluator, arg: &Expr, t: i64) -> Result<Vec<Sample>, QueryError> {
    match ev.instant(arg, t)? {
        Value::Vector(samples) => Ok(samples),
        other => Err(type_error("an instant vector argument", &other)),
    }
}

fn string_arg(arg: &Expr) -> Result<&str, QueryError> {
    match arg {
        Expr::StringLiteral(text) => Ok(&text.val),
        _ => Err(QueryError::BadData(format!(
            "expected a string literal argument, got {arg}"
        ))),
    }
}

/// A range-vector argument (range selector or subquery) at `t`, with its window.
fn range_arg(ev: &Evaluator, arg: &Expr, t: i64) -> Result<(Vec<RangeSeries>, Window), QueryError> {
    match arg {
        Expr::MatrixSelector(matrix) => {
            let read = ev.read_time(&matrix.vs.at, &matrix.vs.offset, t)?;
            let range = duration_ms(matrix.range)?;
            let window = Window {
                start_ms: read.saturating_sub(range),
                end_ms: read,
            };
            Ok((ev.select_range(&matrix.vs, read, range)?, window))
        }
        Expr::Subquery(subquery) => ev.subquery(subquery, t),
        other => Err(QueryError::Execution(format!(
            "expected a range vector argument, got {other}"
        ))),
    }
}

/// Applies a per-sample function to an instant vector, dropping the metric name.
fn simple(
    ev: &Evaluator,
    args: &[&Expr],
    t: i64,
    f: impl Fn(f64) -> f64,
) -> Result<Value, QueryError> {
    let vector = vector_arg(ev, args[0], t)?;
    Ok(Value::Vector(
        vector
            .into_iter()
            .map(|sample| Sample {
                labels: ev.without_name(&sample.labels),
                value: f(sample.value),
            })
            .collect(),
    ))
}

/// Applies a function to every series of the range-vector argument at `matrix_arg`;
/// `f` gets the window, the series' points (never empty) and the evaluation time.
fn over_range(
    ev: &Evaluator,
    call: &Call,
    args: &[&Expr],
    t: i64,
    matrix_arg: usize,
    f: impl Fn(Window, &[(i64, f64)], i64) -> Option<f64>,
) -> Result<Value, QueryError> {
    let keep_name = call.func.name == "last_over_time";
    let mut out = Vec::new();
    // A range selector's windows are read in place; a subquery's are computed.
    if let Expr::MatrixSelector(matrix) = args[matrix_arg] {
        let read = ev.read_time(&matrix.vs.at, &matrix.vs.offset, t)?;
        let range = duration_ms(matrix.range)?;
        let window = Window {
            start_ms: read.saturating_sub(range),
            end_ms: read,
        };
        ev.for_each_window(&matrix.vs, read, range, |labels, points| {
            if let Some(value) = f(window, points, t) {
                let labels = if keep_name {
                    labels.clone()
                } else {
                    ev.without_name(labels)
                };
                out.push(Sample { labels, value });
            }
        })?;
        check_unique_labels(&out)?;
        return Ok(Value::Vector(out));
    }
    let (series, window) = range_arg(ev, args[matrix_arg], t)?;
    for one in series {
        if let Some(value) = f(window, &one.points, t) {
            let labels = if keep_name {
                one.labels
            } else {
                ev.without_name(&one.labels)
            };
            out.push(Sample { labels, value });
        }
    }
    check_unique_labels(&out)?;
    Ok(Value::Vector(out))
}

/// `timestamp(v)`: the time of each sample; for a plain selector the sample's own
/// time, otherwise the evaluation time (as in Prometheus).
fn timestamp(ev: &Evaluator, arg: &Expr, t: i64) -> Result<Value, QueryError> {
    if let Expr::VectorSelector(selector) = arg {
        return Ok(Value::Vector(
            ev.select_instant(selector, t)?
                .into_iter()
                .map(|(labels, ts, _)| Sample {
                    labels: ev.without_name(&labels),
                    value: ts as f64 / 1000.0,
                })
                .collect(),
        ));
    }
    let vector = vector_arg(ev, arg, t)?;
    Ok(Value::Vector(
        vector
            .into_iter()
            .map(|sample| Sample {
                labels: ev.without_name(&sample.labels),
                value: t as f64 / 1000.0,
            })
            .collect(),
    ))
}

/// The labels `absent` and `absent_over_time` report: the selector's equality matchers
/// (a label matched twice is left out, as Prometheus does).
fn absent_labels(arg: &Expr) -> Labels {
    let selector = match arg {
        Expr::VectorSelector(selector) => selector,
        Expr::MatrixSelector(matrix) => &matrix.vs,
        _ => return empty_labels(),
    };
    let mut labels = empty_labels();
    let mut seen: Vec<&str> = Vec::new();
    for matcher in &selector.matchers.matchers {
        if matcher.name == METRIC_NAME {
            continue;
        }
        if matches!(matcher.op, MatchOp::Equal) && !seen.contains(&matcher.name.as_str()) {
            labels = with_label(&labels, &matcher.name, &matcher.value);
            seen.push(&matcher.name);
        } else {
            labels = with_label(&labels, &matcher.name, "");
        }
    }
    labels
}

fn compare_for_sort(a: f64, b: f64, descending: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    // Prometheus sorts NaN last in both directions.
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => {
            let order = a.partial_cmp(&b).expect("neither is NaN");
            if descending {
                order.reverse()
            } else {
                order
            }
        }
    }
}

/// Go's `math.Asinh`: for |x| > 2^28 it is ln|x| + ln 2, which stays finite up to
/// `f64::MAX` where the standard library's formula overflows to infinity.
fn go_asinh(x: f64) -> f64 {
    const NEAR_ZERO: f64 = 1.0 / (1u64 << 28) as f64;
    const LARGE: f64 = (1u64 << 28) as f64;
    if x.is_nan() || x.is_infinite() {
        return x;
    }
    // Go negates only below zero, so -0 stays -0 through the small-argument case.
    let a = if x < 0.0 { -x } else { x };
    let result = if a > LARGE {
        a.ln() + std::f64::consts::LN_2
    } else if a > 2.0 {
        (2.0 * a + 1.0 / ((a * a + 1.0).sqrt() + a)).ln()
    } else if a < NEAR_ZERO {
        a
    } else {
        (a + a * a / (1.0 + (1.0 + a * a).sqrt())).ln_1p()
    };
    if x < 0.0 {
        -result
    } else {
        result
    }
}

/// Go's `math.Acosh`, with the same large-argument formula as [`go_asinh`].
fn go_acosh(x: f64) -> f64 {
    const LARGE: f64 = (1u64 << 28) as f64;
    if x < 1.0 || x.is_nan() {
        f64::NAN
    } else if x == 1.0 {
        0.0
    } else if x >= LARGE {
        x.ln() + std::f64::consts::LN_2
    } else if x > 2.0 {
        (2.0 * x - 1.0 / (x + (x * x - 1.0).sqrt())).ln()
    } else {
        let t = x - 1.0;
        (t + (2.0 * t + t * t).sqrt()).ln_1p()
    }
}

/// Go's `math.Atanh`, case for case.
fn go_atanh(x: f64) -> f64 {
    const NEAR_ZERO: f64 = 1.0 / (1u64 << 28) as f64;
    if !(-1.0..=1.0).contains(&x) {
        // NaN included.
        return f64::NAN;
    }
    if x == 1.0 {
        return f64::INFINITY;
    }
    if x == -1.0 {
        return f64::NEG_INFINITY;
    }
    let a = if x < 0.0 { -x } else { x };
    let result = if a < NEAR_ZERO {
        a
    } else if a < 0.5 {
        let doubled = a + a;
        0.5 * (doubled + doubled * a / (1.0 - a)).ln_1p()
    } else {
        0.5 * ((a + a) / (1.0 - a)).ln_1p()
    };
    if x < 0.0 {
        -result
    } else {
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1000;

    #[test]
    fn rate_extrapolates_to_the_window_edges_when_samples_are_close() {
        // Samples every 15 s across a 60 s window, the first 5 s after its start.
        let points: Vec<(i64, f64)> = (0..4)
            .map(|i| (5 * SEC + i * 15 * SEC, 10.0 * (i + 1) as f64))
            .collect();
        let window = Window {
            start_ms: 0,
            end_ms: 60 * SEC,
        };
        // 30 over 45 s sampled; extrapolated by 5 s at the start and 10 s at the end
        // (the counter's zero point, 15 s before the first sample, is further away).
        let increase = extrapolated_rate(window, &points, true, false).unwrap();
        assert!((increase - 30.0 * 60.0 / 45.0).abs() < 1e-9, "{increase}");
        let rate = extrapolated_rate(window, &points, true, true).unwrap();
        assert!((rate - increase / 60.0).abs() < 1e-12);
    }

    #[test]
    fn a_counter_is_not_extrapolated_below_zero_and_resets_add_up() {
        // From 1 to 4 in 30 s: extrapolating 29 s back would pass zero at 10 s back.
        let points = [(30 * SEC, 1.0), (45 * SEC, 2.5), (60 * SEC, 4.0)];
        let window = Window {
            start_ms: 0,
            end_ms: 60 * SEC,
        };
        let increase = extrapolated_rate(window, &points, true, false).unwrap();
        assert!((increase - 3.0 * 40.0 / 30.0).abs() < 1e-9, "{increase}");
        // A reset from 10 to 2 counts the 10 before it.
        let points = [(0, 5.0), (15 * SEC, 10.0), (30 * SEC, 2.0)];
        let window = Window {
            start_ms: 0,
            end_ms: 30 * SEC,
        };
        assert_eq!(extrapolated_rate(window, &points, true, false), Some(7.0));
        assert_eq!(extrapolated_rate(window, &points, false, false), Some(-3.0));
        assert_eq!(extrapolated_rate(window, &points[..1], true, false), None);
    }

    #[test]
    fn irate_uses_the_last_two_samples() {
        let points = [(0, 1.0), (10 * SEC, 5.0), (15 * SEC, 2.0)];
        assert_eq!(instant_value(&points, true), Some(2.0 / 5.0));
        assert_eq!(instant_value(&points, false), Some(-3.0));
    }

    #[test]
    fn deriv_of_a_line_is_its_slope_and_of_a_constant_exactly_zero() {
        let line: Vec<(i64, f64)> = (0..10).map(|i| (i * SEC, 3.0 + 2.0 * i as f64)).collect();
        let (slope, intercept) = linear_regression(&line, 0);
        assert!((slope - 2.0).abs() < 1e-12 && (intercept - 3.0).abs() < 1e-12);
        let flat: Vec<(i64, f64)> = (0..10).map(|i| (i * SEC, 0.1)).collect();
        assert_eq!(linear_regression(&flat, 0), (0.0, 0.1));
    }

    #[test]
    fn histogram_quantile_interpolates_inside_the_bucket() {
        let mut buckets = [
            (0.5, 50.0),
            (f64::INFINITY, 100.0),
            (0.1, 10.0),
            (1.0, 90.0),
        ];
        // Rank 50 of 100 ends exactly at the 0.5 bucket.
        assert_eq!(bucket_quantile(0.5, &mut buckets.clone()), 0.5);
        // Rank 70: 20 of the 40 in (0.5, 1].
        assert!((bucket_quantile(0.7, &mut buckets) - 0.75).abs() < 1e-12);
        // Above the last finite bucket: its bound.
        let mut buckets = [(1.0, 10.0), (f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.99, &mut buckets), 1.0);
        assert!(
            bucket_quantile(0.5, &mut [(1.0, 10.0)]).is_nan(),
            "no +Inf bucket"
        );
    }

    #[test]
    fn holt_winters_smooths_a_line_onto_itself() {
        let line: Vec<(i64, f64)> = (0..10).map(|i| (i * SEC, 2.0 * i as f64)).collect();
        let smoothed = holt_winters(&line, 0.5, 0.5).unwrap();
        assert!((smoothed - 18.0).abs() < 1e-9, "{smoothed}");
    }

    #[test]
    fn a_nan_count_steers_the_bucket_search_as_in_go() {
        // Go's sort.Search probes the NaN bucket first, finds its test false and goes
        // right, to the +Inf side of it: rank 15 lands in (0.5, 1], whose start count is
        // the NaN. A bisection that went left would answer 0.175 from (0.1, 0.25].
        let mut buckets = [
            (0.1, 10.0),
            (0.25, 20.0),
            (0.5, f64::NAN),
            (1.0, 40.0),
            (f64::INFINITY, 50.0),
        ];
        assert!(bucket_quantile(0.3, &mut buckets.clone()).is_nan());
        // Rank 35 goes right of the NaN too, into the bucket that starts at its count.
        assert!(bucket_quantile(0.7, &mut buckets.clone()).is_nan());
        // Rank 45 is past every count: the last finite bound.
        assert_eq!(bucket_quantile(0.9, &mut buckets), 1.0);
        // Where Go first probes a number and then the NaN, it still goes right of it.
        let mut buckets = [
            (0.1, f64::NAN),
            (0.25, 20.0),
            (0.5, 30.0),
            (1.0, 40.0),
            (f64::INFINITY, 50.0),
        ];
        assert!(bucket_quantile(0.3, &mut buckets).is_nan());
        assert_eq!(go_search(5, |i| i >= 3), 3);
        assert_eq!(go_search(0, |_| true), 0);
    }

    #[test]
    fn inverse_hyperbolic_functions_follow_go_at_the_extremes() {
        // ln(MAX) + ln 2, where the standard library overflows to +Inf.
        let at_max = f64::MAX.ln() + std::f64::consts::LN_2;
        assert_eq!(go_asinh(f64::MAX), at_max);
        assert_eq!(go_asinh(-f64::MAX), -at_max);
        assert_eq!(go_acosh(f64::MAX), at_max);
        assert_eq!(go_asinh(f64::INFINITY), f64::INFINITY);
        assert_eq!(go_acosh(f64::INFINITY), f64::INFINITY);
        assert!(go_asinh(f64::NAN).is_nan() && go_acosh(0.5).is_nan());
        assert_eq!(go_acosh(1.0), 0.0);
        assert_eq!(go_atanh(1.0), f64::INFINITY);
        assert_eq!(go_atanh(-1.0), f64::NEG_INFINITY);
        assert!(go_atanh(1.5).is_nan() && go_atanh(f64::NAN).is_nan());
        assert!(go_asinh(-0.0).is_sign_negative() && go_atanh(-0.0).is_sign_negative());
        // Ordinary arguments agree with the textbook definitions.
        for x in [-3.5, -1.0, -1e-9, 0.3, 1.7, 2.5, 1e5, 1e9] {
            let expected = (x + (x * x + 1.0f64).sqrt()).ln();
            assert!(
                (go_asinh(x) - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                "{x}"
            );
        }
        for x in [1.5, 2.0, 3.0, 1e5, 1e9] {
            let expected = (x + (x * x - 1.0f64).sqrt()).ln();
            assert!((go_acosh(x) - expected).abs() <= 1e-12 * expected, "{x}");
        }
        for x in [-0.9f64, -0.2, 0.4, 0.6, 0.999] {
            let expected = 0.5 * ((1.0 + x) / (1.0 - x)).ln();
            assert!(
                (go_atanh(x) - expected).abs() <= 1e-9 * expected.abs(),
                "{x}"
            );
        }
    }

    #[test]
    fn days_in_month_knows_leap_years() {
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2026, 2), 28);
        assert_eq!(days_in_month(2026, 12), 31);
    }
}
