//! The comparison's report: a Markdown table and JSON of every system's figures, with
//! ratios against Metronome, the HDR percentile distributions, and PNG plots (latency
//! percentile curves, throughput over time).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::dashboard::QueryOutcome;
use crate::load::IngestOutcome;
use crate::systems::Kind;

/// Everything measured of one system.
pub struct SystemResult {
    pub kind: Kind,
    pub version: String,
    pub ingest: IngestOutcome,
    /// CPU seconds the system spent during its ingest rounds.
    pub ingest_cpu_seconds: f64,
    /// One per dashboard panel, in the panels' order.
    pub queries: Vec<QueryOutcome>,
    /// CPU seconds over the whole run (start to stop).
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    /// Bytes of the settled data (see `Kind::flush_method`).
    pub data_bytes: u64,
    /// Bytes of the whole data directory after the stop.
    pub dir_bytes: u64,
}

impl SystemResult {
    pub fn bytes_per_sample(&self) -> f64 {
        self.data_bytes as f64 / self.ingest.samples_acked.max(1) as f64
    }

    fn ack_ms(&self, quantile: f64) -> f64 {
        quantile_ms(self.ingest.recorder.histogram(), quantile)
    }
}

fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    histogram.value_at_quantile(quantile) as f64 / 1e6
}

/// The run's parameters, for the report's header.
pub struct RunInfo {
    pub command: String,
    pub workload: String,
    pub panels: Vec<(String, String)>,
    pub machine: String,
    pub date: String,
    pub commit: String,
}

/// Ratio `ours / theirs` as text; `–` when undefined.
fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 && ours.is_finite() {
        format!("{:.2}×", ours / theirs)
    } else {
        "–".to_string()
    }
}

const MIB: f64 = 1024.0 * 1024.0;

pub fn markdown(info: &RunInfo, results: &[SystemResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "- Command: `{}`", info.command);
    let _ = writeln!(out, "- Machine: {}", info.machine);
    let _ = writeln!(out, "- Date: {}; commit: {}", info.date, info.commit);
    let _ = writeln!(out, "- Workload: {}", info.workload);
    for result in results {
        let _ = writeln!(
            out,
            "- {}: {}; durability: {}; disk measured after: {}",
            result.kind.name(),
            result.version,
            result.kind.durability(),
            result.kind.flush_method()
        );
    }
    out.push_str(
        "\n| system | fsync before ack | samples/s | ack p50 ms | p90 | p99 | p99.9 | max | \
         errors | query p50 ms (median of panels) | peak RSS MiB | CPU s (ingest) | CPU s (run) | \
         bytes/sample | data dir MiB at stop |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.2} | {:.1} |",
            r.kind.name(),
            if r.kind.acks_after_fsync() { "yes" } else { "no" },
            r.ingest.samples_per_second(),
            r.ack_ms(0.5),
            r.ack_ms(0.9),
            r.ack_ms(0.99),
            r.ack_ms(0.999),
            r.ack_ms(1.0),
            r.ingest.error_count(),
            median_panel_p50_ms(r),
            r.peak_rss_bytes as f64 / MIB,
            r.ingest_cpu_seconds,
            r.cpu_seconds,
            r.bytes_per_sample(),
            r.dir_bytes as f64 / MIB,
        );
    }
    if let Some(ours) = results.iter().find(|r| r.kind == Kind::Metronome) {
        out.push_str(
            "\nMetronome ÷ peer (above 1× is better for samples/s, below 1× for the rest):\n\n\
             | peer | samples/s | ack p50 | ack p99 | query p50 (median of panels) | peak RSS | \
             CPU s per sample (ingest) | bytes/sample |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let cpu_per_sample =
            |r: &SystemResult| r.ingest_cpu_seconds / r.ingest.samples_acked.max(1) as f64;
        for peer in results.iter().filter(|r| r.kind != Kind::Metronome) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                peer.kind.name(),
                ratio(
                    ours.ingest.samples_per_second(),
                    peer.ingest.samples_per_second()
                ),
                ratio(ours.ack_ms(0.5), peer.ack_ms(0.5)),
                ratio(ours.ack_ms(0.99), peer.ack_ms(0.99)),
                ratio(median_panel_p50_ms(ours), median_panel_p50_ms(peer)),
                ratio(ours.peak_rss_bytes as f64, peer.peak_rss_bytes as f64),
                ratio(cpu_per_sample(ours), cpu_per_sample(peer)),
                ratio(ours.bytes_per_sample(), peer.bytes_per_sample()),
            );
        }
    }
    out.push_str("\nQuery latency per panel (`query_range`), ms:\n\n| panel | system | requests | p50 | p90 | p99 | max | series | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (index, (name, _)) in info.panels.iter().enumerate() {
        for r in results {
            let Some(q) = r.queries.get(index) else {
                continue;
            };
            let h = q.recorder.histogram();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                r.kind.name(),
                h.len(),
                quantile_ms(h, 0.5),
                quantile_ms(h, 0.9),
                quantile_ms(h, 0.99),
                quantile_ms(h, 1.0),
                q.series.map_or("–".to_string(), |s| s.to_string()),
                q.errors,
            );
        }
    }
    out.push_str("\nPanels:\n\n");
    for (name, query) in &info.panels {
        let _ = writeln!(out, "- {name}: `{query}`");
    }
    let disagreements = series_disagreements(info, results);
    if !disagreements.is_empty() {
        out.push_str("\nThe systems answered different numbers of series:\n\n");
        for line in disagreements {
            let _ = writeln!(out, "- {line}");
        }
    }
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let first = r
                .ingest
                .first_error
                .as_ref()
                .or_else(|| r.queries.iter().find_map(|q| q.first_error.as_ref()))?;
            Some(format!("{}: {first}", r.kind.name()))
        })
        .collect();
    if !failures.is_empty() {
        out.push_str("\nFirst errors:\n\n");
        for line in failures {
            let _ = writeln!(out, "- {line}");
        }
    }
    out
}

