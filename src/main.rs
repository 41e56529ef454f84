//! `metronome`: the command line, configuration and process wiring.
//!
//! Configuration precedence, lowest first: built-in defaults, the TOML file (`--config`),
//! `METRONOME_*` environment variables, command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod cluster;
mod supervisor;
use metronome_catalog::client::MetaClient;
use metronome_catalog::Command as CatalogCommand;
use metronome_core::config::Config;
use metronome_core::rt::disk::{startup, DirLock, Disk};
use metronome_core::rt::net::{FrameLimits, InProcNetwork, Listener};
use metronome_core::rt::shard::{IoDriverChoice, ShardsConfig};
use metronome_core::rt::task;
use metronome_datanode::datanode::{Datanode, DatanodeConfig};
use metronome_datanode::engine::EngineConfig;
use metronome_datanode::heartbeat;
use metronome_frontend::self_metrics::BuildInfo;
use metronome_frontend::start::{self, FrontendConfig, Peers};
use metronome_metasrv::service::{MetaService, ReplicaConfig};
use metronome_wire::region::{RegionClient, RegionServer};
use metronome_wire::rpc::{self, RpcClient};
use metronome_wire::RegionService;

/// mimalloc instead of glibc's allocator: ingest allocates and frees many small rows on
/// every thread, and glibc's arenas spent half the CPU of a remote-write benchmark in
/// malloc and free (benches/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "metronome",
    version,
    about = "A distributed time-series database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every component in one process with one local data directory.
    Standalone(Box<StandaloneArgs>),
    /// Run a frontend of a cluster: the HTTP and PostgreSQL APIs over the cluster's
    /// datanodes.
    Frontend(Box<cluster::FrontendArgs>),
    /// Run a datanode of a cluster: regions on one shard per core, registered with the
    /// metasrv.
    Datanode(Box<cluster::DatanodeArgs>),
    /// Run one replica of a cluster's metadata server (raft: three or five of them).
    Metasrv(Box<cluster::MetasrvArgs>),
    /// Add a metasrv replica to a running cluster (started with `metasrv --join`) or
    /// remove one.
    Membership(Box<cluster::MembershipArgs>),
    /// Run a whole cluster on this machine: each role as its own child process on
    /// loopback, stopped together on Ctrl-C.
    Cluster(Box<supervisor::ClusterArgs>),
}

/// The flags of a process that runs datanode shards (standalone, a datanode): each
/// overrides its key of the `[shards]` section.
#[derive(Args)]
struct ShardFlags {
    /// Datanode shards; 0 means one per core [default: 0].
    #[arg(long, env = "METRONOME_SHARDS")]
    shards: Option<u16>,
    /// I/O driver of the shards: auto, io_uring or epoll [default: auto].
    #[arg(long, env = "METRONOME_IO_DRIVER")]
    io_driver: Option<IoDriverChoice>,
    /// Pin each shard to its own core [default: true].
    #[arg(long, env = "METRONOME_PIN_TO_CORES")]
    pin_to_cores: Option<bool>,
}

impl ShardFlags {
    fn apply(&self, config: &mut Config) {
        if let Some(shards) = self.shards {
            config.shards.count = shards;
        }
        if let Some(io_driver) = self.io_driver {
            config.shards.io_driver = io_driver;
        }
        if let Some(pin) = self.pin_to_cores {
            config.shards.pin_to_cores = pin;
        }
    }
}

/// The shards' runtime configuration of `config`'s `[shards]` section.
fn shards_config(config: &Config) -> ShardsConfig {
    ShardsConfig {
        count: config.shard_count(),
        pin_to_cores: config.shards.pin_to_cores,
        io_driver: config.shards.io_driver,
        uring_entries: config.shards.uring_entries,
    }
}

#[derive(Args)]
struct StandaloneArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "METRONOME_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for all stored data [default: ./metronome-data].
    #[arg(long, env = "METRONOME_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    shards: ShardFlags,
    /// Address of the HTTP API [default: 127.0.0.1:4000].
    #[arg(long, env = "METRONOME_HTTP_ADDR")]
    http_addr: Option<std::net::SocketAddr>,
    /// Address of the PostgreSQL wire protocol [default: 127.0.0.1:4003].
    #[arg(long, env = "METRONOME_POSTGRES_ADDR")]
    postgres_addr: Option<std::net::SocketAddr>,
    /// Samples one PromQL query may fetch plus points it may compute [default: 50000000].
    #[arg(long, env = "METRONOME_QUERY_SAMPLES_MAX")]
    query_samples_max: Option<u64>,
    /// How long one PromQL query may run, in milliseconds [default: 120000].
    #[arg(long, env = "METRONOME_QUERY_TIMEOUT_MS")]
    query_timeout_ms: Option<u64>,
    /// Log filter, e.g. `info` or `debug,monoio=warn` [default: info].
    #[arg(long, env = "METRONOME_LOG")]
    log: Option<String>,
    /// The S3 access key of `[storage.s3]`.
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    s3_access_key_id: Option<String>,
    /// The S3 secret key of `[storage.s3]` (kept out of files and of `--help`).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Standalone(args) => standalone(*args),
        Command::Frontend(args) => cluster::frontend(*args),
        Command::Datanode(args) => cluster::datanode(*args),
        Command::Metasrv(args) => cluster::metasrv(*args),
        Command::Membership(args) => cluster::membership(*args),
        Command::Cluster(args) => supervisor::cluster(*args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("metronome: {message}");
            ExitCode::FAILURE
        }
    }
}

