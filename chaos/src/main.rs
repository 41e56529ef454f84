//! `metronome-chaos`: a real cluster (3 metasrv replicas, 3 datanodes, 2 frontends) from
//! the built `metronome` binary, each process in its own network namespace, a remote-write
//! load through both frontends, and real faults chosen by a seed: kill -9 and restart of
//! any process (with `--replicas 2`, a datanode down past its lease half of the time, so
//! that its regions fail over) (the metasrv leader included, with DDL through a frontend while it is
//! down), SIGSTOP past a datanode's lease and SIGCONT, a process cut off both ways (its
//! link down) or one way (blackhole routes from its namespace), and added latency (`tc
//! netem delay`, or a `tbf` rate limit where the kernel has no netem). After the faults heal it checks, through each frontend, every
//! acknowledged sample and that nothing else reads back, and that the tables created
//! while a metasrv replica was down exist.
//!
//! ```text
//! cargo run -p metronome-chaos -- --binary target/debug/metronome --faults 10 --seed 1
//! ```
//!
//! Namespaces need root; without it the processes share loopback and only process faults
//! are injected (the log says so).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use metronome_chaos::processes::{self, address, Cluster, Role, HTTP_PORT};
use metronome_chaos::topology::{Layout, Topology};
use metronome_chaos::workload::{self, Ledger};

/// A datanode's region lease: three heartbeats and a second.
const LEASE: Duration = Duration::from_secs(16);
/// After the faults heal, a write through each frontend succeeds within this.
const RECOVERY_MAX: Duration = Duration::from_secs(60);

#[derive(Parser)]
struct Args {
    /// The `metronome` binary to run.
    #[arg(long, default_value = "target/debug/metronome")]
    binary: PathBuf,
    /// Where the processes keep their data and logs (emptied first).
    #[arg(long, default_value = "/tmp/metronome-chaos")]
    dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to inject, one after another.
    #[arg(long, default_value_t = 10)]
    faults: u32,
    /// Share loopback instead of a namespace per process (no network faults).
    #[arg(long)]
    loopback: bool,
    /// Copies of each region: with 2 or more, a killed datanode stays down past its lease
    /// half of the time, and its regions fail over.
    #[arg(long, default_value_t = 1)]
    replicas: u8,
}

/// xorshift64*: the fault schedule's random numbers, from the seed alone.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => println!("chaos: passed"),
        Err(error) => {
            eprintln!("chaos: FAILED: {error}");
            std::process::exit(1);
        }
    }
}

/// Which metasrv replica leads, as frontend `http` reports it.
fn metasrv_leader(http: &str) -> Option<u64> {
    let response = workload::agent(Duration::from_secs(10))
        .get(format!("http://{http}/v1/cluster"))
        .call()
        .ok()?;
    let json: serde_json::Value =
        serde_json::from_str(&response.into_body().read_to_string().ok()?).ok()?;
    json["nodes"].as_array()?.iter().find_map(|node| {
        (node["role"] == "metasrv" && node["leader"] == true)
            .then(|| node["id"].as_u64())
            .flatten()
    })
}

/// Runs SQL through frontend `http`; its JSON reply, or the error.
fn sql(http: &str, text: &str) -> Result<serde_json::Value, String> {
    let response = workload::agent(Duration::from_secs(30))
        .post(format!("http://{http}/v1/sql"))
        .header("Content-Type", "text/plain")
        .send(text.as_bytes())
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().read_to_string().unwrap_or_default();
    if status == 200 {
        serde_json::from_str(&body).map_err(|error| error.to_string())
    } else {
        Err(format!("{status}: {body}"))
    }
}

fn run(args: &Args) -> Result<(), String> {
    let binary = std::fs::canonicalize(&args.binary)
        .map_err(|error| format!("the binary {}: {error}", args.binary.display()))?;
    processes::fresh_dir(&args.dir)?;
    let names = ["m1", "m2", "m3", "d1", "d2", "d3", "f1", "f2"];
    let layout = if args.loopback {
        Layout::Loopback
    } else {
        Layout::Namespaces
    };
    let (topology, fallback) = Topology::build(&names, layout);
    if let Some(reason) = fallback {
        println!("chaos: no network namespaces here ({reason}): loopback, process faults only");
    }
    let mut cluster = Cluster::new(&binary, &topology, &args.dir, 3, 3, 2, args.replicas);
    let outcome = chaos(args, &topology, &mut cluster);
    cluster.kill_all();
    topology.tear_down();
    if outcome.is_err() {
        println!("chaos: the processes' logs are in {}", args.dir.display());
    }
    outcome
}

