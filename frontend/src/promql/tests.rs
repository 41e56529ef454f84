//! Tests of the parent module.

use super::*;
use crate::prom_store::SeriesSamples;

const MIN: i64 = 60_000;

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}

fn matches(labels: &[(String, String)], matcher: &TagMatcher) -> bool {
    let value = value::label(labels, &matcher.tag).unwrap_or("");
    let regex = || metronome_core::re2::compile_matcher(&matcher.value).unwrap();
    match matcher.op {
        MatchOp::Equal => value == matcher.value,
        MatchOp::NotEqual => value != matcher.value,
        MatchOp::Regex => regex().is_match(value),
        MatchOp::NotRegex => !regex().is_match(value),
    }
}

/// Evaluates `query` over `data` as [`evaluate`] would over a store holding it.
fn query(
    data: &[SeriesSamples],
    query: &str,
    range: EvalRange,
    limits: QueryLimits,
) -> Result<QueryValue, QueryError> {
    let expr = parse(query).map_err(QueryError::BadData)?;
    if range.step_ms != 0 {
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
    let mut fetched = Fetched::new();
    for window in windows {
        let matchers = selector_matchers(window.selector)?;
        let series = data
            .iter()
            .filter(|one| matchers.iter().all(|m| matches(&one.labels, m)))
            .map(|one| {
                let samples = one
                    .samples
                    .iter()
                    .filter(|(ts, _)| (window.from_ms..=window.to_ms).contains(ts))
                    .copied()
                    .collect();
                FetchedSeries::new(one.labels.clone().into(), samples)
            })
            .collect();
        fetched.insert(eval::selector_key(window.selector), series);
    }
    run(&expr, &fetched, range, limits, None)
}

fn instant(data: &[SeriesSamples], text: &str, t: i64) -> Result<QueryValue, QueryError> {
    query(data, text, EvalRange::instant(t), QueryLimits::default())
}

fn range(data: &[SeriesSamples], text: &str, start: i64, end: i64, step: i64) -> QueryValue {
    let range = EvalRange {
        start_ms: start,
        end_ms: end,
        step_ms: step,
        lookback_ms: LOOKBACK_MS_DEFAULT,
    };
    query(data, text, range, QueryLimits::default()).unwrap()
}

/// The (labels, value) pairs of an instant vector, sorted by labels.
fn vector(value: QueryValue) -> Vec<(Vec<(String, String)>, f64)> {
    let QueryValue::Vector(series) = value else {
        panic!("a vector was expected, got {value:?}")
    };
    let mut out: Vec<_> = series
        .into_iter()
        .map(|one| (one.labels, one.points[0].1))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn up(samples: &[(i64, f64)]) -> Vec<SeriesSamples> {
    vec![SeriesSamples {
        labels: labels(&[("__name__", "up")]),
        samples: samples.to_vec(),
    }]
}

#[test]
fn an_instant_selector_takes_the_latest_sample_within_the_lookback() {
    let data = up(&[(0, 1.0), (MIN, 2.0), (2 * MIN, 3.0)]);
    let at = |t: i64| vector(instant(&data, "up", t).unwrap());
    assert_eq!(at(MIN)[0].1, 2.0);
    assert_eq!(at(MIN + 59_999)[0].1, 2.0);
    // Exactly lookback after the last sample still sees it (2.x: closed interval) …
    assert_eq!(at(7 * MIN)[0].1, 3.0);
    // … one millisecond later, nothing.
    assert!(at(7 * MIN + 1).is_empty());
    assert!(at(-1).is_empty(), "nothing before the first sample");
}

#[test]
fn a_staleness_marker_ends_a_series_until_the_next_sample() {
    let stale = f64::from_bits(STALE_NAN_BITS);
    let data = up(&[(0, 1.0), (MIN, stale), (3 * MIN, 4.0)]);
    let QueryValue::Matrix(series) = range(&data, "up", 0, 4 * MIN, MIN) else {
        panic!("matrix expected")
    };
    assert_eq!(series[0].points, [(0, 1.0), (3 * MIN, 4.0), (4 * MIN, 4.0)]);
    // Range vectors leave markers out.
    let QueryValue::Matrix(series) = instant(&data, "up[5m]", 4 * MIN).unwrap() else {
        panic!("matrix expected")
    };
    assert_eq!(series[0].points, [(0, 1.0), (3 * MIN, 4.0)]);
    // An ordinary NaN is a value, not a marker.
    let data = up(&[(0, f64::NAN)]);
    assert!(vector(instant(&data, "up", 0).unwrap())[0].1.is_nan());
}

#[test]
fn offset_and_at_move_the_read_time_but_not_the_result_time() {
    let data = up(&[(0, 1.0), (10 * MIN, 2.0)]);
    assert_eq!(
        vector(instant(&data, "up offset 10m", 10 * MIN).unwrap())[0].1,
        1.0
    );
    assert_eq!(
        vector(instant(&data, "up offset -10m", 0).unwrap())[0].1,
        2.0
    );
    let QueryValue::Matrix(series) = range(&data, "up @ 0", 10 * MIN, 12 * MIN, MIN) else {
        panic!("matrix expected")
    };
    assert_eq!(
        series[0].points,
        [(10 * MIN, 1.0), (11 * MIN, 1.0), (12 * MIN, 1.0)]
    );
    let QueryValue::Matrix(series) = range(&data, "up @ end()", 0, 10 * MIN, 10 * MIN) else {
        panic!("matrix expected")
    };
    assert_eq!(series[0].points, [(0, 2.0), (10 * MIN, 2.0)]);
}

/// A counter rising 1 per 15 s, reset to 0 at 5 minutes.
fn counter() -> Vec<SeriesSamples> {
    let samples = (0..=40)
        .map(|i| {
            let t = i * 15_000;
            let value = if i < 20 { i as f64 } else { (i - 20) as f64 };
            (t, value)
        })
        .collect();
    vec![SeriesSamples {
        labels: labels(&[("__name__", "c_total"), ("job", "a")]),
        samples,
    }]
}

#[test]
fn rate_and_increase_see_through_counter_resets_and_drop_the_name() {
    let data = counter();
    // Over [4m, 6m]: samples 16, 17, 18, 19, then 0 (a reset), 1, 2, 3, 4; the
    // counter rose 3 + 4 = 7, and samples sit on both edges, so nothing is
    // extrapolated.
    let out = vector(instant(&data, "increase(c_total[2m])", 6 * MIN).unwrap());
    assert_eq!(out, [(labels(&[("job", "a")]), 7.0)]);
    let out = vector(instant(&data, "rate(c_total[2m])", 6 * MIN).unwrap());
    assert!((out[0].1 - 7.0 / 120.0).abs() < 1e-12);
    // The raw difference ignores the reset.
    let out = vector(instant(&data, "delta(c_total[2m])", 6 * MIN).unwrap());
    assert_eq!(out[0].1, 4.0 - 16.0);
    let out = vector(instant(&data, "resets(c_total[10m])", 10 * MIN).unwrap());
    assert_eq!(out[0].1, 1.0);
    let out = vector(instant(&data, "last_over_time(c_total[1m])", 10 * MIN).unwrap());
    assert_eq!(out[0].0, labels(&[("__name__", "c_total"), ("job", "a")]));
}

fn jobs() -> Vec<SeriesSamples> {
    let one = |pairs: &[(&str, &str)], value: f64| SeriesSamples {
        labels: labels(pairs),
        samples: vec![(0, value)],
    };
    vec![
        one(&[("__name__", "req"), ("job", "a"), ("instance", "1")], 1.0),
        one(&[("__name__", "req"), ("job", "a"), ("instance", "2")], 2.0),
        one(&[("__name__", "req"), ("job", "b"), ("instance", "3")], 4.0),
        one(&[("__name__", "info"), ("job", "a"), ("version", "x")], 1.0),
        one(&[("__name__", "info"), ("job", "b"), ("version", "y")], 1.0),
    ]
}

#[test]
fn aggregations_group_by_and_without() {
    let data = jobs();
    assert_eq!(
        vector(instant(&data, "sum by (job) (req)", 0).unwrap()),
        [
            (labels(&[("job", "a")]), 3.0),
            (labels(&[("job", "b")]), 4.0)
        ]
    );
    assert_eq!(
        vector(instant(&data, "max without (instance) (req)", 0).unwrap()),
        [
            (labels(&[("job", "a")]), 2.0),
            (labels(&[("job", "b")]), 4.0)
        ]
    );
    assert_eq!(
        vector(instant(&data, "count_values(\"v\", req)", 0).unwrap()),
        [
            (labels(&[("v", "1")]), 1.0),
            (labels(&[("v", "2")]), 1.0),
            (labels(&[("v", "4")]), 1.0)
        ]
    );
    let top = vector(instant(&data, "topk(1, req)", 0).unwrap());
    assert_eq!(
        top[0].0,
        labels(&[("__name__", "req"), ("instance", "3"), ("job", "b")])
    );
}

#[test]
fn vector_matching_joins_one_to_many_and_refuses_ambiguity() {
    let data = jobs();
    // Each req sample takes its job's version.
    let out = vector(instant(&data, "req * on (job) group_left (version) info", 0).unwrap());
    assert_eq!(out.len(), 3);
    assert_eq!(
        out[0].0,
        labels(&[("instance", "1"), ("job", "a"), ("version", "x")])
    );
    // Without group_left, two req samples of job a match one info sample.
    let error = instant(&data, "req * on (job) info", 0).unwrap_err();
    assert!(
        matches!(&error, QueryError::Execution(m) if m.contains("many-to-one matching must be explicit")),
        "{error:?}"
    );
    // Comparisons filter and keep the name; `bool` turns them into 0/1.
    assert_eq!(vector(instant(&data, "req > 1", 0).unwrap()).len(), 2);
    let out = vector(instant(&data, "req > bool 1", 0).unwrap());
    assert_eq!(out.iter().map(|s| s.1).collect::<Vec<_>>(), [0.0, 1.0, 1.0]);
    assert_eq!(out[0].0, labels(&[("instance", "1"), ("job", "a")]));
    assert_eq!(
        vector(instant(&data, "req unless on (job) info{job=\"a\"}", 0).unwrap()).len(),
        1
    );
}

#[test]
fn subqueries_step_on_absolute_multiples_of_their_step() {
    let data = counter();
    // At 5m30s, a [1m:20s] subquery evaluates at 4m40s, 5m and 5m20s.
    let QueryValue::Matrix(series) = instant(&data, "c_total[1m:20s]", 330_000).unwrap() else {
        panic!("matrix expected")
    };
    let times: Vec<i64> = series[0].points.iter().map(|p| p.0).collect();
    assert_eq!(times, [280_000, 300_000, 320_000]);
    let out = vector(instant(&data, "max_over_time(c_total[1m:20s])", 330_000).unwrap());
    assert_eq!(out[0].1, 18.0);
}

#[test]
fn range_windows_read_in_place_match_copied_ones_whichever_way_reads_move() {
    // `c_total[1m]` read in place (with cursors that move forward along steps and
    // jump back for each outer step of a subquery) against `c_total[1m:15s]`, a
    // subquery that yields the same points (samples lie on multiples of 15 s).
    let data = counter();
    let stale = f64::from_bits(STALE_NAN_BITS);
    let mut data_with_marker = data.clone();
    data_with_marker[0].samples[7].1 = stale;
    for data in [data, data_with_marker] {
        for (in_place, copied) in [
            (
                "sum_over_time(c_total[1m])",
                "sum_over_time(c_total[1m:15s])",
            ),
            (
                "max_over_time(sum_over_time(c_total[1m])[2m:30s])",
                "max_over_time(sum_over_time(c_total[1m:15s])[2m:30s])",
            ),
        ] {
            let a = range(&data, in_place, 0, 10 * MIN, 45_000);
            let b = range(&data, copied, 0, 10 * MIN, 45_000);
            assert_eq!(a, b, "{in_place}");
            assert!(matches!(&a, QueryValue::Matrix(s) if s[0].points.len() > 10));
        }
    }
}

#[test]
fn scalars_over_a_range_are_one_series_without_labels() {
    let QueryValue::Matrix(series) = range(&[], "time() * 2", 0, 2 * MIN, MIN) else {
        panic!("matrix expected")
    };
    assert_eq!(series.len(), 1);
    assert!(series[0].labels.is_empty());
    assert_eq!(series[0].points, [(0, 0.0), (MIN, 120.0), (2 * MIN, 240.0)]);
    assert_eq!(
        instant(&[], "1 + 2 * 3", 5).unwrap(),
        QueryValue::Scalar(5, 7.0)
    );
}

#[test]
fn limits_and_type_errors_are_reported_as_prometheus_does() {
    let data = counter();
    let limits = QueryLimits {
        samples_max: 10,
        ..QueryLimits::default()
    };
    let error = query(&data, "c_total", EvalRange::instant(10 * MIN), limits).unwrap_err();
    assert!(matches!(error, QueryError::Execution(m) if m.contains("too many samples")));
    let range = EvalRange {
        start_ms: 0,
        end_ms: MIN,
        step_ms: 1000,
        lookback_ms: LOOKBACK_MS_DEFAULT,
    };
    let error = query(&data, "c_total[1m]", range, QueryLimits::default()).unwrap_err();
    assert!(matches!(error, QueryError::BadData(m) if m.contains("range vector")));
    let error = instant(&data, "holt_winters(c_total[5m], 2, 0.5)", MIN).unwrap_err();
    assert!(
        matches!(&error, QueryError::Execution(m) if m.contains("smoothing factor")),
        "{error:?}"
    );
    // A deadline already passed stops a range evaluation at its first step.
    let expr = parse("c_total").unwrap();
    let passed = time::now() - Duration::from_secs(1);
    let range = EvalRange {
        start_ms: 0,
        end_ms: MIN,
        step_ms: 1000,
        lookback_ms: LOOKBACK_MS_DEFAULT,
    };
    let error = run(
        &expr,
        &Fetched::new(),
        range,
        QueryLimits::default(),
        Some(passed),
    );
    assert!(matches!(error, Err(QueryError::Timeout(m)) if m.contains("timed out")));
    // Too deep or too long to evaluate safely: refused before parsing.
    let deep = format!(
        "{}1{}",
        "(".repeat(NESTING_MAX + 1),
        ")".repeat(NESTING_MAX + 1)
    );
    assert!(matches!(instant(&data, &deep, 0), Err(QueryError::BadData(m)) if m.contains("nests")));
    let long = vec!["1"; OPERATORS_MAX + 2].join(" + ");
    assert!(
        matches!(instant(&data, &long, 0), Err(QueryError::BadData(m)) if m.contains("operators"))
    );
    // Nesting inside strings and label values does not count.
    let quoted = format!(
        "label_replace(vector(1), \"a\", \"{}\", \"b\", \"\")",
        "(".repeat(300)
    );
    assert!(instant(&data, &quoted, 0).is_ok());
    let nested = format!("{}c_total{}", "abs(".repeat(64), ")".repeat(64));
    assert_eq!(vector(instant(&data, &nested, 0).unwrap()).len(), 1);
    let error = instant(&data, "sort_by_label(c_total)", MIN).unwrap_err();
    assert!(matches!(error, QueryError::BadData(_)), "not in 2.42");
    assert!(parse_series_selector("sum(up)").is_err());
}

/// One `probe` series per label value, each at 1.
fn probes(values: &[&str]) -> Vec<SeriesSamples> {
    values
        .iter()
        .map(|value| SeriesSamples {
            labels: labels(&[("__name__", "probe"), ("v", value)]),
            samples: vec![(0, 1.0)],
        })
        .collect()
}

/// The `v` labels of the series `query` selects at 0, sorted.
fn selected(data: &[SeriesSamples], query: &str) -> Vec<String> {
    let mut out: Vec<String> = vector(instant(data, query, 0).unwrap())
        .into_iter()
        .map(|(labels, _)| value::label(&labels, "v").unwrap_or("").to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn label_regexes_are_go_regexes() {
    let data = probes(&["12", "٣", "é", "e", r"a\b", "x{,2}", "a{", "a\nb", "a.b"]);
    // `\d` and `\w` are ASCII; a backtick string is raw.
    assert_eq!(selected(&data, r"probe{v=~`\d+`}"), ["12"]);
    assert_eq!(selected(&data, r#"probe{v=~"\\w"}"#), ["e"]);
    assert_eq!(
        selected(&data, r"probe{v!~`[\w.{},\\]*`}"),
        ["a\nb", "é", "٣"]
    );
    // A backslash is literal in a backtick string and escapes in a Go regex.
    assert_eq!(selected(&data, r"probe{v=~`a\\b`}"), [r"a\b"]);
    // Malformed repetitions are text; `\Q…\E` quotes.
    assert_eq!(selected(&data, r#"probe{v=~"x{,2}|a{"}"#), ["a{", "x{,2}"]);
    assert_eq!(selected(&data, r"probe{v=~`\Qa.b\E`}"), ["a.b"]);
    // `.` does not match a newline in 2.42.
    assert_eq!(selected(&data, r#"probe{v=~"a.b"}"#), ["a.b", r"a\b"]);
    assert_eq!(
        selected(&data, r#"probe{v=~"(?s)a.b"}"#),
        ["a\nb", "a.b", r"a\b"]
    );
    // label_replace reads the same syntax.
    let replaced = vector(
        instant(
            &data,
            r#"label_replace(probe{v=~"\\Qa{\\E"}, "w", "$1", "v", "(\\w)\\{")"#,
            0,
        )
        .unwrap(),
    );
    assert_eq!(value::label(&replaced[0].0, "w"), Some("a"));
    // A pattern Go refuses is a parse error, one it accepts is not.
    let refused = instant(&data, r#"probe{v=~"a**"}"#, 0).unwrap_err();
    assert!(matches!(refused, QueryError::BadData(_)), "{refused:?}");
    assert!(instant(&data, r#"probe{v=~"\\101"}"#, 0).is_ok());
}

#[test]
fn float_extremes_and_nan_parameters_follow_go() {
    let data = vec![SeriesSamples {
        labels: labels(&[("__name__", "x")]),
        samples: vec![(0, f64::MAX), (MIN, f64::NAN)],
    }];
    let at = |query: &str, t: i64| vector(instant(&data, query, t).unwrap())[0].1;
    let expected = f64::MAX.ln() + std::f64::consts::LN_2;
    assert_eq!(at("asinh(x)", 0), expected);
    assert_eq!(at("acosh(x)", 0), expected);
    assert_eq!(at("asinh(-x)", 0), -expected);
    // Go's math.Min and math.Max: an infinity in their direction beats NaN.
    assert_eq!(at("clamp_max(x, -Inf)", MIN), f64::NEG_INFINITY);
    assert_eq!(at("clamp_min(x, +Inf)", MIN), f64::INFINITY);
    assert_eq!(at("clamp(x, +Inf, +Inf)", MIN), f64::INFINITY);
    assert!(at("clamp(x, -Inf, +Inf)", MIN).is_nan());
    // A NaN factor passes 2.42's range checks and smooths into NaN.
    let data = counter();
    for query in [
        "holt_winters(c_total[5m], NaN, 0.5)",
        "holt_winters(c_total[5m], 0.5, NaN)",
    ] {
        let smoothed = vector(instant(&data, query, 10 * MIN).unwrap());
        assert_eq!(smoothed.len(), 1, "{query}");
        assert!(smoothed[0].1.is_nan(), "{query}");
    }
}
