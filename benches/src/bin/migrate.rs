//! Region migration under load: `metronome cluster` (three metasrv replicas, three
//! datanodes, `replicas = 2`), one table of one region loaded with `--samples` samples
//! by line protocol, then, while a writer keeps writing small batches and timing each
//! acknowledgement, the region moves twice with `ADMIN migrate_region`: to the datanode
//! holding no copy of it (a new copy caught up first: snapshot, install, the writes
//! since, then the hand-over) and back to its follower (a hand-over only). Reported:
//! each migration's time, and the writes' latency while it ran — the longest one is the
//! write pause it caused. Finally every acknowledged row is counted back.
//!
//! ```text
//! cargo build --release -p metronome -p metronome-benches
//! target/release/migrate --samples 1000000
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use metronome_benches::systems::{Kind, System};
use metronome_benches::LatencyRecorder;

#[derive(Parser)]
struct Args {
    /// The `metronome` binary [default: next to this one].
    #[arg(long)]
    metronome_bin: Option<PathBuf>,
    /// Where the cluster's data directories go (emptied first).
    #[arg(long, default_value = "target/bench-migrate")]
    data_root: PathBuf,
    /// Samples loaded into the region before it moves.
    #[arg(long, default_value_t = 1_000_000)]
    samples: u64,
    /// Series they are spread over.
    #[arg(long, default_value_t = 1_000)]
    series: u64,
    /// Rows per write of the writer that runs during the migrations.
    #[arg(long, default_value_t = 100)]
    rows_per_write: u64,
}

const TABLE: &str = "migrate_bench";
/// Timestamps (seconds) of the loaded rows start here; the writer's come after.
const TS_BASE_S: u64 = 1_700_000_000;

