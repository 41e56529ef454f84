//! The cluster's processes: the built `metronome` binary once per role, each in its place
//! (`topology`), its output appended to a log file of its own, started, killed with
//! SIGKILL, stopped with SIGSTOP and resumed, and restarted on the same data directory.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::topology::{Layout, Topology};

/// How long a process may take to log that it is ready.
const READY_WAIT_MAX: Duration = Duration::from_secs(90);

pub const METASRV_PORT: u16 = 4100;
pub const DATANODE_PORT: u16 = 4200;
pub const HTTP_PORT: u16 = 4300;
pub const POSTGRES_PORT: u16 = 4400;

/// A role of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Metasrv,
    Datanode,
    Frontend,
}

/// One process of the cluster.
pub struct Process {
    pub role: Role,
    pub id: u64,
    pub name: String,
    args: Vec<String>,
    namespace: Option<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|child| child.id() as i32)
    }
}

/// The whole cluster: 3 metasrv replicas, `datanodes` datanodes, `frontends` frontends
/// whose new regions have `replicas` copies.
pub struct Cluster {
    binary: PathBuf,
    pub processes: Vec<Process>,
}

/// The address of `role` `id` in `topology`: its namespace's IP and the role's port, or
/// on loopback the role's port plus the id.
pub fn address(topology: &Topology, role: Role, id: u64, port: u16) -> String {
    let name = place_name(role, id);
    let place = topology.place(&name);
    match topology.layout {
        Layout::Namespaces => format!("{}:{port}", place.ip),
        Layout::Loopback => format!("127.0.0.1:{}", port + id as u16),
    }
}

pub fn place_name(role: Role, id: u64) -> String {
    match role {
        Role::Metasrv => format!("m{id}"),
        Role::Datanode => format!("d{id}"),
        Role::Frontend => format!("f{id}"),
    }
}

impl Cluster {
    /// The processes' arguments, in `topology`, with data and logs under `dir`.
    pub fn new(
        binary: &Path,
        topology: &Topology,
        dir: &Path,
        metasrvs: u64,
        datanodes: u64,
        frontends: u64,
        replicas: u8,
    ) -> Cluster {
        let metasrv_addrs: Vec<String> = (1..=metasrvs)
            .map(|id| address(topology, Role::Metasrv, id, METASRV_PORT))
            .collect();
        let peers: Vec<String> = metasrv_addrs
            .iter()
            .enumerate()
            .map(|(index, addr)| format!("{}={addr}", index + 1))
            .collect();
        let mut processes = Vec::new();
        let mut add = |role: Role, id: u64, args: Vec<String>| {
            let name = place_name(role, id);
            processes.push(Process {
                role,
                id,
                namespace: topology.place(&name).namespace.clone(),
                log: dir.join(format!("{name}.log")),
                name,
                args,
                child: None,
            });
        };
        let data = |name: String| dir.join(name).to_string_lossy().into_owned();
        for id in 1..=metasrvs {
            add(
                Role::Metasrv,
                id,
                vec![
                    "metasrv".into(),
                    "--node-id".into(),
                    id.to_string(),
                    "--rpc-addr".into(),
                    metasrv_addrs[id as usize - 1].clone(),
                    "--peers".into(),
                    peers.join(","),
                    "--data-dir".into(),
                    data(format!("m{id}-data")),
                ],
            );
        }
        for id in 1..=datanodes {
            add(
                Role::Datanode,
                id,
                vec![
                    "datanode".into(),
                    "--node-id".into(),
                    id.to_string(),
                    "--rpc-addr".into(),
                    address(topology, Role::Datanode, id, DATANODE_PORT),
                    "--metasrv".into(),
                    metasrv_addrs.join(","),
                    "--shards".into(),
                    "2".into(),
                    "--pin-to-cores".into(),
                    "false".into(),
                    "--data-dir".into(),
                    data(format!("d{id}-data")),
                ],
            );
        }
        for id in 1..=frontends {
            add(
                Role::Frontend,
                id,
                vec![
                    "frontend".into(),
                    "--metasrv".into(),
                    metasrv_addrs.join(","),
                    "--http-addr".into(),
                    address(topology, Role::Frontend, id, HTTP_PORT),
                    "--postgres-addr".into(),
                    address(topology, Role::Frontend, id, POSTGRES_PORT),
                    "--replicas".into(),
                    replicas.to_string(),
                ],
            );
        }
        Cluster {
            binary: binary.to_path_buf(),
            processes,
        }
    }

    pub fn find(&self, role: Role, id: u64) -> usize {
        self.processes
            .iter()
            .position(|p| p.role == role && p.id == id)
            .unwrap_or_else(|| panic!("no {role:?} {id}"))
    }

    /// Starts process `index` and waits until it logs that it is ready.
    pub fn start(&mut self, index: usize) -> Result<(), String> {
        let binary = self.binary.clone();
        let process = &mut self.processes[index];
        assert!(process.child.is_none(), "{} runs already", process.name);
        let readies_before = count_ready(&process.log);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&process.log)
            .map_err(|error| format!("cannot open {}: {error}", process.log.display()))?;
        let mut command = match &process.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .args(&process.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = command
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", process.name))?;
        process.child = Some(child);
        let since = Instant::now();
        while count_ready(&process.log) <= readies_before {
            if let Some(status) = process
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                process.child = None;
                return Err(format!(
                    "{} exited before it was ready ({status}); see {}",
                    process.name,
                    process.log.display()
                ));
            }
            if since.elapsed() > READY_WAIT_MAX {
                return Err(format!(
                    "{} was not ready within {READY_WAIT_MAX:?}; see {}",
                    process.name,
                    process.log.display()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Sends `signal` to process `index`.
    pub fn signal(&self, index: usize, signal: i32) {
        if let Some(pid) = self.processes[index].pid() {
            // SAFETY: kill(2) with a pid this process spawned and has not reaped.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// kill -9: the process dies at once, without flushing anything.
    pub fn kill(&mut self, index: usize) {
        self.signal(index, libc::SIGKILL);
        if let Some(mut child) = self.processes[index].child.take() {
            let _ = child.wait();
        }
    }

    /// Stops every process: SIGCONT (one may be stopped), then SIGKILL.
    pub fn kill_all(&mut self) {
        for index in 0..self.processes.len() {
            self.signal(index, libc::SIGCONT);
            self.kill(index);
        }
    }
}

/// Ready lines in a log so far.
fn count_ready(log: &Path) -> usize {
    let mut text = String::new();
    if let Ok(mut file) = File::open(log) {
        let _ = file.read_to_string(&mut text);
    }
    text.lines()
        .filter(|line| line.contains(" ready") && line.contains("role="))
        .count()
}

/// Makes `dir` empty.
pub fn fresh_dir(dir: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))
}
