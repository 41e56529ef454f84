//! PromQL compliance: the same synthetic data set is remote-written to Metronome and to a
//! real Prometheus 2.42 (Debian's package), then every query of `tests/promql/queries.txt`
//! is asked of both, as instant queries at several times and as range queries over two
//! windows, and the answers are compared. Prometheus is the oracle: each (query, mode)
//! case passes when both fail with the same `errorType`, or both succeed with the same
//! result type, the same series and the same points (values within a relative 1e-6).
//!
//! The test prints `passed / total` and every mismatching case with its first difference,
//! then fails unless every case not marked `## unsupported: <reason>` passed.
//!
//! Without a `prometheus` binary on PATH this test says so and passes, unless
//! `METRONOME_REQUIRE_PROMETHEUS=1` (set by `.ci/run`, which installs the package).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as Json;

/// The queries, one per line; see the file's header for the format.
const QUERIES: &str = include_str!("promql/queries.txt");

/// The data set's first sample time, 2026-01-01T00:00:00Z, in Unix seconds.
const T0: i64 = 1_767_225_600;
/// Seconds between two samples of a series, like a 15 s scrape interval.
const INTERVAL: i64 = 15;
/// Samples per series: T0 to T0 + 3600 s inclusive.
const SAMPLES: i64 = 241;
/// Seconds of data per remote-write request.
const CHUNK: i64 = 600;
/// Prometheus' staleness marker, a NaN with this exact bit pattern.
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
/// Two values are equal when they differ by at most this fraction of the larger one.
const TOLERANCE: f64 = 1e-6;

/// How a query is asked. Times are seconds after [`T0`].
#[derive(Clone, Copy)]
enum Mode {
    Instant { at: i64 },
    Range { start: i64, end: i64, step: i64 },
}

/// Instant queries inside the data, at a time between samples, at its last sample, and
/// after its end but inside the 5-minute lookback; range queries over the data and over a
/// window shifted past its end with a step that is not a multiple of the sample interval.
const MODES: [Mode; 6] = [
    Mode::Instant { at: 600 },
    Mode::Instant { at: 1837 },
    Mode::Instant { at: 3600 },
    Mode::Instant { at: 3900 },
    Mode::Range {
        start: 0,
        end: 3600,
        step: 60,
    },
    Mode::Range {
        start: 300,
        end: 3900,
        step: 37,
    },
];

impl Mode {
    /// The API path and its parameters, except the query itself.
    fn request(self) -> (&'static str, Vec<(&'static str, String)>) {
        match self {
            Mode::Instant { at } => ("/api/v1/query", vec![("time", (T0 + at).to_string())]),
            Mode::Range { start, end, step } => (
                "/api/v1/query_range",
                vec![
                    ("start", (T0 + start).to_string()),
                    ("end", (T0 + end).to_string()),
                    ("step", step.to_string()),
                ],
            ),
        }
    }

    fn describe(self) -> String {
        match self {
            Mode::Instant { at } => format!("instant T0+{at}"),
            Mode::Range { start, end, step } => {
                format!("range T0+{start}..T0+{end} step {step}s")
            }
        }
    }
}

/// One line of `queries.txt`.
struct Query {
    text: &'static str,
    /// Why Metronome knowingly answers differently, when it does.
    unsupported: Option<&'static str>,
}

/// Reads the query file: one query per line; blank lines and lines starting with `#` are
/// comments; a query may end with `  ## unsupported: <reason>`.
fn parse_queries(file: &'static str) -> Result<Vec<Query>, String> {
    let mut queries = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, line) in file.lines().enumerate() {
        let line_number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // A malformed marker must not silently become part of the query text, where it
        // would be a PromQL comment and change nothing.
        let (text, unsupported) = match line.split_once("##") {
            None => (line, None),
            Some((text, marker)) => {
                let Some(reason) = marker.trim().strip_prefix("unsupported:") else {
                    return Err(format!(
                        "line {line_number}: a marker must read `## unsupported: <reason>`: \
                         {line}"
                    ));
                };
                if reason.trim().is_empty() {
                    return Err(format!(
                        "line {line_number}: `## unsupported:` needs a reason: {line}"
                    ));
                }
                if reason.contains("##") {
                    return Err(format!("line {line_number}: more than one marker: {line}"));
                }
                (text.trim(), Some(reason.trim()))
            }
        };
        if !seen.insert(text) {
            return Err(format!("line {line_number}: duplicate query {text}"));
        }
        queries.push(Query { text, unsupported });
    }
    Ok(queries)
}

