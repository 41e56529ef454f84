//! Metronome's own metrics, served at `GET /metrics`.
//!
//! The registry encodes OpenMetrics 1.0 text (all that `prometheus-client` writes);
//! scrapers that do not ask for OpenMetrics get Prometheus' text format 0.0.4, converted
//! from it by [`openmetrics_to_text004`]. Which one a scraper gets follows its `Accept`
//! header ([`Format::negotiate`]).
//!
//! The datanode's figures are cumulative since each shard started; they are exposed as
//! they were last read, counters as counters (a shard that restarts starts again from
//! zero, which Prometheus reads as a counter reset). The `process_*` metrics are the
//! ones Prometheus' own client libraries export, read from `/proc/self` on each scrape.

#[cfg(not(madsim))]
use std::path::Path;
use std::sync::{Arc, Mutex};

use metronome_wire::{Replication, ShardStats};

use crate::cluster_metrics::{ClusterCollector, ClusterFigures, ReplicationCollector};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub handler: &'static str,
    pub code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandlerLabels {
    pub handler: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ShardLabels {
    pub datanode: u64,
    pub shard: u16,
}

/// What was built: `/api/v1/status/buildinfo` and `metronome_build_info` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    /// The git commit, or `unknown` when built outside a git checkout.
    pub revision: String,
    pub branch: String,
    /// When the build script last ran, RFC 3339 in UTC.
    pub build_date: String,
    /// `rustc -V` of the compiler that built it.
    pub toolchain: String,
}

impl Default for BuildInfo {
    /// The version only; what the binary's build script knows is passed in by `main`.
    fn default() -> BuildInfo {
        let unknown = || "unknown".to_string();
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: unknown(),
            branch: unknown(),
            build_date: unknown(),
            toolchain: unknown(),
        }
    }
}

/// An exposition format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' text format, version 0.0.4.
    Text004,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header prefers: OpenMetrics when it weighs
    /// `application/openmetrics-text` at least as high as anything else it accepts (as
    /// Prometheus does), the text format 0.0.4 otherwise, and with no header at all.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text004;
        };
        let (mut openmetrics, mut other) = (0.0f64, 0.0f64);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut quality = 1.0;
            for parameter in parts {
                if let Some((name, value)) = parameter.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        // An unreadable weight counts as none: the range is not accepted.
                        quality = value.trim().parse::<f64>().unwrap_or(0.0);
                    }
                }
            }
            if !quality.is_finite() {
                continue;
            }
            if media == "application/openmetrics-text" {
                openmetrics = openmetrics.max(quality);
            } else if !media.is_empty() {
                other = other.max(quality);
            }
        }
        if openmetrics > 0.0 && openmetrics >= other {
            Format::OpenMetrics
        } else {
            Format::Text004
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

pub struct SelfMetrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_seconds: Family<HandlerLabels, Histogram>,
    pub samples_ingested: Counter,
    pub series_ingested: Counter,
    shards: Arc<Mutex<Vec<(u64, ShardStats)>>>,
    cluster: Arc<Mutex<Option<ClusterFigures>>>,
    replication: Arc<Mutex<Vec<(u64, Replication)>>>,
    build: BuildInfo,
}

impl Default for SelfMetrics {
    fn default() -> SelfMetrics {
        SelfMetrics::new(BuildInfo::default())
    }
}

