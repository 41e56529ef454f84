//! The frontend's view of the catalog: a snapshot for reads that never wait, and
//! serialized changes sent to the metadata service over the protocol.
//!
//! The catalog is a deterministic state machine, so after the metasrv acknowledges a
//! command the frontend applies the same command to its own copy, as a raft follower
//! would, instead of fetching the whole catalog again. If the version it reaches is not
//! the one the metasrv reported (another frontend changed the catalog in between), it
//! fetches the catalog.

use std::sync::{Arc, RwLock};

use metronome_catalog::client::{MetaClient, MetaError};
use metronome_catalog::{Catalog, Command};

pub struct Meta {
    client: MetaClient,
    snapshot: RwLock<Arc<Catalog>>,
    /// Serializes changes together with what must follow them (see [`Meta::lock`]).
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
        Meta {
            client,
            snapshot: RwLock::new(Arc::new(catalog)),
            change: tokio::sync::Mutex::new(()),
        }
    }

    /// The catalog as of the last completed change.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.snapshot.read().expect("catalog snapshot").clone()
    }

    /// Fetches the catalog from the metasrv and publishes it if it is newer than this
    /// copy: what the frontend does when it meets a region, a route or a datanode that
    /// another node added.
    pub async fn refresh(&self) -> Result<Arc<Catalog>, MetaError> {
        let _change = self.change.lock().await;
        let fetched = self.client.catalog().await?;
        let mut snapshot = self.snapshot.write().expect("catalog snapshot");
        if fetched.version > snapshot.version {
            *snapshot = Arc::new(fetched);
        }
        Ok(snapshot.clone())
    }

    /// (datanode, milliseconds since its last heartbeat), as the metasrv knows them.
    pub async fn liveness(&self) -> Result<Vec<(u64, u64)>, MetaError> {
        self.client.liveness().await
    }

    /// The metasrv's address, for messages and introspection.
    pub fn metasrv(&self) -> &str {
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

    /// Applies a command durably and publishes the new snapshot.
    pub async fn execute(&mut self, command: Command) -> Result<(), MetaError> {
        let version = self.meta.client.execute(&command).await?;
        let current = self.meta.catalog();
        if version == current.version {
            // The command changed nothing.
            return Ok(());
        }
        let mut next = (*current).clone();
        let replayed = next.apply(&command);
        let next = if replayed.is_ok() && next.version == version {
            next
        } else {
            tracing::debug!(
                version,
                local = current.version,
                "the catalog moved on elsewhere; fetching it"
            );
            self.meta.client.catalog().await?
        };
        *self.meta.snapshot.write().expect("catalog snapshot") = Arc::new(next);
        Ok(())
    }
}