fn median_panel_p50_ms(result: &SystemResult) -> f64 {
    let mut p50s: Vec<f64> = result
        .queries
        .iter()
        .filter(|q| !q.recorder.histogram().is_empty())
        .map(|q| quantile_ms(q.recorder.histogram(), 0.5))
        .collect();
    if p50s.is_empty() {
        return 0.0;
    }
    p50s.sort_by(f64::total_cmp);
    p50s[p50s.len() / 2]
}

/// Panels where the systems' answers hold different numbers of series.
pub fn series_disagreements(info: &RunInfo, results: &[SystemResult]) -> Vec<String> {
    let mut out = Vec::new();
    for (index, (name, _)) in info.panels.iter().enumerate() {
        let counts: Vec<(String, Option<usize>)> = results
            .iter()
            .map(|r| {
                (
                    r.kind.name().to_string(),
                    r.queries.get(index).and_then(|q| q.series),
                )
            })
            .collect();
        if counts.windows(2).any(|pair| pair[0].1 != pair[1].1) {
            let text: Vec<String> = counts
                .iter()
                .map(|(system, count)| format!("{system} {}", count.map_or(-1, |c| c as i64)))
                .collect();
            out.push(format!("{name}: {}", text.join(", ")));
        }
    }
    out
}

fn histogram_json(histogram: &Histogram<u64>) -> serde_json::Value {
    json!({
        "count": histogram.len(),
        "p50_ms": quantile_ms(histogram, 0.5),
        "p90_ms": quantile_ms(histogram, 0.9),
        "p99_ms": quantile_ms(histogram, 0.99),
        "p999_ms": quantile_ms(histogram, 0.999),
        "max_ms": quantile_ms(histogram, 1.0),
    })
}

