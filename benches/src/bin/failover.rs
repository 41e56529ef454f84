//! Failover time with real processes: a metasrv, two datanodes (one shard each) and a
//! frontend, started as separate `metronome` processes; one table of two regions with
//! two copies each (`replicas = 2`), so each datanode leads one region and follows the
//! other. A writer sends a small line-protocol batch touching both regions every
//! `--interval-ms`; each run kills the datanode leading the table's first region with
//! SIGKILL and measures the time from the kill to the first write acknowledged after
//! it (every region writable again: the metasrv waited out the dead datanode's lease
//! and promoted the follower). Then the killed datanode restarts on its directory,
//! catches up, and the next run starts once every region has its two copies again
//! and leadership is even (the metasrv's rebalancing). Finally every acknowledged row is counted back.
//!
//! ```text
//! cargo build --release -p metronome -p metronome-benches
//! target/release/failover --runs 20
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    /// The `metronome` binary [default: next to this one].
    #[arg(long)]
    metronome_bin: Option<PathBuf>,
    /// Where the roles' data directories and logs go (emptied first).
    #[arg(long, default_value = "target/bench-failover")]
    data_root: PathBuf,
    /// Kills measured.
    #[arg(long, default_value_t = 20)]
    runs: u32,
    /// Pause between the writer's batches.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
}

const TABLE: &str = "failover_bench";
/// Rows per write: hosts spread over both regions.
const HOSTS: u64 = 16;
/// How long a killed datanode's regions may take to have their copies back and
/// leadership even again before the bench gives up.
const SETTLE_MAX: Duration = Duration::from_secs(180);

