//! The remote-write load: a synthetic fleet of scrape targets whose samples are sent as
//! Prometheus remote write 1.0 or 2.0 requests by a fixed number of closed-loop senders.
//!
//! The data is a pure function of the [`Workload`] and the request index, so that every
//! system of a comparison receives exactly the same samples, and a run split into rounds
//! (alternating between systems) sends each system the same requests in the same order.
//!
//! Series slot `s` belongs to metric `s % metrics`; metrics cycle through four shapes:
//! two counters, a gauge, and a classic histogram (8 `le` buckets per host). Every series
//! has `__name__`, `instance`, `job` and `pod` labels, `le` for buckets, and `dim_NN`
//! labels up to `labels_per_series`. Churn replaces `churn_per_tick` slots every scrape
//! tick, round-robin, by giving them a new `pod` (as a rolled-out deployment does).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metronome_frontend::remote_write::{v1, v2};
use prost::Message;

use crate::LatencyRecorder;

/// Labels every series has besides `le` and the `dim_NN` ones.
pub const BASE_LABELS: usize = 4;
/// The buckets of every histogram metric, and the share of requests below each.
const BUCKETS: [(&str, f64); 8] = [
    ("0.005", 0.2),
    ("0.01", 0.45),
    ("0.025", 0.7),
    ("0.05", 0.85),
    ("0.1", 0.95),
    ("0.25", 0.99),
    ("1", 0.999),
    ("+Inf", 1.0),
];
const JOBS: [&str; 4] = ["api", "web", "db", "cache"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(text: &str) -> Result<Protocol, String> {
        match text {
            "1" | "1.0" => Ok(Protocol::V1),
            "2" | "2.0" => Ok(Protocol::V2),
            other => Err(format!("remote write protocol {other:?}: use 1.0 or 2.0")),
        }
    }
}

/// What a metric's samples look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Counter,
    Gauge,
    HistogramBucket,
}

/// The shape of metric `metric`.
pub fn shape(metric: usize) -> Shape {
    match metric % 4 {
        0 | 1 => Shape::Counter,
        2 => Shape::Gauge,
        _ => Shape::HistogramBucket,
    }
}

/// The name of metric `metric`.
pub fn metric_name(metric: usize) -> String {
    match shape(metric) {
        Shape::Counter => format!("bench_counter_{metric}_total"),
        Shape::Gauge => format!("bench_gauge_{metric}"),
        Shape::HistogramBucket => format!("bench_latency_{metric}_seconds_bucket"),
    }
}

/// The data set and how it is cut into requests.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Active series (slots); churn replaces series but keeps this number.
    pub series: usize,
    /// Metric names the slots are spread over (shapes cycle counter, counter, gauge,
    /// histogram).
    pub metrics: usize,
    /// Labels per series, `__name__` included (at least [`BASE_LABELS`]; buckets have
    /// one more, `le`).
    pub labels_per_series: usize,
    /// Series per request.
    pub series_per_request: usize,
    /// Samples of each series per request (consecutive scrape ticks).
    pub samples_per_series: usize,
    /// Series replaced by new ones every scrape tick.
    pub churn_per_tick: usize,
    /// Sample time between scrape ticks.
    pub interval_ms: i64,
    /// Sample time of tick 0.
    pub start_ms: i64,
    pub protocol: Protocol,
}

