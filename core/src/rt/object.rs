//! Object storage: where SSTs and region manifests live.
//!
//! Keys are `/`-separated relative paths (`shard-0/regions/1_2/sst/7.parquet`). `put` is
//! atomic and durable when it returns: a reader sees the whole object or none of it, as
//! with S3.
//!
//! Backends: a local directory through [`super::disk::Disk`] (so it is simulated, faults
//! and crashes included, wherever the disk is a `SimDisk`), and S3 (or any S3-compatible
//! service) through `aws-sdk-s3`, production builds only. The SDK runs on its own small
//! tokio runtime; each call is spawned there and its result comes back over a oneshot
//! channel, so a monoio shard can await it like any other future.
//!
//! A remote store can keep a local file cache for reads ([`ObjectStore::with_read_cache`]):
//! objects put or fetched are kept as files on a local disk, up to a byte budget, and a
//! `get` of a cached key never leaves the machine.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::disk::{Disk, OpenOptions};

mod sim;
pub use sim::{SimObjectFaults, SimObjectStats, SimObjectStore};

/// An object store.
#[derive(Clone)]
pub struct ObjectStore {
    backend: Backend,
    cache: Option<Rc<ReadCache>>,
}

/// A local file cache of a store's objects, owned by one shard (hence `Rc`, no lock).
///
/// Objects are immutable while they exist (an SST key is written once and deleted once),
/// so a cached copy stays valid until its key is deleted, and deleting drops it. The cache
/// is emptied when it is opened: a file half-written before a crash is never served, and
/// nothing from a previous run has to be trusted. Files are written without fsync for the
/// same reason. The oldest cached object is evicted first once the budget is exceeded;
/// an object larger than the whole budget is not cached.
struct ReadCache {
    disk: Disk,
    dir: PathBuf,
    bytes_max: u64,
    state: RefCell<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Each cached key's size and the stamp of its latest caching.
    entries: HashMap<String, (u64, u64)>,
    /// Keys in the order they were cached, with the stamp of that caching; an entry whose
    /// stamp is not its key's latest is stale and skipped.
    order: VecDeque<(String, u64)>,
    stamp: u64,
    /// Numbers the temporary files of inserts.
    temps: u64,
    bytes: u64,
    /// Counts deletes, so that a fetch that raced with a delete of its key does not cache
    /// what the delete removed.
    deletes: u64,
    hits: u64,
    misses: u64,
}

/// The cache file of `key`: one flat directory, with `%` and `/` escaped, so that
/// distinct keys never share a file.
fn cache_file_name(key: &str) -> String {
    key.replace('%', "%25").replace('/', "%2F")
}

