//! `metronome`: the command line, configuration and process wiring.
//!
//! Configuration precedence, lowest first: built-in defaults, the TOML file (`--config`),
//! `METRONOME_*` environment variables, command-line flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use metronome_core::config::Config;
use metronome_core::rt::disk::{startup, DirLock};
use metronome_core::rt::shard::{self, IoDriver, IoDriverChoice, ShardsConfig};

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
    Standalone(StandaloneArgs),
    /// Run a frontend (cluster mode; not yet available).
    Frontend,
    /// Run a datanode (cluster mode; not yet available).
    Datanode,
    /// Run a metadata server (cluster mode; not yet available).
    Metasrv,
}

#[derive(Args)]
struct StandaloneArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "METRONOME_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for all stored data [default: ./metronome-data].
    #[arg(long, env = "METRONOME_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Datanode shards; 0 means one per core [default: 0].
    #[arg(long, env = "METRONOME_SHARDS")]
    shards: Option<u16>,
    /// I/O driver of the shards: auto, io_uring or epoll [default: auto].
    #[arg(long, env = "METRONOME_IO_DRIVER")]
    io_driver: Option<IoDriverChoice>,
    /// Pin each shard to its own core [default: true].
    #[arg(long, env = "METRONOME_PIN_TO_CORES")]
    pin_to_cores: Option<bool>,
    /// Log filter, e.g. `info` or `debug,monoio=warn` [default: info].
    #[arg(long, env = "METRONOME_LOG")]
    log: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Standalone(args) => match standalone(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("metronome: {message}");
                ExitCode::FAILURE
            }
        },
        Command::Frontend | Command::Datanode | Command::Metasrv => {
            eprintln!("metronome: cluster mode is not yet available; run `metronome standalone`");
            ExitCode::from(2)
        }
    }
}

fn read_config_file(path: &Path) -> Result<String, String> {
    startup::read_to_string(path)
        .map_err(|error| format!("cannot read config file {}: {error}", path.display()))
}

fn effective_config(args: &StandaloneArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text = read_config_file(path)?;
            Config::from_toml(&text, &path.display().to_string()).map_err(|e| e.to_string())?
        }
        None => Config::default(),
    };
    if let Some(data_dir) = &args.data_dir {
        config.data_dir = data_dir.clone();
    }
    if let Some(shards) = args.shards {
        config.shards.count = shards;
    }
    if let Some(io_driver) = args.io_driver {
        config.shards.io_driver = io_driver;
    }
    if let Some(pin) = args.pin_to_cores {
        config.shards.pin_to_cores = pin;
    }
    if let Some(log) = &args.log {
        config.log.filter = log.clone();
    }
    config
        .validate()
        .map_err(|message| format!("invalid configuration: {message}"))?;
    Ok(config)
}

fn init_logging(filter: &str) -> Result<(), String> {
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
    DirLock::acquire(dir).map_err(|error| error.to_string())
}

fn standalone(args: StandaloneArgs) -> Result<(), String> {
    let config = effective_config(&args)?;
    if args.print_config {
        print!(
            "{}",
            toml::to_string(&config).map_err(|error| error.to_string())?
        );
        return Ok(());
    }
    init_logging(&config.log.filter)?;
    let _lock = prepare_data_dir(&config.data_dir)?;

    let shards_config = ShardsConfig {
        count: config.shard_count(),
        pin_to_cores: config.shards.pin_to_cores,
        io_driver: config.shards.io_driver,
        uring_entries: config.shards.uring_entries,
    };
    let (started_sender, started) = mpsc::channel::<IoDriver>();
    let shards = shard::start(&shards_config, move |context| {
        let started = started_sender.clone();
        async move {
            let _ = started.send(context.driver);
            context.stop.stopped().await;
        }
    })
    .map_err(|error| error.to_string())?;
    let mut drivers = Vec::new();
    for _ in 0..shards_config.count {
        match started.recv_timeout(Duration::from_secs(30)) {
            Ok(driver) => drivers.push(driver),
            Err(_) => {
                // Joining reports why a shard failed (its runtime could not start, say).
                let cause = match shards.stop_and_join() {
                    Err(error) => error.to_string(),
                    Ok(()) => "no shard reported a failure".to_string(),
                };
                return Err(format!("shards did not start within 30 s: {cause}"));
            }
        }
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        shards = shards_config.count,
        driver = %drivers[0],
        "metronome standalone ready (ingest and query protocols are not wired yet)"
    );

    wait_for_shutdown_signal()?;
    tracing::info!("shutting down");
    shards.stop_and_join().map_err(|error| error.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_shutdown_signal() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the signal runtime: {error}"))?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|error| format!("cannot watch SIGTERM: {error}"))?;
        tokio::select! {
            biased;
            result = tokio::signal::ctrl_c() => result.map_err(|error| format!("cannot watch SIGINT: {error}")),
            _ = terminate.recv() => Ok(()),
        }
    })
}