pub fn json(info: &RunInfo, results: &[SystemResult]) -> serde_json::Value {
    let systems: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            json!({
                "system": r.kind.name(),
                "version": r.version,
                "acks_after_fsync": r.kind.acks_after_fsync(),
                "durability": r.kind.durability(),
                "flush_method": r.kind.flush_method(),
                "samples_acked": r.ingest.samples_acked,
                "requests_acked": r.ingest.requests_acked,
                "ingest_seconds": r.ingest.wall.as_secs_f64(),
                "samples_per_second": r.ingest.samples_per_second(),
                "ack_latency": histogram_json(r.ingest.recorder.histogram()),
                "errors_by_kind": r.ingest.errors,
                "first_error": r.ingest.first_error,
                "samples_per_second_timeline": r.ingest.timeline,
                "ingest_cpu_seconds": r.ingest_cpu_seconds,
                "cpu_seconds": r.cpu_seconds,
                "peak_rss_bytes": r.peak_rss_bytes,
                "data_bytes": r.data_bytes,
                "dir_bytes": r.dir_bytes,
                "bytes_per_sample": r.bytes_per_sample(),
                "queries": info.panels.iter().zip(&r.queries).map(|((name, query), q)| json!({
                    "panel": name,
                    "query": query,
                    "latency": histogram_json(q.recorder.histogram()),
                    "series": q.series,
                    "errors": q.errors,
                    "first_error": q.first_error,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "command": info.command,
        "machine": info.machine,
        "date": info.date,
        "commit": info.commit,
        "workload": info.workload,
        "systems": systems,
        "series_disagreements": series_disagreements(info, results),
    })
}

/// The percentile distribution of `histogram` (nanoseconds) in HdrHistogram's text
/// form: value (ms), percentile, total count, 1/(1-percentile).
pub fn percentile_distribution(histogram: &Histogram<u64>) -> String {
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value(ms)", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if histogram.is_empty() {
        return out;
    }
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        let inverse = if quantile < 1.0 {
            format!("{:.2}", 1.0 / (1.0 - quantile))
        } else {
            "inf".to_string()
        };
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {:>14}",
            step.value_iterated_to() as f64 / 1e6,
            quantile,
            total,
            inverse
        );
    }
    let _ = writeln!(
        out,
        "#[Mean = {:.3}, StdDeviation = {:.3}]\n#[Max = {:.3}, Total count = {}]",
        histogram.mean() / 1e6,
        histogram.stdev() / 1e6,
        histogram.max() as f64 / 1e6,
        histogram.len()
    );
    out
}