fn read_config_file(path: &Path) -> Result<String, String> {
    startup::read_to_string(path)
        .map_err(|error| format!("cannot read config file {}: {error}", path.display()))
}

/// The configuration file at `path`, or the defaults without one; not yet validated
/// (flags override it first).
fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(path) => {
            let text = read_config_file(path)?;
            Config::from_toml(&text, &path.display().to_string()).map_err(|e| e.to_string())
        }
        None => Ok(Config::default()),
    }
}

fn effective_config(args: &StandaloneArgs) -> Result<Config, String> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(path) = &args.config {
        config
            .check_role(metronome_core::config::Role::Standalone)
            .map_err(|message| format!("invalid configuration in {}: {message}", path.display()))?;
    }
    if let Some(data_dir) = &args.data_dir {
        config.data_dir = data_dir.clone();
    }
    args.shards.apply(&mut config);
    if let Some(addr) = args.http_addr {
        config.http.addr = addr;
    }
    if let Some(addr) = args.postgres_addr {
        config.postgres.addr = addr;
    }
    if let Some(samples) = args.query_samples_max {
        config.query.samples_max = samples;
    }
    if let Some(timeout) = args.query_timeout_ms {
        config.query.timeout_ms = timeout;
    }
    if let Some(log) = &args.log {
        config.log.filter = log.clone();
    }
    if let Some(key) = &args.s3_access_key_id {
        config.storage.s3.access_key_id = key.clone();
    }
    if let Some(secret) = &args.s3_secret_access_key {
        config.storage.s3.secret_access_key = secret.clone();
    }
    config
        .validate()
        .map_err(|message| format!("invalid configuration: {message}"))?;
    Ok(config)
}

fn init_logging(filter: &str) -> Result<(), String> {
    // openraft narrates every vote and replication stream at `info`; its warnings are
    // what an operator needs, unless the filter asks for it by name.
    let filter = if filter.contains("openraft") {
        filter.to_string()
    } else {
        format!("{filter},openraft=warn")
    };
    let filter = filter.as_str();
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|error| format!("invalid log filter {filter:?}: {error}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in a log file they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

/// Creates the data directory and locks it against a second process.
fn prepare_data_dir(dir: &Path) -> Result<DirLock, String> {
    startup::create_dir_all(dir)
        .map_err(|error| format!("cannot create data directory {}: {error}", dir.display()))?;
    DirLock::acquire(dir).map_err(|error| {
        // "In use" names the directory and its lock already; any other failure is the
        // OS's bare words, which name no path.
        if error.kind() == std::io::ErrorKind::WouldBlock {
            error.to_string()
        } else {
            format!("cannot lock {}: {error}", dir.join("LOCK").display())
        }
    })
}

fn standalone(args: StandaloneArgs) -> Result<(), String> {
    let config = effective_config(&args)?;
    if args.print_config {
        // The effective configuration, but never the secret: it is printed only as set.
        let mut shown = config.clone();
        if !shown.storage.s3.secret_access_key.is_empty() {
            shown.storage.s3.secret_access_key = "<set>".to_string();
        }
        print!(
            "{}",
            toml::to_string(&shown).map_err(|error| error.to_string())?
        );
        return Ok(());
    }
    init_logging(&config.log.filter)?;
    let _lock = prepare_data_dir(&config.data_dir)?;

    let shards_config = shards_config(&config);
    let runtime = frontend_runtime(usize::from(shards_config.count))?;
    let (datanode, meta) = runtime.block_on(async {
        let (datanode, meta) = serve(&config, shards_config).await?;
        Ok::<_, String>((datanode, meta.stop().await))
    })?;
    // Both stop once their queues are closed and the work in flight is done; everything
    // they acknowledged is already durable.
    if let Some(catalog) = meta {
        catalog.stop_and_join().map_err(|error| error.to_string())?;
    }
    datanode
        .into_shards()
        .stop_and_join()
        .map_err(|error| error.to_string())?;
    // The frontend's tasks are cancelled here rather than when `runtime` goes out of
    // scope, so that nothing waits after the last log line, and a blocking task (a
    // resolver, a file read) holds the exit up by a second at most.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    tracing::info!("stopped");
    Ok(())
}

/// The tokio runtime of a process's frontend, metasrv and protocol servers, with `threads`
/// workers (1 to 8). Its threads are not pinned: the shards own the cores, and the
/// frontend's work (decoding, routing, merging) yields to them.
fn frontend_runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, 8))
        .thread_name("frontend")
        // PromQL parsing and evaluation recurse over the expression; the queries' depth
        // is bounded (`promql::NESTING_MAX`), and 8 MiB keeps that bound far from the
        // end of the stack in every build.
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the frontend runtime: {error}"))
}

