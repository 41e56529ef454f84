//! `metronome cluster`: a whole cluster on this machine in one command. It starts each
//! role as its own child process on loopback (the metasrv replicas first, then the
//! datanodes, then the frontends, each once the one before it is ready), prefixes their
//! log lines with their name, prints where each listens, and stops them all on Ctrl-C
//! (frontends first, the metasrv last), or as soon as one of them exits on its own.
//!
//! The metasrv replicas' addresses are part of their raft membership, so they must stay
//! the same when the cluster starts again on its data: they are chosen once (free loopback
//! ports) and kept in `<data-dir>/metasrv-peers`.
//!
//! A `--config` file (or `METRONOME_CONFIG`) may set any section some role reads; each
//! role gets the sections it reads, without the ones naming a node (ids, addresses,
//! peers: the supervisor gives those), as `<data-dir>/<role>.toml`, its `--config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use metronome_core::config::{
    Config, DatanodeSection, FrontendSection, MetasrvSection, Role, StoreKind,
};
use metronome_core::rt::disk::startup;
use metronome_core::rt::net::{Address, FrameLimits, Listener};
use metronome_core::rt::{task, time};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::mpsc;

use crate::{
    frontend_runtime, init_logging, load_config, shutdown_signal, RUNTIME_SHUTDOWN_TIMEOUT,
};

/// How long a child may take to say it is ready, and to stop after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// More replicas only slow every commit down.
const METASRVS_MAX: u32 = 7;
const PEERS_FILE: &str = "metasrv-peers";

