//! The load and the checks: a writer per frontend sends Prometheus remote writes, each
//! sample with an identity of its own (writer, series, timestamp) and a value derived from
//! it, and records what was acknowledged (2xx) and what was only attempted (an error or
//! no answer: indeterminate). After the faults, every acknowledged sample must read back
//! through every frontend with its value, and nothing that was never attempted may.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metronome_frontend::remote_write::v1;
use prost::Message;

pub const METRIC: &str = "chaos_load";
const SERIES_PER_WRITE: u64 = 3;
/// A write that takes longer is abandoned (indeterminate).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A sample's identity: (writer, series, timestamp ms).
pub type SampleKey = (String, String, i64);

#[derive(Default)]
pub struct Ledger {
    pub attempted: BTreeMap<SampleKey, f64>,
    pub acknowledged: BTreeSet<SampleKey>,
    pub failed_writes: u64,
}

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// Wall-clock milliseconds, the timestamps' base.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// The series of write `seq` of `writer`, at `base_ms + seq`.
fn write_body(writer: &str, seq: u64, base_ms: i64) -> (Vec<u8>, Vec<(SampleKey, f64)>) {
    let mut samples = Vec::new();
    let timeseries = (0..SERIES_PER_WRITE)
        .map(|k| {
            let ts = base_ms + seq as i64;
            let value = seq as f64 + k as f64 / 10.0;
            samples.push(((writer.to_string(), format!("k{k}"), ts), value));
            v1::TimeSeries {
                labels: vec![
                    v1::Label {
                        name: "__name__".into(),
                        value: METRIC.into(),
                    },
                    v1::Label {
                        name: "k".into(),
                        value: format!("k{k}"),
                    },
                    v1::Label {
                        name: "writer".into(),
                        value: writer.into(),
                    },
                ],
                samples: vec![v1::Sample {
                    value,
                    timestamp: ts,
                }],
                histograms: vec![],
            }
        })
        .collect();
    let encoded = v1::WriteRequest {
        timeseries,
        metadata: vec![],
    }
    .encode_to_vec();
    let body = snap::raw::Encoder::new()
        .compress_vec(&encoded)
        .expect("snappy compresses any input");
    (body, samples)
}

/// Posts one remote write; whether it was acknowledged.
pub fn remote_write(agent: &ureq::Agent, http: &str, body: &[u8]) -> Result<(), String> {
    let response = agent
        .post(format!("http://{http}/api/v1/write"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .send(body)
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        let text = response.into_body().read_to_string().unwrap_or_default();
        Err(format!("{status}: {text}"))
    }
}

/// Starts writer `writer` against frontend `http` until `stop` is set.
pub fn start_writer(
    writer: String,
    http: String,
    base_ms: i64,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let agent = agent(WRITE_TIMEOUT);
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let (body, samples) = write_body(&writer, seq, base_ms);
            seq += 1;
            {
                let mut ledger = ledger.lock().unwrap();
                for (key, value) in &samples {
                    ledger.attempted.insert(key.clone(), *value);
                }
            }
            match remote_write(&agent, &http, &body) {
                Ok(()) => {
                    let mut ledger = ledger.lock().unwrap();
                    ledger
                        .acknowledged
                        .extend(samples.into_iter().map(|(key, _)| key));
                }
                Err(_) => {
                    ledger.lock().unwrap().failed_writes += 1;
                    // A frontend that is down answers at once: do not spin on it.
                    thread::sleep(Duration::from_millis(200));
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Every sample of the metric that frontend `http` reads back (a range selector over
/// `base_ms..end_ms` returns the raw samples).
pub fn read_back(http: &str, base_ms: i64, end_ms: i64) -> Result<Vec<(SampleKey, f64)>, String> {
    let range_s = ((end_ms - base_ms) / 1000 + 2).max(1);
    let query = format!("{METRIC}[{range_s}s]");
    let time = format!("{:.3}", end_ms as f64 / 1000.0);
    let response = agent(Duration::from_secs(60))
        .get(format!("http://{http}/api/v1/query"))
        .query("query", &query)
        .query("time", &time)
        .call()
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .read_to_string()
        .map_err(|error| error.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    for series in json["data"]["result"].as_array().ok_or("no result")? {
        let writer = series["metric"]["writer"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let k = series["metric"]["k"].as_str().unwrap_or("").to_string();
        let mut seen = BTreeSet::new();
        for point in series["values"].as_array().ok_or("no values")? {
            let ts = (point[0].as_f64().ok_or("no time")? * 1000.0).round() as i64;
            let value: f64 = point[1]
                .as_str()
                .ok_or("no value")?
                .parse()
                .map_err(|e| format!("{e}"))?;
            if !seen.insert(ts) {
                return Err(format!("series {writer}/{k} holds {ts} twice"));
            }
            samples.push(((writer.clone(), k.clone(), ts), value));
        }
    }
    Ok(samples)
}

/// What the check found through one frontend.
#[derive(Debug)]
pub struct Verdict {
    pub read: usize,
    pub lost: Vec<SampleKey>,
    pub phantoms: Vec<(SampleKey, f64)>,
}

pub fn check(ledger: &Ledger, read: &[(SampleKey, f64)]) -> Verdict {
    let read_map: BTreeMap<&SampleKey, f64> = read.iter().map(|(k, v)| (k, *v)).collect();
    let lost = ledger
        .acknowledged
        .iter()
        .filter(|key| read_map.get(key).copied() != ledger.attempted.get(*key).copied())
        .cloned()
        .collect();
    let phantoms = read
        .iter()
        .filter(|(key, value)| ledger.attempted.get(key) != Some(value))
        .cloned()
        .collect();
    Verdict {
        read: read.len(),
        lost,
        phantoms,
    }
}
