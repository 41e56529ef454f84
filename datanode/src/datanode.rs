//! A datanode: its shards, and the handle through which any task reaches their regions.
//!
//! Each shard owns the regions under `shard-<n>/` of the data disk and serves them from
//! its own executor; requests reach it over a bounded channel and each runs as a task on
//! the shard, so concurrent writes share WAL commits. The [`DatanodeHandle`] is `Send`:
//! the frontend (tokio) and tests (madsim) use it from any task.
//!
//! Placement: a new region goes to shard `hash(region) % shards`; afterwards a region
//! lives where its directory is. Starting with fewer shards than the data directory has
//! is refused, since the missing shards' regions would silently vanish.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use futures::channel::oneshot;
use metronome_core::data::{FieldColumn, RegionId, RegionSchema, Row, ScanRequest, SeriesRows};
use metronome_core::rt::disk::Disk;
use metronome_core::rt::shard::{self, IoDriver, ShardContext, ShardError, Shards, ShardsConfig};
use metronome_core::rt::{task, time};
use metronome_core::write_batch::WriteBatch;
use std::time::Duration;

use metronome_wire::{RegionReply, RegionRequest, ShardStats};

use crate::engine::replica::{Ship, Shipping};
use crate::engine::{EngineConfig, EngineError, EngineRecovery, ShardEngine};
use crate::sst::SstMeta;

/// Requests queued per shard before senders wait.
const SHARD_QUEUE_MAX: usize = 1024;
/// Batches a scan's shard merges ahead of its reader.
const SCAN_BATCHES_QUEUED: usize = 2;

/// Where a shard sends a scan's batches; `None` ends the scan.
type ScanSender = async_channel::Sender<Result<Option<arrow_array::RecordBatch>, EngineError>>;

/// The batches of a scan, as its shard produces them.
pub struct BatchStream {
    receiver: async_channel::Receiver<Result<Option<arrow_array::RecordBatch>, EngineError>>,
    shard: u16,
    ended: bool,
}