/// The metasrv replicas' addresses: the ones this data directory's cluster was started
/// with, or free loopback ports for a new one (written down before any replica starts).
async fn metasrv_peers(data_dir: &Path, count: u32) -> Result<Vec<SocketAddr>, String> {
    let path = data_dir.join(PEERS_FILE);
    match startup::read_to_string(&path) {
        Ok(text) => {
            let peers: Result<Vec<SocketAddr>, _> =
                text.split_whitespace().map(str::parse).collect();
            let peers = peers.map_err(|error| format!("{}: {error}", path.display()))?;
            if peers.len() != count as usize {
                return Err(format!(
                    "{} holds {} metasrv replicas, --metasrvs says {count}: a cluster's \
                     replicas change by membership change, not by restarting it",
                    path.display(),
                    peers.len()
                ));
            }
            Ok(peers)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut peers = Vec::new();
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            // All bound at once, so that no two get the same port; released before the
            // replicas bind them.
            let mut listeners = Vec::new();
            for _ in 0..count {
                let listener = Listener::bind_tcp(loopback, FrameLimits::default())
                    .await
                    .map_err(|error| format!("cannot find a free port: {error}"))?;
                match listener.local_address() {
                    Ok(Address::Tcp(addr)) => peers.push(addr),
                    other => return Err(format!("a loopback listener is bound at {other:?}")),
                }
                listeners.push(listener);
            }
            drop(listeners);
            let text: Vec<String> = peers.iter().map(SocketAddr::to_string).collect();
            startup::create_dir_all(data_dir)
                .and_then(|()| startup::write_synced(&path, (text.join("\n") + "\n").as_bytes()))
                .map_err(|error| format!("{}: {error}", path.display()))?;
            Ok(peers)
        }
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

#[derive(Args)]
pub struct ClusterArgs {
    /// Metasrv replicas (raft: 3 survive the loss of one, 5 of two).
    #[arg(long, default_value_t = 1)]
    metasrvs: u32,
    #[arg(long, default_value_t = 3)]
    datanodes: u32,
    #[arg(long, default_value_t = 1)]
    frontends: u32,
    /// Shards of each datanode [default: the --config file's, or 1].
    #[arg(long)]
    shards: Option<u16>,
    /// Copies of each new region, the leader's included (1 to 3, at most the datanodes):
    /// with 2 or more, a datanode's death fails its regions over to a follower. Unset:
    /// 2 with two datanodes or more, else 1.
    #[arg(long)]
    replicas: Option<u8>,
    /// One directory per node below this one (`metasrv-1`, `datanode-1`, …); a cluster
    /// started again on it finds its data.
    #[arg(long, default_value = "./metronome-cluster")]
    data_dir: PathBuf,
    /// HTTP API of the first frontend (the others take free ports).
    #[arg(long, default_value = "127.0.0.1:4000")]
    http_addr: SocketAddr,
    /// PostgreSQL wire protocol of the first frontend.
    #[arg(long, default_value = "127.0.0.1:4003")]
    postgres_addr: SocketAddr,
    #[arg(long, default_value = "info")]
    log: String,
    /// TOML configuration file: each role gets the sections it reads (`[storage]` and
    /// `[shards]` the datanodes, `[http]`, `[query]`, `[ingest]`, `[frontend]` the
    /// frontends, `[metasrv]` the metasrv), less what names a node, which this command
    /// gives. `data_dir` is refused: --data-dir holds a directory per node.
    #[arg(long, short = 'c', env = "METRONOME_CONFIG")]
    config: Option<PathBuf>,
}

/// Each role's `--config` file, written below the cluster's data directory from its
/// `--config` file (none without one), and the datanodes' shards the file sets.
#[derive(Default)]
struct RoleFiles {
    metasrv: Option<String>,
    datanode: Option<String>,
    frontend: Option<String>,
    shards: Option<u16>,
}

impl RoleFiles {
    fn write(path: Option<&Path>, data_dir: &Path) -> Result<RoleFiles, String> {
        let Some(path) = path else {
            return Ok(RoleFiles::default());
        };
        let config = load_config(Some(path))?;
        let invalid =
            |message: String| format!("invalid configuration in {}: {message}", path.display());
        let defaults = Config::default();
        if config.data_dir != defaults.data_dir {
            return Err(invalid(
                "`data_dir` is not read by `metronome cluster`: its --data-dir holds one \
                 directory per node"
                    .to_string(),
            ));
        }
        config.validate().map_err(invalid)?;
        // One file serves every datanode: with S3 they would share a prefix (and write
        // each other's objects), and the file would hold the credentials.
        if config.storage.store != StoreKind::Local {
            return Err(invalid(
                "`storage.store = \"s3\"` is not for `metronome cluster`, whose datanodes \
                 would share one prefix: start the roles yourself, each datanode with a \
                 prefix of its own"
                    .to_string(),
            ));
        }
        let base = || Config {
            log: config.log.clone(),
            ..Config::default()
        };
        let metasrv = Config {
            metasrv: config.metasrv.as_ref().map(|section| MetasrvSection {
                rebalance_ratio: section.rebalance_ratio,
                ..MetasrvSection::default()
            }),
            ..base()
        };
        let datanode = Config {
            shards: config.shards.clone(),
            storage: config.storage.clone(),
            datanode: config.datanode.as_ref().map(|_| DatanodeSection::default()),
            ..base()
        };
        let frontend = Config {
            http: config.http.clone(),
            postgres: config.postgres.clone(),
            query: config.query.clone(),
            ingest: config.ingest,
            frontend: config.frontend.as_ref().map(|section| FrontendSection {
                replicas: section.replicas,
                read_preference: section.read_preference,
                ..FrontendSection::default()
            }),
            ..base()
        };
        startup::create_dir_all(data_dir)
            .map_err(|error| format!("{}: {error}", data_dir.display()))?;
        let mut written = [None, None, None];
        for (slot, (role, file)) in written.iter_mut().zip([
            (Role::Metasrv, metasrv),
            (Role::Datanode, datanode),
            (Role::Frontend, frontend),
        ]) {
            assert!(
                file.check_role(role).is_ok(),
                "a {} file of its sections",
                role.name()
            );
            let text = toml::to_string(&file).map_err(|error| {
                format!("cannot write the {} configuration: {error}", role.name())
            })?;
            let at = data_dir.join(format!("{}.toml", role.name()));
            startup::write_synced(&at, text.as_bytes())
                .map_err(|error| format!("{}: {error}", at.display()))?;
            *slot = Some(at.display().to_string());
        }
        let [metasrv, datanode, frontend] = written;
        Ok(RoleFiles {
            metasrv,
            datanode,
            frontend,
            shards: (config.shards.count != defaults.shards.count).then_some(config.shards.count),
        })
    }

    /// `--config <file>` for `role`'s command line, if there is a file.
    fn flags(file: &Option<String>) -> Vec<String> {
        file.iter()
            .flat_map(|file| ["--config".to_string(), file.clone()])
            .collect()
    }
}

/// A child process, and its name in the log.
struct Node {
    name: String,
    child: Child,
}

impl Node {
    /// Starts `metronome <args>` and waits for its ready line; returns it with the line.
    async fn start(
        name: String,
        args: Vec<String>,
        exited: mpsc::UnboundedSender<String>,
    ) -> Result<(Node, String), String> {
        let exe = std::env::current_exe()
            .map_err(|error| format!("cannot find this program's path: {error}"))?;
        let mut command = Command::new(exe);
        command
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that Ctrl-C at the terminal reaches the
            // supervisor alone, which then stops the children in order.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe, which is all a pre-exec hook may call.
        unsafe {
            command.pre_exec(|| {
                // A child outlives no supervisor, even one killed with SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start {name}: {error}"))?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let ready = time::timeout(READY_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                echo(&name, &line);
                if line.contains(" ready") && line.contains("role=") {
                    return Some(line);
                }
            }
            None
        })
        .await;
        let line = match ready {
            Ok(Some(line)) => line,
            Ok(None) => return Err(format!("{name} exited before it was ready")),
            Err(_) => return Err(format!("{name} was not ready within {READY_TIMEOUT:?}")),
        };
        task::spawn(forward(name.clone(), lines, exited));
        Ok((Node { name, child }, line))
    }

    /// SIGTERM, then waits for the exit (SIGKILL past [`STOP_TIMEOUT`]).
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling a child process this supervisor started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        match time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => tracing::warn!(node = %self.name, %status, "exited with an error"),
            Ok(Err(error)) => tracing::warn!(node = %self.name, %error, "cannot wait for it"),
            Err(_) => {
                tracing::warn!(node = %self.name, "did not stop in time; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}

/// Copies a child's log lines to ours under its name; says when the child's log ends
/// (it exited).
async fn forward(
    name: String,
    mut lines: tokio::io::Lines<BufReader<ChildStderr>>,
    exited: mpsc::UnboundedSender<String>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        echo(&name, &line);
    }
    let _ = exited.send(name);
}

/// Writes a child's log line to ours under its name. A closed stderr (`| head`) is not
/// a reason to stop reading the child's, whose pipe would then fill and block it.
fn echo(name: &str, line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "[{name}] {line}");
}

/// The value of `key=` in a log line.
fn field(line: &str, key: &str) -> Result<String, String> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key))
        .map(str::to_string)
        .ok_or_else(|| format!("the ready line names no {key}: {line}"))
}

