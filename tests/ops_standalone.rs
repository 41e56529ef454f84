//! Operating a standalone process: what its log says at each level, how it starts and
//! stops, how it names a path it cannot use, what `/metrics` and the build info answer.
// These tests drive a real process, so they use real files, processes and signals.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// The value of `key=` in a log line (`tracing`'s default format).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn at_debug_every_request_is_logged_with_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone_with(dir.path(), &["--log", "debug"]);
    let reply = get(&format!("http://{}/health", node.http));
    assert_eq!(reply.status, 200);
    let id = reply
        .header("x-request-id")
        .expect("every response names its request id")
        .to_string();
    let seen = read_log_until(&node.lines, "for the /health request", |line| {
        field(line, "request_id") == Some(id.as_str())
    });
    let line = seen.last().unwrap();
    assert!(line.contains("DEBUG"), "{line}");
    assert_eq!(field(line, "path"), Some("/health"), "{line}");
    assert_eq!(field(line, "method"), Some("GET"), "{line}");
    assert_eq!(field(line, "status"), Some("200"), "{line}");
    assert!(field(line, "latency_ms").is_some(), "{line}");
}

#[test]
fn by_default_rejections_are_logged_once_and_successes_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let base = format!("http://{}", node.http);
    let request_id = |reply: &Reply| reply.header("x-request-id").unwrap().to_string();

    let success = get(&format!("{base}/health"));
    assert_eq!(success.status, 200);
    let success_id = request_id(&success);
    // A query without its `query` parameter: 400, and a message naming it.
    let rejected = get(&format!("{base}/api/v1/query"));
    assert_eq!(rejected.status, 400, "{}", rejected.body);
    let rejected_id = request_id(&rejected);
    assert_ne!(success_id, rejected_id);
    // Each request's line is written before its response is sent, so by the time the
    // rejection's line is read, a line for the success would have been read before it.
    let seen = read_log_until(&node.lines, "for the rejected query", |line| {
        field(line, "request_id") == Some(rejected_id.as_str())
    });
    let line = seen.last().unwrap();
    assert!(line.contains("INFO"), "{line}");
    assert_eq!(field(line, "status"), Some("400"), "{line}");
    assert!(line.contains("missing"), "the response's message: {line}");
    assert!(
        !seen.iter().any(|line| line.contains(&success_id)),
        "a success is logged at debug only: {seen:#?}"
    );

    // Once: a later request's line comes after any repeat would have.
    let later = get(&format!("{base}/api/v1/label/0bad/values"));
    assert_eq!(later.status, 400, "{}", later.body);
    let later_id = request_id(&later);
    let seen = read_log_until(&node.lines, "for the second rejection", |line| {
        field(line, "request_id") == Some(later_id.as_str())
    });
    assert!(
        !seen.iter().any(|line| line.contains(&rejected_id)),
        "the rejection is logged once: {seen:#?}"
    );
}

#[test]
fn by_default_a_rejected_statement_over_pgwire_is_logged_with_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    with_client(&node, |client, _| async move {
        let error = client
            .simple_query("SELECT * FROM no_such_table")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&error), "42000", "{error:?}");
    });
    let seen = read_log_until(&node.lines, "for the rejected statement", |line| {
        line.contains("statement rejected")
    });
    let line = seen.last().unwrap();
    assert!(line.contains("INFO"), "{line}");
    assert_eq!(field(line, "sqlstate"), Some("42000"), "{line}");
    assert!(line.contains("no_such_table"), "the message: {line}");
    assert!(
        line.contains("connection=") && line.contains("peer=127.0.0.1:"),
        "the connection's span names it: {line}"
    );
}

#[test]
fn every_shard_is_announced_once_and_the_stop_is_the_last_word() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, mut log) = start_standalone_logged(dir.path(), &[]);
    // Right after the ready line: the process must already stop gracefully on it.
    node.process.signal(libc::SIGTERM);
    let status = node.process.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    // The reader thread ends at the pipe's end, which the child's exit brings.
    log.extend(node.lines.iter());
    let started: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("shard started"))
        .collect();
    let mut names: Vec<(Option<&str>, Option<&str>)> = started
        .iter()
        .map(|line| (field(line, "runtime"), field(line, "shard")))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), started.len(), "{started:#?}");
    // The two datanode shards and the catalog's.
    assert_eq!(started.len(), 3, "{started:#?}");
    let last = log.last().expect("it logs when it stops");
    assert!(
        last.contains("stopped"),
        "nothing after `stopped`: {log:#?}"
    );
}