impl SelfMetrics {
    pub fn new(build: BuildInfo) -> SelfMetrics {
        let mut root = Registry::default();
        // Prometheus' client libraries name these without a prefix, and dashboards
        // expect them so.
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("metronome");
        // `register` ends every help text with a full stop.
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by handler and status code",
            http_requests.clone(),
        );
        let http_request_seconds = Family::<HandlerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register_with_unit(
            "http_request",
            "Time from a request's arrival to its response's headers, by handler",
            Unit::Seconds,
            http_request_seconds.clone(),
        );
        let samples_ingested = Counter::default();
        registry.register(
            "ingested_samples",
            "Samples acknowledged to Prometheus remote-write clients plus points (lines) \
             acknowledged to InfluxDB line-protocol clients",
            samples_ingested.clone(),
        );
        let series_ingested = Counter::default();
        registry.register(
            "ingested_series",
            "Series entries in acknowledged remote-write requests (a series counts once \
             in every request that carries it)",
            series_ingested.clone(),
        );
        let build_labels = vec![
            ("version", build.version.clone()),
            ("revision", build.revision.clone()),
            ("branch", build.branch.clone()),
            ("rustc_version", build.toolchain.clone()),
        ];
        registry.register(
            "build",
            "The version, git revision, branch and compiler of this binary",
            Info::new(build_labels),
        );
        let shards = Arc::new(Mutex::new(Vec::new()));
        registry.register_collector(Box::new(ShardCollector {
            latest: shards.clone(),
        }));
        let cluster = ClusterCollector::default();
        let latest = cluster.latest.clone();
        registry.register_collector(Box::new(cluster));
        let replication = ReplicationCollector::default();
        let replication_latest = replication.latest.clone();
        registry.register_collector(Box::new(replication));
        SelfMetrics {
            replication: replication_latest,
            registry: root,
            cluster: latest,
            http_requests,
            http_request_seconds,
            samples_ingested,
            series_ingested,
            shards,
            build,
        }
    }

    pub fn build_info(&self) -> &BuildInfo {
        &self.build
    }

    /// Records the latest figures of every datanode's shards, each with its datanode.
    pub fn set_shards(&self, shards: &[(u64, ShardStats)]) {
        let mut latest = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        latest.clear();
        latest.extend_from_slice(shards);
    }

    /// Records every datanode's latest replication figures, each with its datanode.
    pub fn set_replication(&self, figures: &[(u64, Replication)]) {
        let mut latest = self.replication.lock().unwrap_or_else(|e| e.into_inner());
        latest.clear();
        latest.extend_from_slice(figures);
    }

    /// Records the cluster's figures from the latest catalog.
    pub fn set_cluster(&self, figures: ClusterFigures) {
        *self.cluster.lock().unwrap_or_else(|e| e.into_inner()) = Some(figures);
    }

    /// The exposition text in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => out,
            Format::Text004 => openmetrics_to_text004(&out),
        }
    }
}

/// Reads one figure of a shard's.
type Figure = fn(&ShardStats) -> u64;

/// The datanode's per-shard figures as they were last read.
#[derive(Debug)]
struct ShardCollector {
    latest: Arc<Mutex<Vec<(u64, ShardStats)>>>,
}