pub fn cluster(args: ClusterArgs) -> Result<(), String> {
    if args.metasrvs == 0 || args.metasrvs > METASRVS_MAX {
        return Err(format!(
            "--metasrvs {}: a cluster runs 1 to {METASRVS_MAX} metasrv replicas",
            args.metasrvs
        ));
    }
    if args.datanodes == 0 || args.frontends == 0 {
        return Err("a cluster needs a datanode and a frontend at least".to_string());
    }
    init_logging(&args.log)?;
    let runtime = frontend_runtime(2)?;
    let outcome = runtime.block_on(supervise(&args));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    outcome
}

async fn supervise(args: &ClusterArgs) -> Result<(), String> {
    let signals = shutdown_signal()?;
    let (exited_sender, mut exited) = mpsc::unbounded_channel();
    let dir = |name: &str| args.data_dir.join(name).display().to_string();
    let log = args.log.clone();
    let files = RoleFiles::write(args.config.as_deref(), &args.data_dir)?;
    let shards = args.shards.or(files.shards).unwrap_or(1);
    let mut nodes: Vec<Node> = Vec::new();
    let started = async {
        // One replica dials no one: it takes any free port. Several keep theirs.
        let replicas = if args.metasrvs == 1 {
            vec![SocketAddr::from(([127, 0, 0, 1], 0))]
        } else {
            metasrv_peers(&args.data_dir, args.metasrvs).await?
        };
        let peers: Vec<String> = replicas
            .iter()
            .enumerate()
            .map(|(index, addr)| format!("{}={addr}", index + 1))
            .collect();
        let mut summary = Vec::new();
        let mut bound = Vec::new();
        for (index, addr) in replicas.iter().enumerate() {
            let id = index + 1;
            let name = format!("metasrv-{id}");
            let mut flags: Vec<String> = vec![
                "metasrv".into(),
                "--node-id".into(),
                id.to_string(),
                "--rpc-addr".into(),
                addr.to_string(),
                "--data-dir".into(),
                dir(&name),
                "--log".into(),
                log.clone(),
            ];
            if replicas.len() > 1 {
                flags.extend(["--peers".to_string(), peers.join(",")]);
            }
            flags.extend(RoleFiles::flags(&files.metasrv));
            let (metasrv, line) = Node::start(name.clone(), flags, exited_sender.clone()).await?;
            let rpc = field(&line, "rpc=")?;
            summary.push(format!("metasrv {id} rpc={rpc}"));
            bound.push(rpc);
            nodes.push(metasrv);
        }
        let metasrv_rpc = bound.join(",");
        for id in 1..=args.datanodes {
            let name = format!("datanode-{id}");
            let mut flags: Vec<String> = vec![
                "datanode".into(),
                "--node-id".into(),
                id.to_string(),
                "--rpc-addr".into(),
                "127.0.0.1:0".into(),
                "--metasrv".into(),
                metasrv_rpc.clone(),
                "--shards".into(),
                shards.to_string(),
                "--pin-to-cores".into(),
                "false".into(),
                "--data-dir".into(),
                dir(&name),
                "--log".into(),
                log.clone(),
            ];
            flags.extend(RoleFiles::flags(&files.datanode));
            let (node, line) = Node::start(name.clone(), flags, exited_sender.clone()).await?;
            summary.push(format!("datanode {id} rpc={}", field(&line, "rpc=")?));
            nodes.push(node);
        }
        for id in 1..=args.frontends {
            let (http, postgres) = if id == 1 {
                (args.http_addr.to_string(), args.postgres_addr.to_string())
            } else {
                ("127.0.0.1:0".to_string(), "127.0.0.1:0".to_string())
            };
            let mut flags: Vec<String> = vec![
                "frontend".into(),
                "--metasrv".into(),
                metasrv_rpc.clone(),
                "--http-addr".into(),
                http,
                "--postgres-addr".into(),
                postgres,
                "--log".into(),
                log.clone(),
            ];
            if let Some(replicas) = args.replicas {
                flags.extend(["--replicas".into(), replicas.to_string()]);
            }
            flags.extend(RoleFiles::flags(&files.frontend));
            let (node, line) =
                Node::start(format!("frontend-{id}"), flags, exited_sender.clone()).await?;
            summary.push(format!(
                "frontend {id} http={} postgres={}",
                field(&line, "http=")?,
                field(&line, "postgres=")?
            ));
            nodes.push(node);
        }
        Ok::<_, String>(summary)
    };
    tokio::pin!(signals);
    let outcome = tokio::select! {
        summary = started => summary.map(Some),
        () = &mut signals => Ok(None),
    };
    let outcome = match outcome {
        Ok(Some(summary)) => {
            for line in &summary {
                println!("{line}");
            }
            tracing::info!(
                role = %"cluster",
                nodes = summary.len(),
                frontend = %summary.last().map(String::as_str).unwrap_or_default(),
                "ready"
            );
            tokio::select! {
                () = &mut signals => Ok(()),
                Some(name) = exited.recv() => Err(format!("{name} exited; stopping the cluster")),
            }
        }
        Ok(None) => Ok(()),
        Err(error) => Err(error),
    };
    tracing::info!("stopping the cluster");
    // Frontends first, so that no request arrives at a stopped datanode; the metasrv
    // last, so that every datanode could still heartbeat while it flushed.
    while let Some(node) = nodes.pop() {
        node.stop().await;
    }
    tracing::info!("stopped");
    outcome
}
