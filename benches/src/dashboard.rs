//! The query load: dashboard-like `query_range` requests against the Prometheus HTTP API,
//! sent by closed-loop threads, with the same latency recording as the ingest load.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::{Duration, Instant};

use crate::load::{metric_name, shape, Shape, Workload};
use crate::LatencyRecorder;

/// One panel of a dashboard.
#[derive(Debug, Clone)]
pub struct Panel {
    pub name: String,
    pub query: String,
}

/// The dashboard over a [`Workload`]'s data: the panels an operator keeps open (rates
/// grouped by a label, a histogram quantile, a top-k of gauges, a ratio of filtered
/// rates, one raw series).
pub fn panels(workload: &Workload) -> Vec<Panel> {
    let first = |wanted: Shape| {
        (0..workload.metrics)
            .find(|&m| shape(m) == wanted)
            .map(metric_name)
    };
    let mut panels = Vec::new();
    let mut push = |name: &str, query: String| {
        panels.push(Panel {
            name: name.to_string(),
            query,
        })
    };
    if let Some(counter) = first(Shape::Counter) {
        push("rate by job", format!("sum by (job) (rate({counter}[5m]))"));
        push(
            "share of one job",
            format!("sum(rate({counter}{{job=\"api\"}}[5m])) / sum(rate({counter}[5m]))"),
        );
    }
    if let Some(bucket) = first(Shape::HistogramBucket) {
        push(
            "p99 by job",
            format!("histogram_quantile(0.99, sum by (le, job) (rate({bucket}[5m])))"),
        );
    }
    if let Some(gauge) = first(Shape::Gauge) {
        push(
            "top 5 gauges",
            format!("topk(5, max_over_time({gauge}[5m]))"),
        );
        push(
            "one host raw",
            format!("{gauge}{{instance=\"host-00001\"}}"),
        );
    }
    panels
}

/// What one run of a panel's requests against one server gave.
pub struct QueryOutcome {
    pub recorder: LatencyRecorder,
    /// Series in the last successful answer (to see that the systems agree).
    pub series: Option<usize>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl QueryOutcome {
    pub fn empty(name: &str) -> QueryOutcome {
        QueryOutcome {
            recorder: LatencyRecorder::new(name),
            series: None,
            errors: 0,
            first_error: None,
        }
    }

    pub fn absorb(&mut self, later: QueryOutcome) {
        self.recorder.merge_round(&later.recorder);
        self.series = later.series.or(self.series);
        self.errors += later.errors;
        if self.first_error.is_none() {
            self.first_error = later.first_error;
        }
    }
}

/// The time range and step of a panel's requests.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub start_s: f64,
    pub end_s: f64,
    pub step_s: f64,
}

/// Sends `query` `requests` times over `range` to `base` (a Prometheus-API server) from
/// `concurrency` threads. A request counts on HTTP 200 with `"status":"success"`.
pub fn run(
    base: &str,
    name: &str,
    query: &str,
    range: Range,
    requests: usize,
    concurrency: usize,
) -> QueryOutcome {
    assert!(concurrency > 0, "at least one thread");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let url = format!("{base}/api/v1/query_range");
    let (start, end, step) = (
        range.start_s.to_string(),
        range.end_s.to_string(),
        range.step_s.to_string(),
    );
    // One recorder for all threads: a round's median is over all of its requests.
    let recorder = std::sync::Mutex::new(LatencyRecorder::new(name));
    let outcomes: Vec<QueryOutcome> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..concurrency)
            .map(|thread| {
                let (agent, url, start, end, step, recorder) =
                    (agent.clone(), &url, &start, &end, &step, &recorder);
                scope.spawn(move || {
                    let mut outcome = QueryOutcome::empty(name);
                    for _ in (0..requests).filter(|i| i % concurrency == thread) {
                        let sent = Instant::now();
                        let answer = agent
                            .get(url)
                            .query("query", query)
                            .query("start", start)
                            .query("end", end)
                            .query("step", step)
                            .call()
                            .map_err(|e| e.to_string())
                            .and_then(|response| {
                                let status = response.status().as_u16();
                                let body = response
                                    .into_body()
                                    .with_config()
                                    .limit(1 << 30)
                                    .read_to_string()
                                    .map_err(|e| e.to_string())?;
                                let json: serde_json::Value = serde_json::from_str(&body)
                                    .map_err(|e| format!("HTTP {status}: {e}"))?;
                                if status != 200 || json["status"] != "success" {
                                    return Err(format!("HTTP {status}: {}", json["error"]));
                                }
                                Ok(json["data"]["result"].as_array().map_or(0, Vec::len))
                            });
                        let latency = sent.elapsed();
                        match answer {
                            Ok(series) => {
                                recorder.lock().unwrap().record(latency);
                                outcome.series = Some(series);
                            }
                            Err(error) => {
                                outcome.errors += 1;
                                outcome.first_error.get_or_insert(error);
                            }
                        }
                    }
                    outcome
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a query thread panicked"))
            .collect()
    });
    let mut total = QueryOutcome::empty(name);
    for outcome in outcomes {
        total.absorb(outcome);
    }
    total.recorder = recorder.into_inner().unwrap();
    total.recorder.end_round();
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Protocol;

    #[test]
    fn every_panel_names_a_metric_the_workload_writes() {
        let workload = Workload {
            series: 1000,
            metrics: 8,
            labels_per_series: 6,
            series_per_request: 100,
            samples_per_series: 1,
            churn_per_tick: 0,
            interval_ms: 10_000,
            start_ms: 0,
            protocol: Protocol::V1,
        };
        let names: Vec<String> = (0..workload.metrics).map(metric_name).collect();
        let panels = panels(&workload);
        assert_eq!(panels.len(), 5);
        for panel in &panels {
            assert!(
                names.iter().any(|name| panel.query.contains(name.as_str())),
                "{panel:?}"
            );
            promql_parser::parser::parse(&panel.query).expect("the panel parses");
        }
        // host-00001 exists: the gauge metric has a slot for every host below
        // series / metrics.
        assert!(workload.series / workload.metrics > 1);
    }
}