/// Writes `report.md`, `report.json`, `hdr/*.txt` and `plots/*.png` into `out_dir`.
pub fn write(out_dir: &Path, info: &RunInfo, results: &[SystemResult]) -> Result<(), String> {
    let io = |path: &Path, error: std::io::Error| format!("{}: {error}", path.display());
    std::fs::create_dir_all(out_dir.join("hdr")).map_err(|e| io(out_dir, e))?;
    std::fs::create_dir_all(out_dir.join("plots")).map_err(|e| io(out_dir, e))?;
    let markdown_path = out_dir.join("report.md");
    std::fs::write(&markdown_path, markdown(info, results)).map_err(|e| io(&markdown_path, e))?;
    let json_path = out_dir.join("report.json");
    let text = serde_json::to_string_pretty(&json(info, results)).expect("JSON serialises");
    std::fs::write(&json_path, text).map_err(|e| io(&json_path, e))?;
    let mut query_histograms = Vec::new();
    for r in results {
        let path = out_dir
            .join("hdr")
            .join(format!("{}-ingest-ack.txt", r.kind.name()));
        std::fs::write(
            &path,
            percentile_distribution(r.ingest.recorder.histogram()),
        )
        .map_err(|e| io(&path, e))?;
        let mut all = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).expect("bounds");
        for (index, q) in r.queries.iter().enumerate() {
            let path = out_dir
                .join("hdr")
                .join(format!("{}-query-{index}.txt", r.kind.name()));
            std::fs::write(&path, percentile_distribution(q.recorder.histogram()))
                .map_err(|e| io(&path, e))?;
            all.add(q.recorder.histogram()).expect("same bounds");
        }
        query_histograms.push((r.kind.name(), all));
    }
    let ingest: Vec<(&str, &Histogram<u64>)> = results
        .iter()
        .map(|r| (r.kind.name(), r.ingest.recorder.histogram()))
        .collect();
    let plots = out_dir.join("plots");
    crate::plot::percentile_curves(
        &plots.join("ingest-ack-latency.png"),
        "remote-write ack latency",
        &ingest,
    )?;
    let queries: Vec<(&str, &Histogram<u64>)> =
        query_histograms.iter().map(|(n, h)| (*n, h)).collect();
    crate::plot::percentile_curves(
        &plots.join("query-latency.png"),
        "query_range latency (all panels)",
        &queries,
    )?;
    let timelines: Vec<(&str, &[u64])> = results
        .iter()
        .map(|r| (r.kind.name(), r.ingest.timeline.as_slice()))
        .collect();
    crate::plot::throughput(&plots.join("ingest-throughput.png"), &timelines)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::QueryOutcome;
    use std::time::Duration;

    fn result(kind: Kind, ack_ms: u64, samples: u64, bytes: u64) -> SystemResult {
        let mut ingest = IngestOutcome::empty(kind.name());
        for i in 1..=100 {
            ingest
                .recorder
                .record(Duration::from_micros(ack_ms * 1000 * i / 50));
        }
        ingest.samples_acked = samples;
        ingest.wall = Duration::from_secs(10);
        ingest.timeline = vec![samples / 10; 10];
        let mut query = QueryOutcome::empty(kind.name());
        query.recorder.record(Duration::from_millis(ack_ms * 3));
        query.series = Some(4);
        SystemResult {
            kind,
            version: "test".into(),
            ingest,
            ingest_cpu_seconds: 5.0,
            queries: vec![query],
            cpu_seconds: 9.0,
            peak_rss_bytes: 100 << 20,
            data_bytes: bytes,
            dir_bytes: bytes,
        }
    }

    fn info() -> RunInfo {
        RunInfo {
            command: "run".into(),
            workload: "w".into(),
            panels: vec![("p".into(), "up".into())],
            machine: "m".into(),
            date: "d".into(),
            commit: "c".into(),
        }
    }

    #[test]
    fn the_table_states_durability_throughput_and_ratios() {
        let results = [
            result(Kind::Metronome, 2, 1_000_000, 500_000),
            result(Kind::Prometheus, 1, 2_000_000, 4_000_000),
        ];
        let text = markdown(&info(), &results);
        assert!(text.contains("| metronome | yes | 100000 |"), "{text}");
        assert!(text.contains("| prometheus | no | 200000 |"), "{text}");
        // samples/s 0.5×, ack p50 2×, bytes/sample (0.5 vs 2.0) 0.25×.
        assert!(
            text.contains("| prometheus | 0.50× | 2.00× | 2.00× | 2.00× | 1.00× | 2.00× | 0.25× |"),
            "{text}"
        );
        let json = json(&info(), &results);
        assert_eq!(json["systems"][1]["samples_acked"], 2_000_000);
        assert_eq!(json["systems"][0]["acks_after_fsync"], true);
        assert!(json["series_disagreements"].as_array().unwrap().is_empty());
    }

    #[test]
    fn a_disagreement_on_series_is_reported() {
        let mut results = vec![
            result(Kind::Metronome, 2, 10, 10),
            result(Kind::VictoriaMetrics, 2, 10, 10),
        ];
        results[1].queries[0].series = Some(5);
        let lines = series_disagreements(&info(), &results);
        assert_eq!(
            lines,
            vec!["p: metronome 4, victoria-metrics 5".to_string()]
        );
    }

    #[test]
    fn the_distribution_ends_at_the_maximum_with_every_count() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for ms in 1..=1000u64 {
            h.record(ms * 1_000_000).unwrap();
        }
        let text = percentile_distribution(&h);
        let last = text
            .lines()
            .rfind(|line| !line.starts_with('#') && !line.trim().is_empty())
            .unwrap();
        let fields: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(fields[2], "1000", "{text}");
        assert!(
            (fields[0].parse::<f64>().unwrap() - 1000.0).abs() < 1.0,
            "{text}"
        );
    }

    #[test]
    fn the_report_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let results = [
            result(Kind::Metronome, 2, 1000, 10),
            result(Kind::Prometheus, 1, 1000, 10),
        ];
        write(dir.path(), &info(), &results).unwrap();
        for file in [
            "report.md",
            "report.json",
            "hdr/metronome-ingest-ack.txt",
            "hdr/prometheus-query-0.txt",
            "plots/ingest-ack-latency.png",
            "plots/query-latency.png",
            "plots/ingest-throughput.png",
        ] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap();
            assert!(!bytes.is_empty(), "{file}");
            if file.ends_with(".png") {
                assert_eq!(&bytes[1..4], b"PNG", "{file}");
            }
        }
    }
}