/// A small linear congruential generator, so that the data set has some noise and is the
/// same on every run.
struct Lcg(u64);

impl Lcg {
    /// A number in `[0, 1)`, rounded to 3 decimals so that the data stays readable in
    /// mismatch reports.
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % 1000) as f64 / 1000.0
    }
}

fn labels(name: &str, pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut all = vec![("__name__", name.to_string())];
    all.extend(pairs.iter().map(|(n, v)| (*n, v.to_string())));
    // Prometheus expects a series' labels sorted by name.
    all.sort();
    all
}

const INSTANCES: [&str; 4] = ["i0", "i1", "i2", "i3"];

/// The job of each instance: i0 and i1 are "api", i2 and i3 "web".
const JOBS: [&str; 4] = ["api", "api", "web", "web"];

/// The sample times, as (index, seconds after T0).
fn times() -> impl Iterator<Item = (i64, i64)> {
    (0..SAMPLES).map(|k| (k, k * INTERVAL))
}

fn ms(offset_s: i64) -> i64 {
    (T0 + offset_s) * 1000
}

/// The data set: every series with all its samples, in time order.
fn data_set() -> Vec<Series> {
    let mut rng = Lcg(20_260_101);
    let mut all: Vec<Series> = Vec::new();

    // Counters; one series resets once, another twice.
    for (i, instance) in INSTANCES.into_iter().enumerate() {
        for (m, method) in ["get", "post"].into_iter().enumerate() {
            let resets: &[i64] = match (instance, method) {
                ("i1", "post") => &[1800],
                ("i3", "get") => &[900, 2700],
                _ => &[],
            };
            let mut value = 100.0 * (i + 1) as f64 + 10.5 * m as f64;
            let mut samples = Vec::new();
            for (k, t) in times() {
                if resets.contains(&t) {
                    value = 1.0 + rng.next() * 3.0;
                } else if k > 0 {
                    value += (2.0 + i as f64 + 3.0 * m as f64) * (0.5 + rng.next());
                }
                samples.push((ms(t), value));
            }
            let pairs = [("instance", instance), ("job", JOBS[i]), ("method", method)];
            all.push((labels("demo_requests_total", &pairs), samples));
        }
    }

    // Gauges around 100 MB.
    for (i, instance) in INSTANCES.into_iter().enumerate() {
        let samples = times()
            .map(|(_, t)| {
                let wave = (t as f64 / 600.0 + i as f64).sin();
                (
                    ms(t),
                    1e8 + 1e7 * wave + 2.5e6 * i as f64 + rng.next() * 1000.0,
                )
            })
            .collect();
        let pairs = [("instance", instance), ("job", JOBS[i])];
        all.push((labels("demo_memory_bytes", &pairs), samples));
    }

    // CPU counters: about 15 s of CPU time per 15 s, split over the modes.
    for (i, instance) in INSTANCES.into_iter().enumerate() {
        for (mode, share) in [("idle", 0.7), ("user", 0.2), ("system", 0.1)] {
            let mut value = 1000.0 * (i + 1) as f64 * share;
            let samples = times()
                .map(|(k, t)| {
                    if k > 0 {
                        value += INTERVAL as f64 * share * (0.8 + 0.4 * rng.next());
                    }
                    (ms(t), value)
                })
                .collect();
            let pairs = [("instance", instance), ("mode", mode)];
            all.push((labels("demo_cpu_seconds_total", &pairs), samples));
        }
    }

    // A classic histogram per instance: new observations in each bin at every sample,
    // cumulative over `le` and over time; `_count` is the `+Inf` bucket.
    let bounds = ["0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    let weights = [0.3, 0.3, 0.2, 0.1, 0.07, 0.03];
    let midpoints = [0.05, 0.175, 0.375, 0.75, 1.75, 4.0];
    for (i, instance) in INSTANCES.into_iter().enumerate() {
        let mut bins = [0.0; 6];
        let mut sum = 0.0;
        let mut buckets: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 6];
        let mut sums = Vec::new();
        let mut counts = Vec::new();
        for (_, t) in times() {
            let observations = 5.0 + (20.0 * rng.next()).floor() + 5.0 * i as f64;
            for bin in 0..6 {
                let new = (observations * weights[bin] * (0.5 + rng.next())).round();
                bins[bin] += new;
                sum += new * midpoints[bin] * (0.9 + 0.2 * rng.next());
            }
            let mut cumulative = 0.0;
            for bin in 0..6 {
                cumulative += bins[bin];
                buckets[bin].push((ms(t), cumulative));
            }
            sums.push((ms(t), sum));
            counts.push((ms(t), cumulative));
        }
        for (le, samples) in bounds.into_iter().zip(buckets) {
            let pairs = [("instance", instance), ("job", JOBS[i]), ("le", le)];
            all.push((
                labels("demo_request_duration_seconds_bucket", &pairs),
                samples,
            ));
        }
        let pairs = [("instance", instance), ("job", JOBS[i])];
        all.push((labels("demo_request_duration_seconds_sum", &pairs), sums));
        all.push((
            labels("demo_request_duration_seconds_count", &pairs),
            counts,
        ));
    }

    // Temperatures that cross zero.
    for (s, (sensor, offset, amplitude, period)) in [
        ("s0", 2.5, 8.0, 1200.0),
        ("s1", -3.0, 6.0, 900.0),
        ("s2", 15.0, 12.0, 2400.0),
    ]
    .into_iter()
    .enumerate()
    {
        let samples = times()
            .map(|(_, t)| {
                let phase = t as f64 / period * std::f64::consts::TAU + s as f64;
                (ms(t), offset + amplitude * phase.sin() + 0.1 * rng.next())
            })
            .collect();
        all.push((
            labels("demo_temperature_celsius", &[("sensor", sensor)]),
            samples,
        ));
    }

    // A gauge with ordinary NaN values (not staleness markers) from T0+1800 to T0+1860.
    let samples = times()
        .map(|(_, t)| {
            let value = if (1800..=1860).contains(&t) {
                f64::NAN
            } else {
                5.0 + 2.0 * (t as f64 / 300.0).cos() + rng.next()
            };
            (ms(t), value)
        })
        .collect();
    all.push((labels("demo_nan_gauge", &[("sensor", "n0")]), samples));

    // f0 goes stale at T0+1800 (a staleness marker) and comes back at T0+2400; f1 stops
    // after T0+1185 without a marker and comes back at T0+2700.
    let flaky = |rng: &mut Lcg, present: &dyn Fn(i64) -> bool, stale_at: Option<i64>| {
        times()
            .filter_map(|(_, t)| {
                if Some(t) == stale_at {
                    Some((ms(t), f64::from_bits(STALE_NAN_BITS)))
                } else if present(t) {
                    Some((ms(t), 50.0 + 10.0 * (t as f64 / 400.0).sin() + rng.next()))
                } else {
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    let f0 = flaky(&mut rng, &|t| !(1800..2400).contains(&t), Some(1800));
    all.push((labels("demo_flaky", &[("instance", "f0")]), f0));
    let f1 = flaky(&mut rng, &|t| !(1200..2700).contains(&t), None);
    all.push((labels("demo_flaky", &[("instance", "f1")]), f1));

    // Timestamps of the last success, up to 5 minutes behind the sample time.
    for (j, job) in ["api", "web"].into_iter().enumerate() {
        let samples = times()
            .map(|(k, t)| {
                let lag = ((k * 37 + j as i64 * 113) % 300) as f64 + 0.25;
                (ms(t), (T0 + t) as f64 - lag)
            })
            .collect();
        all.push((
            labels("demo_last_success_timestamp_seconds", &[("job", job)]),
            samples,
        ));
    }

    // Info metrics for `group_left` joins.
    for (i, instance) in INSTANCES.into_iter().enumerate() {
        let version = if i % 2 == 0 { "1.0" } else { "1.1" };
        let samples = times().map(|(_, t)| (ms(t), 1.0)).collect();
        let pairs = [("instance", instance), ("version", version)];
        all.push((labels("demo_info", &pairs), samples));
    }

    // Label values where Go's regexes and the regex crate's defaults disagree: digits and
    // letters outside ASCII, a backslash, braces that are no repetition, a newline.
    for text in REGEX_PROBES {
        let samples = times().map(|(_, t)| (ms(t), 1.0)).collect();
        all.push((labels("demo_regex_probe", &[("text", text)]), samples));
    }
    all
}

/// The `text` values of `demo_regex_probe`.
const REGEX_PROBES: [&str; 11] = [
    "12", "\u{663}", "\u{e9}", "e", "A", "a\\b", "x{,2}", "a{", "x{2,1", "a\nb", "a.b",
];

/// The data set cut into remote-write bodies of [`CHUNK`] seconds each, in time order:
/// Prometheus rejects a sample older than the series' latest one.
fn chunks(data: &[Series]) -> Vec<Vec<u8>> {
    (0..=SAMPLES * INTERVAL / CHUNK)
        .map(|chunk| {
            let window = ms(chunk * CHUNK)..ms((chunk + 1) * CHUNK);
            let series: Vec<Series> = data
                .iter()
                .filter_map(|(labels, samples)| {
                    let samples: Vec<_> = samples
                        .iter()
                        .copied()
                        .filter(|(t, _)| window.contains(t))
                        .collect();
                    (!samples.is_empty()).then(|| (labels.clone(), samples))
                })
                .collect();
            write_request(&series)
        })
        .collect()
}

type Labels = BTreeMap<String, String>;

/// Labels as PromQL writes a series: `name{a="x", b="y"}`.
fn show(labels: &Labels) -> String {
    let name = labels.get("__name__").map_or("", String::as_str);
    let rest: Vec<String> = labels
        .iter()
        .filter(|(n, _)| *n != "__name__")
        .map(|(n, v)| format!("{n}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(", "))
}

fn show_time(ms: i64) -> String {
    let offset = ms - T0 * 1000;
    if offset % 1000 == 0 {
        format!("T0{:+}", offset / 1000)
    } else {
        format!("T0{:+}", offset as f64 / 1000.0)
    }
}

/// Checks that Prometheus holds exactly the samples written: the oracle must not have
/// silently dropped any. Range selectors leave staleness markers out.
fn assert_prometheus_holds(agent: &ureq::Agent, base: &str, data: &[Series]) {
    let reply = try_get_query_with(
        agent,
        &format!("{base}/api/v1/query"),
        &[
            ("query", r#"{__name__=~"demo_.+"}[2h]"#),
            ("time", &(T0 + 3600).to_string()),
        ],
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let held: BTreeMap<Labels, Vec<(f64, String)>> = matrix(&reply.json())
        .into_iter()
        .map(|(metric, points)| (serde_json::from_value(metric).unwrap(), points))
        .collect();
    assert_eq!(held.len(), data.len(), "Prometheus holds other series");
    for (labels, samples) in data {
        let labels: Labels = labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        let points = held
            .get(&labels)
            .unwrap_or_else(|| panic!("Prometheus lacks {}", show(&labels)));
        let written: Vec<_> = samples
            .iter()
            .filter(|(_, v)| v.to_bits() != STALE_NAN_BITS)
            .collect();
        assert_eq!(points.len(), written.len(), "{}", show(&labels));
        for ((t, text), (written_t, written_v)) in points.iter().zip(written) {
            let value = parse_value(text).unwrap();
            let same =
                value.to_bits() == written_v.to_bits() || (value.is_nan() && written_v.is_nan());
            assert!(
                (t * 1000.0).round() as i64 == *written_t && same,
                "{}: Prometheus holds {t} {text}, written {written_t} {written_v}",
                show(&labels)
            );
        }
    }
}

/// What a server said to one case.
enum Answer {
    /// The `data` of a successful reply.
    Success(Json),
    Failure {
        error_type: String,
        message: String,
    },
}

fn ask(agent: &ureq::Agent, base: &str, query: &str, mode: Mode) -> Answer {
    let (path, mut params) = mode.request();
    params.push(("query", query.to_string()));
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = match try_get_query_with(agent, &format!("{base}{path}"), &params) {
        Ok(reply) => reply,
        Err(error) => {
            return Answer::Failure {
                error_type: "(no HTTP reply)".to_string(),
                message: error.to_string(),
            };
        }
    };
    let Ok(json) = serde_json::from_str::<Json>(&reply.body) else {
        return Answer::Failure {
            error_type: format!("(HTTP {} without a JSON body)", reply.status),
            message: reply.body.chars().take(200).collect(),
        };
    };
    if json["status"] == "success" {
        Answer::Success(json["data"].clone())
    } else {
        Answer::Failure {
            error_type: json["errorType"].as_str().unwrap_or("(none)").to_string(),
            message: json["error"].as_str().unwrap_or("(none)").to_string(),
        }
    }
}

/// A result with series keyed by their label sets, so that the order the servers list
/// them in does not matter (except where the query sorts).
enum Canonical {
    Series {
        order: Vec<Labels>,
        points: BTreeMap<Labels, Vec<(i64, String)>>,
    },
    Scalar(i64, String),
    String(i64, String),
}

fn point(json: &Json) -> Result<(i64, String), String> {
    match json.as_array().map(Vec::as_slice) {
        Some([time, value]) => {
            let time = time.as_f64().ok_or_else(|| format!("bad time in {json}"))?;
            let value = value
                .as_str()
                .ok_or_else(|| format!("bad value in {json}"))?;
            Ok(((time * 1000.0).round() as i64, value.to_string()))
        }
        _ => Err(format!("bad point {json}")),
    }
}

fn canonical(data: &Json) -> Result<Canonical, String> {
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some(kind @ ("vector" | "matrix")) => {
            let mut order = Vec::new();
            let mut points = BTreeMap::new();
            for series in result.as_array().ok_or("result is not an array")? {
                let labels: Labels = serde_json::from_value(series["metric"].clone())
                    .map_err(|e| format!("bad metric {}: {e}", series["metric"]))?;
                let these = if kind == "vector" {
                    vec![point(&series["value"])?]
                } else {
                    let values = series["values"].as_array().ok_or("no values")?;
                    values.iter().map(point).collect::<Result<_, _>>()?
                };
                if points.insert(labels.clone(), these).is_some() {
                    return Err(format!("series {} appears twice", show(&labels)));
                }
                order.push(labels);
            }
            Ok(Canonical::Series { order, points })
        }
        Some("scalar") => {
            let (time, value) = point(result)?;
            Ok(Canonical::Scalar(time, value))
        }
        Some("string") => {
            let (time, text) = point(result)?;
            Ok(Canonical::String(time, text))
        }
        _ => Err(format!("unknown resultType {}", data["resultType"])),
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

fn values_equal(a: &str, b: &str) -> bool {
    match (parse_value(a), parse_value(b)) {
        (Some(a), Some(b)) if a.is_nan() || b.is_nan() => a.is_nan() && b.is_nan(),
        (Some(a), Some(b)) if a.is_infinite() || b.is_infinite() => a == b,
        (Some(a), Some(b)) => (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()),
        _ => a == b,
    }
}

/// What a case's answer amounts to, for the summary of passing cases.
fn agreement(answer: &Answer) -> &'static str {
    match answer {
        Answer::Failure { .. } => "errors",
        Answer::Success(data) if data["result"].as_array().is_some_and(Vec::is_empty) => {
            "empty results"
        }
        Answer::Success(_) => "results with data",
    }
}

/// A short account of a successful answer, for status mismatches.
fn summary(data: &Json) -> String {
    let kind = data["resultType"].as_str().unwrap_or("?");
    match data["result"].as_array() {
        Some(series) if kind == "vector" || kind == "matrix" => {
            format!("{kind} of {} series", series.len())
        }
        _ => format!("{kind} {}", data["result"]),
    }
}

/// The first difference between two series' points.
fn compare_points(
    labels: &Labels,
    expected: &[(i64, String)],
    actual: &[(i64, String)],
) -> Result<(), String> {
    let actual_times: BTreeSet<i64> = actual.iter().map(|(t, _)| *t).collect();
    let expected_times: BTreeSet<i64> = expected.iter().map(|(t, _)| *t).collect();
    if let Some((t, value)) = expected.iter().find(|(t, _)| !actual_times.contains(t)) {
        return Err(format!(
            "{}: Metronome lacks the point at {} (Prometheus: {value}); {} points vs {}",
            show(labels),
            show_time(*t),
            expected.len(),
            actual.len()
        ));
    }
    if let Some((t, value)) = actual.iter().find(|(t, _)| !expected_times.contains(t)) {
        return Err(format!(
            "{}: Metronome has an extra point at {} ({value}); {} points vs {}",
            show(labels),
            show_time(*t),
            expected.len(),
            actual.len()
        ));
    }
    if expected.len() != actual.len() {
        return Err(format!(
            "{}: a timestamp repeats; {} points vs {}",
            show(labels),
            expected.len(),
            actual.len()
        ));
    }
    for ((t, a), (_, b)) in expected.iter().zip(actual) {
        if !values_equal(a, b) {
            return Err(format!(
                "{} at {}: Prometheus {a}, Metronome {b}",
                show(labels),
                show_time(*t)
            ));
        }
    }
    Ok(())
}

/// Compares two answers to one case; the error is the first difference found.
fn compare(sorted: bool, expected: &Answer, actual: &Answer) -> Result<(), String> {
    let (expected, actual) = match (expected, actual) {
        (Answer::Success(expected), Answer::Success(actual)) => (expected, actual),
        (
            Answer::Failure {
                error_type: expected,
                message: expected_message,
            },
            Answer::Failure {
                error_type: actual,
                message: actual_message,
            },
        ) => {
            return if expected == actual {
                Ok(())
            } else {
                Err(format!(
                    "errorType differs: Prometheus {expected}: {expected_message:?}; \
                     Metronome {actual}: {actual_message:?}"
                ))
            };
        }
        (
            Answer::Success(expected),
            Answer::Failure {
                error_type,
                message,
            },
        ) => {
            return Err(format!(
                "Prometheus succeeded ({}); Metronome failed with {error_type}: {message:?}",
                summary(expected)
            ));
        }
        (
            Answer::Failure {
                error_type,
                message,
            },
            Answer::Success(actual),
        ) => {
            return Err(format!(
                "Prometheus failed with {error_type}: {message:?}; Metronome succeeded ({})",
                summary(actual)
            ));
        }
    };
    if expected["resultType"] != actual["resultType"] {
        return Err(format!(
            "resultType differs: Prometheus {}, Metronome {}",
            expected["resultType"], actual["resultType"]
        ));
    }
    let expected = canonical(expected).map_err(|e| format!("Prometheus' answer: {e}"))?;
    let actual = canonical(actual).map_err(|e| format!("Metronome's answer: {e}"))?;
    match (expected, actual) {
        (
            Canonical::Series {
                order: expected_order,
                points: expected,
            },
            Canonical::Series {
                order: actual_order,
                points: actual,
            },
        ) => {
            let missing: Vec<&Labels> = expected
                .keys()
                .filter(|l| !actual.contains_key(*l))
                .collect();
            let extra: Vec<&Labels> = actual
                .keys()
                .filter(|l| !expected.contains_key(*l))
                .collect();
            // Both lists' first entries side by side show most label mistakes at a
            // glance, such as a metric name kept on one side and dropped on the other.
            let mut differences = Vec::new();
            if let Some(first) = missing.first() {
                differences.push(format!(
                    "{} of Prometheus' {} series missing from Metronome, first {}",
                    missing.len(),
                    expected.len(),
                    show(first)
                ));
            }
            if let Some(first) = extra.first() {
                differences.push(format!(
                    "{} of Metronome's {} series extra, first {}",
                    extra.len(),
                    actual.len(),
                    show(first)
                ));
            }
            if !differences.is_empty() {
                return Err(differences.join("; "));
            }
            for (labels, points) in &expected {
                compare_points(labels, points, &actual[labels])?;
            }
            if sorted && expected_order != actual_order {
                let list = |order: &[Labels]| -> String {
                    order.iter().map(show).collect::<Vec<_>>().join(", ")
                };
                return Err(format!(
                    "order differs: Prometheus [{}], Metronome [{}]",
                    list(&expected_order),
                    list(&actual_order)
                ));
            }
            Ok(())
        }
        (Canonical::Scalar(t, a), Canonical::Scalar(u, b)) => {
            if t != u {
                Err(format!(
                    "scalar time: Prometheus {}, Metronome {}",
                    show_time(t),
                    show_time(u)
                ))
            } else if !values_equal(&a, &b) {
                Err(format!("scalar: Prometheus {a}, Metronome {b}"))
            } else {
                Ok(())
            }
        }
        (Canonical::String(t, a), Canonical::String(u, b)) => {
            if t != u || a != b {
                Err(format!(
                    "string: Prometheus {a:?} at {}, Metronome {b:?} at {}",
                    show_time(t),
                    show_time(u)
                ))
            } else {
                Ok(())
            }
        }
        _ => Err("result kinds differ".to_string()),
    }
}

#[test]
fn promql_answers_match_prometheus() {
    if !prometheus_available() {
        return;
    }
    // Parse the query file first: a malformed file fails before any process starts.
    let queries = parse_queries(QUERIES).unwrap_or_else(|e| panic!("queries.txt: {e}"));
    let started = Instant::now();

    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(&dir.path().join("metronome"));
    let prometheus_port = free_port();
    // No scrape configs: Prometheus' own scrapes at wall-clock time would move its head
    // past the data set's hour and make the historical samples out of bounds. The
    // evaluation interval is the default step of subqueries like `[10m:]`.
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, "global:\n  evaluation_interval: 1m\n").unwrap();
    let log_path = dir.path().join("prometheus.log");
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("prometheus").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut prometheus = Running(prometheus);
    let prometheus_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let prometheus_addr: SocketAddr = ([127, 0, 0, 1], prometheus_port).into();
    let prometheus_base = format!("http://{prometheus_addr}");
    let metronome_base = format!("http://{}", node.http);
    let agent = agent();

    // Prometheus replays its (empty) WAL and opens its TSDB before it is ready; polling is
    // the only way to know when.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = try_get_query_with(&agent, &format!("{prometheus_base}/-/ready"), &[])
            .is_ok_and(|reply| reply.status == 200);
        if ready {
            break;
        }
        if let Some(status) = prometheus.0.try_wait().unwrap() {
            panic!(
                "Prometheus exited with {status}; its log:\n{}",
                prometheus_log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus was not ready within 60 s; its log:\n{}",
            prometheus_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let servers_ready = started.elapsed();

    let data = data_set();
    let bodies = chunks(&data);
    for (chunk, body) in bodies.iter().enumerate() {
        for (server, address) in [("Prometheus", prometheus_addr), ("Metronome", node.http)] {
            let reply = remote_write(address, body);
            assert!(
                (200..300).contains(&reply.status),
                "{server} refused chunk {chunk} with {}: {}{}",
                reply.status,
                reply.body,
                if server == "Prometheus" {
                    format!("\nits log:\n{}", prometheus_log())
                } else {
                    String::new()
                }
            );
        }
    }
    assert_prometheus_holds(&agent, &prometheus_base, &data);
    let samples: usize = data.iter().map(|(_, samples)| samples.len()).sum();
    println!(
        "wrote {} series, {samples} samples in {} requests to both servers",
        data.len(),
        bodies.len()
    );
    let written = started.elapsed();

    let mut total = 0;
    let mut passed = 0;
    let mut unsupported = 0;
    let mut unsupported_passed = 0;
    let mut report = String::new();
    let mut unexpectedly_passing = Vec::new();
    // What the passing cases agree on: a case where both servers fail, or both return
    // nothing, proves less than one with data, so the summary says how many are which.
    let mut agreed = BTreeMap::<&str, usize>::new();
    for query in &queries {
        let sorted = query.text.starts_with("sort(") || query.text.starts_with("sort_desc(");
        let mut differences = Vec::new();
        for mode in MODES {
            let expected = ask(&agent, &prometheus_base, query.text, mode);
            let actual = ask(&agent, &metronome_base, query.text, mode);
            let instant = matches!(mode, Mode::Instant { .. });
            let outcome = compare(sorted && instant, &expected, &actual);
            total += 1;
            if query.unsupported.is_some() {
                unsupported += 1;
                unsupported_passed += usize::from(outcome.is_ok());
            } else if outcome.is_ok() {
                passed += 1;
                *agreed.entry(agreement(&expected)).or_default() += 1;
            }
            if let Err(difference) = outcome {
                differences.push((mode, difference));
            }
        }
        match query.unsupported {
            Some(_) if differences.is_empty() => unexpectedly_passing.push(query.text),
            Some(_) => {}
            None if differences.is_empty() => {}
            None => {
                writeln!(report, "MISMATCH {}", query.text).unwrap();
                for (mode, difference) in differences {
                    writeln!(report, "    {:<34} {difference}", mode.describe()).unwrap();
                }
            }
        }
    }
    let supported = total - unsupported;
    let failed = supported - passed;
    print!("{report}");
    for query in &unexpectedly_passing {
        println!("marked unsupported but passes in every mode: {query}");
    }
    println!(
        "PromQL compliance: {passed} / {supported} cases pass ({} queries x {} modes = \
         {total} cases; {unsupported} knowingly unsupported cases, {unsupported_passed} of \
         them pass anyway)",
        queries.len(),
        MODES.len()
    );
    let agreed: Vec<String> = agreed
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    println!("the passing cases agree on {}", agreed.join(", "));
    println!(
        "took {:.1} s: servers ready after {:.1} s, data written after {:.1} s",
        started.elapsed().as_secs_f64(),
        servers_ready.as_secs_f64(),
        written.as_secs_f64()
    );
    assert_eq!(
        failed, 0,
        "{failed} of {supported} PromQL cases differ from Prometheus ({passed} / {supported} \
         pass); the mismatches are listed above"
    );
}

/// The query file's format, without servers: markers need a reason, and a malformed one
/// is an error rather than part of the query.
#[test]
fn the_query_file_format_is_checked() {
    let queries =
        parse_queries("# comment\n\nup\n  rate(x[5m])  ## unsupported: why not\n").unwrap();
    let parsed: Vec<_> = queries.iter().map(|q| (q.text, q.unsupported)).collect();
    assert_eq!(parsed, [("up", None), ("rate(x[5m])", Some("why not"))]);
    for bad in [
        "up  ## unsupported:",
        "up  ## unsupported:   ",
        "up  ## unsupported",
        "up  ## todo: later",
        "up  ## unsupported: twice  ## unsupported: again",
        "up\nup",
    ] {
        assert!(parse_queries(bad).is_err(), "{bad:?} is accepted");
    }
}

/// The comparison, without servers: it must notice every kind of difference, and only
/// those.
#[test]
fn the_comparison_notices_differences() {
    use serde_json::json;
    let success =
        |kind: &str, result: Json| Answer::Success(json!({"resultType": kind, "result": result}));
    let vector = |points: &[(&str, f64, &str)]| {
        let series: Vec<Json> = points
            .iter()
            .map(|(instance, t, v)| json!({"metric": {"__name__": "m", "instance": instance}, "value": [t, v]}))
            .collect();
        success("vector", Json::Array(series))
    };
    let failure = |error_type: &str| Answer::Failure {
        error_type: error_type.to_string(),
        message: "whatever".to_string(),
    };
    let a = vector(&[("a", 1.0, "1"), ("b", 1.0, "2")]);
    let same = |x: &Answer, y: &Answer| compare(false, x, y).is_ok();

    assert!(same(&a, &vector(&[("b", 1.0, "2"), ("a", 1.0, "1")])));
    assert!(compare(true, &a, &vector(&[("b", 1.0, "2"), ("a", 1.0, "1")])).is_err());
    assert!(same(
        &a,
        &vector(&[("a", 1.0, "1.0000001"), ("b", 1.0, "2")])
    ));
    assert!(!same(
        &a,
        &vector(&[("a", 1.0, "1.00001"), ("b", 1.0, "2")])
    ));
    assert!(!same(&a, &vector(&[("a", 1.0, "1")])));
    assert!(!same(
        &a,
        &vector(&[("a", 1.0, "1"), ("b", 1.0, "2"), ("c", 1.0, "3")])
    ));
    assert!(!same(&a, &vector(&[("a", 1.0, "1"), ("c", 1.0, "2")])));
    assert!(!same(&a, &vector(&[("a", 1.0, "1"), ("b", 2.0, "2")])));
    assert!(!same(
        &a,
        &vector(&[("a", 1.0, "1"), ("a", 1.0, "1"), ("b", 1.0, "2")])
    ));
    assert!(!same(&a, &success("matrix", json!([]))));
    assert!(!same(&a, &failure("execution")));
    assert!(!same(&failure("bad_data"), &vector(&[])));
    assert!(same(&failure("bad_data"), &failure("bad_data")));
    assert!(!same(&failure("bad_data"), &failure("execution")));
    assert!(same(&vector(&[]), &vector(&[])));

    let scalar = |v: &str| success("scalar", json!([1, v]));
    assert!(same(&scalar("NaN"), &scalar("NaN")));
    assert!(!same(&scalar("NaN"), &scalar("1")));
    assert!(same(&scalar("+Inf"), &scalar("+Inf")));
    assert!(!same(&scalar("+Inf"), &scalar("1e308")));
    assert!(!same(&scalar("+Inf"), &scalar("-Inf")));
    assert!(same(&scalar("0"), &scalar("-0")));
    assert!(!same(&scalar("0"), &scalar("1e-300")));
    assert!(!same(
        &success("string", json!([1, "a"])),
        &success("string", json!([1, "b"]))
    ));

    let matrix = |values: Json| {
        success(
            "matrix",
            json!([{"metric": {"job": "x"}, "values": values}]),
        )
    };
    let m = matrix(json!([[1, "1"], [2, "2"]]));
    assert!(same(&m, &matrix(json!([[1, "1"], [2, "2"]]))));
    assert!(!same(&m, &matrix(json!([[1, "1"]]))));
    assert!(!same(&m, &matrix(json!([[1, "1"], [2, "2"], [3, "3"]]))));
    assert!(!same(&m, &matrix(json!([[1, "1"], [2.5, "2"]]))));
    assert!(!same(&m, &matrix(json!([[1, "1"], [2, "3"]]))));
}