impl ReadCache {
    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(cache_file_name(key))
    }

    async fn read(&self, key: &str) -> Option<Vec<u8>> {
        if !self.state.borrow().entries.contains_key(key) {
            self.state.borrow_mut().misses += 1;
            return None;
        }
        let read = async {
            let file = self.disk.open(self.path(key), OpenOptions::read()).await?;
            file.read_exact_at(file.len() as usize, 0).await
        };
        let size = self.state.borrow().entries.get(key).map(|(size, _)| *size);
        match read.await {
            Ok(bytes) if Some(bytes.len() as u64) == size => {
                self.state.borrow_mut().hits += 1;
                Some(bytes)
            }
            Ok(bytes) => {
                tracing::warn!(
                    key,
                    read = bytes.len(),
                    ?size,
                    "object cache file has the wrong size; fetching the object"
                );
                self.forget(key).await;
                self.state.borrow_mut().misses += 1;
                None
            }
            Err(error) => {
                // The remote copy is the truth; a cache that cannot read is bypassed.
                tracing::warn!(key, %error, "object cache read failed; fetching the object");
                self.forget(key).await;
                self.state.borrow_mut().misses += 1;
                None
            }
        }
    }

    /// Caches `bytes` as `key`, unless a delete happened since `deletes_seen`.
    async fn insert(&self, key: &str, bytes: &[u8], deletes_seen: u64) {
        let size = bytes.len() as u64;
        if size > self.bytes_max {
            return;
        }
        let path = self.path(key);
        // A temporary file of its own: two inserts of one key (two queries missing on
        // the same object) must not truncate each other's file.
        let temp = {
            let mut state = self.state.borrow_mut();
            state.temps += 1;
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".{}.tmp", state.temps));
            path.with_file_name(name)
        };
        let write = async {
            let file = self
                .disk
                .open(&temp, OpenOptions::create().with_truncate(true))
                .await?;
            file.write_at(bytes.to_vec(), 0).await?;
            drop(file);
            self.disk.rename(&temp, &path).await
        };
        if let Err(error) = write.await {
            tracing::warn!(key, %error, "object cache write failed; the object stays uncached");
            return;
        }
        if self.state.borrow().deletes != deletes_seen {
            let _ = self.disk.remove(&path).await;
            return;
        }
        let evicted = {
            let mut state = self.state.borrow_mut();
            state.stamp += 1;
            let stamp = state.stamp;
            if let Some((old, _)) = state.entries.insert(key.to_string(), (size, stamp)) {
                state.bytes -= old;
            }
            state.bytes += size;
            state.order.push_back((key.to_string(), stamp));
            let mut evicted = Vec::new();
            while state.bytes > self.bytes_max {
                let (oldest, stamp) = state.order.pop_front().expect("bytes belong to keys");
                if state.entries.get(&oldest).is_some_and(|(_, s)| *s == stamp) {
                    let (size, _) = state.entries.remove(&oldest).expect("just seen");
                    state.bytes -= size;
                    evicted.push(oldest);
                }
            }
            // Entries of removed or re-cached keys are dropped once they dominate, so the
            // queue stays proportional to what is cached.
            if state.order.len() > 2 * state.entries.len() + 16 {
                let CacheState { order, entries, .. } = &mut *state;
                order.retain(|(key, stamp)| entries.get(key).is_some_and(|(_, s)| s == stamp));
            }
            evicted
        };
        for key in evicted {
            let _ = self.disk.remove(self.path(&key)).await;
        }
    }

    async fn forget(&self, key: &str) {
        let removed = {
            let mut state = self.state.borrow_mut();
            state.deletes += 1;
            match state.entries.remove(key) {
                Some((size, _)) => {
                    state.bytes -= size;
                    true
                }
                None => false,
            }
        };
        if removed {
            let _ = self.disk.remove(self.path(key)).await;
        }
    }
}

#[derive(Clone)]
enum Backend {
    Local {
        disk: Disk,
        root: PathBuf,
    },
    #[cfg(not(madsim))]
    S3(s3::S3Store),
    Sim(SimObjectStore),
}

#[cfg(not(madsim))]
pub use s3::S3Config;

impl ObjectStore {
    /// Objects as files under `root` on `disk`.
    pub fn local(disk: Disk, root: impl Into<PathBuf>) -> ObjectStore {
        ObjectStore {
            backend: Backend::Local {
                disk,
                root: root.into(),
            },
            cache: None,
        }
    }

    /// Objects in an S3 bucket (or an S3-compatible service), under `config.prefix`.
    #[cfg(not(madsim))]
    pub fn s3(config: S3Config) -> io::Result<ObjectStore> {
        Ok(ObjectStore {
            backend: Backend::S3(s3::S3Store::new(config)?),
            cache: None,
        })
    }

    /// A simulated store ([`SimObjectStore`]).
    pub fn sim(store: SimObjectStore) -> ObjectStore {
        ObjectStore {
            backend: Backend::Sim(store),
            cache: None,
        }
    }

    /// This store with a local file cache for reads in `dir` on `disk`, holding up to
    /// `bytes_max` bytes of objects. Whatever `dir` held is deleted first. The cache
    /// belongs to this store and its clones, which must stay on one shard.
    pub async fn with_read_cache(
        self,
        disk: Disk,
        dir: impl Into<PathBuf>,
        bytes_max: u64,
    ) -> io::Result<ObjectStore> {
        let dir = dir.into();
        disk.create_dir_all(&dir).await?;
        for name in disk.list_dir(&dir).await? {
            disk.remove(dir.join(name)).await?;
        }
        Ok(ObjectStore {
            cache: Some(Rc::new(ReadCache {
                disk,
                dir,
                bytes_max,
                state: RefCell::new(CacheState::default()),
            })),
            ..self
        })
    }

    /// Reads served by the read cache and reads that went to the store, if there is a
    /// cache.
    pub fn read_cache_hits_misses(&self) -> Option<(u64, u64)> {
        self.cache.as_ref().map(|cache| {
            let state = cache.state.borrow();
            (state.hits, state.misses)
        })
    }

    /// Creates the bucket if it does not exist (local stores need nothing).
    pub async fn ensure_bucket(&self) -> io::Result<()> {
        match &self.backend {
            Backend::Local { .. } | Backend::Sim(_) => Ok(()),
            #[cfg(not(madsim))]
            Backend::S3(store) => store.ensure_bucket().await,
        }
    }

