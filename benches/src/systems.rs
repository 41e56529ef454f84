//! The systems a comparison runs: Metronome and its peers as real processes, each on its
//! own fresh data directory and free port, with what the report needs of them: CPU
//! seconds and peak RSS from `/proc`, a flush (or compaction) before the disk is
//! measured, and a graceful stop.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a system may take to get ready, and to stop.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a peer's flush may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Metronome,
    /// Metronome built from another commit (`run --baseline-bin`), to measure a change
    /// before and after in one run.
    MetronomeBaseline,
    /// This build as a cluster on loopback (`metronome cluster`: three metasrv replicas,
    /// three datanodes of one shard, and `frontends` frontends among which the load's
    /// senders are shared), each role its own process, each region in `replicas` copies.
    MetronomeCluster {
        frontends: u8,
        replicas: u8,
    },
    Prometheus,
    VictoriaMetrics,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(text: &str) -> Result<Kind, String> {
        match text {
            "metronome" => Ok(Kind::Metronome),
            "metronome-baseline" => Ok(Kind::MetronomeBaseline),
            "metronome-cluster" => Ok(Kind::MetronomeCluster {
                frontends: 1,
                replicas: 1,
            }),
            "metronome-cluster-2fe" => Ok(Kind::MetronomeCluster {
                frontends: 2,
                replicas: 1,
            }),
            "metronome-cluster-r2" => Ok(Kind::MetronomeCluster {
                frontends: 1,
                replicas: 2,
            }),
            "prometheus" => Ok(Kind::Prometheus),
            "victoria-metrics" | "victoriametrics" | "vm" => Ok(Kind::VictoriaMetrics),
            other => Err(format!(
                "unknown system {other:?}: use metronome, metronome-baseline, \
                 metronome-cluster, metronome-cluster-2fe, metronome-cluster-r2, prometheus \
                 or victoria-metrics"
            )),
        }
    }
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Metronome => "metronome",
            Kind::MetronomeBaseline => "metronome-baseline",
            Kind::MetronomeCluster {
                frontends: 1,
                replicas: 1,
            } => "metronome-cluster",
            Kind::MetronomeCluster { replicas: 1, .. } => "metronome-cluster-2fe",
            Kind::MetronomeCluster { .. } => "metronome-cluster-r2",
            Kind::Prometheus => "prometheus",
            Kind::VictoriaMetrics => "victoria-metrics",
        }
    }

    /// Whether this is Metronome (of this build or the baseline's).
    pub fn is_metronome(self) -> bool {
        matches!(
            self,
            Kind::Metronome | Kind::MetronomeBaseline | Kind::MetronomeCluster { .. }
        )
    }

    /// The binary's name on PATH (Debian's packages for the peers).
    pub fn default_binary(self) -> &'static str {
        match self {
            Kind::Metronome | Kind::MetronomeBaseline | Kind::MetronomeCluster { .. } => {
                "metronome"
            }
            Kind::Prometheus => "prometheus",
            Kind::VictoriaMetrics => "victoria-metrics",
        }
    }

    /// Whether a remote-write acknowledgement means the samples were fsynced.
    pub fn acks_after_fsync(self) -> bool {
        self.is_metronome()
    }

    /// What an acknowledgement promises, in one line for the report.
    pub fn durability(self) -> &'static str {
        match self {
            Kind::Metronome | Kind::MetronomeBaseline | Kind::MetronomeCluster { .. } => {
                "acknowledged after the WAL's fdatasync (group commit)"
            }
            Kind::Prometheus => {
                "acknowledged after the WAL write to the page cache; fsync only when a \
                 WAL segment is closed"
            }
            Kind::VictoriaMetrics => {
                "acknowledged from an in-memory buffer, written to disk within about a \
                 second, without fsync per request"
            }
        }
    }

    /// How the report's disk figure was reached.
    pub fn flush_method(self) -> &'static str {
        match self {
            Kind::Metronome | Kind::MetronomeBaseline | Kind::MetronomeCluster { .. } => {
                "graceful stop (flushes every memtable to SSTs); the SSTs and manifests, \
                 not the obsolete WAL"
            }
            Kind::Prometheus => "TSDB snapshot with the head (head written as a block)",
            Kind::VictoriaMetrics => "/internal/force_flush, then a graceful stop",
        }
    }
}

