//! The side-by-side comparison: starts Metronome (standalone) and its peers (Prometheus
//! with its remote-write receiver, VictoriaMetrics) on fresh data directories on the
//! same disk, sends each the same remote-write load and the same dashboard queries in
//! alternating rounds, and reports samples/s, ack and query latency percentiles, peak
//! RSS, CPU seconds, bytes on disk per sample after each system's flush, durability, and
//! ratios against Metronome: `report.md`, `report.json`, `hdr/`, `plots/` in `--out`.
//!
//! `benches/run` builds the release binaries, installs the peers, and calls this.
//!
//! ```text
//! cargo build --release -p metronome -p metronome-benches
//! target/release/run --out target/bench-report            # the full run
//! target/release/run --quick                              # the CI smoke run (≤ 3 min)
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use metronome_benches::dashboard::{self, QueryOutcome};
use metronome_benches::load::{self, IngestOutcome, Protocol, Workload};
use metronome_benches::report::{self, RunInfo, SystemResult};
use metronome_benches::systems::{self, Kind, System};

#[derive(Parser)]
#[command(about = "Metronome side by side with Prometheus and VictoriaMetrics")]
struct Args {
    /// The systems to run, in the first round's order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "metronome,prometheus,victoria-metrics"
    )]
    systems: Vec<Kind>,
    /// The `metronome` binary (default: next to this one, so a release build runs
    /// against a release build).
    #[arg(long)]
    metronome_bin: Option<PathBuf>,
    /// The `metronome` binary of another commit, run as system `metronome-baseline`
    /// (`--systems metronome,metronome-baseline`): a change measured before and after in
    /// one run, the report's ratios being this build's over the baseline's.
    #[arg(long)]
    baseline_bin: Option<PathBuf>,
    #[arg(long, default_value = "prometheus")]
    prometheus_bin: PathBuf,
    #[arg(long, default_value = "victoria-metrics")]
    victoria_metrics_bin: PathBuf,
    /// Where the systems' data directories go (emptied first; one disk for all).
    #[arg(long, default_value = "target/bench-data")]
    data_root: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "target/bench-report")]
    out: PathBuf,
    /// The CI smoke run: a small load, two rounds (well under 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Active series.
    #[arg(long, default_value_t = 20_000)]
    series: usize,
    #[arg(long, default_value_t = 40)]
    metrics: usize,
    #[arg(long, default_value_t = 8)]
    labels_per_series: usize,
    #[arg(long, default_value_t = 1_000)]
    series_per_request: usize,
    #[arg(long, default_value_t = 1)]
    samples_per_series: usize,
    /// Series replaced every scrape tick (default: 0.1 % of the series).
    #[arg(long)]
    churn_per_tick: Option<usize>,
    /// Scrape interval in sample time.
    #[arg(long, default_value_t = 10)]
    interval_s: i64,
    /// Samples sent to every system (rounded up to whole scrape ticks).
    #[arg(long, default_value_t = 20_000_000)]
    total_samples: u64,
    /// Closed-loop remote-write senders per system.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Rounds the ingest and every panel's queries are split into; systems alternate
    /// between rounds and the order rotates.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Requests per panel per system per round.
    #[arg(long, default_value_t = 10)]
    query_requests: usize,
    #[arg(long, default_value_t = 2)]
    query_concurrency: usize,
    /// Remote-write protocol for Metronome (the Debian peers speak 1.0 only).
    #[arg(long, default_value = "1.0")]
    metronome_protocol: Protocol,
    /// Record a `perf` profile of Metronome during its ingest rounds into the output
    /// directory, and one of its queries (`perf-metronome-{ingest,query}.data` and the
    /// top of `perf report` next to each).
    #[arg(long)]
    profile: bool,
    /// The commit the binaries were built from, for the report (default: this
    /// directory's `git rev-parse --short HEAD`).
    #[arg(long)]
    commit: Option<String>,
}

