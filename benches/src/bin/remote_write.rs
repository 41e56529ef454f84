//! A simple Prometheus remote-write 1.0 load generator: samples/s and per-request ack
//! latency against one or more running receivers, alternating between them in rounds so
//! that machine drift hits all alike.
//!
//! Each request carries one sample of `--series-per-request` series (a slice of a
//! scrape of `--series` series); every tick of the scrape clock advances the sample time
//! by one second. `--concurrency` threads keep requests in flight. A request counts as
//! acknowledged on a 2xx answer.
//!
//! ```text
//! metronome standalone --data-dir /tmp/m &                 # HTTP on 127.0.0.1:4000
//! prometheus --web.enable-remote-write-receiver --storage.tsdb.path /tmp/p &
//! cargo run --release -p metronome-benches --bin remote_write -- \
//!     --target metronome=http://127.0.0.1:4000/api/v1/write \
//!     --target prometheus=http://127.0.0.1:9090/api/v1/write
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use metronome_benches::{markdown_table, parse_targets, LatencyRecorder};
use metronome_frontend::remote_write::v1;
use prost::Message;

#[derive(Parser)]
struct Args {
    /// `name=url` of a remote-write receiver; repeat for side-by-side runs.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    #[arg(long, default_value_t = 1_000)]
    series_per_request: usize,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Requests per target per round.
    #[arg(long, default_value_t = 400)]
    requests: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Distinct metric names the series are spread over.
    #[arg(long, default_value_t = 50)]
    metrics: usize,
}

/// The compressed body of request `index` of a run whose clock starts at `start_ms`.
fn body(args: &Args, index: usize, start_ms: i64) -> (Vec<u8>, usize) {
    let per_tick = args.series.div_ceil(args.series_per_request);
    let tick = index / per_tick;
    let first = (index % per_tick) * args.series_per_request;
    let last = (first + args.series_per_request).min(args.series);
    let ts = start_ms + tick as i64 * 1000;
    let timeseries: Vec<v1::TimeSeries> = (first..last)
        .map(|series| v1::TimeSeries {
            labels: vec![
                v1::Label {
                    name: "__name__".into(),
                    value: format!("bench_metric_{}", series % args.metrics),
                },
                v1::Label {
                    name: "instance".into(),
                    value: format!("host-{:05}:9100", series / args.metrics),
                },
                v1::Label {
                    name: "job".into(),
                    value: "bench".into(),
                },
            ],
            samples: vec![v1::Sample {
                // A counter that grows by the series' own rate.
                value: (tick * (1 + series % 7)) as f64,
                timestamp: ts,
            }],
            histograms: vec![],
        })
        .collect();
    let samples = timeseries.len();
    let request = v1::WriteRequest {
        timeseries,
        metadata: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compresses any input");
    (body, samples)
}

struct Outcome {
    recorder: LatencyRecorder,
    samples: u64,
    errors: Vec<String>,
    wall: Duration,
}

/// Sends `args.requests` requests to `url` from `args.concurrency` threads.
fn run_round(args: &Args, url: &str, name: &str, first_index: usize, start_ms: i64) -> Outcome {
    // Bodies are built before the clock starts: the generator's cost is not measured.
    let bodies: Vec<(Vec<u8>, usize)> = (0..args.requests)
        .map(|i| body(args, first_index + i, start_ms))
        .collect();
    let bodies = Arc::new(bodies);
    let per_tick = args.series.div_ceil(args.series_per_request);
    let samples = Arc::new(AtomicU64::new(0));
    let recorder = Arc::new(Mutex::new(LatencyRecorder::new(name)));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let concurrency = args.concurrency;
    let started = Instant::now();
    let threads: Vec<_> = (0..args.concurrency)
        .map(|thread| {
            let (bodies, samples, recorder, errors, agent, url) = (
                bodies.clone(),
                samples.clone(),
                recorder.clone(),
                errors.clone(),
                agent.clone(),
                url.to_string(),
            );
            // A thread owns a fixed set of slices and sends them tick by tick, so every
            // series' samples arrive in time order (Prometheus refuses them otherwise).
            let mine = move |index: &usize| (index % per_tick) % concurrency == thread;
            std::thread::spawn(move || {
                for (body, count) in (0..bodies.len()).filter(mine).map(|i| &bodies[i]) {
                    let sent = Instant::now();
                    let response = agent
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .header("Content-Encoding", "snappy")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .send(&body[..]);
                    let latency = sent.elapsed();
                    match response {
                        Ok(response) if response.status().is_success() => {
                            recorder.lock().unwrap().record(latency);
                            samples.fetch_add(*count as u64, Ordering::Relaxed);
                        }
                        Ok(response) => errors
                            .lock()
                            .unwrap()
                            .push(format!("HTTP {}", response.status().as_u16())),
                        Err(error) => errors.lock().unwrap().push(error.to_string()),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a sender thread panicked");
    }
    let wall = started.elapsed();
    let mut recorder =
        std::mem::replace(&mut *recorder.lock().unwrap(), LatencyRecorder::new(name));
    recorder.end_round();
    let errors = std::mem::take(&mut *errors.lock().unwrap());
    Outcome {
        recorder,
        samples: samples.load(Ordering::Relaxed),
        errors,
        wall,
    }
}

fn main() {
    let args = Args::parse();
    let targets = parse_targets(&args.targets);
    // Recent sample times: receivers (Prometheus among them) refuse samples far in the past.
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    let mut totals: Vec<(LatencyRecorder, u64, Duration, Vec<String>)> = targets
        .iter()
        .map(|(name, _)| {
            (
                LatencyRecorder::new(name.clone()),
                0,
                Duration::ZERO,
                Vec::new(),
            )
        })
        .collect();
    for round in 0..args.rounds {
        for (index, (name, url)) in targets.iter().enumerate() {
            let outcome = run_round(&args, url, name, round * args.requests, start_ms);
            eprintln!(
                "round {round} {name}: {} samples in {:.2} s, {} errors",
                outcome.samples,
                outcome.wall.as_secs_f64(),
                outcome.errors.len()
            );
            let total = &mut totals[index];
            total.0.merge_round(&outcome.recorder);
            total.1 += outcome.samples;
            total.2 += outcome.wall;
            total.3.extend(outcome.errors);
        }
    }
    let summaries: Vec<_> = totals.iter().map(|(r, ..)| r.summary()).collect();
    println!(
        "remote write 1.0, {} series, {} series per request, {} threads, {} requests x {} rounds per target\n",
        args.series, args.series_per_request, args.concurrency, args.requests, args.rounds
    );
    println!("{}", markdown_table(&summaries, &targets[0].0));
    println!("| target | samples acknowledged | wall s | samples/s | errors |");
    println!("|---|---:|---:|---:|---|");
    for (recorder, samples, wall, errors) in &totals {
        let mut kinds: Vec<String> = errors.clone();
        kinds.sort();
        kinds.dedup();
        println!(
            "| {} | {} | {:.2} | {:.0} | {} |",
            recorder.name,
            samples,
            wall.as_secs_f64(),
            *samples as f64 / wall.as_secs_f64().max(1e-9),
            if errors.is_empty() {
                "0".to_string()
            } else {
                format!("{} ({})", errors.len(), kinds.join(", "))
            }
        );
    }
    if totals.iter().any(|t| !t.3.is_empty() || t.1 == 0) {
        std::process::exit(1);
    }
}