/// How long a stopping process waits for the frontend runtime's blocking tasks.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The datanode's and the metasrv's names on the process's in-process network. In
/// standalone every request between components is a protocol frame on this network;
/// in a cluster the same frames travel over TCP.
const DATANODE_ENDPOINT: &str = "datanode-0";
const METASRV_ENDPOINT: &str = "metasrv";
/// How long a component waits for another's reply before it gives up (and the client
/// gets a retryable error).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts the datanode, the catalog and the HTTP API, and serves until SIGINT or SIGTERM.
async fn serve(
    config: &Config,
    shards_config: ShardsConfig,
) -> Result<(Datanode, Arc<MetaService>), String> {
    let started = metronome_core::rt::time::now();
    let disk = Disk::real(&config.data_dir);
    let shard_count = shards_config.count;
    let datanode = Datanode::start(
        disk.clone(),
        DatanodeConfig {
            shards: shards_config,
            engine: EngineConfig::from_section(&config.storage)
                .map_err(|message| format!("invalid configuration: {message}"))?,
        },
    )
    .await?;
    let meta_service = Arc::new(MetaService::start(disk, "meta", ReplicaConfig::single()).await?);

    let network = InProcNetwork::new();
    let limits = FrameLimits::default();
    let listen = |name: &str| {
        network
            .listen(name, limits)
            .map(Listener::from)
            .map_err(|error| format!("cannot listen on inproc://{name}: {error}"))
    };
    let handle = datanode.handle();
    let servers = [
        task::spawn(rpc::serve(
            listen(DATANODE_ENDPOINT)?,
            Arc::new(RegionServer::new(Arc::new(handle.clone()))),
            limits,
        )),
        task::spawn(rpc::serve(
            listen(METASRV_ENDPOINT)?,
            meta_service.clone(),
            limits,
        )),
    ];
    let client = |name: &str| {
        RpcClient::new(
            format!("inproc://{name}"),
            rpc::inproc_connector(network.clone(), name, limits),
            CALL_TIMEOUT,
        )
    };
    // The datanode's side: it tells the metasrv it is alive. Its region service is the
    // handle itself, not `LeasedRegions`: with no other datanode to give a region to, the
    // leases its heartbeats renew are never checked.
    let heartbeats = task::spawn(heartbeat::run(
        MetaClient::new(client(METASRV_ENDPOINT)),
        handle.clone(),
        0,
        heartbeat::HEARTBEAT_INTERVAL,
        metronome_datanode::lease::Leases::new(0),
    ));
    drop(handle);

    // The frontend's side: regions and catalog reached through the protocol only. One
    // datanode in standalone, datanode 0, registered like a cluster's so that placement
    // finds it.
    let metasrv = MetaClient::new(client(METASRV_ENDPOINT));
    metasrv
        .execute(&CatalogCommand::RegisterDatanode {
            id: 0,
            addr: format!("inproc://{DATANODE_ENDPOINT}"),
            shards: shard_count,
            incarnation: 0,
        })
        .await
        .map_err(|error| format!("cannot register the datanode: {error}"))?;
    let peers = Peers {
        metasrv,
        datanodes: BTreeMap::from([(
            0,
            Arc::new(RegionClient::new(client(DATANODE_ENDPOINT))) as Arc<dyn RegionService>,
        )]),
        connect: None,
        catalog_refresh: None,
    };
    let frontend_config = FrontendConfig::of(config);
    let running = start::start(&frontend_config, peers, build_info()).await?;
    // Watched from before the ready line: a signal sent as soon as that line is read
    // must stop the process gracefully, not kill it with the signal's default action.
    let signals = shutdown_signal()?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        shards = shard_count,
        driver = %datanode.driver,
        http = %running.http_addr,
        postgres = %running.postgres_addr,
        startup_ms = metronome_core::rt::time::elapsed(started).as_millis() as u64,
        replayed_rows = datanode.recoveries.iter().map(|r| r.rows_replayed).sum::<u64>(),
        "metronome standalone ready"
    );
    running.serve(signals).await?;
    // Everything acknowledged is durable in the WAL already; flushing now spares the next
    // start the replay. A failure is logged, not fatal: the WAL still holds the rows.
    match datanode.handle().flush_all().await {
        Ok(regions) => tracing::info!(regions, "flushed the memtables"),
        Err(error) => tracing::error!(%error, "flush at stop failed; the WAL keeps the rows"),
    }
    heartbeats.abort();
    for server in servers {
        server.abort();
    }
    Ok((datanode, meta_service))
}

/// What `build.rs` recorded about this build.
fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        revision: env!("METRONOME_BUILD_REVISION").to_string(),
        branch: env!("METRONOME_BUILD_BRANCH").to_string(),
        build_date: env!("METRONOME_BUILD_DATE").to_string(),
        toolchain: env!("METRONOME_BUILD_TOOLCHAIN").to_string(),
    }
}

/// Watches SIGINT and SIGTERM from this call on (the handlers are installed now, not when
/// the future is first polled); the future completes on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|error| format!("cannot watch SIGINT: {error}"))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| format!("cannot watch SIGTERM: {error}"))?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