fn chaos(args: &Args, topology: &Topology, cluster: &mut Cluster) -> Result<(), String> {
    let started = Instant::now();
    // Metasrv replicas first (together: they elect among themselves), then datanodes,
    // then frontends, as `metronome cluster` does.
    // A replica of three logs that it is ready once it serves, before any election,
    // so starting them one after another works.
    for id in 1..=3 {
        cluster.start(cluster.find(Role::Metasrv, id))?;
    }
    for id in 1..=3 {
        cluster.start(cluster.find(Role::Datanode, id))?;
    }
    for id in 1..=2 {
        cluster.start(cluster.find(Role::Frontend, id))?;
    }
    let https: Vec<String> = (1..=2)
        .map(|id| address(topology, Role::Frontend, id, HTTP_PORT))
        .collect();
    println!(
        "chaos: cluster up in {:.1} s ({:?}); frontends at {https:?}",
        started.elapsed().as_secs_f64(),
        topology.layout
    );

    let base_ms = workload::now_ms();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = https
        .iter()
        .enumerate()
        .map(|(index, http)| {
            workload::start_writer(
                format!("w{}", index + 1),
                http.clone(),
                base_ms,
                ledger.clone(),
                stop.clone(),
            )
        })
        .collect();

    let mut rng = Rng::new(args.seed);
    let mut tables = Vec::new();
    let network = topology.layout == Layout::Namespaces;
    for fault in 1..=args.faults {
        thread::sleep(rng.millis(1000, 3000));
        let kinds = if network { 8 } else { 5 };
        let hold = rng.millis(2000, 8000);
        let pick = |rng: &mut Rng, role: Role, count: u64| cluster.find(role, 1 + rng.below(count));
        let what = match rng.below(kinds) {
            0 => {
                let index = pick(&mut rng, Role::Datanode, 3);
                cluster.kill(index);
                // Past its lease half of the time when regions have copies: they fail over.
                let down = if args.replicas > 1 && rng.below(2) == 0 {
                    LEASE + rng.millis(2000, 6000)
                } else {
                    rng.millis(200, 3000)
                };
                thread::sleep(down);
                cluster.start(index)?;
                format!(
                    "kill -9 of {}, down {:.1} s, restarted",
                    cluster.processes[index].name,
                    down.as_secs_f64()
                )
            }
            1 | 2 => {
                // The leader, or any replica; DDL goes through while it is down.
                let leader = metasrv_leader(&https[0]);
                let id = match leader {
                    Some(id) if rng.below(2) == 0 => id,
                    _ => 1 + rng.below(3),
                };
                let index = cluster.find(Role::Metasrv, id);
                cluster.kill(index);
                let table = format!("chaos_ddl_{fault}");
                let statement = format!(
                    "CREATE TABLE {table} (host STRING, ts TIMESTAMP TIME INDEX, v DOUBLE, \
                     PRIMARY KEY (host))"
                );
                let since = Instant::now();
                let created = loop {
                    match sql(&https[rng.below(2) as usize], &statement) {
                        Ok(_) => break since.elapsed(),
                        Err(error) if since.elapsed() > Duration::from_secs(30) => {
                            return Err(format!(
                                "CREATE TABLE failed for 30 s with metasrv {id} down: {error}"
                            ))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(500)),
                    }
                };
                tables.push(table);
                thread::sleep(rng.millis(200, 3000));
                cluster.start(index)?;
                format!(
                    "kill -9 of metasrv {id} (leader {leader:?}), DDL took {:.1} s, restarted",
                    created.as_secs_f64()
                )
            }
            3 => {
                let index = pick(&mut rng, Role::Frontend, 2);
                cluster.kill(index);
                thread::sleep(rng.millis(200, 2000));
                cluster.start(index)?;
                format!("kill -9 of {}, restarted", cluster.processes[index].name)
            }
            4 => {
                let index = pick(&mut rng, Role::Datanode, 3);
                let paused = LEASE + rng.millis(1000, 5000);
                cluster.signal(index, libc::SIGSTOP);
                thread::sleep(paused);
                cluster.signal(index, libc::SIGCONT);
                format!(
                    "SIGSTOP of {} for {:.1} s (past its lease), SIGCONT",
                    cluster.processes[index].name,
                    paused.as_secs_f64()
                )
            }
            kind => {
                let index = rng.below(8) as usize;
                let name = cluster.processes[index].name.clone();
                let place = processes::place_name(
                    cluster.processes[index].role,
                    cluster.processes[index].id,
                );
                let what = match kind {
                    5 => {
                        topology.partition(&place)?;
                        "cut off both ways"
                    }
                    6 => {
                        topology.drop_outbound(&place)?;
                        "cut off outbound"
                    }
                    _ => topology.delay(&place, 20 + rng.below(180))?,
                };
                thread::sleep(hold);
                topology.heal(&place)?;
                format!("{name}: {what} for {:.1} s", hold.as_secs_f64())
            }
        };
        let acknowledged = ledger.lock().unwrap().acknowledged.len();
        println!(
            "chaos: fault {fault}/{}: {what} (at {:.0} s; {acknowledged} samples acknowledged)",
            args.faults,
            started.elapsed().as_secs_f64()
        );
    }

    // Healed: writes go through each frontend again within the bound.
    let healed = Instant::now();
    for http in &https {
        let agent = workload::agent(Duration::from_secs(10));
        loop {
            let body = probe_body();
            match workload::remote_write(&agent, http, &body) {
                Ok(()) => break,
                Err(error) if healed.elapsed() > RECOVERY_MAX => {
                    return Err(format!(
                        "no write through {http} within {RECOVERY_MAX:?} of healing: {error}"
                    ))
                }
                Err(_) => thread::sleep(Duration::from_millis(500)),
            }
        }
    }
    println!(
        "chaos: writes through both frontends again {:.1} s after the last fault healed",
        healed.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.join();
    }
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let end_ms = workload::now_ms() + 1000;
    println!(
        "chaos: {} samples attempted, {} acknowledged, {} writes failed",
        ledger.attempted.len(),
        ledger.acknowledged.len(),
        ledger.failed_writes
    );
    if ledger.acknowledged.is_empty() {
        return Err("no sample was acknowledged".into());
    }
    for http in &https {
        let read = workload::read_back(http, base_ms, end_ms)?;
        let verdict = workload::check(&ledger, &read);
        println!(
            "chaos: through {http}: {} samples read, {} acknowledged lost, {} phantoms",
            verdict.read,
            verdict.lost.len(),
            verdict.phantoms.len()
        );
        if !verdict.lost.is_empty() || !verdict.phantoms.is_empty() {
            return Err(format!(
                "through {http}: lost {:?}, phantoms {:?}",
                &verdict.lost[..verdict.lost.len().min(5)],
                &verdict.phantoms[..verdict.phantoms.len().min(5)]
            ));
        }
        for table in &tables {
            sql(http, &format!("SELECT count(*) FROM {table}")).map_err(|error| {
                format!("table {table}, created while a metasrv was down: {error}")
            })?;
        }
    }
    println!(
        "chaos: {} faults in {:.0} s; {} tables created with a metasrv down, all there",
        args.faults,
        started.elapsed().as_secs_f64(),
        tables.len()
    );
    Ok(())
}

/// A remote write that is not part of the ledger: a probe that writes go through.
fn probe_body() -> Vec<u8> {
    use metronome_frontend::remote_write::v1;
    use prost::Message;
    let request = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: vec![v1::Label {
                name: "__name__".into(),
                value: "chaos_probe".into(),
            }],
            samples: vec![v1::Sample {
                value: 1.0,
                timestamp: workload::now_ms(),
            }],
            histograms: vec![],
        }],
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compresses any input")
}
