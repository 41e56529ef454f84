//! The cluster's roles as separate processes: `metronome metasrv`, `metronome datanode`
//! and `metronome frontend`, each the same component standalone runs, reached over TCP
//! with the same protocol frames standalone sends in-process.
//!
//! The metasrv is replicated with openraft: replicas started with the same `--peers`
//! form a cluster, and datanodes and frontends given every replica's address
//! (`--metasrv A,B,C`) follow its leader. What is not here yet (issue 17): regions have
//! no leases, and nothing moves a region off a datanode that died.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use metronome_catalog::client::MetaClient;
use metronome_catalog::rebalance::Balance;
use metronome_catalog::request::MembershipChange;
use metronome_catalog::DatanodeInfo;
use metronome_core::config::{Config, Role};
use metronome_core::rt::disk::Disk;
use metronome_core::rt::net::{Address, FrameLimits, Listener};
use metronome_core::rt::task;
use metronome_datanode::datanode::{Datanode, DatanodeConfig};
use metronome_datanode::engine::EngineConfig;
use metronome_datanode::heartbeat;
use metronome_datanode::lease::{LeasedRegions, Leases};
use metronome_datanode::replication::Replicator;
use metronome_frontend::router::Connect;
use metronome_frontend::start::{self, FrontendConfig, Peers};
use metronome_metasrv::raft::RaftTuning;
use metronome_metasrv::service::{MetaService, ReplicaConfig};
use metronome_wire::region::{RegionClient, RegionServer};
use metronome_wire::rpc::{self, RpcClient};
use metronome_wire::{
    BoxFuture, ErrorKind, RegionError, RegionReply, RegionRequest, RegionService,
};

use crate::{
    build_info, frontend_runtime, init_logging, load_config, prepare_data_dir, shards_config,
    shutdown_signal, ShardFlags, CALL_TIMEOUT, RUNTIME_SHUTDOWN_TIMEOUT,
};

#[derive(Args)]
pub struct MetasrvArgs {
    /// This replica's raft id, at least 1 [default: the file's, or 1].
    #[arg(long)]
    node_id: Option<u64>,
    /// Address of the metasrv's protocol (catalog commands, heartbeats, raft).
    #[arg(long)]
    rpc_addr: Option<SocketAddr>,
    /// Every replica as `id=addr`, this one included, e.g. `1=10.0.0.1:4100,2=…,3=…`;
    /// replicas started with the same peers form a cluster by themselves. Without it, a
    /// single replica at --rpc-addr.
    #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
    peers: Vec<(u64, SocketAddr)>,
    /// Join a running cluster instead of starting one: with an empty data directory, wait
    /// until `metronome membership add` adds this replica.
    #[arg(long)]
    join: bool,
    /// How uneven the datanodes' copies and leaderships may get before the metasrv (as
    /// leader) moves regions: the most one holds as a multiple of the fewest another
    /// holds, 1 to 100, or 0 to move nothing by itself [default: the file's, or 1.25].
    #[arg(long)]
    rebalance_ratio: Option<f64>,
    /// Directory of the raft log, its snapshots and the catalog.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file: its `data_dir`, `[metasrv]` and `[log]` apply
    /// (config/metasrv.toml is the documented example).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `debug` [default: the file's, or info].
    #[arg(long)]
    log: Option<String>,
}

#[derive(Args)]
pub struct DatanodeArgs {
    /// This datanode's id, unique in the cluster; routes name it.
    #[arg(long)]
    node_id: Option<u64>,
    /// Address of its region service.
    #[arg(long)]
    rpc_addr: Option<SocketAddr>,
    /// The address other nodes reach it at [default: the bound --rpc-addr].
    #[arg(long)]
    advertise_addr: Option<SocketAddr>,
    /// The metasrv replicas' addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    metasrv: Vec<SocketAddr>,
    /// Directory of its WAL, SSTs and manifests.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    shards: ShardFlags,
    /// TOML configuration file: its `data_dir`, `[datanode]`, `[shards]`, `[storage]` and
    /// `[log]` apply (config/datanode.toml is the documented example).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    #[arg(long)]
    log: Option<String>,
}