impl Args {
    fn apply_quick(&mut self) {
        if self.quick {
            self.series = 2_000;
            self.metrics = 20;
            self.series_per_request = 500;
            self.total_samples = 2_000 * 60;
            self.rounds = 2;
            self.query_requests = 2;
        }
    }
}

fn sh(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Cores, memory, and the disk and filesystem under `dir`.
fn machine(dir: &Path) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let disk = sh(
        "df",
        &["--output=source,fstype", &dir.display().to_string()],
    )
    .and_then(|text| {
        text.lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    })
    .unwrap_or_default();
    let kernel = sh("uname", &["-r"]).unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory_gib:.0} GiB, disk {disk}, kernel {kernel}")
}

/// `perf record` on a process until dropped.
struct Profiler {
    child: Child,
    data: PathBuf,
}

impl Profiler {
    /// Records `pid` into `<out>/perf-metronome-<phase>.data`.
    fn start(pid: u32, out: &Path, phase: &str) -> Result<Profiler, String> {
        let data = out
            .canonicalize()
            .map_err(|e| format!("{}: {e}", out.display()))?
            .join(format!("perf-metronome-{phase}.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "499", "-p", &pid.to_string(), "-o"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start perf: {error}"))?;
        Ok(Profiler { child, data })
    }

    /// Stops recording and writes the top of the flat profile next to the data.
    fn finish(mut self) -> Result<PathBuf, String> {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().map_err(|e| e.to_string())?;
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--sort",
                "dso,symbol",
                "--percent-limit",
                "0.5",
                "-i",
            ])
            .arg(&self.data)
            .output()
            .map_err(|error| format!("cannot run perf report: {error}"))?;
        let path = self.data.with_extension("txt");
        std::fs::write(&path, &report.stdout).map_err(|e| e.to_string())?;
        Ok(path)
    }
}

