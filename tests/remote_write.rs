//! Prometheus remote write into a real `metronome standalone`, read back through the
//! Prometheus query API; malformed requests get the right status and a readable message
//! and take nothing away; kill -9 loses no acknowledged sample.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::collections::BTreeMap;

use common::*;
use metronome_frontend::remote_write::v2;
use prost::Message;

const T0: i64 = 1_700_000_000_000;

fn labels(name: &str, pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut all = vec![("__name__", name.to_string())];
    all.extend(pairs.iter().map(|(n, v)| (*n, v.to_string())));
    all.sort();
    all
}

/// Every series of `metric` with its raw samples in `[start, end]`, from a range
/// selector evaluated at `end`.
fn raw_samples(
    http: std::net::SocketAddr,
    selector: &str,
    end_ms: i64,
    range_s: i64,
) -> BTreeMap<String, Vec<(f64, String)>> {
    let reply = get_query(
        &format!("http://{http}/api/v1/query"),
        &[
            ("query", &format!("{selector}[{range_s}s]")),
            ("time", &format!("{}", end_ms as f64 / 1000.0)),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    matrix(&reply.json())
        .into_iter()
        .map(|(metric, points)| (metric.to_string(), points))
        .collect()
}

#[test]
fn samples_written_with_v1_and_v2_read_back_and_bad_requests_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let http = node.http;
    assert_eq!(get(&format!("http://{http}/health")).status, 200);

    // v1: two metrics, three series, a label only one series has.
    let body = write_request(&[
        (
            labels("http_requests_total", &[("code", "200"), ("job", "api")]),
            vec![(T0, 1.0), (T0 + 15_000, 2.0)],
        ),
        (
            labels("http_requests_total", &[("code", "500"), ("job", "api")]),
            vec![(T0, 7.0)],
        ),
        (
            labels("up", &[("instance", "a:9100"), ("job", "node")]),
            vec![(T0, 1.0)],
        ),
    ]);
    let reply = remote_write(http, &body);
    assert_eq!(reply.status, 204, "{}", reply.body);

    // v2: a new label on an existing metric, through the symbol table.
    let request = v2::Request {
        symbols: [
            "",
            "__name__",
            "up",
            "instance",
            "b:9100",
            "job",
            "node",
            "zone",
            "eu",
            "Whether the target is up.",
        ]
        .map(String::from)
        .to_vec(),
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4, 5, 6, 7, 8],
            samples: vec![v2::Sample {
                value: 0.0,
                timestamp: T0 + 1_000,
            }],
            histograms: vec![],
            metadata: Some(v2::Metadata {
                r#type: 2,
                help_ref: 9,
                unit_ref: 0,
            }),
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap();
    let reply = post(
        &format!("http://{http}/api/v1/write"),
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        Some("snappy"),
        &body,
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(
        reply.header("X-Prometheus-Remote-Write-Samples-Written"),
        Some("1")
    );
    // The series' metadata is kept, as Prometheus' metadata API shows it.
    let metadata = get(&format!("http://{http}/api/v1/metadata?metric=up")).json();
    assert_eq!(
        metadata["data"],
        serde_json::json!({"up": [{"type": "gauge", "help": "Whether the target is up.", "unit": ""}]}),
        "{metadata}"
    );

    let expected_requests = raw_samples(http, "http_requests_total", T0 + 15_000, 60);
    assert_eq!(expected_requests.len(), 2, "{expected_requests:?}");
    let ok = &expected_requests[r#"{"__name__":"http_requests_total","code":"200","job":"api"}"#];
    assert_eq!(
        ok,
        &[
            (1_700_000_000.0, "1".to_string()),
            (1_700_000_015.0, "2".to_string())
        ]
    );
    let ups = raw_samples(http, r#"up{job="node"}"#, T0 + 15_000, 60);
    assert_eq!(
        ups.keys().cloned().collect::<Vec<_>>(),
        [
            r#"{"__name__":"up","instance":"a:9100","job":"node"}"#,
            r#"{"__name__":"up","instance":"b:9100","job":"node","zone":"eu"}"#,
        ]
    );
    // A range query sees the latest sample within the lookback at every step.
    let reply = get_query(
        &format!("http://{http}/api/v1/query_range"),
        &[
            ("query", r#"http_requests_total{code="200"}"#),
            ("start", "1700000000"),
            ("end", "1700000030"),
            ("step", "15s"),
        ],
    );
    let series = matrix(&reply.json());
    assert_eq!(
        series[0].1,
        [
            (1_700_000_000.0, "1".to_string()),
            (1_700_000_015.0, "2".to_string()),
            (1_700_000_030.0, "2".to_string())
        ]
    );

    // A staleness marker ends a series at once, instead of after the 5-minute lookback.
    let stale = f64::from_bits(metronome_frontend::prom_model::STALE_NAN_BITS);
    let body = write_request(&[(
        labels("gone", &[("job", "x")]),
        vec![(T0, 1.0), (T0 + 30_000, stale)],
    )]);
    assert_eq!(remote_write(http, &body).status, 204);
    let reply = get_query(
        &format!("http://{http}/api/v1/query_range"),
        &[
            ("query", "gone"),
            ("start", "1700000000"),
            ("end", "1700000060"),
            ("step", "15s"),
        ],
    );
    let series = matrix(&reply.json());
    assert_eq!(
        series[0].1,
        [
            (1_700_000_000.0, "1".to_string()),
            (1_700_000_015.0, "1".to_string())
        ],
        "the marker, stored bit for bit, hides the series from 30 s on"
    );

    // The metadata endpoints.
    let reply = get_query(
        &format!("http://{http}/api/v1/series"),
        &[
            ("match[]", "up"),
            ("start", "1699999000"),
            ("end", "1700001000"),
        ],
    );
    assert_eq!(
        reply.json()["data"].as_array().unwrap().len(),
        2,
        "{}",
        reply.body
    );
    let names = get(&format!("http://{http}/api/v1/label/__name__/values")).json();
    assert_eq!(
        names["data"],
        serde_json::json!(["gone", "http_requests_total", "up"])
    );
    let zones = get(&format!("http://{http}/api/v1/label/zone/values")).json();
    assert_eq!(zones["data"], serde_json::json!(["eu"]));
    let labels_reply = get(&format!("http://{http}/api/v1/labels")).json();
    for name in ["__name__", "code", "instance", "job", "zone"] {
        assert!(
            labels_reply["data"]
                .as_array()
                .unwrap()
                .contains(&name.into()),
            "{labels_reply}"
        );
    }

    // The catalogue of bad requests: each gets its status and says what is wrong.
    let good = write_request(&[(labels("up", &[("job", "x")]), vec![(T0, 5.0)])]);
    // (what, content type, encoding, body, status, part of the message)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bad snappy",
            "application/x-protobuf",
            Some("snappy"),
            b"\xff\xff\xff\xff\xff\xff".to_vec(),
            400,
            "snappy",
        ),
        (
            "truncated protobuf",
            "application/x-protobuf",
            Some("snappy"),
            {
                let raw = snap::raw::Decoder::new().decompress_vec(&good).unwrap();
                snap::raw::Encoder::new()
                    .compress_vec(&raw[..raw.len() - 2])
                    .unwrap()
            },
            400,
            "WriteRequest",
        ),
        (
            "unsorted labels",
            "application/x-protobuf",
            Some("snappy"),
            write_request(&[(
                vec![("job", "x".into()), ("__name__", "up".into())],
                vec![(T0, 1.0)],
            )]),
            400,
            "sorted",
        ),
        (
            "duplicate labels",
            "application/x-protobuf",
            Some("snappy"),
            write_request(&[(
                vec![
                    ("__name__", "up".into()),
                    ("job", "x".into()),
                    ("job", "y".into()),
                ],
                vec![(T0, 1.0)],
            )]),
            400,
            "duplicate",
        ),
        (
            "empty label name",
            "application/x-protobuf",
            Some("snappy"),
            write_request(&[(
                vec![("", "x".into()), ("__name__", "up".into())],
                vec![(T0, 1.0)],
            )]),
            400,
            "empty name",
        ),
        (
            "invalid metric name",
            "application/x-protobuf",
            Some("snappy"),
            write_request(&[(vec![("__name__", "0up".into())], vec![(T0, 1.0)])]),
            400,
            "0up",
        ),
        (
            "huge declared length",
            "application/x-protobuf",
            Some("snappy"),
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            400,
            "limit",
        ),
        (
            "wrong content type",
            "application/json",
            None,
            good.clone(),
            415,
            "Content-Type",
        ),
        (
            "wrong encoding",
            "application/x-protobuf",
            Some("gzip"),
            good.clone(),
            415,
            "Content-Encoding",
        ),
    ];
    for (what, content_type, encoding, body, status, message) in cases {
        let reply = post(
            &format!("http://{http}/api/v1/write"),
            content_type,
            encoding,
            &body,
        );
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert!(reply.body.contains(message), "{what}: {}", reply.body);
    }
    // Nothing acknowledged before went missing, and the server still takes writes.
    assert_eq!(
        raw_samples(http, "http_requests_total", T0 + 15_000, 60),
        expected_requests
    );
    assert_eq!(remote_write(http, &good).status, 204);

    // Query errors come in Prometheus' format.
    let reply = get_query(&format!("http://{http}/api/v1/query"), &[("query", "up{")]);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["errorType"], "bad_data");
    let reply = get_query(
        &format!("http://{http}/api/v1/query"),
        &[("query", r#"label_replace(vector(1), "a", "$1", "b", "(")"#)],
    );
    assert_eq!(reply.status, 422);
    assert_eq!(reply.json()["errorType"], "execution");
    // A query nested deep enough to overflow a stack is refused, and the server lives.
    let deep = format!("query={}1{}", "(".repeat(20_000), ")".repeat(20_000));
    let reply = post(
        &format!("http://{http}/api/v1/query"),
        "application/x-www-form-urlencoded",
        None,
        deep.as_bytes(),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("nests deeper"), "{}", reply.body);

    let metrics = get(&format!("http://{http}/metrics"));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("metronome_ingested_samples_total 8"),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains(",shard=\"1\"}"), "{}", metrics.body);
}

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let http = node.http;
    let series_count = 50;
    let (acked_sender, acked) = std::sync::mpsc::channel::<i64>();
    let writer = std::thread::spawn(move || {
        // Batch `i` writes sample `i` of every series; it is acknowledged when it gets 204.
        for i in 0.. {
            let batch: Vec<Series> = (0..series_count)
                .map(|s| {
                    (
                        labels("load_test", &[("series", &format!("s{s:03}"))]),
                        vec![(T0 + i * 1000, i as f64)],
                    )
                })
                .collect();
            let body = write_request(&batch);
            let request = common::agent()
                .post(format!("http://{http}/api/v1/write"))
                .header("Content-Type", "application/x-protobuf")
                .header("Content-Encoding", "snappy")
                .send(&body[..]);
            match request {
                Ok(response) if response.status() == 204 => {
                    if acked_sender.send(i).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    // Kill once a good number of batches went through, while more are in flight.
    let mut last_acked = 0;
    while last_acked < 200 {
        last_acked = acked.recv().unwrap();
    }
    let mut node = node;
    node.process.signal(libc::SIGKILL);
    node.process.0.wait().unwrap();
    writer.join().unwrap();
    let last_acked = acked.iter().last().unwrap_or(last_acked);

    let node = start_standalone(dir.path());
    let samples = raw_samples(node.http, "load_test", T0 + (last_acked + 1) * 1000, 10_000);
    assert_eq!(samples.len(), series_count as usize);
    for (series, points) in samples {
        // Every acknowledged batch is there (a batch in flight at the kill may be too).
        assert!(
            points.len() as i64 > last_acked,
            "{series}: {} points",
            points.len()
        );
        for (index, (ts, value)) in points.iter().enumerate() {
            assert_eq!(*ts, (T0 + index as i64 * 1000) as f64 / 1000.0);
            assert_eq!(value, &index.to_string());
        }
    }
}

#[test]
fn a_graceful_stop_flushes_so_the_next_start_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_standalone(dir.path());
    assert!(
        node.ready_line.contains("replayed_rows=0"),
        "{}",
        node.ready_line
    );
    let batch: Vec<Series> = (0..20)
        .map(|s| {
            (
                labels("stop_test", &[("series", &format!("s{s:02}"))]),
                (0..5).map(|i| (T0 + i * 1000, i as f64)).collect(),
            )
        })
        .collect();
    assert_eq!(
        common::remote_write(node.http, &write_request(&batch)).status,
        204
    );
    node.process.signal(libc::SIGTERM);
    assert!(node.process.0.wait().unwrap().success());
    let log: Vec<String> = node.lines.iter().collect();
    assert!(
        log.iter()
            .any(|line| line.contains("flushed the memtables")),
        "{log:?}"
    );

    let node = start_standalone(dir.path());
    assert!(
        node.ready_line.contains("replayed_rows=0"),
        "{}",
        node.ready_line
    );
    let samples = raw_samples(node.http, "stop_test", T0 + 5000, 10_000);
    assert_eq!(samples.len(), 20);
    assert!(
        samples.iter().all(|(_, points)| points.len() == 5),
        "{samples:?}"
    );
}

#[test]
fn every_valid_label_name_is_stored_and_a_series_past_the_label_limit_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());

    // Labels named like the metric columns, in the regions and in SQL.
    const AWKWARD: [(&str, &str); 6] = [
        ("value", "v"),
        ("ts", "t"),
        ("__ts", "pt"),
        ("__value", "pv"),
        ("__label_value", "e"),
        ("__meta_x", "m"),
    ];
    let awkward = labels("awkward", &AWKWARD);
    let reply = remote_write(node.http, &write_request(&[(awkward, vec![(T0, 1.5)])]));
    assert_eq!(reply.status, 204, "{}", reply.body);
    let stored = raw_samples(node.http, r#"awkward{value="v",__ts="pt"}"#, T0, 60);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let (metric, points) = stored.iter().next().unwrap();
    let metric: serde_json::Value = serde_json::from_str(metric).unwrap();
    for (name, value) in AWKWARD {
        assert_eq!(metric[name], value, "{metric}");
    }
    assert_eq!(points, &[(T0 as f64 / 1000.0, "1.5".to_string())]);
    let labels_reply = get(&format!("http://{}/api/v1/labels", node.http));
    for name in ["value", "ts", "__ts", "__label_value"] {
        assert!(
            labels_reply.body.contains(&format!("\"{name}\"")),
            "{}",
            labels_reply.body
        );
    }

    // A series with one label more than the default limit (64) is refused with a 400
    // that names the limit; the other series of the request are stored.
    let mut wide = vec![("__name__", "wide".to_string())];
    for i in 0..65 {
        let name: &'static str = Box::leak(format!("l{i:03}").into_boxed_str());
        wide.push((name, "x".to_string()));
    }
    let reply = remote_write(
        node.http,
        &write_request(&[
            (labels("kept", &[("job", "a")]), vec![(T0, 2.0)]),
            (wide, vec![(T0, 3.0)]),
        ]),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.contains("labels_per_series_max") && reply.body.contains("64"),
        "{}",
        reply.body
    );
    assert_eq!(raw_samples(node.http, "kept", T0, 60).len(), 1);
    assert!(raw_samples(node.http, "wide", T0, 60).is_empty());
}