/// A role's process; killed when dropped.
struct Role(Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary` with `args`, its output in `log`, and waits for its ready line;
/// returns the process and that line.
fn start(binary: &Path, args: &[&str], log: &Path) -> Result<(Role, String), String> {
    let file = std::fs::File::create(log).map_err(|error| format!("{log:?}: {error}"))?;
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|error| error.to_string())?)
        .stderr(file)
        .spawn()
        .map_err(|error| format!("{binary:?}: {error}"))?;
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|line| line.contains(" ready") && line.contains("role="))
        {
            return Ok((Role(child), line.to_string()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{args:?} exited with {status}: see {log:?}"));
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return Err(format!("{args:?} was not ready within 60 s: see {log:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_addr() -> Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
    Ok(listener
        .local_addr()
        .map_err(|error| error.to_string())?
        .to_string())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let binary = metronome_benches::metronome_binary(args.metronome_bin.as_deref())?;
    let _ = std::fs::remove_dir_all(&args.data_root);
    std::fs::create_dir_all(&args.data_root).map_err(|error| error.to_string())?;
    let dir = |name: &str| args.data_root.join(name);
    let log = |name: &str| args.data_root.join(format!("{name}.log"));
    let metasrv_addr = free_addr()?;
    let (_metasrv, _) = start(
        &binary,
        &[
            "metasrv",
            "--node-id",
            "1",
            "--rpc-addr",
            &metasrv_addr,
            "--data-dir",
            dir("metasrv").to_str().unwrap_or_default(),
        ],
        &log("metasrv"),
    )?;
    let datanode = |id: u64, run: u32| -> Result<Role, String> {
        let path = dir(&format!("datanode-{id}"));
        let (role, _) = start(
            &binary,
            &[
                "datanode",
                "--node-id",
                &id.to_string(),
                "--rpc-addr",
                "127.0.0.1:0",
                "--metasrv",
                &metasrv_addr,
                "--shards",
                "1",
                "--pin-to-cores",
                "false",
                "--data-dir",
                path.to_str().unwrap_or_default(),
            ],
            &log(&format!("datanode-{id}-{run}")),
        )?;
        Ok(role)
    };
    let mut datanodes = [Some(datanode(1, 0)?), Some(datanode(2, 0)?)];
    let (_frontend, ready) = start(
        &binary,
        &[
            "frontend",
            "--metasrv",
            &metasrv_addr,
            "--http-addr",
            "127.0.0.1:0",
            "--postgres-addr",
            "127.0.0.1:0",
        ],
        &log("frontend"),
    )?;
    let http = ready
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http="))
        .ok_or_else(|| format!("no http= in {ready:?}"))?
        .to_string();
    let base = format!("http://{http}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let sql = |statement: &str| metronome_benches::sql_rows(&agent, &base, statement);
    sql(&format!(
        "CREATE TABLE {TABLE} (host STRING, ts TIMESTAMP TIME INDEX, v DOUBLE, \
         PRIMARY KEY (host)) WITH (partitions = 2, replicas = 2)"
    ))?;
    // Settled: every region (the table's and the metric regions) has its two copies,
    // no learner, and the datanodes lead as many regions each, give or take one.
    let settled = || -> Result<bool, String> {
        let rows = sql(
            "SELECT peer_id, role, count(*) FROM information_schema.region_peers \
             GROUP BY peer_id, role ORDER BY peer_id, role",
        )?;
        let count = |peer: u64, role: &str| {
            rows.as_array()
                .into_iter()
                .flatten()
                .find(|row| row[0] == peer && row[1] == role)
                .and_then(|row| row[2].as_u64())
                .unwrap_or(0)
        };
        let (lead, follow) = (
            [count(1, "LEADER"), count(2, "LEADER")],
            [count(1, "FOLLOWER"), count(2, "FOLLOWER")],
        );
        Ok(count(1, "LEARNER") + count(2, "LEARNER") == 0
            && lead[0] == follow[1]
            && lead[1] == follow[0]
            && lead[0].abs_diff(lead[1]) <= 1)
    };
    let wait_settled = || -> Result<Duration, String> {
        let started = Instant::now();
        while !settled()? {
            if started.elapsed() > SETTLE_MAX {
                return Err(format!("the regions did not settle within {SETTLE_MAX:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(started.elapsed())
    };
    wait_settled()?;

    // The writer: one batch touching both regions every interval; records when each
    // acknowledged write was sent and answered.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, acked, sent) = (stop.clone(), acked.clone(), sent.clone());
        let (base, agent, interval) = (base.clone(), agent.clone(), args.interval_ms);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut lines = String::new();
                for host in 0..HOSTS {
                    lines.push_str(&format!("{TABLE},host=h{host} v={n} {n}\n"));
                }
                let ok = agent
                    .post(&format!("{base}/write?db=public&precision=s"))
                    .header("Content-Type", "text/plain")
                    .send(lines.as_bytes())
                    .is_ok_and(|reply| reply.status() == 204);
                if ok {
                    acked.lock().unwrap().push((n, Instant::now()));
                }
                n += 1;
                sent.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(interval));
            }
        })
    };

    let mut failover_ms = Histogram::<u64>::new(3).map_err(|error| error.to_string())?;
    let mut settle_ms = Vec::new();
    for run in 1..=args.runs {
        std::thread::sleep(Duration::from_secs(2));
        let leader = sql(&format!(
            "SELECT peer_id FROM information_schema.region_peers \
             WHERE table_name = '{TABLE}' AND role = 'LEADER' ORDER BY region_id LIMIT 1"
        ))?[0][0]
            .as_u64()
            .ok_or("no leader")?;
        let index = leader as usize - 1;
        let mut killed = datanodes[index].take().ok_or("the leader is not running")?;
        killed.0.kill().map_err(|error| error.to_string())?;
        let at = Instant::now();
        killed.0.wait().map_err(|error| error.to_string())?;
        // The first acknowledgement of a write answered after the kill.
        let first = loop {
            let after = acked
                .lock()
                .unwrap()
                .iter()
                .find(|(_, w)| *w > at)
                .map(|(_, w)| *w);
            if let Some(when) = after {
                break when;
            }
            if at.elapsed() > Duration::from_secs(120) {
                return Err(format!("run {run}: no write acknowledged within 120 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = first.duration_since(at);
        failover_ms
            .record(took.as_millis() as u64)
            .map_err(|error| error.to_string())?;
        datanodes[index] = Some(datanode(leader, run)?);
        let settle = wait_settled()?;
        settle_ms.push(settle.as_millis());
        println!(
            "run {run}: killed datanode {leader}; writes acknowledged again after {} ms; \
             copies back and leadership even {} ms after its restart",
            took.as_millis(),
            settle.as_millis()
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().map_err(|_| "the writer panicked")?;
    let acknowledged: Vec<u64> = acked.lock().unwrap().iter().map(|(n, _)| *n).collect();
    let counts = sql(&format!(
        "SELECT v, count(*) FROM {TABLE} GROUP BY v ORDER BY v"
    ))?;
    let counted: std::collections::BTreeMap<u64, u64> = counts
        .as_array()
        .ok_or("no rows")?
        .iter()
        .map(|row| {
            (
                row[0].as_f64().unwrap_or(-1.0) as u64,
                row[1].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let lost: Vec<u64> = acknowledged
        .iter()
        .filter(|n| counted.get(n) != Some(&HOSTS))
        .copied()
        .collect();
    settle_ms.sort_unstable();
    println!(
        "\n{} kills: failover (kill -9 → writes acknowledged again) p50 {} ms, p99 {} ms, \
         min {} ms, max {} ms; copies back and leadership even after the restart: median \
         {} ms",
        failover_ms.len(),
        failover_ms.value_at_quantile(0.5),
        failover_ms.value_at_quantile(0.99),
        failover_ms.min(),
        failover_ms.max(),
        settle_ms.get(settle_ms.len() / 2).copied().unwrap_or(0),
    );
    println!(
        "writes sent {}, acknowledged {}; acknowledged writes missing rows: {}",
        sent.load(Ordering::Relaxed),
        acknowledged.len(),
        lost.len()
    );
    if !lost.is_empty() {
        return Err(format!(
            "acknowledged writes lost rows: {:?}",
            &lost[..lost.len().min(10)]
        ));
    }
    Ok(())
}