    /// Stores `bytes` under `key`, atomically and durably.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        let Some(cache) = &self.cache else {
            return self.put_uncached(key, bytes).await;
        };
        // Write-through: a new SST is read by the next query and the next compaction.
        let deletes_seen = cache.state.borrow().deletes;
        let copy = bytes.clone();
        self.put_uncached(key, bytes).await?;
        cache.insert(key, &copy, deletes_seen).await;
        Ok(())
    }

    async fn put_uncached(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        match &self.backend {
            #[cfg(not(madsim))]
            Backend::S3(store) => store.put(key, bytes).await,
            Backend::Sim(store) => store.put(key, bytes).await,
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
        let Some(cache) = &self.cache else {
            return self.get_uncached(key).await;
        };
        if let Some(bytes) = cache.read(key).await {
            return Ok(bytes);
        }
        let deletes_seen = cache.state.borrow().deletes;
        let bytes = self.get_uncached(key).await?;
        cache.insert(key, &bytes, deletes_seen).await;
        Ok(bytes)
    }

    async fn get_uncached(&self, key: &str) -> io::Result<Vec<u8>> {
        match &self.backend {
            #[cfg(not(madsim))]
            Backend::S3(store) => store.get(key).await,
            Backend::Sim(store) => store.get(key).await,
            Backend::Local { disk, root } => {
                let file = disk.open(root.join(key), OpenOptions::read()).await?;
                file.read_exact_at(file.len() as usize, 0).await
            }
        }
    }

    /// Keys under `prefix` (a directory-like prefix ending without `/`), sorted: every
    /// key below it in a remote store, the directory's entries in a local one.
    pub async fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        match &self.backend {
            #[cfg(not(madsim))]
            Backend::S3(store) => store.list(prefix).await,
            Backend::Sim(store) => store.list(prefix).await,
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
        if let Some(cache) = &self.cache {
            cache.forget(key).await;
        }
        let deleted = self.delete_uncached(key).await;
        // Again after the store's delete: a fetch that started while it ran may have
        // found the object still there and cached it.
        if let Some(cache) = &self.cache {
            cache.forget(key).await;
        }
        deleted
    }

    async fn delete_uncached(&self, key: &str) -> io::Result<()> {
        match &self.backend {
            #[cfg(not(madsim))]
            Backend::S3(store) => store.delete(key).await,
            Backend::Sim(store) => store.delete(key).await,
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

#[cfg(not(madsim))]
mod s3 {
    use std::future::Future;
    use std::io;
    use std::sync::Arc;

    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::Client;
    use futures::channel::oneshot;

    /// Where and how to reach the bucket.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct S3Config {
        pub bucket: String,
        /// Keys are stored as `<prefix>/<key>`; empty for the bucket root.
        pub prefix: String,
        pub region: String,
        /// A custom endpoint (MinIO, Ceph, a test server); `None` for AWS.
        pub endpoint: Option<String>,
        pub access_key_id: String,
        pub secret_access_key: String,
        /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`.
        pub force_path_style: bool,
    }

    #[derive(Clone)]
    pub(super) struct S3Store {
        client: Client,
        bucket: String,
        prefix: String,
        runtime: Arc<tokio::runtime::Runtime>,
    }

    fn io_error(what: &str, error: impl std::fmt::Display) -> io::Error {
        io::Error::other(format!("S3 {what}: {error}"))
    }

    impl S3Store {
        pub(super) fn new(config: S3Config) -> io::Result<S3Store> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("s3-client")
                .enable_all()
                .build()?;
            let credentials = Credentials::new(
                &config.access_key_id,
                &config.secret_access_key,
                None,
                None,
                "metronome-config",
            );
            let mut builder = aws_sdk_s3::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(config.region.clone()))
                .credentials_provider(credentials)
                .force_path_style(config.force_path_style);
            if let Some(endpoint) = &config.endpoint {
                builder = builder.endpoint_url(endpoint);
            }
            Ok(S3Store {
                client: Client::from_conf(builder.build()),
                bucket: config.bucket,
                prefix: config.prefix.trim_matches('/').to_string(),
                runtime: Arc::new(runtime),
            })
        }

        fn full_key(&self, key: &str) -> String {
            if self.prefix.is_empty() {
                key.to_string()
            } else {
                format!("{}/{key}", self.prefix)
            }
        }

        /// Runs an SDK call on the S3 runtime and waits for it from any executor.
        async fn call<T: Send + 'static>(
            &self,
            work: impl Future<Output = io::Result<T>> + Send + 'static,
        ) -> io::Result<T> {
            let (sender, receiver) = oneshot::channel();
            self.runtime.spawn(async move {
                let _ = sender.send(work.await);
            });
            receiver
                .await
                .map_err(|_| io::Error::other("the S3 client runtime stopped"))?
        }

        pub(super) async fn ensure_bucket(&self) -> io::Result<()> {
            let (client, bucket) = (self.client.clone(), self.bucket.clone());
            self.call(async move {
                if client.head_bucket().bucket(&bucket).send().await.is_ok() {
                    return Ok(());
                }
                client
                    .create_bucket()
                    .bucket(&bucket)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        io_error(
                            &format!("create bucket {bucket}"),
                            aws_sdk_s3::error::DisplayErrorContext(e),
                        )
                    })
            })
            .await
        }

        pub(super) async fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
            let (client, bucket, key) =
                (self.client.clone(), self.bucket.clone(), self.full_key(key));
            self.call(async move {
                client
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        io_error(
                            &format!("put {bucket}/{key}"),
                            aws_sdk_s3::error::DisplayErrorContext(e),
                        )
                    })
            })
            .await
        }

        pub(super) async fn get(&self, key: &str) -> io::Result<Vec<u8>> {
            let (client, bucket, key) =
                (self.client.clone(), self.bucket.clone(), self.full_key(key));
            self.call(async move {
                let output = client
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| {
                        let missing = e
                            .as_service_error()
                            .is_some_and(|service| service.is_no_such_key());
                        let message = format!(
                            "S3 get {bucket}/{key}: {}",
                            aws_sdk_s3::error::DisplayErrorContext(e)
                        );
                        io::Error::new(
                            if missing {
                                io::ErrorKind::NotFound
                            } else {
                                io::ErrorKind::Other
                            },
                            message,
                        )
                    })?;
                let body = output
                    .body
                    .collect()
                    .await
                    .map_err(|e| io_error(&format!("get {bucket}/{key} body"), e))?;
                Ok(body.into_bytes().to_vec())
            })
            .await
        }

        pub(super) async fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
            let (client, bucket) = (self.client.clone(), self.bucket.clone());
            let full_prefix = format!("{}/", self.full_key(prefix));
            let strip = if self.prefix.is_empty() {
                0
            } else {
                self.prefix.len() + 1
            };
            self.call(async move {
                let mut keys = Vec::new();
                let mut pages = client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&full_prefix)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| {
                        io_error(
                            &format!("list {bucket}/{full_prefix}"),
                            aws_sdk_s3::error::DisplayErrorContext(e),
                        )
                    })?;
                    for object in page.contents() {
                        if let Some(key) = object.key() {
                            keys.push(key[strip..].to_string());
                        }
                    }
                }
                keys.sort();
                Ok(keys)
            })
            .await
        }

        pub(super) async fn delete(&self, key: &str) -> io::Result<()> {
            let (client, bucket, key) =
                (self.client.clone(), self.bucket.clone(), self.full_key(key));
            self.call(async move {
                // S3 deletes are idempotent: a missing key is not an error.
                client
                    .delete_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        io_error(
                            &format!("delete {bucket}/{key}"),
                            aws_sdk_s3::error::DisplayErrorContext(e),
                        )
                    })
            })
            .await
        }
    }
}

/// Test support: a real S3-compatible server (moto) on a free loopback port, for the tests
/// of this crate and of the datanode. Needs `moto_server` (`pip install 'moto[server]'`).
#[cfg(not(madsim))]
pub mod testing {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use super::S3Config;

    /// A running moto server, stopped when dropped.
    pub struct MotoServer {
        child: Child,
        pub port: u16,
    }

    impl Drop for MotoServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl MotoServer {
        /// Starts the server and waits (at most 30 s) until it accepts connections.
        pub fn start() -> MotoServer {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start moto_server ({error}); install it with: pip install 'moto[server]'"));
            let server = MotoServer { child, port };
            for _ in 0..300 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("moto_server did not listen on port {port} within 30 s");
        }

        /// A configuration for `bucket` on this server, keys under `prefix`.
        pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
            S3Config {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                region: "us-east-1".to_string(),
                endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
                access_key_id: "test".to_string(),
                secret_access_key: "test".to_string(),
                force_path_style: true,
            }
        }
    }
}
