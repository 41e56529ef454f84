//! The frontend's view of the catalog: a snapshot for reads that never wait, and
//! serialized, durable changes through the metadata service's store.
//!
//! The store does its I/O through `rt::disk`, whose files belong to the thread that
//! opened them, so it runs on a runtime thread of its own (one shard, not pinned) and the
//! frontend's tasks reach it over a bounded channel. Changes are rare (a new metric or
//! label, a DDL statement); reads use the snapshot.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use futures::channel::oneshot;
use metronome_core::rt::disk::Disk;
use metronome_core::rt::shard::{self, IoDriverChoice, Shards, ShardsConfig};
use metronome_metasrv::catalog::{Catalog, Command};
use metronome_metasrv::store::{CatalogStore, StoreError};

/// Changes queued before callers wait.
const COMMANDS_QUEUED_MAX: usize = 64;

type Reply = oneshot::Sender<Result<Arc<Catalog>, StoreError>>;

pub struct Meta {
    commands: async_channel::Sender<(Command, Reply)>,
    snapshot: RwLock<Arc<Catalog>>,
    /// Serializes changes together with what must follow them (see [`Meta::lock`]).
    change: tokio::sync::Mutex<()>,
    runtime: Mutex<Option<Shards>>,
}

impl Meta {
    /// Opens the catalog under `dir` on `disk` and starts serving changes.
    pub async fn start(disk: Disk, dir: impl Into<PathBuf>) -> Result<Meta, String> {
        let dir = dir.into();
        let (commands, requests) = async_channel::bounded::<(Command, Reply)>(COMMANDS_QUEUED_MAX);
        let (ready_sender, ready) = async_channel::bounded::<Result<Arc<Catalog>, String>>(1);
        let config = ShardsConfig {
            count: 1,
            pin_to_cores: false,
            io_driver: IoDriverChoice::Auto,
            uring_entries: 64,
        };
        let runtime = shard::start(&config, move |_context| {
            let (disk, dir, requests, ready) = (
                disk.clone(),
                dir.clone(),
                requests.clone(),
                ready_sender.clone(),
            );
            async move {
                let mut store = match CatalogStore::open(disk, dir).await {
                    Ok(store) => store,
                    Err(error) => {
                        let _ = ready.send(Err(error)).await;
                        return;
                    }
                };
                let _ = ready.send(Ok(Arc::new(store.catalog().clone()))).await;
                // Ends when every sender is gone.
                while let Ok((command, reply)) = requests.recv().await {
                    let outcome = store
                        .execute(command)
                        .await
                        .map(|()| Arc::new(store.catalog().clone()));
                    let _ = reply.send(outcome);
                }
            }
        })
        .map_err(|error| format!("cannot start the catalog's runtime: {error}"))?;
        let catalog = ready
            .recv()
            .await
            .map_err(|_| "the catalog's runtime stopped while opening".to_string())??;
        Ok(Meta {
            commands,
            snapshot: RwLock::new(catalog),
            change: tokio::sync::Mutex::new(()),
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// The catalog as of the last completed change.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.snapshot.read().expect("catalog snapshot").clone()
    }

    /// Exclusive access for a change and whatever must happen with it before the next
    /// change starts (adding a tag to every region, say).
    pub async fn lock(&self) -> MetaGuard<'_> {
        MetaGuard {
            meta: self,
            _change: self.change.lock().await,
        }
    }

    /// Refuses further changes and hands back the catalog's runtime, which ends once the
    /// changes in flight are done; the caller joins it.
    pub fn stop(&self) -> Option<Shards> {
        self.commands.close();
        self.runtime.lock().expect("catalog runtime").take()
    }
}

pub struct MetaGuard<'a> {
    meta: &'a Meta,
    _change: tokio::sync::MutexGuard<'a, ()>,
}

impl MetaGuard<'_> {
    /// The catalog, current while this guard is held.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.meta.catalog()
    }

    /// Applies a command durably and publishes the new snapshot.
    pub async fn execute(&mut self, command: Command) -> Result<(), StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.meta
            .commands
            .send((command, reply))
            .await
            .map_err(|_| StoreError::Failed)?;
        let catalog = outcome.await.map_err(|_| StoreError::Failed)??;
        *self.meta.snapshot.write().expect("catalog snapshot") = catalog;
        Ok(())
    }
}
