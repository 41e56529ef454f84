//! The metadata service as a server: the catalog store on a runtime thread of its own,
//! datanode heartbeats, and the protocol requests that reach them ([`MetaService`]
//! implements `metronome_wire::rpc::Dispatch`).
//!
//! The store does its I/O through `rt::disk`, whose files belong to the thread that
//! opened them, so it runs on one (unpinned) shard and requests reach it over a bounded
//! channel. Commands are rare (a new metric or label, a DDL statement); clients keep a
//! copy of the catalog and replay the commands they make ([`crate::client`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::channel::oneshot;
use metronome_core::rt::disk::Disk;
use metronome_core::rt::shard::{self, IoDriverChoice, Shards, ShardsConfig};
use metronome_core::rt::time;
use metronome_wire::fb;
use metronome_wire::frame::{self, Body};
use metronome_wire::rpc::{BoxFuture, Dispatch};
use metronome_wire::ShardStats;

use crate::store::{CatalogStore, StoreError};
use metronome_catalog::request::{MetaReply, MetaRequest};
use metronome_catalog::{Catalog, Command};

/// Commands queued before callers wait.
const COMMANDS_QUEUED_MAX: usize = 64;
/// Datanodes whose heartbeats are remembered; more is a misconfiguration or an attack.
const DATANODES_MAX: usize = 4096;

/// The catalog after a command, and whether the command changed it.
type Reply = oneshot::Sender<Result<(Arc<Catalog>, bool), StoreError>>;

/// What the metasrv last heard from a datanode.
#[derive(Debug, Clone)]
pub struct DatanodeStatus {
    pub last_heartbeat: Instant,
    pub shards: Vec<ShardStats>,
}

pub struct MetaService {
    commands: async_channel::Sender<(Command, Reply)>,
    /// The catalog as of the last command, for reads that never wait on the store.
    snapshot: Mutex<Arc<Catalog>>,
    datanodes: Mutex<BTreeMap<u64, DatanodeStatus>>,
    runtime: Mutex<Option<Shards>>,
}

impl MetaService {
    /// Opens the catalog under `dir` on `disk` and starts serving commands.
    pub async fn start(disk: Disk, dir: impl Into<PathBuf>) -> Result<MetaService, String> {
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
                    let before = store.catalog().version;
                    let outcome = store.execute(command).await.map(|()| {
                        let applied = store.catalog().version != before;
                        (Arc::new(store.catalog().clone()), applied)
                    });
                    let _ = reply.send(outcome);
                }
            }
        })
        .map_err(|error| format!("cannot start the catalog's runtime: {error}"))?;
        let catalog = ready
            .recv()
            .await
            .map_err(|_| "the catalog's runtime stopped while opening".to_string())??;
        Ok(MetaService {
            commands,
            snapshot: Mutex::new(catalog),
            datanodes: Mutex::new(BTreeMap::new()),
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// The catalog as of the last command.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.snapshot.lock().expect("catalog snapshot").clone()
    }

    /// Applies a command durably; returns the catalog after it, and whether the command
    /// changed it.
    pub async fn execute(&self, command: Command) -> Result<(Arc<Catalog>, bool), StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.commands
            .send((command, reply))
            .await
            .map_err(|_| StoreError::Failed)?;
        let (catalog, applied) = outcome.await.map_err(|_| StoreError::Failed)??;
        *self.snapshot.lock().expect("catalog snapshot") = catalog.clone();
        Ok((catalog, applied))
    }

    /// Records a datanode's heartbeat.
    pub fn heartbeat(&self, datanode: u64, shards: Vec<ShardStats>) -> Result<(), String> {
        let mut datanodes = self.datanodes.lock().expect("datanodes");
        if !datanodes.contains_key(&datanode) && datanodes.len() >= DATANODES_MAX {
            return Err(format!(
                "datanode {datanode} refused: already {DATANODES_MAX} datanodes"
            ));
        }
        datanodes.insert(
            datanode,
            DatanodeStatus {
                last_heartbeat: time::now(),
                shards,
            },
        );
        Ok(())
    }

    /// What each datanode last reported.
    pub fn datanodes(&self) -> BTreeMap<u64, DatanodeStatus> {
        self.datanodes.lock().expect("datanodes").clone()
    }

    /// Refuses further commands and hands back the catalog's runtime, which ends once the
    /// commands in flight are done; the caller joins it.
    pub fn stop(&self) -> Option<Shards> {
        self.commands.close();
        self.runtime.lock().expect("catalog runtime").take()
    }
}

fn store_error(error: &StoreError) -> Body {
    let kind = match error {
        StoreError::Refused(_) => fb::ErrorKind::Refused,
        StoreError::Io { .. } => fb::ErrorKind::Internal,
        StoreError::Failed => fb::ErrorKind::Unavailable,
    };
    frame::error_body(kind, &error.to_string())
}

impl MetaService {
    /// Answers one request: the service's one handler, an arm per request.
    pub async fn handle(&self, request: MetaRequest) -> Result<MetaReply, Body> {
        Ok(match request {
            MetaRequest::Execute(command) => {
                let (catalog, applied) =
                    self.execute(command).await.map_err(|e| store_error(&e))?;
                MetaReply::Executed {
                    version: catalog.version,
                    applied,
                }
            }
            MetaRequest::Catalog => MetaReply::Catalog(self.catalog()),
            MetaRequest::Heartbeat { datanode, shards } => {
                self.heartbeat(datanode, shards)
                    .map_err(|error| frame::error_body(fb::ErrorKind::InvalidRequest, &error))?;
                MetaReply::Heartbeat {
                    catalog_version: self.catalog().version,
                }
            }
            MetaRequest::Liveness => MetaReply::Liveness(
                self.datanodes()
                    .into_iter()
                    .map(|(datanode, status)| {
                        let since = time::now()
                            .saturating_duration_since(status.last_heartbeat)
                            .as_millis();
                        (datanode, u64::try_from(since).unwrap_or(u64::MAX))
                    })
                    .collect(),
            ),
        })
    }
}

impl Dispatch for MetaService {
    fn dispatch<'a>(&'a self, request: fb::RequestMessage<'a>) -> BoxFuture<'a, Vec<Body>> {
        let decoded = MetaRequest::decode(request);
        Box::pin(async move {
            let reply = match decoded {
                Ok(request) => self.handle(request).await,
                Err(error) => Err(frame::error_body(fb::ErrorKind::InvalidRequest, &error)),
            };
            vec![match reply {
                Ok(reply) => reply.encode(),
                Err(error) => error,
            }]
        })
    }
}