impl BatchStream {
    /// The next batch; `None` after the last. A shard that stops before the end is an
    /// error, never a result cut short.
    pub async fn next(&mut self) -> Option<Result<arrow_array::RecordBatch, EngineError>> {
        if self.ended {
            return None;
        }
        let next = match self.receiver.recv().await {
            Ok(next) => next,
            Err(_) => Err(EngineError::Unavailable(format!(
                "shard {} stopped before the scan's end",
                self.shard
            ))),
        };
        match next {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(error) => {
                self.ended = true;
                Some(Err(error))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatanodeConfig {
    pub shards: ShardsConfig,
    pub engine: EngineConfig,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// What a shard is asked: a region request as the protocol carries it, or one of the
/// datanode's own (flushes, compactions, streamed and row scans).
enum Request {
    Region(RegionRequest, Reply<RegionReply>),
    Scan(RegionId, ScanRequest, Reply<Vec<Row>>),
    Flush(RegionId, Reply<Option<SstMeta>>),
    /// Batches go out one at a time as the shard merges them; `None` ends the scan.
    ScanBatches(RegionId, ScanRequest, usize, ScanSender),
    Compact(RegionId, Reply<usize>),
    /// A leader's copy of a region for a learner (`engine::install`).
    Snapshot(RegionId, Reply<Snapshot>),
    /// The shard's quarantined regions.
    Quarantined(Reply<Vec<RegionId>>),
}

/// A region's schema, the sequence its rows are as of, and the rows.
pub type Snapshot = (RegionSchema, u64, Vec<SeriesRows>);

/// A shard that finished recovery, or why it could not.
type ShardReady = Result<(u16, IoDriver, Vec<RegionId>, EngineRecovery), String>;

/// The running datanode.
pub struct Datanode {
    shards: Shards,
    handle: DatanodeHandle,
    /// Names this data directory: chosen at random when the directory was first used,
    /// kept in [`INCARNATION_FILE`](crate::incarnation::INCARNATION_FILE). A datanode that registers with another one than
    /// before lost its copies (`Catalog::register_datanode`).
    pub incarnation: u64,
    pub recoveries: Vec<EngineRecovery>,
    /// The I/O driver the shards run (the last shard's, should they differ).
    pub driver: IoDriver,
}

/// Reaches the datanode's regions from any task. Cheap to clone.
#[derive(Clone)]
pub struct DatanodeHandle {
    shards: Arc<Vec<async_channel::Sender<Request>>>,
    routes: Arc<Mutex<BTreeMap<RegionId, u16>>>,
    /// Where the shards' leader writes go to their followers, once set.
    shipping: Shipping,
}

fn shard_root(index: u16) -> PathBuf {
    PathBuf::from(format!("shard-{index}"))
}

impl Datanode {
    /// Starts the shards on `disk` and waits until every one has recovered.
    pub async fn start(disk: Disk, config: DatanodeConfig) -> Result<Datanode, String> {
        let count = config.shards.count;
        let incarnation = crate::incarnation::read_or_choose(&disk).await?;
        let existing: Vec<u16> = disk
            .list_dir("")
            .await
            .map_err(|error| format!("cannot list the data directory: {error}"))?
            .iter()
            .filter_map(|name| name.strip_prefix("shard-")?.parse().ok())
            .collect();
        if let Some(missing) = existing.iter().filter(|&&index| index >= count).max() {
            return Err(format!(
                "the data directory holds shard-{missing}, but only {count} shards are configured: \
                 start with at least {} shards (moving regions between shards is not supported yet)",
                missing + 1
            ));
        }

        let mut senders = Vec::with_capacity(usize::from(count));
        let mut receivers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let (sender, receiver) = async_channel::bounded(SHARD_QUEUE_MAX);
            senders.push(sender);
            receivers.push(receiver);
        }
        let receivers = Arc::new(receivers);
        let (ready_sender, ready) = async_channel::bounded::<ShardReady>(usize::from(count));
        let engine_config = config.engine.clone();
        let shipping = Shipping::default();
        let shards_shipping = shipping.clone();
        let shards = shard::start(&config.shards, move |context: ShardContext| {
            let index = context.id.0;
            let requests = receivers[usize::from(index)].clone();
            shard_main(
                context,
                disk.clone(),
                engine_config.clone(),
                shards_shipping.clone(),
                requests,
                ready_sender.clone(),
            )
        })
        .map_err(|error: ShardError| error.to_string())?;

        let mut routes = BTreeMap::new();
        let mut recoveries = Vec::new();
        let mut driver = IoDriver::Simulated;
        let mut failure = None;
        // Every shard reports once. All of them are awaited even after one failed: a
        // shard still recovering when `start` returns would race the shard of the same
        // index that the next attempt starts, over the same WAL, manifests and SSTs (it
        // deleted a file the new one had just flushed, as an "orphan").
        for _ in 0..count {
            match ready.recv().await {
                Ok(Ok((index, shard_driver, regions, recovery))) => {
                    for region in regions {
                        routes.insert(region, index);
                    }
                    recoveries.push(recovery);
                    driver = shard_driver;
                }
                Ok(Err(error)) => {
                    failure.get_or_insert(error);
                }
                Err(_) => {
                    failure.get_or_insert_with(|| "a shard stopped during recovery".to_string());
                    break;
                }
            }
        }
        if let Some(error) = failure {
            #[cfg(madsim)]
            let stopped = shards.stop_and_join().await;
            // The shards that recovered stop as soon as they are asked: nothing was
            // routed to them.
            #[cfg(not(madsim))]
            let stopped = shards.stop_and_join();
            if let Err(stop_error) = stopped {
                tracing::error!(%stop_error, "a shard failed while stopping after a failed start");
            }
            return Err(error);
        }
        Ok(Datanode {
            shards,
            handle: DatanodeHandle {
                shards: Arc::new(senders),
                routes: Arc::new(Mutex::new(routes)),
                shipping,
            },
            incarnation,
            recoveries,
            driver,
        })
    }

    pub fn handle(&self) -> DatanodeHandle {
        self.handle.clone()
    }

    /// Stops the shards; requests in flight fail, nothing acknowledged is lost.
    pub fn into_shards(self) -> Shards {
        self.shards
    }
}

async fn shard_main(
    context: ShardContext,
    disk: Disk,
    config: EngineConfig,
    shipping: Shipping,
    requests: async_channel::Receiver<Request>,
    ready: async_channel::Sender<ShardReady>,
) {
    let index = context.id.0;
    let engine = match ShardEngine::open(disk.clone(), shard_root(index), config.clone()).await {
        Ok((engine, recovery)) => {
            engine.share_shipping(shipping.clone());
            tracing::info!(
                shard = index,
                regions = recovery.regions,
                rows = recovery.rows_replayed,
                quarantined = recovery.quarantined.len(),
                "shard recovered"
            );
            let _ = ready
                .send(Ok((index, context.driver, engine.region_ids(), recovery)))
                .await;
            engine
        }
        Err(error) => {
            let _ = ready
                .send(Err(format!("shard {index} failed to recover: {error}")))
                .await;
            return;
        }
    };
    let stop = context.stop.clone();
    let mut engine = engine;
    // The channels of the scans this shard streams. A scan task waiting for its reader
    // to take a batch is never polled again once the shard's executor is gone, and its
    // reader would wait forever; closing the channels tells it the shard stopped.
    let mut scans: Vec<ScanSender> = Vec::new();
    loop {
        let next = requests.recv();
        let stopped = stop.stopped();
        futures::pin_mut!(next, stopped);
        let request = match futures::future::select(stopped, next).await {
            futures::future::Either::Right((Ok(request), _)) => request,
            _ => {
                for scan in &scans {
                    scan.close();
                }
                // Requests still queued are answered by dropping them (their callers see
                // the shard stopped), and later ones are refused at once.
                requests.close();
                while requests.try_recv().is_ok() {}
                return;
            }
        };
        if let Request::ScanBatches(_, _, _, batches) = &request {
            scans.retain(|scan| !scan.is_closed() && scan.receiver_count() > 0);
            scans.push(batches.clone());
        }
        if let Some(reason) = engine.wal_failure() {
            engine = match restart_engine(engine, &disk, index, &config, &reason).await {
                Some(engine) => engine,
                None => return,
            };
            engine.share_shipping(shipping.clone());
        }
        task::spawn_local(serve(engine.clone(), index, request));
    }
}

/// Pauses between attempts to reopen a shard whose WAL stopped.
const RESTART_BACKOFF: Duration = Duration::from_millis(100);
const RESTART_ATTEMPTS_MAX: u32 = 100;

/// Reopens a shard engine whose WAL stopped after an I/O error: waits for its requests in
/// flight to finish, then recovers from what is on disk. The other shards keep serving.
async fn restart_engine(
    engine: Rc<ShardEngine>,
    disk: &Disk,
    index: u16,
    config: &EngineConfig,
    reason: &str,
) -> Option<Rc<ShardEngine>> {
    tracing::error!(shard = index, %reason, "the shard's WAL stopped; restarting the shard from disk");
    // The old engine must be finished before the new one opens: two engines changing the
    // same manifests and WAL would lose each other's changes. Once stopped it changes
    // nothing on disk, and everything it still has in flight ends (its WAL refuses
    // appends at once), so this wait is finite; it is not capped, because proceeding
    // early is exactly the race.
    engine.stop();
    let mut waited_ms = 0u64;
    while Rc::strong_count(&engine) > 1 {
        time::sleep_local(Duration::from_millis(1)).await;
        waited_ms += 1;
        if waited_ms.is_multiple_of(10_000) {
            tracing::warn!(
                shard = index,
                waited_ms,
                "still waiting for the old engine's requests to finish"
            );
        }
    }
    drop(engine);
    for attempt in 1..=RESTART_ATTEMPTS_MAX {
        match ShardEngine::open(disk.clone(), shard_root(index), config.clone()).await {
            Ok((engine, recovery)) => {
                tracing::info!(
                    shard = index,
                    attempt,
                    rows = recovery.rows_replayed,
                    "shard restarted"
                );
                return Some(engine);
            }
            Err(error) => {
                tracing::error!(shard = index, attempt, %error, "shard restart failed");
                time::sleep_local(RESTART_BACKOFF).await;
            }
        }
    }
    tracing::error!(shard = index, "giving up on restarting the shard");
    None
}

async fn serve(engine: Rc<ShardEngine>, index: u16, request: Request) {
    match request {
        Request::Region(request, reply) => {
            let write = matches!(
                request,
                RegionRequest::Write { .. }
                    | RegionRequest::Replicate { .. }
                    | RegionRequest::Install { .. }
            );
            let _ = reply.send(crate::service::handle(&engine, index, request).await);
            if write && engine.wants_flush() {
                if let Err(error) = engine.flush_for_pressure().await {
                    tracing::error!(%error, "flush failed; the rows stay in memory and in the WAL");
                }
            }
        }
        Request::Scan(id, request, reply) => {
            let _ = reply.send(engine.scan(id, &request).await);
        }
        Request::ScanBatches(id, request, batch_rows, batches) => {
            let mut stream = match engine.scan_stream(id, &request, batch_rows).await {
                Ok(stream) => stream,
                Err(error) => {
                    let _ = batches.send(Err(error)).await;
                    return;
                }
            };
            // The stream owns what it reads. Holding the engine while a slow reader
            // takes its time would hold up a restart of the shard, which waits for
            // every user of the old engine to finish.
            drop(engine);
            loop {
                let next = stream.next_batch().map_err(EngineError::Io);
                let last = !matches!(next, Ok(Some(_)));
                // Waits while the reader is `SCAN_BATCHES_QUEUED` batches behind; stops
                // if it went away.
                if batches.send(next).await.is_err() || last {
                    return;
                }
                // Merging is CPU work on the shard's only thread: writes go between.
                task::yield_now().await;
            }
        }
        Request::Flush(id, reply) => {
            let _ = reply.send(engine.flush_region(id).await);
        }
        Request::Snapshot(id, reply) => {
            let _ = reply.send(engine.snapshot(id).await);
        }
        Request::Compact(id, reply) => {
            let _ = reply.send(engine.compact_region(id).await);
        }
        Request::Quarantined(reply) => {
            let _ = reply.send(Ok(engine.quarantined()));
        }
    }
}

impl DatanodeHandle {
    /// Ships the shards' leader writes through `ship` from now on (a cluster datanode's
    /// replication, set once).
    pub fn set_shipping(&self, ship: Arc<dyn Ship>) {
        if self.shipping.set(ship).is_err() {
            tracing::warn!("the datanode's replication was set already; the first stays");
        }
    }

    pub fn shard_count(&self) -> u16 {
        self.shards.len() as u16
    }

    /// The shard a region lives on (or would be created on).
    pub fn shard_of(&self, region: RegionId) -> u16 {
        if let Some(index) = self.routes.lock().expect("routes").get(&region) {
            return *index;
        }
        // Fibonacci hashing spreads consecutive region numbers over the shards.
        let mixed = region.as_u64().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        (mixed % u64::from(self.shard_count())) as u16
    }

    async fn call<T>(
        &self,
        region: RegionId,
        make: impl FnOnce(Reply<T>) -> Request,
    ) -> Result<T, EngineError> {
        let index = self.shard_of(region);
        let (reply, outcome) = oneshot::channel();
        self.shards[usize::from(index)]
            .send(make(reply))
            .await
            .map_err(|_| EngineError::Unavailable(format!("shard {index} has stopped")))?;
        outcome.await.unwrap_or_else(|_| {
            Err(EngineError::Unavailable(format!(
                "shard {index} stopped before answering"
            )))
        })
    }

    /// Sends a region request to the shard that owns its region (`Create`: the shard
    /// it names, unless the region already lives on another; `ShardStats`: every shard,
    /// leaving out one that does not answer).
    pub async fn region_call(&self, request: RegionRequest) -> Result<RegionReply, EngineError> {
        if let RegionRequest::Replicate {
            leader,
            shard,
            regions,
        } = request
        {
            if shard >= self.shard_count() {
                return Err(EngineError::Internal(format!(
                    "a leader shipped writes to shard {shard}, and this datanode has {}",
                    self.shard_count()
                )));
            }
            // Each region's writes go to the shard that holds its copy here: the one named,
            // unless the copy lived on another already (a learner's install goes there).
            let mut by_shard: BTreeMap<u16, Vec<metronome_wire::ReplicatedRegion>> =
                BTreeMap::new();
            {
                let routes = self.routes.lock().expect("routes");
                for one in regions {
                    let index = routes.get(&one.region).copied().unwrap_or(shard);
                    by_shard.entry(index).or_default().push(one);
                }
            }
            let shipped =
                futures::future::join_all(by_shard.into_iter().map(|(index, regions)| {
                    self.on_shard(
                        index,
                        RegionRequest::Replicate {
                            leader,
                            shard: index,
                            regions,
                        },
                    )
                }))
                .await;
            return shipped
                .into_iter()
                .find(|reply| reply.is_err())
                .unwrap_or(Ok(RegionReply::Done));
        }
        if let RegionRequest::Replication = request {
            // The fences are the leases' (`LeasedRegions` adds them): none here.
            let copies = self
                .shipping
                .get()
                .map(|ship| ship.lag())
                .unwrap_or_default();
            return Ok(RegionReply::Replication(metronome_wire::Replication {
                copies,
                ..metronome_wire::Replication::default()
            }));
        }
        let Some(region) = request.region() else {
            let mut all = Vec::with_capacity(self.shards.len());
            for index in 0..self.shard_count() {
                if let Ok(RegionReply::ShardStats(stats)) =
                    self.on_shard(index, RegionRequest::ShardStats).await
                {
                    all.extend(stats);
                }
            }
            return Ok(RegionReply::ShardStats(all));
        };
        let index = match &request {
            // A learner's copy goes where the region lives here, if it does.
            RegionRequest::Create { shard, .. } | RegionRequest::Install { shard, .. } => {
                let mut routes = self.routes.lock().expect("routes");
                *routes.entry(region).or_insert(shard % self.shard_count())
            }
            _ => self.shard_of(region),
        };
        self.on_shard(index, request).await
    }

    async fn on_shard(
        &self,
        index: u16,
        request: RegionRequest,
    ) -> Result<RegionReply, EngineError> {
        let (reply, outcome) = oneshot::channel();
        self.shards[usize::from(index)]
            .send(Request::Region(request, reply))
            .await
            .map_err(|_| EngineError::Unavailable(format!("shard {index} has stopped")))?;
        outcome.await.unwrap_or_else(|_| {
            Err(EngineError::Unavailable(format!(
                "shard {index} stopped before answering"
            )))
        })
    }

    /// Sends a request whose success is `Done`.
    async fn region_done(&self, request: RegionRequest) -> Result<(), EngineError> {
        match self.region_call(request).await? {
            RegionReply::Done => Ok(()),
            other => Err(EngineError::Internal(format!(
                "a shard answered {other:?} where it should have said done"
            ))),
        }
    }

    /// Creates a region on the shard its id hashes to.
    pub async fn create_region(
        &self,
        region: RegionId,
        schema: RegionSchema,
    ) -> Result<(), EngineError> {
        let shard = self.shard_of(region);
        self.create_region_on(region, schema, shard).await
    }

    /// Creates a region on shard `index`, unless it already lives on another.
    pub async fn create_region_on(
        &self,
        region: RegionId,
        schema: RegionSchema,
        index: u16,
    ) -> Result<(), EngineError> {
        assert!(index < self.shard_count(), "shard {index} does not exist");
        self.region_done(RegionRequest::Create {
            region,
            schema,
            shard: index,
        })
        .await
    }

    pub async fn drop_region(&self, region: RegionId) -> Result<(), EngineError> {
        self.region_done(RegionRequest::Drop { region }).await
    }

    pub async fn add_field(
        &self,
        region: RegionId,
        column: FieldColumn,
    ) -> Result<(), EngineError> {
        self.region_done(RegionRequest::AddField { region, column })
            .await
    }

    /// Every shard's figures; a shard that does not answer is left out.
    pub async fn stats(&self) -> Vec<ShardStats> {
        match self.region_call(RegionRequest::ShardStats).await {
            Ok(RegionReply::ShardStats(stats)) => stats,
            _ => Vec::new(),
        }
    }

    /// A region's current schema.
    pub async fn schema(&self, region: RegionId) -> Result<RegionSchema, EngineError> {
        match self.region_call(RegionRequest::Schema { region }).await? {
            RegionReply::Schema(Some(schema)) => Ok(schema),
            _ => Err(EngineError::RegionNotFound(region)),
        }
    }

    /// Appends tag columns to a region's primary key, in one schema change.
    pub async fn add_tags(&self, region: RegionId, tags: Vec<String>) -> Result<(), EngineError> {
        self.region_done(RegionRequest::AddTags { region, tags })
            .await
    }

    /// Writes a batch; returns once it is durable.
    pub async fn write(&self, region: RegionId, batch: WriteBatch) -> Result<(), EngineError> {
        self.region_done(RegionRequest::Write {
            region,
            batch: std::sync::Arc::new(batch),
            encoded: None,
            epoch: 0,
        })
        .await
    }

    pub async fn scan(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> Result<Vec<Row>, EngineError> {
        self.call(region, |reply| Request::Scan(region, request, reply))
            .await
    }

    /// Like [`DatanodeHandle::scan`], grouped by series.
    pub async fn scan_series(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> Result<Vec<SeriesRows>, EngineError> {
        match self
            .region_call(RegionRequest::Scan {
                region,
                request,
                epoch: 0,
                read: metronome_wire::ReadAt::Leader,
            })
            .await?
        {
            RegionReply::Series(series) => Ok(series),
            other => Err(EngineError::Internal(format!(
                "a shard answered a scan with {other:?}"
            ))),
        }
    }

    /// Scans a region into a stream of Arrow batches of at most `batch_rows` rows, which
    /// the shard merges as they are taken (see [`ShardEngine::scan_stream`]).
    pub async fn scan_batches(
        &self,
        region: RegionId,
        request: ScanRequest,
        batch_rows: usize,
    ) -> Result<BatchStream, EngineError> {
        let index = self.shard_of(region);
        let (sender, receiver) = async_channel::bounded(SCAN_BATCHES_QUEUED);
        self.shards[usize::from(index)]
            .send(Request::ScanBatches(
                region,
                request,
                batch_rows.max(1),
                sender,
            ))
            .await
            .map_err(|_| EngineError::Unavailable(format!("shard {index} has stopped")))?;
        Ok(BatchStream {
            receiver,
            shard: index,
            ended: false,
        })
    }

    /// Compacts a region now (normally every flush considers it); returns files removed.
    pub async fn compact(&self, region: RegionId) -> Result<usize, EngineError> {
        self.call(region, |reply| Request::Compact(region, reply))
            .await
    }

    /// Sets a region's retention (`None`: keep everything).
    pub async fn set_ttl(&self, region: RegionId, ttl_ms: Option<i64>) -> Result<(), EngineError> {
        self.region_done(RegionRequest::SetTtl { region, ttl_ms })
            .await
    }

    /// Closes a region: it drains, flushes, and serves nothing until opened again.
    pub async fn close_region(&self, region: RegionId) -> Result<(), EngineError> {
        self.region_done(RegionRequest::Close { region }).await
    }

    /// Opens a closed region again.
    pub async fn open_region(&self, region: RegionId) -> Result<(), EngineError> {
        self.region_done(RegionRequest::Open { region }).await
    }

    /// Region `region`'s rows as of its last write now, for a learner
    /// ([`ShardEngine::snapshot`](crate::engine::ShardEngine::snapshot)).
    pub async fn snapshot(&self, region: RegionId) -> Result<Snapshot, EngineError> {
        self.call(region, |reply| Request::Snapshot(region, reply))
            .await
    }

    /// Flushes a region's memtable to an SST now (normally memory pressure decides).
    pub async fn flush(&self, region: RegionId) -> Result<Option<SstMeta>, EngineError> {
        self.call(region, |reply| Request::Flush(region, reply))
            .await
    }

    /// The regions whose copy a shard quarantined (damage found as it started or
    /// restarted, a drop that failed halfway), from every shard that answers: what the
    /// heartbeat names, so that the metasrv replaces those copies.
    pub async fn quarantined(&self) -> Vec<RegionId> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let (reply, outcome) = oneshot::channel();
            if shard.send(Request::Quarantined(reply)).await.is_ok() {
                if let Ok(Ok(regions)) = outcome.await {
                    all.extend(regions);
                }
            }
        }
        all
    }

    /// Flushes every region's memtable, one region at a time; returns how many regions
    /// wrote an SST. A graceful stop calls it so that the next start replays no WAL (the
    /// current WAL segment stays on disk until later commits fill it and a purge finds
    /// it obsolete).
    ///
    /// A dropped region (its tombstone keeps its route, so that a re-created one lands on
    /// the same shard) and a closed one (flushed when it closed) hold nothing to flush and
    /// are passed over. Any other failure does not stop the others from being flushed;
    /// the first is returned once all were tried.
    pub async fn flush_all(&self) -> Result<usize, EngineError> {
        let regions: Vec<RegionId> = self
            .routes
            .lock()
            .expect("routes")
            .keys()
            .copied()
            .collect();
        let mut flushed = 0;
        let mut failure = None;
        for region in regions {
            match self.flush(region).await {
                Ok(Some(_)) => flushed += 1,
                Ok(None)
                | Err(EngineError::RegionNotFound(_))
                | Err(EngineError::RegionClosed(_)) => {}
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(flushed),
        }
    }
}
