//! Running the real `metronome` binary from tests: start, wait for ready, talk HTTP.
// These helpers drive real processes, so they use real files, threads and sockets.
#![allow(clippy::disallowed_methods, clippy::disallowed_types, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use metronome_frontend::remote_write::v1;
use prost::Message;

pub mod roles;

pub fn metronome() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_metronome"));
    // The developer's own environment must not leak into these tests.
    for (key, _) in std::env::vars() {
        if key.starts_with("METRONOME_") {
            command.env_remove(key);
        }
    }
    command
}

/// Kills the process when dropped, so a failed assertion does not leave it running.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.0.id() as i32, signal) };
    }
}

pub struct Standalone {
    pub process: Running,
    pub lines: mpsc::Receiver<String>,
    pub http: SocketAddr,
    pub postgres: SocketAddr,
    pub ready_line: String,
}

/// Starts `metronome standalone` with 2 shards on `data_dir`, the HTTP API on a free
/// port, and waits for its ready line.
pub fn start_standalone(data_dir: &Path) -> Standalone {
    start_standalone_with(data_dir, &[])
}

impl Drop for Standalone {
    fn drop(&mut self) {
        // A failed test shows what the server said.
        if std::thread::panicking() {
            let _ = self.process.0.kill();
            let _ = self.process.0.wait();
            for line in self.lines.try_iter() {
                eprintln!("metronome: {line}");
            }
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A response's status, headers we care about, and body text.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn reply(response: ureq::http::Response<ureq::Body>) -> Reply {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = response.into_body().read_to_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn post(url: &str, content_type: &str, encoding: Option<&str>, body: &[u8]) -> Reply {
    let mut request = agent().post(url).header("Content-Type", content_type);
    if let Some(encoding) = encoding {
        request = request.header("Content-Encoding", encoding);
    }
    reply(request.send(body).unwrap())
}

pub fn get(url: &str) -> Reply {
    reply(agent().get(url).call().unwrap())
}

/// A GET with query parameters, encoded properly.
pub fn get_query(base: &str, params: &[(&str, &str)]) -> Reply {
    try_get_query(base, params).unwrap()
}

/// Like [`get_query`], with connection errors (a server still starting) as `Err`.
pub fn try_get_query(base: &str, params: &[(&str, &str)]) -> Result<Reply, ureq::Error> {
    try_get_query_with(&agent(), base, params)
}

/// Like [`try_get_query`], on the caller's agent: tests that send many requests share one
/// agent, and with it its pooled connections.
pub fn try_get_query_with(
    agent: &ureq::Agent,
    base: &str,
    params: &[(&str, &str)],
) -> Result<Reply, ureq::Error> {
    let mut request = agent.get(base);
    for (key, value) in params {
        request = request.query(*key, *value);
    }
    request.call().map(reply)
}

/// One series: labels (sorted by the caller) and samples (ms, value).
pub type Series = (Vec<(&'static str, String)>, Vec<(i64, f64)>);

pub fn write_request(series: &[Series]) -> Vec<u8> {
    let request = v1::WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| v1::TimeSeries {
                labels: labels
                    .iter()
                    .map(|(name, value)| v1::Label {
                        name: name.to_string(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| v1::Sample { value, timestamp })
                    .collect(),
                histograms: vec![],
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

/// Posts a remote write 1.0 body; returns the status and body.
pub fn remote_write(http: SocketAddr, body: &[u8]) -> Reply {
    post(
        &format!("http://{http}/api/v1/write"),
        "application/x-protobuf",
        Some("snappy"),
        body,
    )
}

/// `[t, "v"]` points of every series of a matrix result, keyed by their labels.
pub fn matrix(result: &serde_json::Value) -> Vec<(serde_json::Value, Vec<(f64, String)>)> {
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["data"]["resultType"], "matrix", "{result}");
    result["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let points = series["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().to_string()))
                .collect();
            (series["metric"].clone(), points)
        })
        .collect()
}

/// A free TCP port on loopback, for a peer process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether Debian's `prometheus` is on PATH. Without it a test says so and passes,
/// unless `METRONOME_REQUIRE_PROMETHEUS=1` (set by `.ci/run`, which installs it).
pub fn prometheus_available() -> bool {
    prometheus_tool_available("prometheus")
}

/// Whether `tool` of Debian's `prometheus` package is on PATH; see
/// [`prometheus_available`].
fn prometheus_tool_available(tool: &str) -> bool {
    let which = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    if which.status.success() {
        return true;
    }
    let required = std::env::var("METRONOME_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{tool} is not installed (apt-get install prometheus)"
    );
    eprintln!("SKIPPED: no {tool} binary; install Debian's prometheus package");
    false
}

/// Like [`start_standalone`], with more flags (`--log debug`, ...) after the defaults.
pub fn start_standalone_with(data_dir: &Path, extra: &[&str]) -> Standalone {
    start_standalone_logged(data_dir, extra).0
}

/// Like [`start_standalone_with`]; also returns the log lines before the ready line.
pub fn start_standalone_logged(data_dir: &Path, extra: &[&str]) -> (Standalone, Vec<String>) {
    let (process, lines) = spawn_logged(
        metronome()
            .args([
                "standalone",
                "--shards",
                "2",
                "--pin-to-cores",
                "false",
                "--http-addr",
                "127.0.0.1:0",
                "--postgres-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra),
    );
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no ready line within 60 s; the log: {seen:#?}"));
        if line.contains("metronome standalone ready") {
            let address = |key: &str| -> SocketAddr {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix(key))
                    .unwrap_or_else(|| panic!("the ready line names {key}: {line}"))
                    .parse()
                    .unwrap()
            };
            let node = Standalone {
                process,
                lines,
                http: address("http="),
                postgres: address("postgres="),
                ready_line: line,
            };
            return (node, seen);
        }
        seen.push(line);
    }
}

/// Starts `command` with its stderr read line by line into the returned channel (by a
/// thread of its own, so that the process never blocks on a full pipe).
pub fn spawn_logged(command: &mut Command) -> (Running, mpsc::Receiver<String>) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (sender, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (Running(child), lines)
}

/// Reads log lines until one satisfies `wanted` or 30 s pass; returns every line read,
/// the wanted one last, or panics naming what it waited for.
pub fn read_log_until(
    lines: &mpsc::Receiver<String>,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = wanted(&line);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("no log line {what} within 30 s; read: {seen:#?}"),
        }
    }
}

/// Whether `promtool` (Debian's `prometheus` package) is on PATH; like
/// [`prometheus_available`], a test without it says so and passes unless
/// `METRONOME_REQUIRE_PROMETHEUS=1`.
pub fn promtool_available() -> bool {
    prometheus_tool_available("promtool")
}

/// Runs statements through psql, each as its own `-c`, on one connection; returns
/// (success, stdout, stderr), or `None` without psql (unless CI requires it).
pub fn psql(port: u16, statements: &[&str]) -> Option<(bool, String, String)> {
    let have = Command::new("sh")
        .args(["-c", "command -v psql"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        let required = std::env::var("METRONOME_REQUIRE_PSQL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "psql is not installed (apt-get install postgresql-client)"
        );
        eprintln!("psql is not installed: skipping its part (apt-get install postgresql-client)");
        return None;
    }
    let mut command = Command::new("psql");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "metronome", "-d", "public"])
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .env("PGCONNECT_TIMEOUT", "10");
    for statement in statements {
        command.args(["-c", statement]);
    }
    let output = command.output().expect("psql runs");
    Some((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    ))
}

/// Runs `test` with a tokio-postgres client of `node`, and the notices the server sent
/// it, in the order they came.
pub fn with_client<F, Fut>(node: &Standalone, test: F)
where
    F: FnOnce(tokio_postgres::Client, mpsc::Receiver<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let pg = node.postgres.port();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, mut connection) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={pg} user=metronome dbname=public"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        let (sender, notices) = mpsc::channel();
        // A notice comes ahead of its statement's response on the connection, so it is
        // in the channel by the time the statement's future completes.
        tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let tokio_postgres::AsyncMessage::Notice(notice) = message {
                    let _ = sender.send(notice.message().to_string());
                }
            }
        });
        test(client, notices).await;
    });
}

pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .code()
        .map(|code| code.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {error:?}"))
}

pub fn error_message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| error.to_string())
}

/// Runs SQL over `POST /v1/sql` (one or more statements as a `text/plain` body).
pub fn sql(node: &Standalone, text: &str) -> Reply {
    post(
        &format!("http://{}/v1/sql", node.http),
        "text/plain",
        None,
        text.as_bytes(),
    )
}
