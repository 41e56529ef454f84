//! Remote-write decode on one core against its floors: how many samples per second one
//! core turns from request bodies into validated series, next to what snappy alone and
//! snappy plus a plain prost decode of the same bodies take.
//!
//! Cases, alternating in rounds (the order rotates):
//! - `snappy`: decompression only (the floor of any decoder);
//! - `snappy + prost`: decompression and prost's generated decode into
//!   `prompb.WriteRequest` (the floor of a protobuf decoder that allocates its strings);
//! - `metronome 1.0` / `metronome 2.0`: `remote_write::decode`, with the limits, label
//!   checks and sorting a request gets before it is written.
//!
//! ```text
//! cargo run --release -p metronome-benches --bin decode -- --rounds 5
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use metronome_benches::load::{Protocol, Workload, BASE_LABELS};
use metronome_benches::{markdown_table, LatencyRecorder};
use metronome_frontend::remote_write::{self, v1};
use prost::Message;

#[derive(Parser)]
struct Args {
    /// Series per request (one sample each, as Prometheus sends).
    #[arg(long, default_value_t = 1_000)]
    series_per_request: usize,
    #[arg(long, default_value_t = BASE_LABELS + 4)]
    labels_per_series: usize,
    /// Distinct requests (decoded in turn).
    #[arg(long, default_value_t = 50)]
    requests: usize,
    /// Decodes per case per round.
    #[arg(long, default_value_t = 500)]
    decodes: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

const CASES: [&str; 4] = ["snappy", "snappy + prost", "metronome 1.0", "metronome 2.0"];

fn main() {
    let args = Args::parse();
    let workload = |protocol| Workload {
        series: args.series_per_request * args.requests,
        metrics: 50,
        labels_per_series: args.labels_per_series,
        series_per_request: args.series_per_request,
        samples_per_series: 1,
        churn_per_tick: 0,
        interval_ms: 15_000,
        start_ms: 1_700_000_000_000,
        protocol,
    };
    let v1_bodies = workload(Protocol::V1).bodies(0..args.requests, 2);
    let v2_bodies = workload(Protocol::V2).bodies(0..args.requests, 2);
    let samples_per_request = v1_bodies[0].1;
    let mut recorders: Vec<LatencyRecorder> = CASES
        .iter()
        .map(|name| LatencyRecorder::new(*name))
        .collect();
    for round in 0..args.rounds {
        for offset in 0..CASES.len() {
            let case = (round + offset) % CASES.len();
            let recorder = &mut recorders[case];
            for i in 0..args.decodes {
                let (v1_body, v2_body) = (
                    &v1_bodies[i % args.requests].0,
                    &v2_bodies[i % args.requests].0,
                );
                let started = Instant::now();
                match case {
                    0 => {
                        black_box(remote_write::decompress(v1_body).expect("valid snappy"));
                    }
                    1 => {
                        let bytes = remote_write::decompress(v1_body).expect("valid snappy");
                        black_box(v1::WriteRequest::decode(&bytes[..]).expect("valid protobuf"));
                    }
                    2 => {
                        black_box(
                            remote_write::decode(remote_write::Protocol::V1, v1_body)
                                .expect("a valid request"),
                        );
                    }
                    _ => {
                        black_box(
                            remote_write::decode(remote_write::Protocol::V2, v2_body)
                                .expect("a valid request"),
                        );
                    }
                }
                recorder.record(started.elapsed());
            }
            recorder.end_round();
        }
    }
    let summaries: Vec<_> = recorders.iter().map(LatencyRecorder::summary).collect();
    let body_bytes: usize = v1_bodies.iter().map(|b| b.0.len()).sum::<usize>() / args.requests;
    let v2_body_bytes: usize = v2_bodies.iter().map(|b| b.0.len()).sum::<usize>() / args.requests;
    println!(
        "remote-write decode on one core: {} series × 1 sample per request, {} labels per series; \
         compressed bodies {body_bytes} B (1.0) / {v2_body_bytes} B (2.0) on average; {} decodes \
         per case × {} rounds\n",
        args.series_per_request, args.labels_per_series, args.decodes, args.rounds
    );
    println!("{}", markdown_table(&summaries, "snappy + prost"));
    println!("| case | samples/s per core (median of round p50s) | vs snappy + prost |");
    println!("|---|---:|---:|");
    let rate = |s: &metronome_benches::LatencySummary| {
        samples_per_request as f64 / (s.median_of_round_p50_us / 1e6)
    };
    let floor = rate(&summaries[1]);
    for summary in &summaries {
        println!(
            "| {} | {:.0} | {:.2}× |",
            summary.name,
            rate(summary),
            rate(summary) / floor
        );
    }
}