impl Collector for ShardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shards = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let gauges: [(&str, &str, Option<Unit>, Figure); 2] = [
            (
                "memtable",
                "Bytes held in memtables, per shard.",
                Some(Unit::Bytes),
                |s| s.memtable_bytes,
            ),
            ("regions", "Open regions, per shard.", None, |s| s.regions),
        ];
        for (name, help, unit, value) in gauges {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (datanode, figures) in &shards {
                let labels = ShardLabels {
                    datanode: *datanode,
                    shard: figures.shard,
                };
                ConstGauge::new(value(figures)).encode(metric.encode_family(&labels)?)?;
            }
        }
        let counters: [(&str, &str, Figure); 3] = [
            (
                "wal_syncs",
                "WAL commits (one fdatasync each) since the shard started, per shard.",
                |s| s.wal_commits,
            ),
            (
                "flushes",
                "Memtable flushes since the shard started, per shard.",
                |s| s.flushes,
            ),
            (
                "compactions",
                "Compactions since the shard started, per shard.",
                |s| s.compactions,
            ),
        ];
        for (name, help, value) in counters {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (datanode, figures) in &shards {
                let labels = ShardLabels {
                    datanode: *datanode,
                    shard: figures.shard,
                };
                ConstCounter::new(value(figures)).encode(metric.encode_family(&labels)?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "wal_sync",
            "Time spent writing and syncing WAL commits since the shard started, per \
             shard; divide by metronome_wal_syncs_total for the mean.",
            Some(&Unit::Seconds),
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (datanode, figures) in &shards {
            let labels = ShardLabels {
                datanode: *datanode,
                shard: figures.shard,
            };
            let seconds = figures.wal_commit_micros_total as f64 / 1e6;
            ConstCounter::new(seconds).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The `process_*` metrics of Prometheus' client libraries, from `/proc/self`. A figure
/// that cannot be read (no procfs: not Linux, or a sandbox without it) is left out
/// rather than reported as zero.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = ProcessFigures::read();
        use prometheus_client::metrics::MetricType;
        if let Some(seconds) = figures.cpu_seconds {
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            ConstCounter::new(seconds).encode(metric)?;
        }
        let gauges: [(&str, &str, Option<Unit>, Option<f64>); 5] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                figures.resident_bytes.map(|b| b as f64),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                figures.virtual_bytes.map(|b| b as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                figures.open_fds.map(|n| n as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                figures.max_fds.map(|n| n as f64),
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                figures.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                let metric =
                    encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
                ConstGauge::new(value).encode(metric)?;
            }
        }
        Ok(())
    }
}

/// The kernel reports process times in "user hertz", fixed at 100 on every
/// architecture Metronome runs on (Prometheus' procfs library assumes the same).
const USER_HZ: f64 = 100.0;

#[derive(Debug, Default, PartialEq)]
struct ProcessFigures {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

/// A file under `/proc`; none in simulation, where a process has no `/proc` of its own.
#[cfg(not(madsim))]
fn proc_file(path: &str) -> Option<String> {
    metronome_core::rt::disk::startup::read_to_string(Path::new(path)).ok()
}

#[cfg(madsim)]
fn proc_file(_path: &str) -> Option<String> {
    None
}

/// The entries of a directory under `/proc`; none in simulation.
#[cfg(not(madsim))]
fn proc_entries(path: &str) -> Option<u64> {
    metronome_core::rt::disk::startup::count_dir_entries(Path::new(path))
        .ok()
        .map(|n| n as u64)
}

#[cfg(madsim)]
fn proc_entries(_path: &str) -> Option<u64> {
    None
}

impl ProcessFigures {
    /// Reads `/proc/self`. These are small in-memory files, read with blocking calls on
    /// the frontend's runtime (never on a shard) once per scrape.
    fn read() -> ProcessFigures {
        let mut figures = ProcessFigures::default();
        if let Some(stat) = proc_file("/proc/self/stat") {
            let boot_time = proc_file("/proc/stat").and_then(|text| parse_boot_time(&text));
            figures.merge_stat(&stat, boot_time);
        }
        if let Some(status) = proc_file("/proc/self/status") {
            figures.resident_bytes = parse_status_kib(&status, "VmRSS:").map(|k| k * 1024);
        }
        if let Some(limits) = proc_file("/proc/self/limits") {
            figures.max_fds = parse_max_open_files(&limits);
        }
        figures.open_fds = proc_entries("/proc/self/fd");
        figures
    }

    /// Reads CPU time, virtual size and start time from `/proc/self/stat` text.
    fn merge_stat(&mut self, stat: &str, boot_time: Option<u64>) {
        // The command name is in parentheses and may hold spaces and parentheses
        // itself: the fields are counted from after the last `)`, whose next field is
        // the third of proc(5) ("state").
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
        if let (Some(user), Some(system)) = (field(14), field(15)) {
            self.cpu_seconds = Some((user + system) as f64 / USER_HZ);
        }
        self.virtual_bytes = field(23);
        if let (Some(start_ticks), Some(boot)) = (field(22), boot_time) {
            self.start_time_seconds = Some(boot as f64 + start_ticks as f64 / USER_HZ);
        }
    }
}

/// `btime` of `/proc/stat`: the boot time in Unix seconds.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// A `kB` figure of `/proc/self/status`, e.g. `VmRSS:     1234 kB`.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`unlimited` is left out).
fn parse_max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// Converts OpenMetrics text as `prometheus-client` writes it into Prometheus' text
/// format 0.0.4:
///
/// - counters are named with their `_total` suffix in `# HELP` and `# TYPE` too (in
///   OpenMetrics the family name has no suffix; in 0.0.4 the family is the sample name);
/// - `info` metrics become gauges named with their `_info` suffix, `unknown` ones
///   `untyped`, `stateset` ones gauges; `gaugehistogram` ones histograms;
/// - `# UNIT` lines, `# EOF`, `_created` samples and exemplars are dropped (0.0.4 has
///   none of them); `\"` in help texts is unescaped (0.0.4 escapes only `\\` and `\n`
///   there).
///
/// Label sets, values and timestamps are kept as they are: both formats write label
/// values with the same escapes, and `prometheus-client` writes no timestamps.
pub fn openmetrics_to_text004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The `# HELP` line of the family being read, held until its `# TYPE` tells the name.
    let mut pending_help: Option<(&str, &str)> = None;
    // The family being read and its type.
    let mut family: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let (keyword, rest) = comment.split_once(' ').unwrap_or((comment, ""));
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            match keyword {
                "HELP" => {
                    if let Some((help_name, help)) = pending_help.take() {
                        write_help(&mut out, help_name, help);
                    }
                    pending_help = Some((name, text));
                }
                "TYPE" => {
                    let (suffix, kind) = match text {
                        "counter" => ("_total", "counter"),
                        "info" => ("_info", "gauge"),
                        "stateset" => ("", "gauge"),
                        "gaugehistogram" => ("", "histogram"),
                        "unknown" => ("", "untyped"),
                        other => ("", other),
                    };
                    let exposed = format!("{name}{suffix}");
                    if let Some((help_name, help)) = pending_help.take() {
                        if help_name == name {
                            write_help(&mut out, &exposed, help);
                        } else {
                            write_help(&mut out, help_name, help);
                        }
                    }
                    out.push_str("# TYPE ");
                    out.push_str(&exposed);
                    out.push(' ');
                    out.push_str(kind);
                    out.push('\n');
                    family = Some((name, text));
                }
                // UNIT, EOF and anything else OpenMetrics may add.
                _ => {}
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some((help_name, help)) = pending_help.take() {
            write_help(&mut out, help_name, help);
        }
        let sample = strip_exemplar(line);
        let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
        let name = &sample[..name_end];
        if let Some((family_name, _)) = family {
            if name.strip_prefix(family_name) == Some("_created") {
                continue;
            }
        }
        out.push_str(sample);
        out.push('\n');
    }
    if let Some((help_name, help)) = pending_help {
        write_help(&mut out, help_name, help);
    }
    out
}

fn write_help(out: &mut String, name: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(&help.replace("\\\"", "\""));
    out.push('\n');
}

/// A sample line without its exemplar (` # {...} value [timestamp]`), which may follow
/// the value. A `#` inside a quoted label value is not one.
fn strip_exemplar(line: &str) -> &str {
    let bytes = line.as_bytes();
    let (mut quoted, mut escaped) = (false, false);
    for (index, &byte) in bytes.iter().enumerate() {
        if quoted {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
        } else if byte == b'"' {
            quoted = true;
        } else if byte == b'#' && index > 0 && bytes[index - 1] == b' ' {
            return line[..index - 1].trim_end();
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(shard: u16, wal_commits: u64) -> ShardStats {
        ShardStats {
            shard,
            memtable_bytes: 1024,
            wal_commits,
            wal_commit_micros_total: 1_500_000,
            flushes: 2,
            compactions: 1,
            regions: 3,
        }
    }

    #[test]
    fn the_accept_header_picks_the_format() {
        // What Prometheus 2.x sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,\
            application/openmetrics-text;version=0.0.1;q=0.75,\
            text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(None), Format::Text004);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text004);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Text004
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain")),
            Format::Text004
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text004
        );
        assert_eq!(Format::negotiate(Some("")), Format::Text004);
    }

    #[test]
    fn counters_are_counters_in_both_formats() {
        let metrics = SelfMetrics::default();
        // Two datanodes' shard 0, each its own series.
        metrics.set_shards(&[(1, figures(0, 7)), (1, figures(1, 9)), (2, figures(0, 4))]);
        metrics.samples_ingested.inc_by(5);
        // A family without members is left out of the exposition.
        metrics
            .http_request_seconds
            .get_or_create(&HandlerLabels { handler: "query" })
            .observe(0.01);
        let openmetrics = metrics.render(Format::OpenMetrics);
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        for line in [
            "# TYPE metronome_wal_syncs counter",
            "metronome_wal_syncs_total{datanode=\"1\",shard=\"1\"} 9",
            "metronome_wal_syncs_total{datanode=\"1\",shard=\"0\"} 7",
            "metronome_wal_syncs_total{datanode=\"2\",shard=\"0\"} 4",
            "# TYPE metronome_flushes counter",
            "# TYPE metronome_compactions counter",
            "# TYPE metronome_wal_sync_seconds counter",
            "# UNIT metronome_wal_sync_seconds seconds",
            "metronome_wal_sync_seconds_total{datanode=\"2\",shard=\"0\"} 1.5",
            "# TYPE metronome_memtable_bytes gauge",
            "metronome_ingested_samples_total 5",
        ] {
            assert!(
                openmetrics.lines().any(|l| l == line),
                "{line} missing:\n{openmetrics}"
            );
        }
        let text = metrics.render(Format::Text004);
        for line in [
            "# HELP metronome_wal_syncs_total WAL commits (one fdatasync each) since the \
             shard started, per shard.",
            "# TYPE metronome_wal_syncs_total counter",
            "metronome_wal_syncs_total{datanode=\"1\",shard=\"1\"} 9",
            "# TYPE metronome_wal_sync_seconds_total counter",
            "# TYPE metronome_ingested_samples_total counter",
            "# TYPE metronome_build_info gauge",
            "# TYPE metronome_http_request_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn the_converter_handles_what_openmetrics_may_hold() {
        let openmetrics = "# HELP a_seconds Time \\\"spent\\\".\n\
            # TYPE a_seconds counter\n\
            # UNIT a_seconds seconds\n\
            a_seconds_total{path=\"/x # y\"} 1.5 # {trace_id=\"1\"} 0.5\n\
            a_seconds_created 1700000000.0\n\
            # HELP b Build.\n\
            # TYPE b info\n\
            b_info{version=\"1\"} 1\n\
            # TYPE c unknown\n\
            c 3\n\
            # EOF\n";
        assert_eq!(
            openmetrics_to_text004(openmetrics),
            "# HELP a_seconds_total Time \"spent\".\n\
             # TYPE a_seconds_total counter\n\
             a_seconds_total{path=\"/x # y\"} 1.5\n\
             # HELP b_info Build.\n\
             # TYPE b_info gauge\n\
             b_info{version=\"1\"} 1\n\
             # TYPE c untyped\n\
             c 3\n"
        );
    }

    #[test]
    fn process_figures_are_read_from_procfs_text() {
        let mut figures = ProcessFigures::default();
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (metro me)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
            250 50 0 0 20 0 12 0 3000 123456789 2048 18446744073709551615";
        figures.merge_stat(stat, parse_boot_time("cpu 1 2 3\nbtime 1700000000\n"));
        assert_eq!(figures.cpu_seconds, Some(3.0));
        assert_eq!(figures.virtual_bytes, Some(123_456_789));
        assert_eq!(figures.start_time_seconds, Some(1_700_000_030.0));
        assert_eq!(
            parse_status_kib("Name:\tmetronome\nVmRSS:\t    2048 kB\n", "VmRSS:"),
            Some(2048)
        );
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        // Nothing readable, nothing reported.
        let mut empty = ProcessFigures::default();
        empty.merge_stat("garbage", None);
        assert_eq!(empty, ProcessFigures::default());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_exported_on_linux() {
        let text = SelfMetrics::default().render(Format::Text004);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|line| line.starts_with(name)),
                "{name} missing:\n{text}"
            );
        }
    }
}
