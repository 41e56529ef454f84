//! WAL append + group commit on one shard, next to the disk's raw fdatasync latency.
//!
//! For each writer count (default 1, 8, 64) the writers append records of `--rows`
//! Prometheus-like rows each, as fast as their commits allow, for `--appends` appends per
//! round; rounds rotate the order of the cases. The peer is this disk's physical limit:
//! 4 KiB pwrite + fdatasync from one writer, measured in the same run.
//!
//! ```text
//! cargo run --release -p metronome-benches --bin wal_group_commit -- --dir /path/on/the/disk
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::cell::RefCell;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use clap::Parser;
use metronome_benches::{markdown_table, LatencyRecorder};
use metronome_core::data::{RegionId, Row, Value};
use metronome_core::rt::disk::Disk;
use metronome_core::rt::shard::{self, IoDriverChoice, ShardsConfig};
use metronome_core::rt::task;
use metronome_core::write_batch::WriteBatch;
use metronome_datanode::wal::{Wal, WalConfig};
use metronome_wire::write_batch;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "target/bench-wal")]
    dir: PathBuf,
    /// Concurrent writers per case.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    writers: Vec<usize>,
    /// Appends per case per round (split across the writers).
    #[arg(long, default_value_t = 4000)]
    appends: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Rows per append (one remote-write request to one region is typically 10s–1000s).
    #[arg(long, default_value_t = 50)]
    rows: usize,
    /// Write segments with O_DIRECT.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    direct: bool,
}

fn payload(rows: usize) -> Vec<u8> {
    let rows: Vec<Row> = (0..rows)
        .map(|i| Row {
            tags: vec![
                "http_requests_total".into(),
                format!("10.0.0.{}:9100", i % 50),
                "api".into(),
            ],
            ts: 1_700_000_000_000 + i as i64 * 15_000,
            fields: vec![Value::Float64(1000.0 + i as f64)],
        })
        .collect();
    write_batch::encode(&WriteBatch::from_rows(rows)).expect("rows of one shape")
}

/// Appends `appends` records from `writers` concurrent tasks; returns wall seconds.
async fn run_case(
    wal: &Wal,
    writers: usize,
    appends: usize,
    payload: &[u8],
    recorder: &Rc<RefCell<LatencyRecorder>>,
) -> f64 {
    let start = Instant::now();
    let per_writer = appends.div_ceil(writers);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let wal = wal.clone();
        let payload = payload.to_vec();
        let recorder = recorder.clone();
        tasks.push(task::spawn_local(async move {
            for sequence in 0..per_writer as u64 {
                let began = Instant::now();
                wal.append(
                    RegionId::new(1, writer as u32),
                    sequence + 1,
                    payload.clone(),
                )
                .await
                .expect("append");
                recorder.borrow_mut().record(began.elapsed());
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    start.elapsed().as_secs_f64()
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).map_err(|e| e.to_string())?;
    let config = ShardsConfig {
        count: 1,
        pin_to_cores: true,
        io_driver: IoDriverChoice::IoUring,
        uring_entries: 1024,
    };
    let (sender, results) = std::sync::mpsc::channel();
    let shard_args = args.clone();
    let shards = shard::start(&config, move |context| {
        let args = shard_args.clone();
        let sender = sender.clone();
        async move {
            let disk = Disk::real(args.dir.clone());
            let payload = payload(args.rows);
            let raw = Rc::new(RefCell::new(LatencyRecorder::new(
                "raw 4 KiB pwrite+fdatasync (1 writer)",
            )));
            let recorders: Vec<Rc<RefCell<LatencyRecorder>>> = args
                .writers
                .iter()
                .map(|w| {
                    Rc::new(RefCell::new(LatencyRecorder::new(format!(
                        "WAL append, {w} writers"
                    ))))
                })
                .collect();
            let mut seconds = vec![0.0f64; args.writers.len()];
            let mut wals = Vec::new();
            for (index, _) in args.writers.iter().enumerate() {
                let config = WalConfig {
                    direct_io: args.direct,
                    ..WalConfig::new(format!("case-{index}"))
                };
                let (wal, _) = Wal::open(disk.clone(), config, |_, _| {})
                    .await
                    .expect("open WAL");
                wals.push(wal);
            }
            let raw_file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(args.dir.join("raw"))
                .expect("raw file");
            let block = vec![7u8; 4096];
            for round in 0..args.rounds {
                for i in 0..=args.writers.len() {
                    let case = (round + i) % (args.writers.len() + 1);
                    if case == args.writers.len() {
                        for n in 0..args.appends / 4 {
                            let began = Instant::now();
                            raw_file
                                .write_all_at(&block, (n * 4096) as u64)
                                .expect("pwrite");
                            raw_file.sync_data().expect("fdatasync");
                            raw.borrow_mut().record(began.elapsed());
                        }
                        raw.borrow_mut().end_round();
                    } else {
                        seconds[case] += run_case(
                            &wals[case],
                            args.writers[case],
                            args.appends,
                            &payload,
                            &recorders[case],
                        )
                        .await;
                        recorders[case].borrow_mut().end_round();
                    }
                }
            }
            let mut lines = Vec::new();
            for (index, writers) in args.writers.iter().enumerate() {
                let stats = wals[index].stats();
                let appends = recorders[index].borrow().summary().count as f64;
                lines.push(format!(
                    "| {writers} | {:.0} | {:.0} | {:.1} | {:.1} |",
                    appends * args.rows as f64 / seconds[index],
                    appends / seconds[index],
                    stats.records as f64 / stats.commits.max(1) as f64,
                    stats.bytes_written as f64 / stats.commits.max(1) as f64 / 1024.0,
                ));
            }
            let mut summaries = vec![raw.borrow().summary()];
            summaries.extend(recorders.iter().map(|r| r.borrow().summary()));
            let _ = sender.send((context.driver, summaries, lines));
        }
    })
    .map_err(|e| e.to_string())?;
    let (driver, summaries, lines) = results
        .recv()
        .map_err(|_| "the benchmark shard died".to_string())?;
    shards.stop_and_join().map_err(|e| e.to_string())?;
    println!(
        "## WAL group commit: {} rows per append, {} appends per case per round, {} rounds, O_DIRECT {}, driver {driver}\n",
        args.rows, args.appends, args.rounds, args.direct
    );
    println!("{}", markdown_table(&summaries, &summaries[0].name));
    println!("| writers | rows/s | appends/s | records per commit | KiB per commit |\n|---:|---:|---:|---:|---:|");
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
