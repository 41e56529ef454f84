//! The remote-write load generator: Prometheus remote write 1.0 or 2.0 against one or
//! more running receivers, alternating between them in rounds so that machine drift hits
//! all alike. It reports samples/s, per-request ack latency percentiles (hdrhistogram)
//! and failed requests by status, with a progress bar on a terminal.
//!
//! The data (see `metronome_benches::load`): `--series` active series over `--metrics`
//! metrics shaped as counters, gauges and histogram buckets, `--labels-per-series`
//! labels, `--churn-per-tick` series replaced per scrape tick. A request carries
//! `--series-per-request` series × `--samples-per-series` samples; `--concurrency`
//! closed-loop senders keep requests in flight. The run ends after `--total-samples`
//! samples per target, or after `--duration-s` seconds per target. A request counts as
//! acknowledged on a 2xx answer.
//!
//! ```text
//! metronome standalone --data-dir /tmp/m &                 # HTTP on 127.0.0.1:4000
//! prometheus --web.enable-remote-write-receiver --storage.tsdb.path /tmp/p &
//! cargo run --release -p metronome-benches --bin remote_write -- \
//!     --target metronome=http://127.0.0.1:4000/api/v1/write \
//!     --target prometheus=http://127.0.0.1:9090/api/v1/write --total-samples 5000000
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use metronome_benches::load::{self, IngestOutcome, Protocol, Workload, BASE_LABELS};
use metronome_benches::{markdown_table, parse_targets};

#[derive(Parser)]
struct Args {
    /// `name=url` of a remote-write receiver; repeat for side-by-side runs.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Active series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Distinct metric names the series are spread over.
    #[arg(long, default_value_t = 50)]
    metrics: usize,
    /// Labels per series, `__name__` included (histogram buckets add `le`).
    #[arg(long, default_value_t = BASE_LABELS + 2)]
    labels_per_series: usize,
    #[arg(long, default_value_t = 1_000)]
    series_per_request: usize,
    #[arg(long, default_value_t = 1)]
    samples_per_series: usize,
    /// Series replaced by new ones every scrape tick.
    #[arg(long, default_value_t = 0)]
    churn_per_tick: usize,
    /// Sample time between scrape ticks.
    #[arg(long, default_value_t = 1)]
    interval_s: i64,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Samples per target (rounded up to whole scrape ticks).
    #[arg(long, default_value_t = 4_000_000, conflicts_with = "duration_s")]
    total_samples: u64,
    /// Run for about this long per target (building bodies included) instead of a fixed
    /// number of samples.
    #[arg(long)]
    duration_s: Option<f64>,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// 1.0 or 2.0.
    #[arg(long, default_value = "1.0")]
    protocol: Protocol,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let targets = parse_targets(&args.targets);
    let rounds = args.rounds.max(1);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut workload = Workload {
        series: args.series,
        metrics: args.metrics,
        labels_per_series: args.labels_per_series,
        series_per_request: args.series_per_request,
        samples_per_series: args.samples_per_series,
        churn_per_tick: args.churn_per_tick,
        interval_ms: args.interval_s * 1000,
        start_ms: 0,
        protocol: args.protocol,
    };
    if let Err(error) = workload.validate() {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let per_batch = workload.requests_per_batch();
    let total_requests = workload.requests_for_samples(args.total_samples);
    let requests_per_round = total_requests.div_ceil(rounds).div_ceil(per_batch) * per_batch;
    // Recent sample times, ending a minute ago: receivers (Prometheus among them)
    // refuse samples far in the past. A duration run's length is unknown; it starts an
    // hour back.
    let end_ms = now_ms - now_ms % workload.interval_ms - 60_000;
    workload.start_ms = match args.duration_s {
        Some(_) => end_ms - 3_600_000,
        None => {
            end_ms
                - (workload.ticks_for_requests(requests_per_round * rounds) - 1)
                    * workload.interval_ms
        }
    };
    // In a duration run, bodies are built in chunks of this many requests between
    // measured sends, and each target continues from its own next request.
    let chunk_requests = (per_batch * 20).max(per_batch);
    let mut next_index = vec![0usize; targets.len()];
    let mut totals: Vec<IngestOutcome> = targets
        .iter()
        .map(|(name, _)| IngestOutcome::empty(name))
        .collect();
    for round in 0..rounds {
        let mut shared_bodies = None;
        for offset in 0..targets.len() {
            let index = (round + offset) % targets.len();
            let (name, url) = &targets[index];
            match args.duration_s {
                None => {
                    let first = round * requests_per_round;
                    let bodies = shared_bodies.get_or_insert_with(|| {
                        workload.bodies(first..first + requests_per_round, 2)
                    });
                    let samples = bodies.iter().map(|b| b.1).sum();
                    let progress = load::progress_bar(samples, name);
                    let outcome = load::send(
                        &workload,
                        bodies,
                        first,
                        std::slice::from_ref(url),
                        name,
                        args.concurrency,
                        &progress,
                    );
                    progress.finish_and_clear();
                    report_round(round, name, &outcome);
                    totals[index].absorb(outcome);
                }
                Some(duration_s) => {
                    let budget = Duration::from_secs_f64(duration_s / rounds as f64);
                    let started = Instant::now();
                    let progress = load::progress_bar(0, name);
                    while started.elapsed() < budget {
                        let first = next_index[index];
                        let bodies = workload.bodies(first..first + chunk_requests, 2);
                        progress.inc_length(bodies.iter().map(|b| b.1).sum());
                        let outcome = load::send(
                            &workload,
                            &bodies,
                            first,
                            std::slice::from_ref(url),
                            name,
                            args.concurrency,
                            &progress,
                        );
                        next_index[index] += chunk_requests;
                        report_round(round, name, &outcome);
                        totals[index].absorb(outcome);
                    }
                    progress.finish_and_clear();
                }
            }
        }
    }
    println!(
        "remote write {}, {} series ({} labels each, churn {} per tick), {} series × {} samples \
         per request, {} senders, {rounds} rounds per target\n",
        match args.protocol {
            Protocol::V1 => "1.0",
            Protocol::V2 => "2.0",
        },
        args.series,
        args.labels_per_series,
        args.churn_per_tick,
        args.series_per_request,
        args.samples_per_series,
        args.concurrency,
    );
    let summaries: Vec<_> = totals.iter().map(|t| t.recorder.summary()).collect();
    println!("{}", markdown_table(&summaries, &targets[0].0));
    println!("| target | samples acknowledged | wall s | samples/s | p90 ms | failed requests |");
    println!("|---|---:|---:|---:|---:|---|");
    for total in &totals {
        let errors: Vec<String> = total
            .errors
            .iter()
            .map(|(kind, count)| format!("{kind}: {count}"))
            .collect();
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {} |",
            total.recorder.name,
            total.samples_acked,
            total.wall.as_secs_f64(),
            total.samples_per_second(),
            total.recorder.summary().p90_us / 1e3,
            if errors.is_empty() {
                "0".to_string()
            } else {
                errors.join(", ")
            }
        );
    }
    for total in &totals {
        if let Some(error) = &total.first_error {
            println!("\n{}: first failure: {error}", total.recorder.name);
        }
    }
    if totals
        .iter()
        .any(|t| t.error_count() > 0 || t.samples_acked == 0)
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn report_round(round: usize, name: &str, outcome: &IngestOutcome) {
    eprintln!(
        "round {round} {name}: {} samples in {:.2} s, {} failed requests",
        outcome.samples_acked,
        outcome.wall.as_secs_f64(),
        outcome.error_count()
    );
}
