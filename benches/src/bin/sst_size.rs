//! Bytes per sample on disk for a Prometheus-like data set, in Metronome's SST format.
//!
//! 10k series (`--metrics` × `--instances`), one sample every 15 s for 24 h, written as
//! SSTs of `--series-per-file` series each (one compacted day per file); the report is
//! total file bytes / samples, and the share of each column. Sequences are what the
//! datanode assigns: one per write request, each scrape tick sending every series in
//! requests of `--series-per-request`. Two value profiles:
//!
//! - `harsh`: half counters with uniformly random increments (0–19), half gauges on a
//!   uniformly random walk (±4096 per sample); every timestamp jittered by 0–20 ms. Close
//!   to the entropy worst case: no encoder gets far below ~1.1 B/sample of values here.
//! - `realistic`: what node_exporter-like targets produce: 30% constant gauges, 20% gauges
//!   that change now and then, 10% noisy gauges, 40% counters at a steady rate with small
//!   noise; 95% of timestamps exactly on schedule (Prometheus snaps scrape timestamps that
//!   are within 2 ms of it), the rest late by up to 20 ms.
//!
//! ```text
//! cargo run --release -p metronome-benches --bin sst_size
//! ```

use clap::Parser;
use metronome_core::data::{FieldColumn, FieldType, RegionSchema, Row, Value};
use metronome_core::rt::rand::{seeded, Rng};
use metronome_datanode::sst;
use parquet::file::metadata::ParquetMetaDataReader;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    metrics: usize,
    #[arg(long, default_value_t = 100)]
    instances: usize,
    #[arg(long, default_value_t = 24 * 3600 / 15)]
    samples_per_series: usize,
    #[arg(long, default_value_t = 500)]
    series_per_file: usize,
    #[arg(long, default_value_t = 1000)]
    series_per_request: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// `harsh` or `realistic` (see above).
    #[arg(long, default_value = "realistic")]
    profile: String,
}

/// How one series' values evolve.
#[derive(Clone, Copy)]
enum Shape {
    Constant,
    Steps,
    NoisyGauge,
    Counter { rate: f64 },
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let schema = RegionSchema {
        tags: vec!["__name__".into(), "instance".into(), "job".into()],
        time_index: "ts".into(),
        fields: vec![FieldColumn {
            name: "value".into(),
            field_type: FieldType::Float64,
        }],
    };
    let mut rng = seeded(args.seed);
    let mut series: Vec<Vec<String>> = Vec::new();
    for metric in 0..args.metrics {
        for instance in 0..args.instances {
            series.push(vec![
                format!(
                    "metric_{metric:03}_{}",
                    if metric % 2 == 0 { "total" } else { "bytes" }
                ),
                format!("10.0.{}.{}:9100", instance / 250, instance % 250),
                "node".into(),
            ]);
        }
    }
    series.sort();
    let start_ms: i64 = 1_700_000_000_000;
    let (mut bytes, mut samples, mut files) = (0u64, 0u64, 0u64);
    let mut column_bytes: Vec<(String, u64)> = Vec::new();
    let requests_per_tick = series.len().div_ceil(args.series_per_request) as u64;
    for (file, chunk) in series.chunks(args.series_per_file).enumerate() {
        let mut rows: Vec<(u64, Row)> = Vec::with_capacity(chunk.len() * args.samples_per_series);
        for (index, tags) in chunk.iter().enumerate() {
            let request = ((file * args.series_per_file + index) / args.series_per_request) as u64;
            let harsh = args.profile == "harsh";
            let shape = if harsh {
                if tags[0].ends_with("total") {
                    Shape::Counter { rate: -1.0 }
                } else {
                    Shape::NoisyGauge
                }
            } else {
                match rng.gen_range(0..10) {
                    0..=2 => Shape::Constant,
                    3..=4 => Shape::Steps,
                    5 => Shape::NoisyGauge,
                    _ => Shape::Counter {
                        rate: f64::from(rng.gen_range(1u32..200)) / 15.0,
                    },
                }
            };
            let mut value: f64 = match shape {
                Shape::Counter { .. } => 0.0,
                _ => rng.gen_range(1.0e3..1.0e9_f64).round(),
            };
            for n in 0..args.samples_per_series {
                let on_time = !harsh && rng.gen_bool(0.95);
                let jitter: i64 = if on_time { 0 } else { rng.gen_range(0..20) };
                match shape {
                    Shape::Constant => {}
                    Shape::Steps => {
                        if rng.gen_bool(0.01) {
                            value = rng.gen_range(1.0e3..1.0e9_f64).round();
                        }
                    }
                    Shape::NoisyGauge => {
                        value = (value + rng.gen_range(-4096.0..4096.0_f64))
                            .max(0.0)
                            .round()
                    }
                    Shape::Counter { rate } => {
                        if rng.gen_bool(0.0001) {
                            value = 0.0; // a restart resets the counter
                        }
                        value += if rate < 0.0 {
                            f64::from(rng.gen_range(0u32..20))
                        } else {
                            (rate * 15.0 + rng.gen_range(-2.0..2.0_f64))
                                .max(0.0)
                                .round()
                        };
                    }
                }
                rows.push((
                    n as u64 * requests_per_tick + request + 1,
                    Row {
                        tags: tags.clone(),
                        ts: start_ms + n as i64 * 15_000 + jitter,
                        fields: vec![Value::Float64(value)],
                    },
                ));
            }
        }
        samples += rows.len() as u64;
        let (encoded, _) = sst::encode(&schema, files, &rows)?;
        bytes += encoded.len() as u64;
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(encoded))
            .map_err(|e| e.to_string())?;
        for group in metadata.row_groups() {
            for (index, column) in group.columns().iter().enumerate() {
                if column_bytes.len() <= index {
                    column_bytes.push((column.column_path().string(), 0));
                }
                column_bytes[index].1 += column.compressed_size().max(0) as u64;
            }
        }
        files += 1;
    }
    println!(
        "## SST size, {} profile: {} series × {} samples (15 s, 24 h), {} files",
        args.profile,
        series.len(),
        args.samples_per_series,
        files
    );
    println!();
    println!("| samples | bytes | bytes/sample |\n|---:|---:|---:|");
    println!(
        "| {samples} | {bytes} | {:.3} |",
        bytes as f64 / samples as f64
    );
    println!();
    println!("| column | bytes/sample |\n|---|---:|");
    for (name, column) in column_bytes {
        println!("| {name} | {:.3} |", column as f64 / samples as f64);
    }
    Ok(())
}