impl Workload {
    /// Checks the bounds a run relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.series == 0 || self.metrics == 0 || self.series_per_request == 0 {
            return Err("series, metrics and series per request must be positive".into());
        }
        if self.samples_per_series == 0 || self.interval_ms <= 0 {
            return Err("samples per series and the interval must be positive".into());
        }
        if self.labels_per_series < BASE_LABELS || self.labels_per_series > BASE_LABELS + 99 {
            return Err(format!(
                "labels per series must be between {BASE_LABELS} and {}",
                BASE_LABELS + 99
            ));
        }
        Ok(())
    }

    /// Requests that make up one batch of ticks (every series once).
    pub fn requests_per_batch(&self) -> usize {
        self.series.div_ceil(self.series_per_request)
    }

    /// Requests needed to send at least `samples` samples.
    pub fn requests_for_samples(&self, samples: u64) -> usize {
        let per_batch = (self.series * self.samples_per_series) as u64;
        let batches = samples.div_ceil(per_batch) as usize;
        batches * self.requests_per_batch()
    }

    /// Scrape ticks covered by `requests` requests.
    pub fn ticks_for_requests(&self, requests: usize) -> i64 {
        (requests.div_ceil(self.requests_per_batch()) * self.samples_per_series) as i64
    }

    /// The sample time of the last tick a run of `requests` requests sends.
    pub fn end_ms(&self, requests: usize) -> i64 {
        self.start_ms + (self.ticks_for_requests(requests) - 1).max(0) * self.interval_ms
    }

    /// How many times slot `slot` was replaced by scrape tick `tick`.
    fn generation(&self, slot: usize, tick: u64) -> u64 {
        let replaced = tick * self.churn_per_tick as u64;
        let slot = slot as u64;
        if replaced > slot {
            (replaced - slot - 1) / self.series as u64 + 1
        } else {
            0
        }
    }

    /// The labels of slot `slot` at tick `tick`, sorted by name.
    pub fn labels(&self, slot: usize, tick: u64) -> Vec<(String, String)> {
        let metric = slot % self.metrics;
        let rest = slot / self.metrics;
        let (host, le) = match shape(metric) {
            Shape::HistogramBucket => (rest / BUCKETS.len(), Some(rest % BUCKETS.len())),
            _ => (rest, None),
        };
        let mut labels = Vec::with_capacity(self.labels_per_series + 1);
        labels.push(("__name__".to_string(), metric_name(metric)));
        for dim in 0..self.labels_per_series - BASE_LABELS {
            labels.push((
                format!("dim_{dim:02}"),
                format!("v{}", (host / (dim + 1)) % 10),
            ));
        }
        labels.push(("instance".to_string(), format!("host-{host:05}")));
        labels.push(("job".to_string(), JOBS[host % JOBS.len()].to_string()));
        if let Some(le) = le {
            labels.push(("le".to_string(), BUCKETS[le].0.to_string()));
        }
        let generation = self.generation(slot, tick);
        labels.push(("pod".to_string(), format!("pod-{host:05}-{generation}")));
        labels
    }

    /// The value of slot `slot` at tick `tick`: counters grow by a per-series rate,
    /// gauges wave, buckets hold their share of a per-host request counter.
    pub fn value(&self, slot: usize, tick: u64) -> f64 {
        let metric = slot % self.metrics;
        let t = tick as f64;
        match shape(metric) {
            Shape::Counter => (t * (1.0 + (slot % 13) as f64 * 0.731)).floor(),
            Shape::Gauge => (1e6 + 5e4 * (t / 20.0 + slot as f64).sin()).round(),
            Shape::HistogramBucket => {
                let rest = slot / self.metrics;
                let host = rest / BUCKETS.len();
                let requests = (t * (3.0 + (host % 7) as f64 * 1.37)).floor();
                (requests * BUCKETS[rest % BUCKETS.len()].1).floor()
            }
        }
    }

    /// Request `index`: its slots and ticks.
    fn request_span(&self, index: usize) -> (Range<usize>, Range<u64>) {
        let per_batch = self.requests_per_batch();
        let batch = (index / per_batch) as u64;
        let first = (index % per_batch) * self.series_per_request;
        let slots = first..(first + self.series_per_request).min(self.series);
        let sps = self.samples_per_series as u64;
        (slots, batch * sps..(batch + 1) * sps)
    }

    /// The compressed body of request `index` and its sample count.
    pub fn body(&self, index: usize) -> (Vec<u8>, u64) {
        let (slots, ticks) = self.request_span(index);
        let samples = (slots.len() * ticks.clone().count()) as u64;
        let sample_ms = |tick: u64| self.start_ms + tick as i64 * self.interval_ms;
        let encoded = match self.protocol {
            Protocol::V1 => {
                let timeseries = slots
                    .map(|slot| v1::TimeSeries {
                        labels: self
                            .labels(slot, ticks.start)
                            .into_iter()
                            .map(|(name, value)| v1::Label { name, value })
                            .collect(),
                        samples: ticks
                            .clone()
                            .map(|tick| v1::Sample {
                                value: self.value(slot, tick),
                                timestamp: sample_ms(tick),
                            })
                            .collect(),
                        histograms: vec![],
                    })
                    .collect();
                v1::WriteRequest {
                    timeseries,
                    metadata: vec![],
                }
                .encode_to_vec()
            }
            Protocol::V2 => {
                // Symbol 0 is the empty string, as the 2.0 spec requires.
                let mut symbols = vec![String::new()];
                let mut refs: HashMap<String, u32> = HashMap::from([(String::new(), 0)]);
                let mut symbol = |text: String| -> u32 {
                    *refs.entry(text).or_insert_with_key(|text| {
                        symbols.push(text.clone());
                        (symbols.len() - 1) as u32
                    })
                };
                let timeseries = slots
                    .map(|slot| v2::TimeSeries {
                        labels_refs: self
                            .labels(slot, ticks.start)
                            .into_iter()
                            .flat_map(|(name, value)| [symbol(name), symbol(value)])
                            .collect(),
                        samples: ticks
                            .clone()
                            .map(|tick| v2::Sample {
                                value: self.value(slot, tick),
                                timestamp: sample_ms(tick),
                            })
                            .collect(),
                        histograms: vec![],
                        metadata: None,
                    })
                    .collect();
                v2::Request {
                    symbols,
                    timeseries,
                }
                .encode_to_vec()
            }
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&encoded)
            .expect("snappy compresses any input");
        (body, samples)
    }

    /// The bodies of `requests`, built on `threads` threads.
    pub fn bodies(&self, requests: Range<usize>, threads: usize) -> Vec<(Vec<u8>, u64)> {
        let indexes: Vec<usize> = requests.collect();
        let chunk = indexes.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|scope| {
            let parts: Vec<_> = indexes
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || part.iter().map(|&i| self.body(i)).collect::<Vec<_>>())
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().expect("a body builder panicked"))
                .collect::<Vec<_>>()
        })
    }
}