/// CPU and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
/// [`usage`] of `pid` and every process below it (a cluster's roles are children of its
/// supervisor): CPU and memory summed, the peaks too (an upper bound of the tree's peak).
pub fn tree_usage(pid: u32) -> Result<Usage, String> {
    let mut total = usage(pid)?;
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
    {
        // A child that just exited has nothing more to count.
        if let Ok(below) = tree_usage(child) {
            total.cpu_seconds += below.cpu_seconds;
            total.rss_bytes += below.rss_bytes;
            total.peak_rss_bytes += below.peak_rss_bytes;
        }
    }
    Ok(total)
}

pub fn usage(pid: u32) -> Result<Usage, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| format!("/proc/{pid}/stat: {error}"))?;
    // The command name (field 2) may hold spaces; the fields after it are fixed.
    let after_name = stat
        .rsplit_once(')')
        .ok_or_else(|| format!("/proc/{pid}/stat has no command name"))?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |index: usize| -> Result<u64, String> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat field {} is missing", index + 3))
    };
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_seconds = (ticks(11)? + ticks(12)?) as f64 / ticks_per_second;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| format!("/proc/{pid}/status: {error}"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Usage {
        cpu_seconds,
        rss_bytes: kib("VmRSS:") * 1024,
        peak_rss_bytes: kib("VmHWM:") * 1024,
    })
}

/// Bytes the files under `path` occupy on disk (allocated blocks, so sparse
/// preallocation does not count).
pub fn disk_bytes(path: &Path) -> u64 {
    disk_bytes_except(path, &[])
}

/// [`disk_bytes`] without the directories named one of `skipped`.
pub fn disk_bytes_except(path: &Path, skipped: &[&str]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if metadata.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| {
                        !(skipped.iter().any(|name| entry.file_name() == **name)
                            && entry.path().is_dir())
                    })
                    .map(|entry| disk_bytes_except(&entry.path(), skipped))
                    .sum()
            })
            .unwrap_or(0)
    } else {
        metadata.blocks() * 512
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|error| format!("cannot find a free port: {error}"))?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A running system.
pub struct System {
    pub kind: Kind,
    /// `http://host:port` of its HTTP API.
    pub base: String,
    /// Its data directory (fresh at start).
    pub data_dir: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    /// What `--version` says.
    pub version: String,
    child: Child,
}

