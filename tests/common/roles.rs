//! The roles of a cluster as real processes: start one (or `metronome cluster`), wait for
//! its ready line, read the addresses it names, stop it.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;

use super::{metronome, read_log_until, spawn_logged, Running};

/// A role's process and its log lines.
pub struct Role {
    pub process: Running,
    pub lines: mpsc::Receiver<String>,
    pub name: &'static str,
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

pub fn start(name: &'static str, args: &[&str]) -> Role {
    let (process, lines) = spawn_logged(metronome().args(args));
    Role {
        process,
        lines,
        name,
    }
}

/// Waits for the role's ready line; returns it.
pub fn ready(role: &Role) -> String {
    let lines = read_log_until(&role.lines, "ready", |line| {
        line.contains(" ready") && line.contains("role=")
    });
    lines.last().unwrap().clone()
}

pub fn field(line: &str, key: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key))
        .unwrap_or_else(|| panic!("the line names {key}: {line}"))
        .parse()
        .unwrap()
}

/// A single metasrv replica listening at `addr`, its data in `dir`.
pub fn metasrv(addr: &str, dir: &Path) -> Role {
    start(
        "metasrv",
        &[
            "metasrv",
            "--node-id",
            "1",
            "--rpc-addr",
            addr,
            "--data-dir",
            dir.to_str().unwrap(),
        ],
    )
}

/// Datanode `id` of the metasrv at `metasrv`, one shard, its data in `dir`.
pub fn datanode(id: u64, metasrv: &str, dir: &Path) -> Role {
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

/// A frontend of the metasrv at `metasrv` on free ports, with `flags` besides.
pub fn frontend(metasrv: &str, flags: &[&str]) -> Role {
    let mut args = vec![
        "frontend",
        "--metasrv",
        metasrv,
        "--http-addr",
        "127.0.0.1:0",
        "--postgres-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(flags);
    start("frontend", &args)
}

/// Stops a role with SIGTERM and checks that it exits cleanly.
pub fn stop(mut role: Role) {
    role.process.signal(libc::SIGTERM);
    let status = role.process.0.wait().unwrap();
    assert!(status.success(), "{} exited with {status}", role.name);
}

/// Starts `metronome cluster` with that many of each role on loopback, its data under
/// `dir`; returns it and its log up to its ready line (each role's ready line among them).
pub fn start_cluster(
    dir: &Path,
    metasrvs: u32,
    datanodes: u32,
    frontends: u32,
) -> (Role, Vec<String>) {
    start_cluster_with(dir, metasrvs, datanodes, frontends, &[])
}

/// [`start_cluster`] with more `flags`.
pub fn start_cluster_with(
    dir: &Path,
    metasrvs: u32,
    datanodes: u32,
    frontends: u32,
    flags: &[&str],
) -> (Role, Vec<String>) {
    let (metasrvs, datanodes, frontends) = (
        metasrvs.to_string(),
        datanodes.to_string(),
        frontends.to_string(),
    );
    let mut args = vec![
        "cluster",
        "--metasrvs",
        &metasrvs,
        "--datanodes",
        &datanodes,
        "--frontends",
        &frontends,
        "--data-dir",
        dir.to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--postgres-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(flags);
    let cluster = start("cluster", &args);
    let lines = read_log_until(&cluster.lines, "the cluster's ready line", |line| {
        line.contains("role=cluster") && line.contains(" ready")
    });
    (cluster, lines)
}

/// The HTTP addresses of the frontends whose ready lines `lines` holds.
pub fn frontend_addrs(lines: &[String]) -> Vec<SocketAddr> {
    lines
        .iter()
        .filter(|line| line.starts_with("[frontend-") && line.contains("role=frontend"))
        .map(|line| field(line, "http="))
        .collect()
}

/// Runs SQL through a frontend's `POST /v1/sql`.
pub fn sql_at(http: SocketAddr, text: &str) -> super::Reply {
    super::post(
        &format!("http://{http}/v1/sql"),
        "text/plain",
        None,
        text.as_bytes(),
    )
}
