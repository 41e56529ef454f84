//! Region ingest through a datanode: rows/s with 1 shard and with 2, same load.
//!
//! A client thread keeps `--concurrency` write requests of `--rows` rows in flight
//! against `--regions` regions (spread over the shards), for `--requests` requests per
//! case. Every request is acknowledged only once durable (WAL group commit, fdatasync).
//!
//! ```text
//! cargo run --release -p metronome-benches --bin ingest -- --dir /path/on/the/disk
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use futures::stream::{FuturesUnordered, StreamExt};
use metronome_benches::{markdown_table, LatencyRecorder};
use metronome_core::data::{FieldColumn, FieldType, RegionId, RegionSchema, Row, TimeUnit, Value};
use metronome_core::rt::disk::Disk;
use metronome_core::rt::shard::{IoDriverChoice, ShardsConfig};
use metronome_core::write_batch::WriteBatch;
use metronome_datanode::datanode::{Datanode, DatanodeConfig};
use metronome_datanode::engine::EngineConfig;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/bench-ingest")]
    dir: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    shards: Vec<u16>,
    #[arg(long, default_value_t = 8)]
    regions: u32,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 500)]
    rows: usize,
    #[arg(long, default_value_t = 4000)]
    requests: usize,
}

fn schema() -> RegionSchema {
    RegionSchema {
        tags: vec!["__name__".into(), "instance".into(), "job".into()],
        time_index: "ts".into(),
        time_unit: TimeUnit::Millisecond,
        fields: vec![FieldColumn {
            name: "value".into(),
            field_type: FieldType::Float64,
        }],
    }
}

fn batch(request: usize, rows: usize) -> Vec<Row> {
    (0..rows)
        .map(|i| Row {
            tags: vec![
                format!("metric_{}", i % 20),
                format!("10.0.{}.{}:9100", request % 7, i % 25),
                "node".into(),
            ],
            ts: 1_700_000_000_000 + request as i64 * 15_000,
            fields: vec![Value::Float64((request * rows + i) as f64)],
        })
        .collect()
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let mut lines = Vec::new();
    let mut summaries = Vec::new();
    for &shards in &args.shards {
        let dir = args.dir.join(format!("shards-{shards}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config = DatanodeConfig {
            shards: ShardsConfig {
                count: shards,
                pin_to_cores: true,
                io_driver: IoDriverChoice::IoUring,
                uring_entries: 1024,
            },
            engine: EngineConfig::default(),
        };
        let datanode = futures::executor::block_on(Datanode::start(Disk::real(&dir), config))?;
        let handle = datanode.handle();
        let mut recorder =
            LatencyRecorder::new(format!("write of {} rows, {shards} shard(s)", args.rows));
        let started = Instant::now();
        futures::executor::block_on(async {
            for region in 0..args.regions {
                handle
                    .create_region(RegionId::new(1, region), schema())
                    .await
                    .expect("create");
            }
            let mut in_flight = FuturesUnordered::new();
            let mut sent = 0;
            while sent < args.requests || !in_flight.is_empty() {
                while sent < args.requests && in_flight.len() < args.concurrency {
                    let handle = handle.clone();
                    let rows = batch(sent, args.rows);
                    let region = RegionId::new(1, (sent as u32) % args.regions);
                    in_flight.push(async move {
                        let began = Instant::now();
                        handle
                            .write(region, WriteBatch::from_rows(rows))
                            .await
                            .expect("write");
                        began.elapsed()
                    });
                    sent += 1;
                }
                if let Some(latency) = in_flight.next().await {
                    recorder.record(latency);
                }
            }
        });
        let seconds = started.elapsed().as_secs_f64();
        recorder.end_round();
        let rows_per_second = (args.requests * args.rows) as f64 / seconds;
        lines.push(format!(
            "| {shards} | {rows_per_second:.0} | {:.0} |",
            rows_per_second / f64::from(shards)
        ));
        summaries.push(recorder.summary());
        datanode
            .into_shards()
            .stop_and_join()
            .map_err(|e| e.to_string())?;
    }
    println!(
        "## Ingest: {} requests × {} rows, {} in flight, {} regions\n",
        args.requests, args.rows, args.concurrency, args.regions
    );
    println!("{}", markdown_table(&summaries, &summaries[0].name));
    println!("| shards | rows/s | rows/s per shard |\n|---:|---:|---:|");
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