fn run(mut args: Args) -> Result<bool, String> {
    args.apply_quick();
    if args.systems.is_empty() {
        return Err("no systems to run".into());
    }
    let metronome_bin = match &args.metronome_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("metronome"),
    };
    if args.systems.contains(&Kind::MetronomeBaseline) && args.baseline_bin.is_none() {
        return Err("system metronome-baseline needs --baseline-bin".into());
    }
    let binary = |kind: Kind| -> PathBuf {
        match kind {
            Kind::Metronome | Kind::MetronomeCluster { .. } => metronome_bin.clone(),
            Kind::MetronomeBaseline => args.baseline_bin.clone().expect("checked above"),
            Kind::Prometheus => args.prometheus_bin.clone(),
            Kind::VictoriaMetrics => args.victoria_metrics_bin.clone(),
        }
    };
    std::fs::create_dir_all(&args.data_root)
        .map_err(|e| format!("{}: {e}", args.data_root.display()))?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let data_root = args
        .data_root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.data_root.display()))?;

    let mut workload = Workload {
        series: args.series,
        metrics: args.metrics,
        labels_per_series: args.labels_per_series,
        series_per_request: args.series_per_request,
        samples_per_series: args.samples_per_series,
        churn_per_tick: args.churn_per_tick.unwrap_or(args.series / 1000),
        interval_ms: args.interval_s * 1000,
        start_ms: 0,
        protocol: Protocol::V1,
    };
    workload.validate()?;
    let per_batch = workload.requests_per_batch();
    if !per_batch.is_multiple_of(args.concurrency) {
        eprintln!(
            "note: {per_batch} requests per scrape tick do not divide among {} senders; \
             some senders carry more",
            args.concurrency
        );
    }
    let rounds = args.rounds.max(1);
    let total_requests = workload.requests_for_samples(args.total_samples);
    // Whole scrape ticks per round, so that a round never splits a tick.
    let requests_per_round = total_requests.div_ceil(rounds).div_ceil(per_batch) * per_batch;
    let total_requests = requests_per_round * rounds;
    // The data ends a minute before now (on a scrape tick), so no system sees samples
    // from the future and every one keeps them all (retention, out-of-bounds rules).
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as i64;
    let end_ms = now_ms - now_ms % workload.interval_ms - 60_000;
    workload.start_ms =
        end_ms - (workload.ticks_for_requests(total_requests) - 1) * workload.interval_ms;
    let panels = dashboard::panels(&workload);
    let span_s = (end_ms - workload.start_ms) as f64 / 1000.0;
    let range = dashboard::Range {
        start_s: end_ms as f64 / 1000.0 - span_s.min(3600.0),
        end_s: end_ms as f64 / 1000.0,
        step_s: 15.0,
    };
    let samples_per_system =
        (total_requests / per_batch * workload.series * workload.samples_per_series) as u64;
    let workload_text = format!(
        "{} active series over {} metrics (counters, gauges, 8-bucket histograms), {} labels per \
         series, churn {} series per scrape tick, {} s scrape interval in sample time; remote \
         write {} series × {} samples per request, {} closed-loop senders; {} samples per \
         system in {rounds} alternating rounds. Queries: {} panels × {} requests per round, {} \
         threads, `query_range` over the last {:.0} min of the data at a 15 s step.",
        workload.series,
        workload.metrics,
        workload.labels_per_series,
        workload.churn_per_tick,
        args.interval_s,
        workload.series_per_request,
        workload.samples_per_series,
        args.concurrency,
        samples_per_system,
        panels.len(),
        args.query_requests,
        args.query_concurrency,
        (range.end_s - range.start_s) / 60.0,
    );
    eprintln!("{workload_text}");

    let mut running: Vec<System> = Vec::new();
    for &kind in &args.systems {
        let dir = data_root.join(kind.name());
        let log = args.out.join(format!("{}.log", kind.name()));
        let system = System::start(kind, &binary(kind), &dir, &log)?;
        eprintln!(
            "{} ready at {} ({})",
            kind.name(),
            system.base,
            system.version
        );
        running.push(system);
    }
    let start_usage: Vec<systems::Usage> = running
        .iter()
        .map(System::usage)
        .collect::<Result<_, _>>()?;
    let mut ingest: Vec<IngestOutcome> = args
        .systems
        .iter()
        .map(|k| IngestOutcome::empty(k.name()))
        .collect();
    let mut ingest_cpu = vec![0.0; running.len()];
    let mut profiler = None;
    for round in 0..rounds {
        let first = round * requests_per_round;
        let indexes = first..first + requests_per_round;
        // The same bodies go to every system (built before any clock starts).
        let mut bodies_v1 = None;
        let mut bodies_v2 = None;
        for offset in 0..running.len() {
            let index = (round + offset) % running.len();
            let system = &running[index];
            let mut target_workload = workload.clone();
            if system.kind.is_metronome() {
                target_workload.protocol = args.metronome_protocol;
            }
            let bodies = match target_workload.protocol {
                Protocol::V1 => {
                    bodies_v1.get_or_insert_with(|| target_workload.bodies(indexes.clone(), 2))
                }
                Protocol::V2 => {
                    bodies_v2.get_or_insert_with(|| target_workload.bodies(indexes.clone(), 2))
                }
            };
            let samples: u64 = bodies.iter().map(|b| b.1).sum();
            let name = system.kind.name();
            if args.profile && system.kind == Kind::Metronome && profiler.is_none() {
                profiler = Some(Profiler::start(system.pid(), &args.out, "ingest")?);
            }
            let progress = load::progress_bar(samples, name);
            let cpu_before = system.usage()?.cpu_seconds;
            let outcome = load::send(
                &target_workload,
                bodies,
                first,
                &system.write_urls(),
                name,
                args.concurrency,
                &progress,
            );
            progress.finish_and_clear();
            ingest_cpu[index] += system.usage()?.cpu_seconds - cpu_before;
            eprintln!(
                "ingest round {round} {name}: {} samples acknowledged in {:.2} s ({:.0}/s), {} errors{}",
                outcome.samples_acked,
                outcome.wall.as_secs_f64(),
                outcome.samples_per_second(),
                outcome.error_count(),
                outcome.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default()
            );
            ingest[index].absorb(outcome);
        }
        if round + 1 == rounds {
            if let Some(profiler) = profiler.take() {
                let path = profiler.finish()?;
                eprintln!("profile of metronome's ingest: {}", path.display());
            }
        }
    }

    for system in &running {
        system.prepare_queries()?;
        if args.profile && system.kind == Kind::Metronome {
            profiler = Some(Profiler::start(system.pid(), &args.out, "query")?);
        }
    }
    let mut queries: Vec<Vec<QueryOutcome>> = running
        .iter()
        .map(|_| {
            panels
                .iter()
                .map(|p| QueryOutcome::empty(&p.name))
                .collect()
        })
        .collect();
    for (panel_index, panel) in panels.iter().enumerate() {
        for round in 0..rounds {
            for offset in 0..running.len() {
                let index = (round + offset) % running.len();
                let system = &running[index];
                let outcome = dashboard::run(
                    &system.base,
                    system.kind.name(),
                    &panel.query,
                    range,
                    args.query_requests,
                    args.query_concurrency,
                );
                queries[index][panel_index].absorb(outcome);
            }
        }
        let summary: Vec<String> = running
            .iter()
            .zip(&queries)
            .map(|(system, q)| {
                let h = q[panel_index].recorder.histogram();
                format!(
                    "{} p50 {:.1} ms ({} series, {} errors)",
                    system.kind.name(),
                    if h.is_empty() {
                        0.0
                    } else {
                        h.value_at_quantile(0.5) as f64 / 1e6
                    },
                    q[panel_index].series.map_or(-1, |s| s as i64),
                    q[panel_index].errors
                )
            })
            .collect();
        eprintln!("panel {:?}: {}", panel.name, summary.join("; "));
    }

    if let Some(profiler) = profiler.take() {
        let path = profiler.finish()?;
        eprintln!("profile of metronome's queries: {}", path.display());
    }

    let mut results = Vec::new();
    for (((system, ingest), queries), (ingest_cpu, start)) in running
        .into_iter()
        .zip(ingest)
        .zip(queries)
        .zip(ingest_cpu.into_iter().zip(start_usage))
    {
        let usage = system.usage()?;
        let settled = system.flush()?;
        let kind = system.kind;
        let version = system.version.clone();
        let data_dir = system.data_dir.clone();
        system.stop()?;
        let data_bytes = systems::data_bytes(kind, &settled);
        let dir_bytes = systems::disk_bytes(&data_dir);
        eprintln!(
            "{}: peak RSS {:.0} MiB, {:.1} CPU s, {data_bytes} bytes of data ({:.2} per sample)",
            kind.name(),
            usage.peak_rss_bytes as f64 / 1048576.0,
            usage.cpu_seconds - start.cpu_seconds,
            data_bytes as f64 / ingest.samples_acked.max(1) as f64
        );
        results.push(SystemResult {
            kind,
            version,
            ingest,
            ingest_cpu_seconds: ingest_cpu,
            queries,
            cpu_seconds: usage.cpu_seconds - start.cpu_seconds,
            peak_rss_bytes: usage.peak_rss_bytes,
            data_bytes,
            dir_bytes,
        });
    }

    let info = RunInfo {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        workload: workload_text,
        panels: panels
            .iter()
            .map(|p| (p.name.clone(), p.query.clone()))
            .collect(),
        machine: machine(&data_root),
        date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        commit: args
            .commit
            .clone()
            .or_else(|| sh("git", &["rev-parse", "--short", "HEAD"]))
            .unwrap_or_else(|| "unknown".into()),
    };
    report::write(&args.out, &info, &results)?;
    println!("{}", report::markdown(&info, &results));
    eprintln!("report written to {}", args.out.display());
    // The run succeeded if every system acknowledged every sample and answered every
    // query; timings are never asserted.
    let complete = results.iter().all(|r| {
        r.ingest.samples_acked == samples_per_system
            && r.ingest.error_count() == 0
            && r.queries
                .iter()
                .all(|q| q.errors == 0 && q.series.unwrap_or(0) > 0)
    });
    Ok(complete)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("a system refused samples or queries; see the report's first errors");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