impl System {
    /// Starts `kind` from `binary` on a fresh `data_dir` (removed first) and waits until
    /// it answers; `log` receives its output.
    pub fn start(kind: Kind, binary: &Path, data_dir: &Path, log: &Path) -> Result<System, String> {
        if data_dir.exists() {
            std::fs::remove_dir_all(data_dir)
                .map_err(|error| format!("cannot clear {}: {error}", data_dir.display()))?;
        }
        std::fs::create_dir_all(data_dir)
            .map_err(|error| format!("cannot create {}: {error}", data_dir.display()))?;
        let version = version(kind, binary);
        let port = free_port()?;
        let mut command = Command::new(binary);
        match kind {
            Kind::MetronomeCluster {
                frontends,
                replicas,
            } => {
                // Port 0: the frontends' ready lines name the ports they got.
                command
                    .args([
                        "cluster",
                        "--metasrvs",
                        "3",
                        "--datanodes",
                        "3",
                        "--frontends",
                        &frontends.to_string(),
                        "--shards",
                        "1",
                        "--replicas",
                        &replicas.to_string(),
                    ])
                    .args([
                        "--http-addr",
                        "127.0.0.1:0",
                        "--postgres-addr",
                        "127.0.0.1:0",
                    ])
                    .arg("--data-dir")
                    .arg(data_dir);
            }
            Kind::Metronome | Kind::MetronomeBaseline => {
                // Port 0: the ready line names the port it got.
                command
                    .args(["standalone", "--http-addr", "127.0.0.1:0"])
                    .args(["--postgres-addr", "127.0.0.1:0", "--data-dir"])
                    .arg(data_dir);
            }
            Kind::Prometheus => {
                let config = data_dir.join("prometheus.yml");
                std::fs::write(&config, "global:\n  scrape_interval: 15s\n")
                    .map_err(|error| format!("cannot write {}: {error}", config.display()))?;
                command
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        data_dir.join("tsdb").display()
                    ))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .args([
                        "--web.enable-remote-write-receiver",
                        "--web.enable-admin-api",
                    ]);
            }
            Kind::VictoriaMetrics => {
                // No result cache and no latency offset: every query is computed, on
                // all the data, as the others do.
                command
                    .arg(format!("-storageDataPath={}", data_dir.display()))
                    .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                    .args(["-search.disableCache", "-search.latencyOffset=0s"]);
            }
        }
        let log_file = File::create(log)
            .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let mut system = System {
            kind,
            base: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            version,
            child,
        };
        if let Err(error) = system.wait_ready() {
            let _ = system.child.kill();
            let _ = system.child.wait();
            return Err(format!("{error}\n{}", system.log_tail()));
        }
        Ok(system)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base)
    }

    /// Where remote writes may go: every frontend of a cluster, else the one address.
    pub fn write_urls(&self) -> Vec<String> {
        if let Kind::MetronomeCluster { frontends, .. } = self.kind {
            let found = metronome_frontends(&self.log);
            if found.len() == usize::from(frontends) {
                return found
                    .iter()
                    .map(|http| format!("http://{http}/api/v1/write"))
                    .collect();
            }
        }
        vec![self.write_url()]
    }

    pub fn usage(&self) -> Result<Usage, String> {
        tree_usage(self.pid())
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let agent = agent(Duration::from_secs(2));
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("{} exited at start: {status}", self.kind.name()));
            }
            if self.kind.is_metronome() {
                match metronome_http(&self.log) {
                    Some(http) => self.base = format!("http://{http}"),
                    None => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
            }
            let path = match self.kind {
                Kind::Prometheus => "/-/ready",
                Kind::Metronome
                | Kind::MetronomeBaseline
                | Kind::MetronomeCluster { .. }
                | Kind::VictoriaMetrics => "/health",
            };
            if let Ok(response) = agent.get(format!("{}{path}", self.base)).call() {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{} did not get ready within {READY_TIMEOUT:?}",
            self.kind.name()
        ))
    }

    /// The last lines of the log, for an error.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log.display())
    }

    /// Makes everything acknowledged visible to queries: VictoriaMetrics buffers
    /// recent samples in memory for up to a second before they can be searched.
    pub fn prepare_queries(&self) -> Result<(), String> {
        if self.kind == Kind::VictoriaMetrics {
            let url = format!("{}/internal/force_flush", self.base);
            let response = agent(FLUSH_TIMEOUT)
                .get(&url)
                .call()
                .map_err(|error| format!("{url}: {error}"))?;
            if !response.status().is_success() {
                return Err(format!("{url}: HTTP {}", response.status()));
            }
        }
        Ok(())
    }

    /// Brings the system's data to its settled on-disk form before the disk is measured;
    /// returns the directory whose size is the system's data (for Prometheus, the
    /// snapshot with the head written as a block; for the others the data directory,
    /// measured after [`System::stop`]; see [`System::data_bytes`]).
    pub fn flush(&self) -> Result<PathBuf, String> {
        let agent = agent(FLUSH_TIMEOUT);
        let call = |method: &str, path: &str| -> Result<String, String> {
            let url = format!("{}{path}", self.base);
            let response = if method == "POST" {
                agent.post(&url).send_empty()
            } else {
                agent.get(&url).call()
            }
            .map_err(|error| format!("{url}: {error}"))?;
            let status = response.status().as_u16();
            let body = response.into_body().read_to_string().unwrap_or_default();
            if !(200..300).contains(&status) {
                return Err(format!("{url}: HTTP {status}: {body}"));
            }
            Ok(body)
        };
        match self.kind {
            Kind::Metronome | Kind::MetronomeBaseline | Kind::MetronomeCluster { .. } => {
                Ok(self.data_dir.clone())
            }
            Kind::Prometheus => {
                let body = call("POST", "/api/v1/admin/tsdb/snapshot?skip_head=false")?;
                let json: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| format!("snapshot answer: {e}"))?;
                let name = json["data"]["name"]
                    .as_str()
                    .ok_or_else(|| format!("the snapshot answer names no snapshot: {body}"))?;
                Ok(self.data_dir.join("tsdb").join("snapshots").join(name))
            }
            Kind::VictoriaMetrics => {
                // Not /internal/force_merge: 1.79 runs it in the background and panics
                // at shutdown while it holds a partition; its own merges run during the
                // ingest anyway.
                call("GET", "/internal/force_flush")?;
                Ok(self.data_dir.clone())
            }
        }
    }

    /// Stops the system with SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> Result<(), String> {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                // Go programs exit 0 on SIGTERM; Metronome too.
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} exited with {status}\n{}",
                        self.kind.name(),
                        self.log_tail()
                    ))
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "{} did not stop within {STOP_TIMEOUT:?}; killed",
                    self.kind.name()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // A comparison that fails half-way must not leave servers behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Bytes of a system's settled data in `settled` (what [`System::flush`] returned):
