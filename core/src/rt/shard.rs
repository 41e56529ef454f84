//! Shards: one single-threaded executor per core, each owning its data outright.
//!
//! In production [`start`] spawns one OS thread per shard, pins it to a core, and runs a
//! monoio runtime on it with the io_uring driver, or epoll when io_uring is unavailable
//! (which one runs is logged and reported in [`ShardContext::driver`]). Under madsim the
//! shards are tasks on the current simulated node.
//!
//! A shard's main future receives a [`ShardContext`] with its id and a [`StopSignal`];
//! it returns when it has finished its shutdown work after the signal fires.

use std::fmt;
use std::future::Future;
use std::io;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The number of a shard inside its process, `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u16);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// Which I/O driver a shard asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoDriverChoice {
    /// io_uring when the kernel offers it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring or fail to start.
    IoUring,
    /// epoll, even where io_uring exists (for old kernels and for comparison).
    Epoll,
}

impl FromStr for IoDriverChoice {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(Self::IoUring),
            "epoll" | "legacy" => Ok(Self::Epoll),
            other => Err(format!(
                "unknown io driver {other:?}: expected auto, io_uring or epoll"
            )),
        }
    }
}

/// The I/O driver a shard actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    IoUring,
    Epoll,
    /// The madsim simulator.
    Simulated,
}

impl fmt::Display for IoDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoDriver::IoUring => "io_uring",
            IoDriver::Epoll => "epoll",
            IoDriver::Simulated => "simulated",
        })
    }
}

/// How to start the shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardsConfig {
    /// Number of shards; must be at least 1.
    pub count: u16,
    /// Pin shard `i` to core `i % cores`. Off where the process shares cores deliberately.
    pub pin_to_cores: bool,
    pub io_driver: IoDriverChoice,
    /// io_uring submission queue entries per shard.
    pub uring_entries: u32,
}

impl ShardsConfig {
    /// One shard per available core.
    pub fn per_core() -> ShardsConfig {
        ShardsConfig {
            count: available_cores(),
            pin_to_cores: true,
            io_driver: IoDriverChoice::Auto,
            uring_entries: 1024,
        }
    }
}

/// Cores this process may run on (at least 1).
pub fn available_cores() -> u16 {
    #[cfg(madsim)]
    {
        1
    }
    #[cfg(not(madsim))]
    {
        std::thread::available_parallelism()
            .map(|n| u16::try_from(n.get()).unwrap_or(u16::MAX))
            .unwrap_or(1)
    }
}

/// Fires once when the shards are asked to stop.
#[derive(Clone)]
pub struct StopSignal {
    receiver: async_channel::Receiver<()>,
}

impl StopSignal {
    /// Completes once stop was requested.
    pub async fn stopped(&self) {
        // Nothing is ever sent: the channel closes when the sender is dropped.
        let _ = self.receiver.recv().await;
    }

    /// True once stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.receiver.is_closed()
    }
}

/// What a shard's main future knows about itself.
#[derive(Clone)]
pub struct ShardContext {
    pub id: ShardId,
    pub count: u16,
    pub driver: IoDriver,
    pub stop: StopSignal,
}

/// A shard's main future panicked or its runtime failed to start.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{shard}: could not start its runtime: {source}")]
    Start {
        shard: ShardId,
        #[source]
        source: io::Error,
    },
    #[error("{shard}: panicked")]
    Panicked { shard: ShardId },
}

/// The running shards.
pub struct Shards {
    stop: Option<async_channel::Sender<()>>,
    #[cfg(not(madsim))]
    threads: Vec<(ShardId, std::thread::JoinHandle<Result<(), ShardError>>)>,
    #[cfg(madsim)]
    tasks: Vec<(ShardId, super::task::LocalJoinHandle<()>)>,
}

/// Starts `config.count` shards, each running `main(context)` to completion.
///
/// `main` is called on the shard's own thread, so the future it returns need not be `Send`.
///
/// A process may start several sets of shards (the datanode's, the catalog's), each
/// numbered from 0; each shard's start is logged with the crate that started its set
/// (`runtime=datanode`, `runtime=metasrv`), taken from the caller's location.
#[track_caller]
pub fn start<F, Fut>(config: &ShardsConfig, main: F) -> Result<Shards, ShardError>
where
    F: Fn(ShardContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    assert!(config.count >= 1, "at least one shard is required");
    #[cfg(not(madsim))]
    let owner = runtime_name(std::panic::Location::caller());
    let (stop_sender, stop_receiver) = async_channel::bounded::<()>(1);
    let main = Arc::new(main);
    let mut shards = Shards {
        stop: Some(stop_sender),
        #[cfg(not(madsim))]
        threads: Vec::with_capacity(usize::from(config.count)),
        #[cfg(madsim)]
        tasks: Vec::with_capacity(usize::from(config.count)),
    };
    for index in 0..config.count {
        let context = ShardContext {
            id: ShardId(index),
            count: config.count,
            driver: IoDriver::Simulated,
            stop: StopSignal {
                receiver: stop_receiver.clone(),
            },
        };
        #[cfg(madsim)]
        {
            let main = main.clone();
            let handle = super::task::spawn_local(async move { main(context).await });
            shards.tasks.push((ShardId(index), handle));
        }
        #[cfg(not(madsim))]
        {
            let handle = production::spawn_shard(config.clone(), context, main.clone(), owner);
            match handle {
                Ok(handle) => shards.threads.push((ShardId(index), handle)),
                Err(source) => {
                    // Stop the ones already started before reporting.
                    let _ = shards.stop_and_join();
                    return Err(ShardError::Start {
                        shard: ShardId(index),
                        source,
                    });
                }
            }
        }
    }
    Ok(shards)
}

impl Shards {
    /// Asks every shard to stop (their [`StopSignal`]s fire).
    pub fn request_stop(&mut self) {
        self.stop = None;
    }

    /// Requests stop and waits for every shard thread to finish. Blocks the caller.
    #[cfg(not(madsim))]
    pub fn stop_and_join(mut self) -> Result<(), ShardError> {
        self.request_stop();
        let mut first_error = None;
        for (shard, thread) in self.threads.drain(..) {
            let result = match thread.join() {
                Ok(result) => result,
                Err(_) => Err(ShardError::Panicked { shard }),
            };
            if let Err(error) = result {
                tracing::error!(%shard, %error, "shard failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Requests stop and waits for every shard task to finish.
    #[cfg(madsim)]
    pub async fn stop_and_join(mut self) -> Result<(), ShardError> {
        self.request_stop();
        for (shard, task) in self.tasks.drain(..) {
            task.await.map_err(|_| ShardError::Panicked { shard })?;
        }
        Ok(())
    }
}

/// The name of the crate whose source `caller` is in: the first directory of its path in
/// the workspace (`metasrv/src/service.rs` is `metasrv`; the root crate's `src/main.rs`
/// is `metronome`). A path outside the workspace is named whole.
#[cfg(not(madsim))]
fn runtime_name(caller: &'static std::panic::Location<'static>) -> &'static str {
    let file = caller.file();
    match file.split_once('/') {
        Some(("src" | "tests" | "benches", _)) => "metronome",
        Some((first, _)) if !first.is_empty() => first,
        _ => file,
    }
}

/// Runs `main` on one shard with the given driver, waits for it, and returns its output.
/// For tests, benchmarks and tools that need the shard context for a single job.
#[cfg(not(madsim))]
#[track_caller]
pub fn run_on_one_shard<T, F, Fut>(io_driver: IoDriverChoice, main: F) -> Result<T, ShardError>
where
    T: Send + 'static,
    F: FnOnce(ShardContext) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let main = std::sync::Mutex::new(Some(main));
    let config = ShardsConfig {
        count: 1,
        pin_to_cores: false,
        io_driver,
        uring_entries: 256,
    };
    let shards = start(&config, move |context| {
        let main = main
            .lock()
            .expect("not poisoned")
            .take()
            .expect("one shard runs it once");
        let sender = sender.clone();
        async move {
            let _ = sender.send(main(context).await);
        }
    })?;
    let output = receiver.recv();
    shards.stop_and_join()?;
    Ok(output.expect("the shard either sent its output or panicked, which join reported"))
}

#[cfg(not(madsim))]
mod production {
    use super::*;
    use monoio::{FusionDriver, FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

    std::thread_local! {
        static ON_SHARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// True on a shard thread (where monoio's io_uring operations may be used).
    pub(crate) fn on_shard() -> bool {
        ON_SHARD.with(|flag| flag.get())
    }

    pub(super) fn spawn_shard<F, Fut>(
        config: ShardsConfig,
        mut context: ShardContext,
        main: Arc<F>,
        owner: &'static str,
    ) -> io::Result<std::thread::JoinHandle<Result<(), ShardError>>>
    where
        F: Fn(ShardContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let name = context.id.to_string();
        std::thread::Builder::new().name(name).spawn(move || {
            let shard = context.id;
            if config.pin_to_cores {
                let core = usize::from(shard.0) % usize::from(available_cores());
                if let Err(error) = monoio::utils::bind_to_cpu_set([core]) {
                    tracing::warn!(%shard, core, ?error, "could not pin shard to its core");
                }
            }
            ON_SHARD.with(|flag| flag.set(true));
            let start_error = |source| ShardError::Start { shard, source };
            match config.io_driver {
                IoDriverChoice::Auto => {
                    let runtime = RuntimeBuilder::<FusionDriver>::new()
                        .with_entries(config.uring_entries)
                        .enable_timer()
                        .build()
                        .map_err(start_error)?;
                    match runtime {
                        FusionRuntime::Uring(mut runtime) => {
                            context.driver = IoDriver::IoUring;
                            announce(&context, owner);
                            runtime.block_on(main(context));
                        }
                        FusionRuntime::Legacy(mut runtime) => {
                            context.driver = IoDriver::Epoll;
                            announce(&context, owner);
                            runtime.block_on(main(context));
                        }
                    }
                }
                IoDriverChoice::IoUring => {
                    let mut runtime = RuntimeBuilder::<IoUringDriver>::new()
                        .with_entries(config.uring_entries)
                        .enable_timer()
                        .build()
                        .map_err(start_error)?;
                    context.driver = IoDriver::IoUring;
                    announce(&context, owner);
                    runtime.block_on(main(context));
                }
                IoDriverChoice::Epoll => {
                    let mut runtime = RuntimeBuilder::<LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .map_err(start_error)?;
                    context.driver = IoDriver::Epoll;
                    announce(&context, owner);
                    runtime.block_on(main(context));
                }
            }
            Ok(())
        })
    }

    fn announce(context: &ShardContext, owner: &str) {
        tracing::info!(runtime = %owner, shard = %context.id, driver = %context.driver, "shard started");
    }
}

#[cfg(not(madsim))]
pub(crate) use production::on_shard;
