//! A cluster of real processes on loopback: one metasrv, two datanodes, one frontend,
//! started in an awkward order (a datanode before the metasrv), written to through the
//! frontend and read back, with the regions spread over both datanodes; and the same
//! through `metronome cluster`, read through a second frontend.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;

use common::{
    free_port, get_query, metronome, read_log_until, remote_write, spawn_logged, write_request,
    Running,
};

/// A role's process and its log lines.
struct Role {
    process: Running,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Drop for Role {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.process.0.kill();
            let _ = self.process.0.wait();
            for line in self.lines.try_iter() {
                eprintln!("{}: {line}", self.name);
            }
        }
    }
}

fn start(name: &'static str, args: &[&str]) -> Role {
    let (process, lines) = spawn_logged(metronome().args(args));
    Role {
        process,
        lines,
        name,
    }
}

/// Waits for the role's ready line; returns it.
fn ready(role: &Role) -> String {
    let lines = read_log_until(&role.lines, "ready", |line| {
        line.contains(" ready") && line.contains("role=")
    });
    lines.last().unwrap().clone()
}

fn field(line: &str, key: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key))
        .unwrap_or_else(|| panic!("the line names {key}: {line}"))
        .parse()
        .unwrap()
}

fn datanode(id: u64, metasrv: &str, dir: &Path) -> Role {
    start(
        "datanode",
        &[
            "datanode",
            "--node-id",
            &id.to_string(),
            "--rpc-addr",
            "127.0.0.1:0",
            "--metasrv",
            metasrv,
            "--shards",
            "1",
            "--pin-to-cores",
            "false",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
    )
}

/// Stops a role with SIGTERM and checks that it exits cleanly.
fn stop(mut role: Role) {
    role.process.signal(libc::SIGTERM);
    let status = role.process.0.wait().unwrap();
    assert!(status.success(), "{} exited with {status}", role.name);
}

/// Region directories a datanode holds (each shard's `regions/`).
fn regions_on(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("shard-"))
        .map(|shard| {
            std::fs::read_dir(shard.path().join("regions"))
                .map(|regions| regions.count())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_cluster_of_processes_takes_writes_through_its_frontend_and_spreads_regions() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let metasrv_addr = format!("127.0.0.1:{}", free_port());

    // A datanode whose metasrv is not up yet says so and keeps trying.
    let first = datanode(1, &metasrv_addr, dirs[1].path());
    read_log_until(&first.lines, "a registration retry", |line| {
        line.contains("cannot register with the metasrv; retrying") && line.contains(&metasrv_addr)
    });

    let metasrv = start(
        "metasrv",
        &[
            "metasrv",
            "--node-id",
            "1",
            "--rpc-addr",
            &metasrv_addr,
            "--data-dir",
            dirs[0].path().to_str().unwrap(),
        ],
    );
    let line = ready(&metasrv);
    assert!(
        line.contains("role=metasrv") && line.contains("id=1"),
        "{line}"
    );
    let line = ready(&first);
    assert!(
        line.contains("role=datanode") && line.contains("id=1"),
        "{line}"
    );
    let second_dir = tempfile::tempdir().unwrap();
    let second = datanode(2, &metasrv_addr, second_dir.path());
    ready(&second);

    let frontend = start(
        "frontend",
        &[
            "frontend",
            "--metasrv",
            &metasrv_addr,
            "--http-addr",
            "127.0.0.1:0",
            "--postgres-addr",
            "127.0.0.1:0",
        ],
    );
    let line = ready(&frontend);
    let http = field(&line, "http=");

    // 40 series, 3 samples each, through the frontend.
    let series: Vec<common::Series> = (0..40)
        .map(|i| {
            (
                vec![
                    ("__name__", "cluster_test".to_string()),
                    ("host", format!("host-{i:02}")),
                ],
                vec![
                    (1_000_000, i as f64),
                    (1_015_000, i as f64 + 1.0),
                    (1_030_000, 2.0),
                ],
            )
        })
        .collect();
    let reply = remote_write(http, &write_request(&series));
    assert_eq!(reply.status, 204, "{}", reply.body);
    let count = get_query(
        &format!("http://{http}/api/v1/query"),
        &[("query", "count(cluster_test)"), ("time", "1015")],
    )
    .json();
    assert_eq!(count["data"]["result"][0]["value"][1], "40", "{count}");
    let sum = get_query(
        &format!("http://{http}/api/v1/query"),
        &[("query", "sum(cluster_test)"), ("time", "1015")],
    )
    .json();
    // (0 + 1) + (1 + 1) + … + (39 + 1) = 820.
    assert_eq!(sum["data"]["result"][0]["value"][1], "820", "{sum}");

    // The cluster as the frontend sees it: both datanodes alive, every region routed.
    let cluster = common::get(&format!("http://{http}/v1/cluster")).json();
    let nodes = cluster["nodes"].as_array().unwrap();
    let roles: Vec<(&str, u64, bool)> = nodes
        .iter()
        .map(|node| {
            (
                node["role"].as_str().unwrap(),
                node["id"].as_u64().unwrap(),
                node["alive"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("metasrv", 1, true),
            ("datanode", 1, true),
            ("datanode", 2, true)
        ],
        "{cluster}"
    );
    let leaders: Vec<u64> = cluster["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|region| region["leader"].as_u64().unwrap())
        .collect();
    assert_eq!(leaders.len(), 4, "{cluster}");
    assert!(leaders.contains(&1) && leaders.contains(&2), "{cluster}");

    // The metric regions (two per shard) were placed over both datanodes.
    let (on_first, on_second) = (regions_on(dirs[1].path()), regions_on(second_dir.path()));
    assert!(
        on_first >= 2 && on_second >= 2,
        "{on_first} and {on_second} regions"
    );

    stop(frontend);
    stop(second);
    stop(first);
    stop(metasrv);
}

#[test]
fn metronome_cluster_starts_every_role_and_stops_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(
        "cluster",
        &[
            "cluster",
            "--datanodes",
            "2",
            "--frontends",
            "2",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--postgres-addr",
            "127.0.0.1:0",
        ],
    );
    let lines = read_log_until(&cluster.lines, "the cluster's ready line", |line| {
        line.contains("role=cluster") && line.contains(" ready")
    });
    let frontends: Vec<SocketAddr> = lines
        .iter()
        .filter(|line| line.starts_with("[frontend-") && line.contains("role=frontend"))
        .map(|line| field(line, "http="))
        .collect();
    assert_eq!(frontends.len(), 2, "{lines:#?}");
    let datanodes = lines
        .iter()
        .filter(|line| line.starts_with("[datanode-") && line.contains("role=datanode"))
        .count();
    assert_eq!(datanodes, 2, "{lines:#?}");

    let series: Vec<common::Series> = (0..10)
        .map(|i| {
            (
                vec![
                    ("__name__", "supervised".to_string()),
                    ("host", format!("h{i}")),
                ],
                vec![(2_000_000, 1.0)],
            )
        })
        .collect();
    let reply = remote_write(frontends[0], &write_request(&series));
    assert_eq!(reply.status, 204, "{}", reply.body);
    let count = get_query(
        &format!("http://{}/api/v1/query", frontends[0]),
        &[("query", "count(supervised)"), ("time", "2000")],
    )
    .json();
    assert_eq!(count["data"]["result"][0]["value"][1], "10", "{count}");
    // The other frontend reads what the first one wrote.
    let count = get_query(
        &format!("http://{}/api/v1/query", frontends[1]),
        &[("query", "count(supervised)"), ("time", "2000")],
    )
    .json();
    assert_eq!(count["data"]["result"][0]["value"][1], "10", "{count}");

    // Ctrl-C stops every role, and the supervisor exits cleanly once they are gone.
    stop(cluster);
    // Every data directory's lock is free again: each of its processes is gone. (A
    // metasrv takes any directory's lock; it becomes ready only once it holds it.)
    for node in ["metasrv-1", "datanode-1", "datanode-2"] {
        let path = dir.path().join(node);
        assert!(path.join("LOCK").exists(), "{node} ran there");
        let relocked = start(
            "relocked",
            &[
                "metasrv",
                "--rpc-addr",
                "127.0.0.1:0",
                "--data-dir",
                path.to_str().unwrap(),
            ],
        );
        ready(&relocked);
        stop(relocked);
    }
}