/// Runs `metronome standalone` with `args` (expecting it to fail); returns its stderr.
fn failed_start(args: &[&std::ffi::OsStr]) -> String {
    let output = metronome()
        .arg("standalone")
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--postgres-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "it must not start: {stderr}");
    stderr
}

fn mentions(stderr: &str, path: &Path) -> bool {
    stderr.contains(&path.display().to_string())
}

#[test]
fn a_path_it_cannot_use_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();

    // The data directory is a file, or lies inside one.
    let stderr = failed_start(&["--data-dir".as_ref(), file.as_os_str()]);
    assert!(mentions(&stderr, &file), "{stderr}");
    let inside = file.join("data");
    let stderr = failed_start(&["--data-dir".as_ref(), inside.as_os_str()]);
    assert!(mentions(&stderr, &inside), "{stderr}");

    // The configuration file is a directory.
    let stderr = failed_start(&["--config".as_ref(), dir.path().as_os_str()]);
    assert!(mentions(&stderr, dir.path()), "{stderr}");

    // The lock file, a shard's directory, the catalog's directory: each a file or a
    // directory where the other is expected.
    let data = dir.path().join("data");
    for (name, make_dir) in [("LOCK", true), ("shard-0", false), ("meta", false)] {
        let data = data.join(name.to_lowercase().replace('-', "_"));
        std::fs::create_dir_all(&data).unwrap();
        let blocked = data.join(name);
        if make_dir {
            std::fs::create_dir(&blocked).unwrap();
        } else {
            std::fs::write(&blocked, "in the way").unwrap();
        }
        let stderr = failed_start(&[
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--shards".as_ref(),
            "1".as_ref(),
            "--pin-to-cores".as_ref(),
            "false".as_ref(),
        ]);
        assert!(mentions(&stderr, &blocked), "{name}: {stderr}");
    }
}

#[test]
fn buildinfo_names_the_commit_it_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let reply = get(&format!("http://{}/api/v1/status/buildinfo", node.http));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let data = &reply.json()["data"];
    for key in ["version", "revision", "branch", "buildDate", "goVersion"] {
        let value = data[key].as_str().unwrap_or("");
        assert!(!value.is_empty(), "{key} is empty: {data}");
    }
    assert!(
        data["goVersion"].as_str().unwrap().starts_with("rustc "),
        "{data}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(output) if output.status.success() => {
            let head = String::from_utf8(output.stdout).unwrap();
            assert_eq!(data["revision"], head.trim(), "{data}");
        }
        _ => eprintln!("not a git checkout: the revision is not compared"),
    }
}

/// `promtool check metrics` on `text`: its complaints, or none.
fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn scrape(base: &str, accept: Option<&str>) -> Reply {
    let mut request = agent().get(format!("{base}/metrics"));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let response = request.call().unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.into_body().read_to_string().unwrap();
    Reply {
        status,
        headers: vec![("content-type".to_string(), content_type)],
        body,
    }
}

#[test]
fn metrics_answer_in_the_format_the_scraper_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let base = format!("http://{}", node.http);
    // Some traffic, so that the request families have samples.
    assert_eq!(get(&format!("{base}/health")).status, 200);

    let plain = scrape(&base, None);
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = &plain.body;
    assert!(!text.contains("# EOF"), "{text}");
    for line in [
        "# TYPE metronome_wal_syncs_total counter",
        "# TYPE metronome_flushes_total counter",
        "# TYPE metronome_compactions_total counter",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("metronome_wal_syncs_total{datanode=\"")
                && l.contains(",shard=\"1\"} ")),
        "both shards' figures:\n{text}"
    );

    // What Prometheus 2.x asks for.
    let prometheus = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,\
        text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let openmetrics = scrape(&base, Some(prometheus));
    assert_eq!(
        openmetrics.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        openmetrics.body.ends_with("# EOF\n"),
        "{}",
        openmetrics.body
    );
    assert!(
        openmetrics
            .body
            .lines()
            .any(|l| l == "# TYPE metronome_wal_syncs counter"),
        "{}",
        openmetrics.body
    );
    let asked_plain = scrape(&base, Some("text/plain;version=0.0.4"));
    assert!(asked_plain
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));

    if !promtool_available() {
        return;
    }
    // promtool (2.42) reads the text format only; the OpenMetrics answer is read by a
    // real Prometheus in tests/prometheus.rs.
    promtool_check(text).unwrap_or_else(|complaints| panic!("{complaints}\n{text}"));
}
