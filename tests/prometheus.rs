//! A real Prometheus (Debian's package) scrapes itself, Metronome and a target exposing
//! awkward but valid label names and values, and remote-writes everything to Metronome;
//! the same selectors then return the same series and samples from both, and Prometheus
//! reports no sample that Metronome refused.
//!
//! Without a `prometheus` binary on PATH this test says so and passes, unless
//! `METRONOME_REQUIRE_PROMETHEUS=1` (set by `.ci/run`, which installs the package).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// The raw samples of `selector` over the `range_s` seconds before `time`, as text.
fn raw(base: &str, selector: &str, time: f64, range_s: u32) -> Vec<(String, Vec<(f64, String)>)> {
    let reply = get_query(
        &format!("{base}/api/v1/query"),
        &[
            ("query", &format!("{selector}[{range_s}s]")),
            ("time", &format!("{time:.3}")),
        ],
    );
    assert_eq!(reply.status, 200, "{base}: {}", reply.body);
    let mut series: Vec<_> = matrix(&reply.json())
        .into_iter()
        .map(|(metric, points)| (metric.to_string(), points))
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    series
}

/// What the awkward target exposes: label names that are the metric columns' own names
/// (`value`, `ts`, `__ts`, `__value`), the escape prefix, reserved and odd names, and
/// values with quotes, backslashes, newlines and non-ASCII letters and digits.
const AWKWARD_EXPOSITION: &str = concat!(
    "# HELP demo_metric A metric whose labels are named like the metric columns.\n",
    "# TYPE demo_metric gauge\n",
    "demo_metric{value=\"a\"} 1\n",
    "demo_metric{ts=\"b\",value=\"c\"} 2\n",
    "demo_metric{__ts=\"t\",__value=\"v\",__label_value=\"x\"} 3\n",
    "# TYPE demo_awkward gauge\n",
    "demo_awkward{_=\"u\",Value=\"caps\",quote=\"say \\\"hi\\\"\",backslash=\"a\\\\b\",",
    "newline=\"a\\nb\",unicode=\"h\u{e9}llo \u{663} \u{65e5}\u{672c}\",le=\"+Inf\",",
    "__label_x=\"y\",job_=\"\"} 4\n",
);

/// Serves [`AWKWARD_EXPOSITION`] as Prometheus' text format on a free loopback port, for
/// as long as the test process lives.
fn serve_awkward_target() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // One request per connection: read its head, answer, close.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{AWKWARD_EXPOSITION}",
                AWKWARD_EXPOSITION.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

#[test]
fn a_real_prometheus_remote_writes_and_both_answer_the_same() {
    if !prometheus_available() {
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(&dir.path().join("metronome"));
    let prometheus_port = free_port();
    let awkward = serve_awkward_target();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{prometheus_port}']}}]\n\
         \x20 - job_name: metronome\n    static_configs: [{{targets: ['{}']}}]\n\
         \x20 - job_name: awkward\n    static_configs: [{{targets: ['{awkward}']}}]\n\
         remote_write:\n\
         \x20 - url: http://{}/api/v1/write\n    queue_config: {{batch_send_deadline: 1s}}\n\
         \x20   metadata_config: {{send_interval: 1s}}\n",
        node.http, node.http
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("prometheus").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let _prometheus = Running(prometheus);
    let prometheus_log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap();
    let prometheus_base = format!("http://127.0.0.1:{prometheus_port}");
    let metronome_base = format!("http://{}", node.http);

    // Prometheus' service discovery starts the first scrapes about 5 s after start; wait
    // until both targets have a few scrapes in Prometheus, then compare up to that time.
    let unix_now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let time = loop {
        let time = unix_now() - 1.0;
        let started = try_get_query(&format!("{prometheus_base}/-/ready"), &[])
            .is_ok_and(|reply| reply.status == 200);
        let up = if started {
            raw(&prometheus_base, "up", time, 5)
        } else {
            Vec::new()
        };
        if up.len() == 3 && up.iter().all(|(_, points)| points.len() >= 3) {
            break time;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape all three targets within 60 s: {up:?}; its log:\n{}",
            prometheus_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let selectors = [
        "up",
        "scrape_samples_scraped",
        r#"prometheus_http_requests_total{handler=~"/api/v1/.*"}"#,
        "metronome_ingested_samples_total",
        "demo_metric",
        r#"demo_metric{value="c"}"#,
        r#"demo_metric{__ts="t"}"#,
        "demo_awkward",
        r#"{__name__=~"demo_.*",unicode=~"h.llo .*"}"#,
        r#"demo_awkward{quote="say \"hi\"",backslash="a\\b",newline="a\nb"}"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    for selector in selectors {
        loop {
            let expected = raw(&prometheus_base, selector, time, 5);
            let actual = raw(&metronome_base, selector, time, 5);
            assert!(!expected.is_empty(), "Prometheus has no {selector}");
            if expected == actual {
                break;
            }
            // Remote write lags the scrapes by up to a batch deadline; wait for it.
            assert!(
                Instant::now() < deadline,
                "{selector} differs after 60 s:\nPrometheus: {expected:?}\nMetronome:  {actual:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // Every label went in: Prometheus drops a batch that gets a 400, and counts it.
    let failed = raw(
        &prometheus_base,
        "prometheus_remote_storage_samples_failed_total",
        unix_now(),
        5,
    );
    for (_, points) in &failed {
        assert!(
            points.iter().all(|(_, value)| value == "0"),
            "Prometheus failed to send samples to Metronome: {failed:?}; its log:\n{}",
            prometheus_log()
        );
    }

    // In SQL a label named like a metric column is `__label_<name>`; the rest keep their
    // names, and `ts` and `value` are the sample's.
    let sql = post(
        &format!("{metronome_base}/v1/sql"),
        "text/plain",
        None,
        b"SELECT \"__label_value\", \"__label_ts\", value FROM demo_metric \
          WHERE \"__label_value\" = 'c' ORDER BY ts DESC LIMIT 1",
    );
    assert_eq!(sql.status, 200, "{}", sql.body);
    let text = sql.body.to_string();
    assert!(text.contains("\"c\"") && text.contains("\"b\""), "{text}");

    // Metadata (type, help, unit) travels in its own remote-write requests; both
    // metadata APIs agree once it has arrived.
    for metric in ["prometheus_http_requests_total", "go_goroutines"] {
        loop {
            let query = [("metric", metric)];
            let expected = get_query(&format!("{prometheus_base}/api/v1/metadata"), &query).json()
                ["data"][metric]
                .clone();
            let actual = get_query(&format!("{metronome_base}/api/v1/metadata"), &query).json()
                ["data"][metric]
                .clone();
            assert!(
                expected.is_array(),
                "Prometheus has no metadata for {metric}"
            );
            if expected == actual {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "metadata of {metric} differs after 60 s:\nPrometheus: {expected}\nMetronome:  {actual}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