/// What one run of requests against one receiver gave.
pub struct IngestOutcome {
    /// Ack latency of the acknowledged requests.
    pub recorder: LatencyRecorder,
    pub samples_acked: u64,
    pub requests_acked: u64,
    /// Failed requests by kind (`HTTP 400`, or the transport error).
    pub errors: BTreeMap<String, u64>,
    /// The first failure's message, for the report.
    pub first_error: Option<String>,
    pub wall: Duration,
    /// Samples acknowledged in each second of the run.
    pub timeline: Vec<u64>,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// Sends `bodies` (requests `first_index..` of `workload`) to `urls` from `concurrency`
/// closed-loop senders, sender `i` to `urls[i % urls.len()]` (a cluster's frontends). A sender owns a fixed set of request slices and sends them in
/// order, so that every series' samples arrive in time order (Prometheus refuses them
/// otherwise). `progress` is advanced by the samples acknowledged.
pub fn send(
    workload: &Workload,
    bodies: &[(Vec<u8>, u64)],
    first_index: usize,
    urls: &[String],
    name: &str,
    concurrency: usize,
    progress: &indicatif::ProgressBar,
) -> IngestOutcome {
    assert!(concurrency > 0, "at least one sender");
    assert!(!urls.is_empty(), "somewhere to send");
    let per_batch = workload.requests_per_batch();
    let content_type = match workload.protocol {
        Protocol::V1 => "application/x-protobuf",
        Protocol::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    };
    let version = match workload.protocol {
        Protocol::V1 => "0.1.0",
        Protocol::V2 => "2.0.0",
    };
    let samples_acked = AtomicU64::new(0);
    let requests_acked = AtomicU64::new(0);
    let recorder = Mutex::new(LatencyRecorder::new(name));
    let errors: Mutex<(BTreeMap<String, u64>, Option<String>)> = Mutex::default();
    let timeline: Mutex<Vec<u64>> = Mutex::default();
    let agent = agent(Duration::from_secs(120));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for sender in 0..concurrency {
            let (agent, samples_acked, requests_acked, recorder, errors, timeline) = (
                agent.clone(),
                &samples_acked,
                &requests_acked,
                &recorder,
                &errors,
                &timeline,
            );
            let url = urls[sender % urls.len()].as_str();
            scope.spawn(move || {
                let mine = (0..bodies.len())
                    .filter(|i| ((first_index + i) % per_batch) % concurrency == sender);
                for (body, samples) in mine.map(|i| &bodies[i]) {
                    let sent = Instant::now();
                    let response = agent
                        .post(url)
                        .header("Content-Type", content_type)
                        .header("Content-Encoding", "snappy")
                        .header("X-Prometheus-Remote-Write-Version", version)
                        .send(&body[..]);
                    let latency = sent.elapsed();
                    let failure = match response {
                        Ok(response) if response.status().is_success() => None,
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let text = response.into_body().read_to_string().unwrap_or_default();
                            Some((format!("HTTP {status}"), format!("HTTP {status}: {text}")))
                        }
                        Err(error) => Some(("transport".to_string(), error.to_string())),
                    };
                    match failure {
                        None => {
                            recorder.lock().unwrap().record(latency);
                            samples_acked.fetch_add(*samples, Ordering::Relaxed);
                            requests_acked.fetch_add(1, Ordering::Relaxed);
                            progress.inc(*samples);
                            let second = started.elapsed().as_secs() as usize;
                            let mut timeline = timeline.lock().unwrap();
                            if timeline.len() <= second {
                                timeline.resize(second + 1, 0);
                            }
                            timeline[second] += samples;
                        }
                        Some((kind, message)) => {
                            let mut errors = errors.lock().unwrap();
                            *errors.0.entry(kind).or_default() += 1;
                            errors.1.get_or_insert(message);
                        }
                    }
                }
            });
        }
    });
    let wall = started.elapsed();
    let mut recorder = recorder.into_inner().unwrap();
    recorder.end_round();
    let (errors, first_error) = errors.into_inner().unwrap();
    IngestOutcome {
        recorder,
        samples_acked: samples_acked.into_inner(),
        requests_acked: requests_acked.into_inner(),
        errors,
        first_error,
        wall,
        timeline: timeline.into_inner().unwrap(),
    }
}

