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
//! With `--engine-dir DIR`, the same samples go through a datanode instead (one shard, one
//! region, on the real disk at DIR): written tick by tick in requests of
//! `--series-per-request` series, flushed as the memtable budget says, compacted as the
//! default configuration does, then flushed and compacted until nothing is left to merge.
//! The report is then the bytes of the SSTs that remain: what the engine keeps on disk
//! after compaction, not what an ideal day-long file would take.
//!
//! ```text
//! cargo run --release -p metronome-benches --bin sst_size
//! cargo run --release -p metronome-benches --bin sst_size -- --engine-dir target/sst-size
//! ```
#![allow(clippy::disallowed_methods)]

use clap::Parser;
use metronome_core::data::{FieldColumn, FieldType, RegionSchema, Row, TimeUnit, Value};
use metronome_core::rt::rand::{seeded, Rng};
use metronome_core::write_batch::WriteBatch;
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
    /// Write through a datanode on this directory (emptied first) instead of encoding
    /// files directly.
    #[arg(long)]
    engine_dir: Option<std::path::PathBuf>,
    /// With `--engine-dir`: the compaction window, in hours (default: the engine's).
    #[arg(long)]
    compaction_window_h: Option<i64>,
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
        time_unit: TimeUnit::Millisecond,
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
    // For `--engine-dir`: each series' samples, in series order.
    let mut samples_of: Vec<Vec<(i64, f64)>> = Vec::new();
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
        if args.engine_dir.is_some() {
            for run in rows.chunk_by(|a, b| a.1.tags == b.1.tags) {
                samples_of.push(
                    run.iter()
                        .map(|(_, row)| match row.fields[0] {
                            Value::Float64(v) => (row.ts, v),
                            _ => unreachable!("values are floats"),
                        })
                        .collect(),
                );
            }
            continue;
        }
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
    if let Some(dir) = &args.engine_dir {
        return through_engine(dir, &schema, &series, &samples_of, &args);
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

/// Writes the samples through a datanode, compacts until nothing is left to merge, and
/// reports the bytes of the SSTs on disk.
fn through_engine(
    dir: &std::path::Path,
    schema: &RegionSchema,
    series: &[Vec<String>],
    samples_of: &[Vec<(i64, f64)>],
    args: &Args,
) -> Result<(), String> {
    use metronome_core::data::RegionId;
    use metronome_core::rt::disk::Disk;
    use metronome_core::rt::shard::{IoDriverChoice, ShardsConfig};
    use metronome_datanode::datanode::{Datanode, DatanodeConfig};
    use metronome_datanode::engine::EngineConfig;

    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let config = DatanodeConfig {
        shards: ShardsConfig {
            count: 1,
            pin_to_cores: false,
            io_driver: IoDriverChoice::Auto,
            uring_entries: 256,
        },
        engine: EngineConfig {
            compaction_window_ms: args
                .compaction_window_h
                .map_or(EngineConfig::default().compaction_window_ms, |h| {
                    h * 3600 * 1000
                }),
            ..EngineConfig::default()
        },
    };
    let window_h = config.engine.compaction_window_ms / 3_600_000;
    let datanode = futures::executor::block_on(Datanode::start(Disk::real(dir), config))?;
    let handle = datanode.handle();
    let region = RegionId::new(1, 0);
    let total: u64 = samples_of.iter().map(|s| s.len() as u64).sum();
    let (files, bytes) = futures::executor::block_on(async {
        handle
            .create_region(region, schema.clone())
            .await
            .map_err(|e| e.to_string())?;
        for tick in 0..args.samples_per_series {
            for request in series
                .iter()
                .zip(samples_of)
                .collect::<Vec<_>>()
                .chunks(args.series_per_request)
            {
                let rows: Vec<Row> = request
                    .iter()
                    .map(|(tags, samples)| Row {
                        tags: (*tags).clone(),
                        ts: samples[tick].0,
                        fields: vec![Value::Float64(samples[tick].1)],
                    })
                    .collect();
                handle
                    .write(region, WriteBatch::from_rows(rows))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        handle.flush_all().await.map_err(|e| e.to_string())?;
        while handle.compact(region).await.map_err(|e| e.to_string())? > 0 {}
        let mut files = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(path) = pending.pop() {
            for entry in std::fs::read_dir(&path).map_err(|e| e.to_string())? {
                let entry = entry.map_err(|e| e.to_string())?;
                if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
                    pending.push(entry.path());
                } else if entry.path().extension().is_some_and(|e| e == "parquet") {
                    files.push(entry.metadata().map_err(|e| e.to_string())?.len());
                }
            }
        }
        Ok::<_, String>((files.len(), files.iter().sum::<u64>()))
    })?;
    println!(
        "## SST size through the engine, {} profile: {} series × {} samples, {window_h} h \
         compaction windows ({} SSTs at the end)",
        args.profile,
        series.len(),
        args.samples_per_series,
        files
    );
    println!();
    println!("| samples | SST bytes | bytes/sample |\n|---:|---:|---:|");
    println!("| {total} | {bytes} | {:.3} |", bytes as f64 / total as f64);
    Ok(())
}