/// without the write-ahead logs, whose content the flush made obsolete (Prometheus'
/// snapshot holds none; VictoriaMetrics has none).
pub fn data_bytes(kind: Kind, settled: &Path) -> u64 {
    match kind {
        Kind::Metronome | Kind::MetronomeBaseline | Kind::MetronomeCluster { .. } => {
            disk_bytes_except(settled, &["wal"])
        }
        Kind::Prometheus | Kind::VictoriaMetrics => disk_bytes(settled),
    }
}

/// The HTTP address Metronome's ready line names, once it is logged.
fn metronome_http(log: &Path) -> Option<String> {
    let file = File::open(log).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| line.contains("ready"))
        .find_map(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("http=").map(str::to_string))
        })
}

/// The HTTP address of every frontend a `metronome cluster` log says is ready.
fn metronome_frontends(log: &Path) -> Vec<String> {
    let Ok(file) = File::open(log) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| line.contains("ready") && line.contains("role=frontend"))
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("http=").map(str::to_string))
        })
        .collect()
}

/// The first line `binary --version` prints.
fn version(kind: Kind, binary: &Path) -> String {
    let flag = match kind {
        Kind::VictoriaMetrics => "-version",
        _ => "--version",
    };
    let package = match kind {
        Kind::Metronome | Kind::MetronomeBaseline | Kind::MetronomeCluster { .. } => None,
        Kind::Prometheus => Some("prometheus"),
        Kind::VictoriaMetrics => Some("victoria-metrics"),
    };
    let text = Command::new(binary)
        .arg(flag)
        .output()
        .ok()
        .map(|output| {
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    if !text.is_empty() {
        return text;
    }
    // Debian's VictoriaMetrics build prints an empty version; its package knows.
    package
        .and_then(|package| {
            let output = Command::new("dpkg-query")
                .args(["-W", "-f=${Version}", package])
                .output()
                .ok()?;
            let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
            (!version.is_empty()).then(|| format!("{package} {version} (Debian package)"))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_this_process() {
        let before = usage(std::process::id()).unwrap();
        // Touch 64 MiB so that the peak RSS must cover it, and burn some CPU.
        let block = vec![1u8; 64 << 20];
        let mut sum = 0u64;
        for round in 0..20u64 {
            sum = block.iter().fold(sum, |acc, &b| {
                acc.wrapping_mul(31).wrapping_add(u64::from(b) + round)
            });
        }
        assert_ne!(sum, 0);
        let after = usage(std::process::id()).unwrap();
        assert!(after.peak_rss_bytes >= 64 << 20, "{after:?}");
        assert!(after.peak_rss_bytes >= after.rss_bytes.min(before.peak_rss_bytes));
        assert!(
            after.cpu_seconds > before.cpu_seconds,
            "{before:?} {after:?}"
        );
        drop(block);
    }

    #[test]
    fn disk_bytes_counts_allocated_blocks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![7u8; 100_000]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![7u8; 50_000]).unwrap();
        // A sparse file takes (almost) no blocks.
        File::create(dir.path().join("sparse"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let bytes = disk_bytes(dir.path());
        assert!((150_000..250_000).contains(&bytes), "{bytes}");
        let without_sub = disk_bytes_except(dir.path(), &["sub"]);
        assert!((100_000..150_000).contains(&without_sub), "{without_sub}");
    }

    #[test]
    fn the_ready_line_gives_metronome_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "starting\n").unwrap();
        assert_eq!(metronome_http(&log), None);
        std::fs::write(
            &log,
            "starting\nINFO metronome standalone ready shards=2 http=127.0.0.1:4312 postgres=x\n",
        )
        .unwrap();
        assert_eq!(metronome_http(&log).as_deref(), Some("127.0.0.1:4312"));
    }
}
