//! DDL latency: `CREATE TABLE` through a frontend's `POST /v1/sql`, one statement at a
//! time, against standalone (a one-voter raft, one fsync per command) and against
//! `metronome cluster` (three metasrv replicas: a command commits once two of them synced
//! it), in alternating rounds. Each statement also places the table's regions and creates
//! them on the datanodes, as a user's `CREATE TABLE` does.
//!
//! ```text
//! cargo build --release -p metronome -p metronome-benches
//! target/release/ddl --tables 200 --rounds 4
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use metronome_benches::systems::{Kind, System};
use metronome_benches::{markdown_table, LatencyRecorder};

#[derive(Parser)]
struct Args {
    /// The `metronome` binary [default: next to this one].
    #[arg(long)]
    metronome_bin: Option<PathBuf>,
    /// Where the systems' data directories go (emptied first).
    #[arg(long, default_value = "target/bench-ddl")]
    data_root: PathBuf,
    /// Tables created per system per round.
    #[arg(long, default_value_t = 200)]
    tables: usize,
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let binary = metronome_benches::metronome_binary(args.metronome_bin.as_deref())?;
    std::fs::create_dir_all(&args.data_root).map_err(|error| error.to_string())?;
    let kinds = [
        Kind::Metronome,
        Kind::MetronomeCluster {
            frontends: 1,
            replicas: 1,
        },
    ];
    let mut systems = Vec::new();
    for kind in kinds {
        let dir = args.data_root.join(kind.name());
        let log = args.data_root.join(format!("{}.log", kind.name()));
        systems.push(System::start(kind, &binary, &dir, &log)?);
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut recorders: Vec<LatencyRecorder> = systems
        .iter()
        .map(|system| LatencyRecorder::new(system.kind.name()))
        .collect();
    for round in 0..args.rounds {
        // The order rotates, so neither system always runs on a machine the other warmed.
        for offset in 0..systems.len() {
            let index = (round + offset) % systems.len();
            let system = &systems[index];
            let url = format!("{}/v1/sql", system.base);
            for table in 0..args.tables {
                let statement = format!(
                    "CREATE TABLE ddl_{round}_{table} (host STRING, ts TIMESTAMP TIME INDEX, \
                     v DOUBLE, PRIMARY KEY (host))"
                );
                let started = Instant::now();
                let mut reply = agent
                    .post(&url)
                    .header("Content-Type", "text/plain")
                    .send(statement.as_bytes())
                    .map_err(|error| format!("{}: {error}", system.kind.name()))?;
                let elapsed = started.elapsed();
                if reply.status() != 200 {
                    let body = reply.body_mut().read_to_string().unwrap_or_default();
                    return Err(format!("{}: {statement}: {body}", system.kind.name()));
                }
                recorders[index].record(elapsed);
            }
            recorders[index].end_round();
        }
    }
    for system in systems {
        system.stop()?;
    }
    let summaries: Vec<_> = recorders.iter().map(LatencyRecorder::summary).collect();
    println!(
        "CREATE TABLE latency, {} tables x {} rounds per system\n",
        args.tables, args.rounds
    );
    println!("{}", markdown_table(&summaries, Kind::Metronome.name()));
    Ok(())
}
