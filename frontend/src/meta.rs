//! The frontend's view of the catalog: a snapshot for reads that never wait, and
//! serialized changes sent to the metadata service over the protocol.
//!
//! The catalog is a deterministic state machine, so after the metasrv acknowledges a
//! command the frontend applies the same command to its own copy, as a raft follower
//! would, instead of fetching the whole catalog again. If the version it reaches is not
//! the one the metasrv reported (another frontend changed the catalog in between), it
//! fetches the catalog.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metronome_catalog::client::{MetaClient, MetaError};
use metronome_catalog::{Catalog, Command, Route};
use metronome_core::data::RegionId;
use metronome_core::rt::task::{self, JoinHandle};
use metronome_core::rt::time;

pub struct Meta {
    client: MetaClient,
    snapshot: RwLock<Arc<Catalog>>,
    /// Every region's route in any catalog this frontend has held, kept after its table
    /// is dropped (region ids are never reused), so that the regions of a table just
    /// dropped can still be reached to be deleted.
    routes: RwLock<BTreeMap<RegionId, Route>>,
    /// Serializes changes together with what must follow them (see [`Meta::lock`]).
    /// Reading the catalog again does not take it: a change in progress may need to.
    change: tokio::sync::Mutex<()>,
}

impl Meta {
    /// Fetches the catalog through `client`.
    pub async fn connect(client: MetaClient) -> Result<Meta, MetaError> {
        let catalog = client.catalog().await?;
        Ok(Meta::new(client, catalog))
    }

    /// A view starting from `catalog`, fetched through `client`.
    pub fn new(client: MetaClient, catalog: Catalog) -> Meta {
        let routes = catalog.routes().collect();
        Meta {
            client,
            snapshot: RwLock::new(Arc::new(catalog)),
            routes: RwLock::new(routes),
            change: tokio::sync::Mutex::new(()),
        }
    }

    /// Follows the catalog other nodes change (a new metric, a table, a route): the
    /// metasrv answers a watch as soon as its catalog moves past this copy's version (or
    /// after a few quiet seconds), and the copy is read again then; after a failure,
    /// again after `retry`. The task holds the view only while it watches: it ends once
    /// every other holder dropped it (a frontend that failed to open and tries again
    /// would otherwise leave one such task behind per try).
    pub fn follow(meta: &Arc<Meta>, retry: Duration) -> JoinHandle<()> {
        let weak = Arc::downgrade(meta);
        task::spawn(async move {
            loop {
                let Some(meta) = weak.upgrade() else {
                    return;
                };
                let since = meta.catalog().version;
                match meta.watch(since).await {
                    Ok(version) if version == since => continue,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "cannot watch the catalog; reading it again");
                        drop(meta);
                        time::sleep(retry).await;
                        continue;
                    }
                }
                if let Err(error) = meta.refresh().await {
                    tracing::warn!(%error, "cannot read the catalog again");
                    drop(meta);
                    time::sleep(retry).await;
                }
            }
        })
    }

    /// The catalog as of the last completed change.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.snapshot.read().expect("catalog snapshot").clone()
    }

    /// The route of `region` in any catalog this frontend has held.
    pub fn route(&self, region: RegionId) -> Option<Route> {
        self.routes.read().expect("routes").get(&region).copied()
    }

    /// Makes `next` the snapshot if it is newer than the current one (versions only grow:
    /// a fetch and a change that finish in either order leave the newer), and remembers
    /// its routes. Returns the snapshot now current.
    fn publish(&self, next: Catalog) -> Arc<Catalog> {
        let mut snapshot = self.snapshot.write().expect("catalog snapshot");
        if next.version > snapshot.version {
            self.routes.write().expect("routes").extend(next.routes());
            *snapshot = Arc::new(next);
        }
        snapshot.clone()
    }

    /// Fetches the catalog from the metasrv and publishes it if it is newer than this
    /// copy: what the frontend does when it meets a region, a route or a datanode that
    /// another node added.
    pub async fn refresh(&self) -> Result<Arc<Catalog>, MetaError> {
        let fetched = self.client.catalog().await?;
        Ok(self.publish(fetched))
    }

    /// The metasrv's catalog version once it is past `since` (or after its wait).
    pub async fn watch(&self, since: u64) -> Result<u64, MetaError> {
        self.client.watch_catalog(since).await
    }

    /// (datanode, milliseconds since its last heartbeat), as the metasrv knows them,
    /// and the copies the datanodes name quarantined.
    pub async fn liveness(&self) -> Result<metronome_catalog::request::Liveness, MetaError> {
        self.client.liveness().await
    }

    /// Each metasrv replica's raft state, by address (an error for one that did not
    /// answer).
    pub async fn raft_statuses(
        &self,
    ) -> Vec<(
        String,
        Result<metronome_catalog::request::RaftStatus, MetaError>,
    )> {
        self.client.raft_statuses().await
    }

    /// The metasrv's address, for messages and introspection.
    pub fn metasrv(&self) -> String {
        self.client.peer()
    }

    /// Exclusive access for a change and whatever must happen with it before the next
    /// change starts (adding a tag to every region, say).
    pub async fn lock(&self) -> MetaGuard<'_> {
        MetaGuard {
            meta: self,
            _change: self.change.lock().await,
        }
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

    /// Routes for `count` new regions, placed by the metasrv's leader over the live
    /// datanodes (the command that creates them carries them).
    pub async fn place(&self, count: u32) -> Result<Vec<Route>, MetaError> {
        self.meta.client.place(count).await
    }

    /// Applies a command durably and publishes the new snapshot.
    pub async fn execute(&mut self, command: Command) -> Result<(), MetaError> {
        let executed = self.meta.client.execute(&command).await?;
        let current = self.meta.catalog();
        if executed.version <= current.version {
            // This copy has the command's effect already (it changed nothing, or a fetch
            // since brought it).
            return Ok(());
        }
        // The same command on this copy reaches the metasrv's state only if the metasrv
        // applied it to the very state this copy holds; a command that changed nothing
        // there (another frontend did it first) may change this older copy differently.
        let mut next = (*current).clone();
        let replayed = executed.applied
            && executed.version == current.version + 1
            && next.apply(&command).is_ok()
            && next.version == executed.version;
        if !replayed {
            tracing::debug!(
                version = executed.version,
                local = current.version,
                "the catalog moved on elsewhere; fetching it"
            );
            next = self.meta.client.catalog().await?;
        }
        self.meta.publish(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::rt::net::{FrameLimits, InProcNetwork};
    use metronome_wire::rpc::{self, RpcClient};

    /// The watch ends once the view is dropped: a frontend's failed start, tried again,
    /// leaves no task behind (one per try did, before).
    #[tokio::test]
    async fn following_ends_once_the_view_is_dropped() {
        let network = InProcNetwork::new();
        let limits = FrameLimits::default();
        // No one listens there: every watch fails at once.
        let connector = rpc::inproc_connector(network, "nowhere", limits);
        let client = MetaClient::new(RpcClient::new("nowhere", connector, Duration::from_secs(1)));
        let meta = Arc::new(Meta::new(client, Catalog::default()));
        let following = Meta::follow(&meta, Duration::from_millis(5));
        drop(meta);
        let ended = time::timeout(Duration::from_secs(10), following).await;
        assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    }
}
