//! A Prometheus query-API load generator: `query_range` latency of dashboard-like
//! queries against one or more running servers on the same data, alternating between
//! them in rounds so that machine drift hits all alike.
//!
//! Unless `--skip-load`, it first remote-writes the same data set to every target
//! (`--instances` hosts, each with request counters by method/status, a request-duration
//! histogram, CPU-mode counters and a memory gauge; `--hours` of samples every
//! `--interval-s` seconds, ending now). Then each query of the dashboard set is sent
//! `--requests` times per round by `--concurrency` threads, over the last hour at a 15 s
//! step (Grafana's choice for a 1 h panel at common widths). A request counts on HTTP 200
//! with `"status":"success"`; the number of series each target answers is printed so
//! that a disagreement is seen.
//!
//! ```text
//! metronome standalone --data-dir /tmp/m &
//! prometheus --web.enable-remote-write-receiver --storage.tsdb.path /tmp/p &
//! cargo run --release -p metronome-benches --bin query_range -- \
//!     --target metronome=http://127.0.0.1:4000 --target prometheus=http://127.0.0.1:9090
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use metronome_benches::{dashboard, markdown_table, parse_targets, LatencyRecorder};
use metronome_frontend::remote_write::v1;
use prost::Message;

#[derive(Parser)]
struct Args {
    /// `name=base url` of a Prometheus-API server; repeat for side-by-side runs.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Hosts in the data set (each has 4 + 7 + 3 + 1 = 15 series).
    #[arg(long, default_value_t = 200)]
    instances: usize,
    #[arg(long, default_value_t = 2.0)]
    hours: f64,
    #[arg(long, default_value_t = 15)]
    interval_s: u64,
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Requests per query per target per round.
    #[arg(long, default_value_t = 20)]
    requests: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Query the data already there instead of writing it first.
    #[arg(long)]
    skip_load: bool,
    /// The end of the data set, Unix seconds (with --skip-load: the earlier run's).
    #[arg(long)]
    end_s: Option<i64>,
}

/// The dashboard set: (short name, query).
const QUERIES: &[(&str, &str)] = &[
    ("rate by job", "sum by (job) (rate(bench_requests_total[5m]))"),
    (
        "p99 latency",
        "histogram_quantile(0.99, sum by (le, job) (rate(bench_request_duration_seconds_bucket[5m])))",
    ),
    (
        "cpu busy %",
        "100 * (1 - avg by (instance) (rate(bench_cpu_seconds_total{mode=\"idle\"}[5m])))",
    ),
    ("top memory", "topk(5, max_over_time(bench_memory_bytes[5m]))"),
    ("error ratio", "sum(rate(bench_requests_total{status=\"500\"}[5m])) / sum(rate(bench_requests_total[5m]))"),
    ("one host raw", "bench_memory_bytes{instance=\"host-0007\"}"),
];

const BUCKETS: [&str; 7] = ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "+Inf"];

fn label(name: &str, value: impl Into<String>) -> v1::Label {
    v1::Label {
        name: name.to_string(),
        value: value.into(),
    }
}