fn main() -> Result<(), String> {
    let args = Args::parse();
    let binary = metronome_benches::metronome_binary(args.metronome_bin.as_deref())?;
    std::fs::create_dir_all(&args.data_root).map_err(|error| error.to_string())?;
    let kind = Kind::MetronomeCluster {
        frontends: 1,
        replicas: 2,
    };
    let dir = args.data_root.join(kind.name());
    let log = args.data_root.join(format!("{}.log", kind.name()));
    let system = System::start(kind, &binary, &dir, &log)?;
    let base = system.base.clone();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(180)))
        .build()
        .into();
    let sql = |statement: &str| metronome_benches::sql_rows(&agent, &base, statement);
    sql(&format!(
        "CREATE TABLE {TABLE} (host STRING, ts TIMESTAMP TIME INDEX, v DOUBLE, \
         PRIMARY KEY (host)) WITH (partitions = 1, replicas = 2)"
    ))?;

    // The load: line protocol, 10k rows a request, seconds apart per series.
    let write = |lines: &str| -> Result<bool, String> {
        let reply = agent
            .post(&format!("{base}/write?db=public&precision=s"))
            .header("Content-Type", "text/plain")
            .send(lines.as_bytes())
            .map_err(|error| error.to_string())?;
        Ok(reply.status() == 204)
    };
    let loading = Instant::now();
    let per_series = args.samples / args.series;
    let mut batch = String::new();
    let mut rows = 0u64;
    for step in 0..per_series {
        for host in 0..args.series {
            batch.push_str(&format!(
                "{TABLE},host=h{host} v={step} {}\n",
                TS_BASE_S + step
            ));
            rows += 1;
            if rows.is_multiple_of(10_000) {
                if !write(&batch)? {
                    return Err("a load write was refused".to_string());
                }
                batch.clear();
            }
        }
    }
    if !batch.is_empty() && !write(&batch)? {
        return Err("a load write was refused".to_string());
    }
    let loaded = per_series * args.series;
    println!(
        "loaded {loaded} samples in {:.1} s",
        loading.elapsed().as_secs_f64()
    );

    // The writer: small batches back to back, each timed, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let window: Arc<Mutex<Option<LatencyRecorder>>> = Arc::default();
    let writer = {
        let (stop, acknowledged, window) = (stop.clone(), acknowledged.clone(), window.clone());
        let (base, rows_per_write, series) = (base.clone(), args.rows_per_write, args.series);
        let agent = agent.clone();
        std::thread::spawn(move || {
            let mut step = per_series;
            let mut failed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut lines = String::new();
                for row in 0..rows_per_write {
                    let host = (step * rows_per_write + row) % series;
                    let ts = TS_BASE_S + per_series + step * rows_per_write + row;
                    lines.push_str(&format!("{TABLE},host=h{host} v=-1 {ts}\n"));
                }
                step += 1;
                let started = Instant::now();
                let ok = agent
                    .post(&format!("{base}/write?db=public&precision=s"))
                    .header("Content-Type", "text/plain")
                    .send(lines.as_bytes())
                    .is_ok_and(|reply| reply.status() == 204);
                let took = started.elapsed();
                if ok {
                    acknowledged.fetch_add(rows_per_write, Ordering::Relaxed);
                } else {
                    failed += 1;
                }
                if let Some(recorder) = window.lock().unwrap().as_mut() {
                    recorder.record(took);
                }
            }
            failed
        })
    };

    let peers = |role: &str| -> Result<(String, u64), String> {
        let rows = sql(&format!(
            "SELECT region_id, peer_id FROM information_schema.region_peers \
             WHERE table_name = '{TABLE}' AND role = '{role}'"
        ))?;
        let row = &rows[0];
        Ok((
            row[0].as_str().unwrap_or_default().to_string(),
            row[1].as_u64().unwrap_or_default(),
        ))
    };
    let (region, leader) = peers("LEADER")?;
    let (_, follower) = peers("FOLLOWER")?;
    let outsider = (1..=3)
        .find(|id| *id != leader && *id != follower)
        .expect("three datanodes");
    let mut report = Vec::new();
    for (what, to) in [
        (
            "to the datanode with no copy (catch-up, hand-over)",
            outsider,
        ),
        ("to its follower (hand-over only)", follower),
    ] {
        std::thread::sleep(Duration::from_secs(2));
        *window.lock().unwrap() = Some(LatencyRecorder::new(what));
        let started = Instant::now();
        let moved = sql(&format!("ADMIN migrate_region('{region}', {to})"))?;
        let wall = started.elapsed();
        let recorder = window.lock().unwrap().take().expect("recording");
        let histogram = recorder.histogram();
        report.push(format!(
            "| {what} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} |",
            moved[0][5],
            wall.as_secs_f64() * 1000.0,
            histogram.len(),
            histogram.value_at_quantile(0.5) as f64 / 1e6,
            histogram.value_at_quantile(0.99) as f64 / 1e6,
            histogram.max() as f64 / 1e6,
        ));
        // Settled: the region has its two copies again before the next move.
        let settled = Instant::now();
        loop {
            let copies = sql(&format!(
                "SELECT count(*) FROM information_schema.region_peers \
                 WHERE table_name = '{TABLE}' AND role <> 'LEARNER'"
            ))?;
            if copies[0][0] == 2 {
                break;
            }
            if settled.elapsed() > Duration::from_secs(300) {
                return Err("the region did not get its second copy back".to_string());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let failed = writer.join().map_err(|_| "the writer panicked")?;
    let written = acknowledged.load(Ordering::Relaxed);
    let counted = sql(&format!("SELECT count(*) FROM {TABLE}"))?[0][0]
        .as_u64()
        .unwrap_or_default();
    system.stop()?;
    println!(
        "\nregion {region} of {loaded} samples, moved while writes of {} rows went on \
         (latency of the writes made during each move, ms)\n",
        args.rows_per_write
    );
    println!("| move | took_ms (server) | wall ms | writes | p50 | p99 | max (pause) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for line in report {
        println!("{line}");
    }
    println!(
        "\nrows counted back: {counted}; loaded {loaded} + acknowledged during the moves \
         {written}; writes refused: {failed}"
    );
    if counted < loaded + written {
        return Err(format!(
            "{} acknowledged rows are missing",
            loaded + written - counted
        ));
    }
    Ok(())
}