#[derive(Args)]
pub struct FrontendArgs {
    /// The metasrv replicas' addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    metasrv: Vec<SocketAddr>,
    /// Address of the HTTP API [default: the file's, or 127.0.0.1:4000].
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Address of the PostgreSQL wire protocol [default: the file's, or 127.0.0.1:4003].
    #[arg(long)]
    postgres_addr: Option<SocketAddr>,
    /// Copies of each new region (metric regions, and tables without a `replicas`
    /// option), the leader's included [default: the file's, or 1].
    #[arg(long)]
    replicas: Option<u8>,
    /// Where queries read a replicated region: leader, follower (as of the leader's
    /// commit point) or follower_preferred [default: the file's, or leader].
    #[arg(long)]
    read_preference: Option<metronome_core::config::ReadPreference>,
    /// TOML configuration file: its `[frontend]`, `[http]`, `[postgres]`, `[query]`,
    /// `[ingest]` and `[log]` apply (config/frontend.toml is the documented example).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    #[arg(long)]
    log: Option<String>,
}

/// The role's configuration: the file's (or the defaults) with `flags` applied, checked.
/// A file that sets what `role` does not read is an error naming the key.
fn file_config(
    role: Role,
    path: &Option<PathBuf>,
    flags: impl FnOnce(&mut Config),
) -> Result<Config, String> {
    let mut config = load_config(path.as_deref())?;
    if let Some(path) = path {
        config
            .check_role(role)
            .map_err(|message| format!("invalid configuration in {}: {message}", path.display()))?;
    }
    flags(&mut config);
    config
        .validate()
        .map_err(|message| format!("invalid configuration: {message}"))?;
    Ok(config)
}

/// A setting the flag gives, else the file: an error naming both if neither does.
fn required<T>(flag: Option<T>, file: Option<T>, flag_name: &str, key: &str) -> Result<T, String> {
    flag.or(file)
        .ok_or_else(|| format!("{flag_name} is required (or `{key}` in the --config file)"))
}

/// The data directory: the flag's, else the file's if it sets one.
fn data_dir(
    flag: Option<PathBuf>,
    config: &Config,
    file: &Option<PathBuf>,
) -> Result<PathBuf, String> {
    let from_file = (file.is_some() && config.data_dir != Config::default().data_dir)
        .then(|| config.data_dir.clone());
    required(flag, from_file, "--data-dir", "data_dir")
}

/// The metasrv replicas: the flag's, else the file's section's.
fn metasrv_addrs(
    flag: Vec<SocketAddr>,
    file: Option<Vec<SocketAddr>>,
    key: &str,
) -> Result<Vec<SocketAddr>, String> {
    let file = file.filter(|addrs| !addrs.is_empty());
    required((!flag.is_empty()).then_some(flag), file, "--metasrv", key)
}

/// One `--peers` entry: `id=addr`.
fn parse_peer(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not id=addr"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|error| format!("{text:?}: the id {id:?} is no number: {error}"))?;
    if id == 0 {
        return Err(format!("{text:?}: replica ids start at 1"));
    }
    let addr = addr
        .trim()
        .parse()
        .map_err(|error| format!("{text:?}: the address {addr:?}: {error}"))?;
    Ok((id, addr))
}

/// A client of the protocol at `addr` over TCP.
fn tcp_client(addr: SocketAddr) -> RpcClient {
    tcp_client_with(addr, CALL_TIMEOUT)
}

fn tcp_client_with(addr: SocketAddr, timeout: Duration) -> RpcClient {
    let limits = FrameLimits::default();
    RpcClient::new(
        format!("tcp://{addr}"),
        rpc::tcp_connector(addr, limits),
        timeout,
    )
}

/// How long a call to a metasrv replica may take (connecting included) before the
/// client tries the next one; `MetaClient` bounds each try and the whole call tighter.
const METASRV_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The connection-level bound on a raft message. openraft bounds each message itself,
/// tighter (a heartbeat interval for AppendEntries, `install_snapshot_timeout` for a
/// snapshot chunk); this one only ends a connection that hangs.
const RAFT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of every metasrv replica, following the leader (to replicas added since,
/// too).
fn metasrv_client(addrs: &[SocketAddr]) -> MetaClient {
    MetaClient::replicas(
        addrs
            .iter()
            .map(|addr| tcp_client_with(*addr, METASRV_CALL_TIMEOUT))
            .collect(),
    )
    .with_dial(Arc::new(|addr: &str| {
        addr.parse()
            .ok()
            .map(|addr| tcp_client_with(addr, METASRV_CALL_TIMEOUT))
    }))
}

#[derive(Args)]
pub struct MembershipArgs {
    /// The metasrv replicas' addresses, comma-separated (any that answer will do).
    #[arg(long, value_delimiter = ',', required = true)]
    metasrv: Vec<SocketAddr>,
    #[command(subcommand)]
    change: MembershipCommand,
}

#[derive(clap::Subcommand)]
pub enum MembershipCommand {
    /// Add replica `--node-id`, running at `--addr` (started with `metasrv --join`): it
    /// catches up as a learner, then votes.
    Add {
        #[arg(long)]
        node_id: u64,
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Remove replica `--node-id`: it stops voting and leaves.
    Remove {
        #[arg(long)]
        node_id: u64,
    },
}

/// `metronome membership`: one raft membership change, through the leader; prints the
/// leader's raft state after it.
pub fn membership(args: MembershipArgs) -> Result<(), String> {
    let change = match args.change {
        MembershipCommand::Add { node_id: 0, .. } | MembershipCommand::Remove { node_id: 0 } => {
            return Err("replica ids start at 1".to_string())
        }
        MembershipCommand::Add { node_id, addr } => MembershipChange::Add {
            id: node_id,
            addr: addr.to_string(),
        },
        MembershipCommand::Remove { node_id } => MembershipChange::Remove { id: node_id },
    };
    let runtime = frontend_runtime(1)?;
    let status = runtime.block_on(async {
        metasrv_client(&args.metasrv)
            .change_membership(change)
            .await
            .map_err(|error| format!("the membership change failed: {error}"))
    })?;
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    let voters: Vec<String> = status.voters.iter().map(u64::to_string).collect();
    println!(
        "leader={} term={} voters={}",
        status.node_id,
        status.term,
        voters.join(",")
    );
    Ok(())
}

/// The addresses, for log lines.
fn addrs_text(addrs: &[SocketAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    addrs.join(",")
}

/// Binds the protocol's listener on `addr` and serves `dispatch` there.
async fn serve_rpc(
    addr: SocketAddr,
    dispatch: Arc<dyn rpc::Dispatch>,
) -> Result<(SocketAddr, task::JoinHandle<()>), String> {
    let limits = FrameLimits::default();
    let listener = Listener::bind_tcp(addr, limits)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    let bound = match listener.local_address() {
        Ok(Address::Tcp(bound)) => bound,
        Ok(other) => return Err(format!("{addr} was bound as {other}, not TCP")),
        Err(error) => return Err(format!("cannot read the address bound for {addr}: {error}")),
    };
    Ok((bound, task::spawn(rpc::serve(listener, dispatch, limits))))
}

pub fn metasrv(args: MetasrvArgs) -> Result<(), String> {
    let config = file_config(Role::Metasrv, &args.config, |_| {})?;
    let section = config.metasrv.clone().unwrap_or_default();
    let node_id = args.node_id.or(section.node_id).unwrap_or(1);
    let rpc_addr = required(
        args.rpc_addr,
        section.rpc_addr,
        "--rpc-addr",
        "metasrv.rpc_addr",
    )?;
    let mut listed = args.peers.clone();
    if listed.is_empty() {
        for peer in &section.peers {
            listed
                .push(parse_peer(peer).map_err(|error| format!("invalid metasrv.peers: {error}"))?);
        }
    }
    let balance = Balance::new(
        args.rebalance_ratio
            .or(section.rebalance_ratio)
            .unwrap_or(Balance::RATIO_DEFAULT),
    )
    .map_err(|error| format!("--rebalance-ratio (metasrv.rebalance_ratio): {error}"))?;
    let data_dir = data_dir(args.data_dir.clone(), &config, &args.config)?;
    init_logging(args.log.as_deref().unwrap_or(&config.log.filter))?;
    let _lock = prepare_data_dir(&data_dir)?;
    let runtime = frontend_runtime(2)?;
    let mut peers = BTreeMap::new();
    for (id, addr) in &listed {
        if peers.insert(*id, addr.to_string()).is_some() {
            return Err(format!("--peers names replica {id} twice"));
        }
    }
    if peers.is_empty() {
        peers.insert(node_id, rpc_addr.to_string());
    }
    let Some(own) = peers.get(&node_id) else {
        return Err(format!(
            "the peers {} do not name this replica, node id {node_id}",
            addrs_text(&listed.iter().map(|(_, addr)| *addr).collect::<Vec<_>>()),
        ));
    };
    // The others dial the address the peers give; listening elsewhere is a replica no
    // one reaches (0.0.0.0 on the same port is fine).
    if let Ok(own) = own.parse::<SocketAddr>() {
        if own.port() != rpc_addr.port()
            || (!rpc_addr.ip().is_unspecified() && own.ip() != rpc_addr.ip())
        {
            return Err(format!(
                "replica {node_id} listens on {rpc_addr} but its peers dial it at {own}"
            ));
        }
    }
    let disk_thread = runtime.block_on(async {
        let disk = Disk::real(&data_dir);
        let replica = ReplicaConfig {
            node_id,
            peers: peers.clone(),
            dial: Arc::new(|addr: &str| match addr.parse::<SocketAddr>() {
                Ok(addr) => tcp_client_with(addr, RAFT_CALL_TIMEOUT),
                // Membership holds the addresses --peers gave, which parsed.
                Err(error) => panic!("a replica's address {addr:?} is no address: {error}"),
            }),
            tuning: RaftTuning::default(),
            initialize: !args.join,
        };
        let service = Arc::new(MetaService::start(disk, "meta", replica).await?);
        let failover = task::spawn(metronome_metasrv::failover::run(
            Arc::downgrade(&service),
            balance,
        ));
        let (rpc, server) = serve_rpc(rpc_addr, service.clone()).await?;
        let signals = shutdown_signal()?;
        tracing::info!(
            role = %"metasrv",
            id = node_id,
            rpc = %rpc,
            peers = peers.len(),
            "ready"
        );
        signals.await;
        tracing::info!("shutting down");
        server.abort();
        failover.abort();
        Ok::<_, String>(service.stop().await)
    })?;
    if let Some(disk_thread) = disk_thread {
        disk_thread
            .stop_and_join()
            .map_err(|error| error.to_string())?;
    }
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    tracing::info!("stopped");
    Ok(())
}

pub fn datanode(args: DatanodeArgs) -> Result<(), String> {
    let config = file_config(Role::Datanode, &args.config, |config| {
        args.shards.apply(config)
    })?;
    let section = config.datanode.clone().unwrap_or_default();
    let node_id = required(
        args.node_id,
        section.node_id,
        "--node-id",
        "datanode.node_id",
    )?;
    let rpc_addr = required(
        args.rpc_addr,
        section.rpc_addr,
        "--rpc-addr",
        "datanode.rpc_addr",
    )?;
    let advertise_addr = args.advertise_addr.or(section.advertise_addr);
    let metasrv_addrs = metasrv_addrs(
        args.metasrv.clone(),
        Some(section.metasrv),
        "datanode.metasrv",
    )?;
    let data_dir = data_dir(args.data_dir.clone(), &config, &args.config)?;
    init_logging(args.log.as_deref().unwrap_or(&config.log.filter))?;
    let _lock = prepare_data_dir(&data_dir)?;
    let shards = shards_config(&config);
    let shard_count = shards.count;
    let runtime = frontend_runtime(usize::from(shard_count))?;
    let datanode = runtime.block_on(async {
        let engine = EngineConfig::from_section(&config.storage)
            .map_err(|message| format!("invalid configuration: {message}"))?;
        let datanode =
            Datanode::start(Disk::real(&data_dir), DatanodeConfig { shards, engine }).await?;
        let handle = datanode.handle();
        let leases = Leases::new(node_id);
        let regions = LeasedRegions::new(Arc::new(handle.clone()), leases.clone());
        let (rpc, server) =
            serve_rpc(rpc_addr, Arc::new(RegionServer::new(Arc::new(regions)))).await?;
        let advertised = advertise_addr.unwrap_or(rpc);
        // Another node dialing 0.0.0.0 reaches its own host, not this one.
        if advertised.ip().is_unspecified() {
            return Err(format!(
                "datanode {} would register {advertised}, which no other node can dial: \
                 give --advertise-addr the address others reach it at",
                node_id
            ));
        }
        let signals = shutdown_signal()?;
        let metasrv = metasrv_client(&metasrv_addrs);
        // The metasrv may not be up yet: register with backoff, and stop on a signal.
        let metasrv_text = addrs_text(&metasrv_addrs);
        let registered = heartbeat::register(
            &metasrv,
            &metasrv_text,
            node_id,
            advertised.to_string(),
            shard_count,
            datanode.incarnation,
        );
        tokio::pin!(signals);
        let stopped_early = tokio::select! {
            outcome = registered => {
                outcome?;
                false
            }
            () = &mut signals => true,
        };
        let mut heartbeats = None;
        if !stopped_early {
            handle.set_shipping(Replicator::start(
                leases.clone(),
                handle.clone(),
                metasrv_client(&metasrv_addrs),
                Arc::new(|id: u64, addr: &str| match addr.parse::<SocketAddr>() {
                    Ok(addr) => {
                        Arc::new(RegionClient::new(tcp_client(addr))) as Arc<dyn RegionService>
                    }
                    Err(error) => Arc::new(Undialable(format!(
                        "datanode {id} registered address {addr:?}, which is no TCP address: \
                         {error}"
                    ))),
                }),
            ));
            heartbeats = Some(task::spawn(heartbeat::run(
                metasrv,
                handle.clone(),
                node_id,
                heartbeat::HEARTBEAT_INTERVAL,
                leases,
            )));
            tracing::info!(
                role = %"datanode",
                id = node_id,
                rpc = %advertised,
                shards = shard_count,
                driver = %datanode.driver,
                "ready"
            );
            signals.await;
        }
        tracing::info!("shutting down");
        server.abort();
        if let Some(heartbeats) = heartbeats {
            heartbeats.abort();
        }
        match handle.flush_all().await {
            Ok(regions) => tracing::info!(regions, "flushed the memtables"),
            Err(error) => tracing::error!(%error, "flush at stop failed; the WAL keeps the rows"),
        }
        Ok::<_, String>(datanode)
    })?;
    datanode
        .into_shards()
        .stop_and_join()
        .map_err(|error| error.to_string())?;
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    tracing::info!("stopped");
    Ok(())
}

/// A datanode whose registered address is not one this frontend can dial: every request
/// to it fails, naming the address, rather than the frontend failing.
struct Undialable(String);

impl RegionService for Undialable {
    fn call(&self, _: RegionRequest) -> BoxFuture<'_, Result<RegionReply, RegionError>> {
        let message = self.0.clone();
        Box::pin(async move { Err(RegionError::new(ErrorKind::Unavailable, message)) })
    }
}

pub fn frontend(args: FrontendArgs) -> Result<(), String> {
    let config = file_config(Role::Frontend, &args.config, |config| {
        if let Some(addr) = args.http_addr {
            config.http.addr = addr;
        }
        if let Some(addr) = args.postgres_addr {
            config.postgres.addr = addr;
        }
        if let Some(replicas) = args.replicas {
            config
                .frontend
                .get_or_insert_with(Default::default)
                .replicas = Some(replicas);
        }
        if let Some(preference) = args.read_preference {
            config
                .frontend
                .get_or_insert_with(Default::default)
                .read_preference = preference;
        }
    })?;
    let section = config.frontend.clone().unwrap_or_default();
    let metasrv_addrs = metasrv_addrs(
        args.metasrv.clone(),
        Some(section.metasrv),
        "frontend.metasrv",
    )?;
    init_logging(args.log.as_deref().unwrap_or(&config.log.filter))?;
    let runtime = frontend_runtime(2)?;
    runtime.block_on(async {
        let connect: Connect =
            Arc::new(
                |id: u64, info: &DatanodeInfo| match info.addr.parse::<SocketAddr>() {
                    Ok(addr) => {
                        Arc::new(RegionClient::new(tcp_client(addr))) as Arc<dyn RegionService>
                    }
                    Err(error) => Arc::new(Undialable(format!(
                        "datanode {id} registered address {:?}, which is no TCP address: {error}",
                        info.addr
                    ))),
                },
            );
        let peers = Peers {
            metasrv: metasrv_client(&metasrv_addrs),
            datanodes: BTreeMap::new(),
            connect: Some(connect),
            catalog_refresh: Some(start::CATALOG_REFRESH_INTERVAL),
        };
        let frontend_config = FrontendConfig::of(&config);
        let running = start::start(&frontend_config, peers, build_info()).await?;
        let signals = shutdown_signal()?;
        tracing::info!(
            role = %"frontend",
            metasrv = %addrs_text(&metasrv_addrs),
            http = %running.http_addr,
            postgres = %running.postgres_addr,
            "ready"
        );
        running.serve(signals).await
    })?;
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    tracing::info!("stopped");
    Ok(())
}