impl IngestOutcome {
    pub fn empty(name: &str) -> IngestOutcome {
        IngestOutcome {
            recorder: LatencyRecorder::new(name),
            samples_acked: 0,
            requests_acked: 0,
            errors: BTreeMap::new(),
            first_error: None,
            wall: Duration::ZERO,
            timeline: Vec::new(),
        }
    }

    /// Adds a later run's results: the timeline continues where this one ends.
    pub fn absorb(&mut self, later: IngestOutcome) {
        self.recorder.merge_round(&later.recorder);
        self.samples_acked += later.samples_acked;
        self.requests_acked += later.requests_acked;
        for (kind, count) in later.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = later.first_error;
        }
        self.wall += later.wall;
        self.timeline.extend(later.timeline);
    }

    pub fn samples_per_second(&self) -> f64 {
        self.samples_acked as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A progress bar for `total` samples, drawn on stderr when it is a terminal.
pub fn progress_bar(total: u64, name: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>18} [{elapsed_precise}] {wide_bar} {pos}/{len} samples ({per_sec})",
        )
        .expect("the template is valid"),
    );
    bar.set_prefix(name.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_frontend::remote_write::{decode, Protocol as Decoding};

    fn workload(protocol: Protocol) -> Workload {
        Workload {
            series: 100,
            metrics: 4,
            labels_per_series: 7,
            series_per_request: 30,
            samples_per_series: 2,
            churn_per_tick: 5,
            interval_ms: 10_000,
            start_ms: 1_700_000_000_000,
            protocol,
        }
    }

    #[test]
    fn every_slot_is_sent_once_per_batch_with_its_shape_and_labels() {
        let w = workload(Protocol::V1);
        assert_eq!(w.requests_per_batch(), 4);
        let mut seen = std::collections::BTreeSet::new();
        for index in 0..4 {
            let (body, samples) = w.body(index);
            let decoded = decode(Decoding::V1, &body).unwrap();
            let count: usize = decoded.series.iter().map(|s| s.samples.len()).sum();
            assert_eq!(count as u64, samples);
            for series in decoded.series {
                assert_eq!(series.samples.len(), 2);
                let extra = usize::from(series.metric_name().ends_with("_bucket"));
                assert_eq!(series.labels.len(), 7 + extra, "{:?}", series.labels);
                assert!(
                    seen.insert(series.labels),
                    "a series sent twice in one batch"
                );
            }
        }
        assert_eq!(seen.len(), 100);
        assert_eq!(w.requests_for_samples(200), 4);
        assert_eq!(w.requests_for_samples(201), 8);
        assert_eq!(w.end_ms(8), w.start_ms + 3 * 10_000);
    }

    #[test]
    fn both_protocols_carry_the_same_samples() {
        for index in [0, 5] {
            let v1 = decode(Decoding::V1, &workload(Protocol::V1).body(index).0).unwrap();
            let v2 = decode(Decoding::V2, &workload(Protocol::V2).body(index).0).unwrap();
            assert_eq!(v1.series, v2.series);
        }
    }

    #[test]
    fn counters_and_buckets_never_decrease_and_churn_renames_slots_round_robin() {
        let w = workload(Protocol::V1);
        for slot in 0..w.series {
            for tick in 0..50 {
                if shape(slot % w.metrics) != Shape::Gauge {
                    assert!(
                        w.value(slot, tick + 1) >= w.value(slot, tick),
                        "{slot} {tick}"
                    );
                }
            }
        }
        // Buckets of one host are cumulative in `le`.
        let host_buckets: Vec<f64> = (0..8).map(|b| w.value(3 + 4 * b, 40)).collect();
        assert!(
            host_buckets.windows(2).all(|p| p[0] <= p[1]),
            "{host_buckets:?}"
        );
        // 5 slots per tick: after tick 1 slots 0..5 are renamed, slot 5 not yet.
        let pod = |slot, tick| w.labels(slot, tick).last().unwrap().1.clone();
        assert_ne!(pod(0, 0), pod(0, 1));
        assert_eq!(pod(5, 0), pod(5, 1));
        assert_ne!(pod(5, 0), pod(5, 2));
        // After 20 ticks every slot was replaced exactly once.
        assert!((0..100).all(|slot| pod(slot, 20).ends_with("-1")));
    }
}