/// Every series' sample at tick `tick` (ms `ts`).
fn tick_series(args: &Args, tick: u64, ts: i64) -> Vec<v1::TimeSeries> {
    let mut out = Vec::new();
    let sample = |value: f64| {
        vec![v1::Sample {
            value,
            timestamp: ts,
        }]
    };
    let t = tick as f64;
    for host in 0..args.instances {
        let instance = format!("host-{host:04}");
        let job = if host % 2 == 0 { "api" } else { "web" };
        let h = host as f64;
        for (i, (method, status)) in [
            ("GET", "200"),
            ("GET", "500"),
            ("POST", "200"),
            ("POST", "500"),
        ]
        .iter()
        .enumerate()
        {
            let per_tick = if *status == "500" {
                0.1
            } else {
                5.0 + h % 7.0 + i as f64
            };
            out.push(v1::TimeSeries {
                labels: vec![
                    label("__name__", "bench_requests_total"),
                    label("instance", instance.clone()),
                    label("job", job),
                    label("method", *method),
                    label("status", *status),
                ],
                samples: sample((t * per_tick).floor()),
                histograms: vec![],
            });
        }
        let requests = t * (5.0 + h % 7.0);
        for (i, le) in BUCKETS.iter().enumerate() {
            let share = [0.2, 0.45, 0.7, 0.85, 0.97, 0.995, 1.0][i];
            out.push(v1::TimeSeries {
                labels: vec![
                    label("__name__", "bench_request_duration_seconds_bucket"),
                    label("instance", instance.clone()),
                    label("job", job),
                    label("le", *le),
                ],
                samples: sample((requests * share).floor()),
                histograms: vec![],
            });
        }
        for (i, mode) in ["idle", "user", "system"].iter().enumerate() {
            let share = [0.7, 0.2, 0.1][i];
            out.push(v1::TimeSeries {
                labels: vec![
                    label("__name__", "bench_cpu_seconds_total"),
                    label("instance", instance.clone()),
                    label("job", job),
                    label("mode", *mode),
                ],
                samples: sample(
                    t * args.interval_s as f64 * share * (1.0 + (t / 40.0 + h).sin() * 0.1),
                ),
                histograms: vec![],
            });
        }
        out.push(v1::TimeSeries {
            labels: vec![
                label("__name__", "bench_memory_bytes"),
                label("instance", instance.clone()),
                label("job", job),
            ],
            samples: sample(1e9 + h * 1e6 + (t / 20.0 + h).sin() * 5e7),
            histograms: vec![],
        });
    }
    out
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// Writes the data set to `base`, a few ticks per request, in time order.
fn load(args: &Args, base: &str, end_ms: i64) {
    let interval_ms = args.interval_s as i64 * 1000;
    let ticks = (args.hours * 3600.0 / args.interval_s as f64) as u64;
    let start_ms = end_ms - ticks as i64 * interval_ms;
    let agent = agent();
    let url = format!("{base}/api/v1/write");
    let ticks_per_request = 4;
    let started = Instant::now();
    let mut samples = 0;
    for first in (0..=ticks).step_by(ticks_per_request) {
        let timeseries: Vec<v1::TimeSeries> = (first
            ..=(first + ticks_per_request as u64 - 1).min(ticks))
            .flat_map(|tick| tick_series(args, tick, start_ms + tick as i64 * interval_ms))
            .collect();
        samples += timeseries.len();
        let body = snap::raw::Encoder::new()
            .compress_vec(
                &v1::WriteRequest {
                    timeseries,
                    metadata: vec![],
                }
                .encode_to_vec(),
            )
            .expect("snappy compresses any input");
        let response = agent
            .post(&url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .send(&body[..])
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let text = response.into_body().read_to_string().unwrap_or_default();
            panic!("{url} refused the data set: HTTP {status}: {text}");
        }
    }
    eprintln!(
        "loaded {samples} samples into {base} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Sends one query `requests` times from `concurrency` threads over the last hour.
fn run_round(
    args: &Args,
    base: &str,
    name: &str,
    query: &str,
    end_s: i64,
) -> (LatencyRecorder, usize, Vec<String>) {
    let range = dashboard::Range {
        start_s: (end_s - 3600) as f64,
        end_s: end_s as f64,
        step_s: 15.0,
    };
    let outcome = dashboard::run(base, name, query, range, args.requests, args.concurrency);
    // Every failure counts; the first one's message stands for all.
    let first = outcome.first_error.unwrap_or_default();
    let errors = (0..outcome.errors).map(|_| first.clone()).collect();
    (outcome.recorder, outcome.series.unwrap_or(0), errors)
}

fn main() {
    let args = Args::parse();
    let targets = parse_targets(&args.targets);
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // A round end keeps every target's data identical (same sample times).
    let end_s = args.end_s.unwrap_or(now_s - now_s % 60);
    if !args.skip_load {
        for (_, base) in &targets {
            load(&args, base, end_s * 1000);
        }
    }
    println!(
        "query_range over the last hour of {} h of data ({} hosts, {} series, {} s interval), step 15 s, \
         {} threads, {} requests per query x {} rounds per target; data end {end_s}\n",
        args.hours,
        args.instances,
        args.instances * 15,
        args.interval_s,
        args.concurrency,
        args.requests,
        args.rounds
    );
    let mut failed = false;
    for (short, query) in QUERIES {
        let mut totals: Vec<(LatencyRecorder, usize, Vec<String>)> = targets
            .iter()
            .map(|(name, _)| (LatencyRecorder::new(name.clone()), 0, Vec::new()))
            .collect();
        for _ in 0..args.rounds {
            for (index, (name, base)) in targets.iter().enumerate() {
                let (recorder, series, errors) = run_round(&args, base, name, query, end_s);
                let total = &mut totals[index];
                total.0.merge_round(&recorder);
                total.1 = series;
                total.2.extend(errors);
            }
        }
        println!("### {short}: `{query}`\n");
        let summaries: Vec<_> = totals.iter().map(|(r, ..)| r.summary()).collect();
        println!("{}", markdown_table(&summaries, &targets[0].0));
        for (recorder, series, errors) in &totals {
            println!(
                "- {}: {series} series in the answer, {} errors{}",
                recorder.name,
                errors.len(),
                errors
                    .first()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
            failed |= !errors.is_empty() || recorder.summary().count == 0;
        }
        if totals.windows(2).any(|pair| pair[0].1 != pair[1].1) {
            println!("- the targets disagree on the number of series");
            failed = true;
        }
        println!();
    }
    if failed {
        std::process::exit(1);
    }
}
