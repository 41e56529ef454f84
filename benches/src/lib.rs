//! Metronome's benchmarks: load generators and latency harnesses, each measured side by
//! side with a peer in the same run, with hdrhistogram percentiles.
//!
//! This library holds what the benchmark binaries (`src/bin/`) share: latency recording
//! and the report format. Benchmarks measure the real machine, so this crate may call the
//! clock, files and threads directly (`clippy.toml`'s seam rules are lifted here); nothing
//! depends on it.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod dashboard;
pub mod load;
pub mod plot;
pub mod report;
pub mod systems;

use hdrhistogram::Histogram;

/// The `metronome` binary a benchmark starts: `given`, else the one built beside it.
pub fn metronome_binary(given: Option<&std::path::Path>) -> Result<std::path::PathBuf, String> {
    match given {
        Some(path) => Ok(path.to_path_buf()),
        None => std::env::current_exe()
            .map(|exe| exe.with_file_name("metronome"))
            .map_err(|error| error.to_string()),
    }
}

/// Runs `statement` through the SQL endpoint of the frontend at `base` (`http://…`);
/// returns the rows of its first output, or the error with the statement.
pub fn sql_rows(
    agent: &ureq::Agent,
    base: &str,
    statement: &str,
) -> Result<serde_json::Value, String> {
    let mut reply = agent
        .post(&format!("{base}/v1/sql"))
        .header("Content-Type", "text/plain")
        .send(statement.as_bytes())
        .map_err(|error| format!("{statement}: {error}"))?;
    let body = reply.body_mut().read_to_string().unwrap_or_default();
    if reply.status() != 200 {
        return Err(format!("{statement}: {} {body}", reply.status()));
    }
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(json["output"][0]["records"]["rows"].clone())
}

/// `--target name=url` arguments as (name, url without a trailing slash).
pub fn parse_targets(targets: &[String]) -> Vec<(String, String)> {
    targets
        .iter()
        .map(|target| {
            let (name, url) = target.split_once('=').expect("--target takes name=url");
            (name.to_string(), url.trim_end_matches('/').to_string())
        })
        .collect()
}

/// Latencies of one benchmark case, in nanoseconds.
pub struct LatencyRecorder {
    pub name: String,
    histogram: Histogram<u64>,
    /// Median of each round, to report the median of medians (robust on a noisy machine).
    round_medians_ns: Vec<u64>,
    round: Histogram<u64>,
    /// Sum of the measured operations' wall time, for throughput.
    busy_ns: u128,
}

impl LatencyRecorder {
    pub fn new(name: impl Into<String>) -> LatencyRecorder {
        // 1 ns to 100 s at 3 significant figures.
        let histogram = || Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds");
        LatencyRecorder {
            name: name.into(),
            histogram: histogram(),
            round_medians_ns: Vec::new(),
            round: histogram(),
            busy_ns: 0,
        }
    }

    pub fn record(&mut self, latency: std::time::Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.histogram.saturating_record(ns);
        self.round.saturating_record(ns);
        self.busy_ns += latency.as_nanos();
    }

    /// Closes a round (one contiguous run of this case between runs of the others).
    pub fn end_round(&mut self) {
        if !self.round.is_empty() {
            self.round_medians_ns
                .push(self.round.value_at_quantile(0.5));
            self.round.reset();
        }
    }

    /// Adds another recorder's (finished) rounds to this one.
    pub fn merge_round(&mut self, other: &LatencyRecorder) {
        self.histogram
            .add(&other.histogram)
            .expect("recorders share bounds");
        self.round_medians_ns
            .extend_from_slice(&other.round_medians_ns);
        self.busy_ns += other.busy_ns;
    }

    /// Every latency recorded, in nanoseconds.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        let mut medians = self.round_medians_ns.clone();
        medians.sort_unstable();
        LatencySummary {
            name: self.name.clone(),
            count: h.len(),
            p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
            p90_us: h.value_at_quantile(0.9) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
            p999_us: h.value_at_quantile(0.999) as f64 / 1e3,
            max_us: h.max() as f64 / 1e3,
            median_of_round_p50_us: medians
                .get(medians.len() / 2)
                .map_or(0.0, |&m| m as f64 / 1e3),
            ops_per_second: if self.busy_ns == 0 {
                0.0
            } else {
                h.len() as f64 / (self.busy_ns as f64 / 1e9)
            },
        }
    }
}

/// What a report prints of one case.
#[derive(Debug, Clone)]
pub struct LatencySummary {
    pub name: String,
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub median_of_round_p50_us: f64,
    pub ops_per_second: f64,
}

/// A Markdown table of the cases, with each case's median-of-rounds p50 as a ratio to
/// the `baseline` case.
pub fn markdown_table(summaries: &[LatencySummary], baseline: &str) -> String {
    let base = summaries
        .iter()
        .find(|s| s.name == baseline)
        .map(|s| s.median_of_round_p50_us);
    let mut out = String::from(
        "| case | ops | p50 µs | p99 µs | p99.9 µs | max µs | median of round p50s µs | ops/s | p50 vs baseline |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in summaries {
        let ratio = match base {
            Some(b) if b > 0.0 => format!("{:.2}×", s.median_of_round_p50_us / b),
            _ => "–".to_string(),
        };
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} |\n",
            s.name,
            s.count,
            s.p50_us,
            s.p99_us,
            s.p999_us,
            s.max_us,
            s.median_of_round_p50_us,
            s.ops_per_second,
            ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn summaries_report_percentiles_and_ratios() {
        let mut fast = LatencyRecorder::new("fast");
        let mut slow = LatencyRecorder::new("slow");
        for round in 0..3 {
            for i in 1..=1000u64 {
                fast.record(Duration::from_micros(i));
                slow.record(Duration::from_micros(2 * i + round));
            }
            fast.end_round();
            slow.end_round();
        }
        let (f, s) = (fast.summary(), slow.summary());
        assert_eq!(f.count, 3000);
        assert!((f.p50_us - 500.0).abs() < 1.0, "{}", f.p50_us);
        assert!((f.p99_us - 990.0).abs() < 1.0, "{}", f.p99_us);
        assert!((f.p90_us - 900.0).abs() < 1.0, "{}", f.p90_us);
        assert!((f.max_us - 1000.0).abs() < 1.0, "{}", f.max_us);
        assert!(
            (s.median_of_round_p50_us - 1001.0).abs() < 2.0,
            "{}",
            s.median_of_round_p50_us
        );
        let table = markdown_table(&[f, s], "fast");
        assert!(table.contains("| fast | 3000 |"), "{table}");
        assert!(table.contains("2.00×"), "{table}");
    }
}
