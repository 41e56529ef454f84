//! Object storage: where SSTs (and later manifests) live.
//!
//! Keys are `/`-separated relative paths (`shard-0/regions/1_2/sst/7.parquet`). `put` is
//! atomic and durable when it returns: a reader sees the whole object or none of it, as
//! with S3.
//!
//! Backends: a local directory through [`super::disk::Disk`] (so it is simulated, faults
//! and crashes included, wherever the disk is a `SimDisk`). *(planned)*: S3 through
//! `aws-sdk-s3` on its own tokio runtime, and a local cache for reads.

use std::io;
use std::path::{Path, PathBuf};

use super::disk::{Disk, OpenOptions};

/// An object store.
#[derive(Clone)]
pub struct ObjectStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Local { disk: Disk, root: PathBuf },
}

impl ObjectStore {
    /// Objects as files under `root` on `disk`.
    pub fn local(disk: Disk, root: impl Into<PathBuf>) -> ObjectStore {
        ObjectStore {
            backend: Backend::Local {
                disk,
                root: root.into(),
            },
        }
    }

    /// Stores `bytes` under `key`, atomically and durably.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        match &self.backend {
            Backend::Local { disk, root } => {
                let path = root.join(key);
                if let Some(parent) = path.parent() {
                    disk.create_dir_all_synced(parent).await?;
                }
                disk.write_atomic(&path, bytes).await
            }
        }
    }

    /// The whole object.
    pub async fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        match &self.backend {
            Backend::Local { disk, root } => {
                let file = disk.open(root.join(key), OpenOptions::read()).await?;
                file.read_exact_at(file.len() as usize, 0).await
            }
        }
    }

    /// Keys under `prefix` (a directory-like prefix ending without `/`), sorted.
    pub async fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        match &self.backend {
            Backend::Local { disk, root } => match disk.list_dir(root.join(prefix)).await {
                Ok(names) => Ok(names
                    .into_iter()
                    .filter(|name| !name.ends_with(".tmp"))
                    .map(|name| format!("{prefix}/{name}"))
                    .collect()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(error) => Err(error),
            },
        }
    }

    /// Deletes an object; deleting a missing one succeeds (as on S3).
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        match &self.backend {
            Backend::Local { disk, root } => {
                let path = root.join(key);
                match disk.remove(&path).await {
                    Ok(()) => disk.sync_dir(path.parent().unwrap_or(Path::new(""))).await,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(error) => Err(error),
                }
            }
        }
    }
}
