//! A cluster datanode's replication, PacificA's primary-backup with the metasrv as the
//! configuration manager (`metronome_catalog::replicas` holds the rule).
//!
//! As a leader, [`Replicator`] is the engines' [`Ship`]: each write of a region that has
//! followers at the epoch it was admitted under is queued, in sequence order, in one
//! outbox per follower shard, and leaves once the leader's own WAL made it durable (so a
//! follower never holds what the leader may lose to a power cut, and never gets ahead
//! of it: no tail ever needs truncating); one task per outbox ships everything ready as one
//! [`RegionRequest::Replicate`] (one frame per follower shard, however many writes), one
//! shipment in flight at a time, and tells each write once the follower made it durable.
//! A write is acknowledged only when the leader's own WAL and every follower have it.
//! A shipment that fails is sent again, the same writes first (the follower skips what
//! it has), so a follower's copy is always a prefix of the leader's. A follower that
//! cannot take them for [`FOLLOWER_REMOVAL_AFTER`] is removed from the region's
//! configuration by compare-and-set at the metasrv (`Command::ReconfigureRegion`) before
//! anything more is acknowledged without it.
//!
//! As a follower, [`LeasedRegions`](crate::lease::LeasedRegions) admits a shipment only
//! for regions the metasrv says it follows at the shipment's epoch: a leader of an older
//! epoch (a zombie cut off from the metasrv) is fenced off.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use metronome_catalog::client::{MetaClient, MetaError};
use metronome_catalog::replicas::Replica;
use metronome_catalog::Command;
use metronome_core::data::RegionId;
use metronome_core::rt::{task, time};
use metronome_wire::{CopyLag, RegionReply, RegionRequest, RegionService, ReplicatedRegion};

use crate::catch_up::Learning;
use crate::datanode::DatanodeHandle;
use crate::engine::replica::{Ship, Ticket};
use crate::lease::Leases;

/// How long a follower may fail to take a leader's writes before the leader asks the
/// metasrv to remove it: writes wait this long for a follower that is gone, and then for
/// the metasrv's answer.
pub const FOLLOWER_REMOVAL_AFTER: Duration = Duration::from_secs(3);
/// How long one shipment may take, connecting included.
const SHIPMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most payload bytes one shipment carries.
const SHIPMENT_BYTES_MAX: usize = 8 << 20;
/// The most payload bytes queued for one follower shard: past it, writes are refused
/// (`Overloaded` at the leader) rather than held in memory without bound.
const OUTBOX_BYTES_MAX: usize = 256 << 20;
/// Pauses between attempts to ship to a follower that failed.
const RETRY_FIRST: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Reaches datanode `id` at `addr`.
pub type Dial = Arc<dyn Fn(u64, &str) -> Arc<dyn RegionService> + Send + Sync>;

/// Where a queued write stands in the leader's own WAL.
const IN_WAL: u8 = 0;
const DURABLE: u8 = 1;
const NOT_DURABLE: u8 = 2;

/// A write waiting in an outbox.
pub(crate) struct Entry {
    region: RegionId,
    epoch: u64,
    sequence: u64,
    payload: bytes::Bytes,
    /// When the leader queued it: the copy's lag is the age of its oldest write.
    queued_at: Instant,
    /// [`IN_WAL`] until the leader's WAL answers; only a [`DURABLE`] write is shipped.
    wal: Arc<AtomicU8>,
    done: oneshot::Sender<Result<(), String>>,
    /// Counts the region's writes queued for a copy until this entry is done.
    _queued: Queued,
}

/// One write of a region queued for one copy, counted in the region's tally while the
/// entry lives: a leader adding a follower waits until the tally is zero.
struct Queued(Arc<AtomicUsize>);

impl Queued {
    fn new(tally: &Arc<AtomicUsize>) -> Queued {
        tally.fetch_add(1, Ordering::SeqCst);
        Queued(tally.clone())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An outbox and what wakes its shipping task.
type Waking = (Arc<Outbox>, async_channel::Sender<()>);

/// The writes queued for one follower shard (or one learner's region), oldest first.
#[derive(Default)]
pub(crate) struct Outbox {
    entries: Mutex<VecDeque<Entry>>,
    queued_bytes: Mutex<usize>,
}

pub(crate) struct Shared {
    pub(crate) datanode: u64,
    pub(crate) leases: Arc<Leases>,
    pub(crate) handle: DatanodeHandle,
    pub(crate) metasrv: MetaClient,
    pub(crate) dial: Dial,
    outboxes: Mutex<BTreeMap<Replica, Waking>>,
    /// The learners being caught up, by region (`crate::catch_up`).
    pub(crate) learning: Mutex<BTreeMap<RegionId, Learning>>,
    /// Per region, how many of its writes are queued for a copy.
    queued: Mutex<BTreeMap<RegionId, Arc<AtomicUsize>>>,
    /// Outboxes created by a shard, whose shipping task the runtime's side starts.
    created: async_channel::Sender<(Replica, Arc<Outbox>, async_channel::Receiver<()>)>,
}

impl Shared {
    /// How many of `region`'s writes are queued for a copy, not yet done.
    pub(crate) fn queued_writes(&self, region: RegionId) -> usize {
        self.queued
            .lock()
            .expect("queued")
            .get(&region)
            .map_or(0, |tally| tally.load(Ordering::SeqCst))
    }
}

impl Outbox {
    fn push(&self, entry: Entry) {
        *self.queued_bytes.lock().expect("queued") += entry.payload.len();
        self.entries.lock().expect("entries").push_back(entry);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.lock().expect("entries").is_empty()
    }

    /// Whether a write it holds failed at the leader's WAL (the shard restarts).
    pub(crate) fn holds_failed(&self) -> bool {
        self.entries
            .lock()
            .expect("entries")
            .iter()
            .any(|entry| entry.wal.load(Ordering::Acquire) == NOT_DURABLE)
    }
}

/// A leader datanode's replication: the engines' [`Ship`].
pub struct Replicator {
    shared: Arc<Shared>,
}

impl Replicator {
    /// Starts datanode `leases.datanode()`'s replication (on the runtime that serves its
    /// region service, not on a shard); hand it to the engines with
    /// [`DatanodeHandle::set_shipping`].
    pub fn start(
        leases: Arc<Leases>,
        handle: DatanodeHandle,
        metasrv: MetaClient,
        dial: Dial,
    ) -> Arc<Replicator> {
        let (created, starts) = async_channel::unbounded();
        let shared = Arc::new(Shared {
            datanode: leases.datanode(),
            leases,
            handle,
            metasrv,
            dial,
            outboxes: Mutex::new(BTreeMap::new()),
            learning: Mutex::new(BTreeMap::new()),
            queued: Mutex::new(BTreeMap::new()),
            created,
        });
        let weak = Arc::downgrade(&shared);
        task::spawn(async move {
            while let Ok((follower, outbox, woken)) = starts.recv().await {
                let Some(shared) = weak.upgrade() else { return };
                task::spawn(ship_to(shared, follower, outbox, woken));
            }
        });
        task::spawn(crate::catch_up::supervise(Arc::downgrade(&shared)));
        Arc::new(Replicator { shared })
    }
}

impl Ship for Replicator {
    fn ship(
        &self,
        region: RegionId,
        epoch: u64,
        sequence: u64,
        payload: &[u8],
    ) -> Result<Ticket, String> {
        let shared = &self.shared;
        let tally = shared
            .queued
            .lock()
            .expect("queued")
            .entry(region)
            .or_default()
            .clone();
        // Counted before the gate is looked at, and until the write is queued: a leader
        // that closes the gate and then finds nothing counted knows that every write
        // that passed the gate is queued (`catch_up::switch`), whatever thread ships it.
        let _passing = Queued::new(&tally);
        if shared.leases.gated(region) {
            return Err(format!(
                "datanode {} is changing the configuration of region {region}; try again",
                shared.datanode
            ));
        }
        let followers = shared.leases.followers(region, epoch).ok_or_else(|| {
            format!(
                "datanode {} no longer leads region {region} at epoch {epoch}",
                shared.datanode
            )
        })?;
        let learner = shared
            .learning
            .lock()
            .expect("learning")
            .get(&region)
            .filter(|learning| learning.epoch == epoch && !learning.failed())
            .map(|learning| (learning.outbox.clone(), learning.wake.clone()));
        if followers.is_empty() && learner.is_none() {
            return Ok(Ticket::none());
        }
        let mut outboxes = shared.outboxes.lock().expect("outboxes");
        let boxes: Vec<Waking> = followers
            .iter()
            .map(|follower| {
                outboxes
                    .entry(*follower)
                    .or_insert_with(|| {
                        let outbox = Arc::new(Outbox::default());
                        let (wake, woken) = async_channel::bounded(1);
                        // The channel is unbounded and the receiver lives with `shared`.
                        let _ = shared.created.try_send((*follower, outbox.clone(), woken));
                        (outbox, wake)
                    })
                    .clone()
            })
            .collect();
        drop(outboxes);
        // Every follower has room, or the write goes to none: an entry queued for one
        // and never released would hold up that follower's outbox for good.
        for ((outbox, _), follower) in boxes.iter().zip(&followers) {
            let queued = *outbox.queued_bytes.lock().expect("queued");
            if queued + payload.len() > OUTBOX_BYTES_MAX {
                return Err(format!(
                    "{queued} bytes are queued for datanode {} shard {}, the limit is \
                     {OUTBOX_BYTES_MAX}",
                    follower.datanode, follower.shard
                ));
            }
        }
        let payload = bytes::Bytes::copy_from_slice(payload);
        let wal = Arc::new(AtomicU8::new(IN_WAL));
        let mut shipped = Vec::with_capacity(boxes.len());
        let mut wakes = Vec::with_capacity(boxes.len());
        let entry = |done| Entry {
            region,
            epoch,
            sequence,
            payload: payload.clone(),
            queued_at: time::now(),
            wal: wal.clone(),
            done,
            _queued: Queued::new(&tally),
        };
        for (outbox, wake) in boxes {
            let (done, outcome) = oneshot::channel();
            outbox.push(entry(done));
            wakes.push(wake);
            shipped.push(outcome);
        }
        // A learner takes the write too, but counts toward nothing: its outcome is not
        // waited for. One that fell too far behind starts its catch-up again.
        if let Some((outbox, wake)) = learner {
            let queued = *outbox.queued_bytes.lock().expect("queued");
            if queued + payload.len() > OUTBOX_BYTES_MAX {
                if let Some(learning) = shared.learning.lock().expect("learning").get(&region) {
                    learning.fail();
                }
            } else {
                outbox.push(entry(oneshot::channel().0));
                wakes.push(wake);
            }
        }
        let release = Box::new(move |durable: bool| {
            wal.store(
                if durable { DURABLE } else { NOT_DURABLE },
                Ordering::Release,
            );
            for wake in wakes {
                // A full channel already holds a wake-up.
                let _ = wake.try_send(());
            }
        });
        Ok(Ticket::new(shipped, release))
    }

    fn lag(&self) -> Vec<CopyLag> {
        copy_lags(&self.shared)
    }
}

/// Every copy of the regions this datanode leads under a lease (each follower and
/// learner, at its epoch), with the writes queued for it under that epoch that it has
/// not made durable: those count toward the copy's lag, whether or not they left the
/// leader yet.
fn copy_lags(shared: &Shared) -> Vec<CopyLag> {
    // (writes, bytes, oldest queued) per (region, epoch, copy, learner).
    type Tally = (u64, u64, Option<Instant>);
    let mut copies: BTreeMap<(RegionId, u64, Replica, bool), Tally> = BTreeMap::new();
    for (region, epoch, followers) in shared.leases.led_followers() {
        for follower in followers {
            copies.entry((region, epoch, follower, false)).or_default();
        }
    }
    let learners = shared.leases.learners();
    for (region, epoch, learner) in &learners {
        copies.entry((*region, *epoch, *learner, true)).or_default();
    }
    let mut outboxes: Vec<(Replica, bool, Arc<Outbox>)> = shared
        .outboxes
        .lock()
        .expect("outboxes")
        .iter()
        .map(|(follower, (outbox, _))| (*follower, false, outbox.clone()))
        .collect();
    for (region, learning) in shared.learning.lock().expect("learning").iter() {
        if let Some((_, _, learner)) = learners.iter().find(|(r, ..)| r == region) {
            outboxes.push((*learner, true, learning.outbox.clone()));
        }
    }
    // Only the copies of what it leads now, at the epoch it leads at: writes still
    // queued under an older configuration are settled as that one's, not this one's lag.
    for (copy, learner, outbox) in outboxes {
        for entry in outbox.entries.lock().expect("entries").iter() {
            let Some((writes, bytes, oldest)) =
                copies.get_mut(&(entry.region, entry.epoch, copy, learner))
            else {
                continue;
            };
            *writes += 1;
            *bytes += entry.payload.len() as u64;
            *oldest = Some(oldest.map_or(entry.queued_at, |at| at.min(entry.queued_at)));
        }
    }
    copies
        .into_iter()
        .map(
            |((region, epoch, copy, learner), (writes, bytes, oldest))| CopyLag {
                region,
                epoch,
                datanode: copy.datanode,
                shard: copy.shard,
                learner,
                writes,
                bytes,
                oldest_ms: oldest.map_or(0, |at| time::elapsed(at).as_millis() as u64),
            },
        )
        .collect()
}

/// Ships `outbox` to `follower` for as long as the replicator lives.
async fn ship_to(
    shared: Arc<Shared>,
    follower: Replica,
    outbox: Arc<Outbox>,
    woken: async_channel::Receiver<()>,
) {
    // (region, epoch) whose configuration this leader changed to leave the follower out:
    // their writes need it no more.
    let mut removed: BTreeSet<(RegionId, u64)> = BTreeSet::new();
    let mut failing_since: Option<Instant> = None;
    let mut retry = RETRY_FIRST;
    let mut client: Option<(String, Arc<dyn RegionService>)> = None;
    loop {
        if outbox.entries.lock().expect("entries").is_empty() && woken.recv().await.is_err() {
            return;
        }
        // Writes the follower is no longer needed for: a configuration this leader
        // changed without it (done), or one that moved on without this leader (failed).
        let finished = settle(&shared, follower, &outbox, &removed);
        if finished > 0 {
            continue;
        }
        let (regions, count, bytes) = shipment(&outbox);
        if count == 0 {
            // The oldest is not durable at the leader yet: its release wakes this.
            if woken.recv().await.is_err() {
                return;
            }
            continue;
        }
        let addr = shared.leases.peer_addr(follower.datanode);
        let reply = match addr {
            None => Err(format!(
                "the metasrv named no address for datanode {}",
                follower.datanode
            )),
            Some(addr) => {
                let service = match &client {
                    Some((at, service)) if *at == addr => service.clone(),
                    _ => {
                        let service = (shared.dial)(follower.datanode, &addr);
                        client = Some((addr, service.clone()));
                        service
                    }
                };
                let request = RegionRequest::Replicate {
                    leader: shared.datanode,
                    shard: follower.shard,
                    regions,
                };
                match time::timeout(SHIPMENT_TIMEOUT, service.call(request)).await {
                    Ok(Ok(RegionReply::Done)) => Ok(()),
                    Ok(Ok(other)) => Err(format!("answered {other:?}")),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {SHIPMENT_TIMEOUT:?}")),
                }
            }
        };
        match reply {
            Ok(()) => {
                complete(&outbox, count, bytes, |_| Ok(()));
                failing_since = None;
                retry = RETRY_FIRST;
            }
            Err(reason) => {
                // The follower may refuse because the configuration moved on (a dropped
                // region, a failover) before this leader heard: hear first, so that the
                // writes no longer waiting on it settle rather than get it removed.
                shared.leases.renew_now().await;
                let since = *failing_since.get_or_insert_with(time::now);
                tracing::warn!(
                    datanode = shared.datanode,
                    follower = follower.datanode,
                    shard = follower.shard,
                    %reason,
                    "a follower did not take the leader's writes"
                );
                if time::elapsed(since) >= FOLLOWER_REMOVAL_AFTER {
                    remove_follower(&shared, follower, &outbox, &mut removed, &reason).await;
                    failing_since = None;
                }
                time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Completes the oldest writes whose (region, epoch) needs the follower no more (its
/// configuration changed: a lapsed lease is no change); returns how many.
fn settle(
    shared: &Shared,
    follower: Replica,
    outbox: &Outbox,
    removed: &BTreeSet<(RegionId, u64)>,
) -> usize {
    let mut entries = outbox.entries.lock().expect("entries");
    let mut finished = 0;
    let mut freed = 0;
    let mut kept = VecDeque::with_capacity(entries.len());
    // Whether the follower is still one of (region, epoch)'s, asked once per pair.
    let mut member: BTreeMap<(RegionId, u64), bool> = BTreeMap::new();
    for entry in entries.drain(..) {
        let outcome = if entry.wal.load(Ordering::Acquire) == NOT_DURABLE {
            Some(Err(format!(
                "write {} of region {} is not durable at its leader",
                entry.sequence, entry.region
            )))
        } else if removed.contains(&(entry.region, entry.epoch)) {
            Some(Ok(()))
        } else {
            let still = *member
                .entry((entry.region, entry.epoch))
                .or_insert_with(|| {
                    shared
                        .leases
                        .configured_followers(entry.region, entry.epoch)
                        .is_some_and(|followers| followers.contains(&follower))
                });
            match still {
                true => None,
                false => Some(Err(format!(
                    "datanode {} no longer leads region {} with datanode {} as a follower \
                     at epoch {}",
                    shared.datanode, entry.region, follower.datanode, entry.epoch
                ))),
            }
        };
        match outcome {
            Some(outcome) => {
                finished += 1;
                freed += entry.payload.len();
                let _ = entry.done.send(outcome);
            }
            None => kept.push_back(entry),
        }
    }
    *entries = kept;
    drop(entries);
    *outbox.queued_bytes.lock().expect("queued") -= freed;
    finished
}

/// The oldest writes of `outbox` that the leader's WAL made durable, up to
/// [`SHIPMENT_BYTES_MAX`] (one at least), grouped by region in order; with their count
/// and bytes. None if the oldest is still on its way to the leader's disk.
pub(crate) fn shipment(outbox: &Outbox) -> (Vec<ReplicatedRegion>, usize, usize) {
    let entries = outbox.entries.lock().expect("entries");
    let mut regions: Vec<ReplicatedRegion> = Vec::new();
    let (mut count, mut bytes) = (0, 0);
    for entry in entries.iter() {
        if entry.wal.load(Ordering::Acquire) != DURABLE
            || (count > 0 && bytes + entry.payload.len() > SHIPMENT_BYTES_MAX)
        {
            break;
        }
        count += 1;
        bytes += entry.payload.len();
        let write = (entry.sequence, entry.payload.clone());
        match regions
            .iter_mut()
            .find(|r| r.region == entry.region && r.epoch == entry.epoch)
        {
            Some(region) => region.writes.push(write),
            None => regions.push(ReplicatedRegion {
                region: entry.region,
                epoch: entry.epoch,
                writes: vec![write],
            }),
        }
    }
    (regions, count, bytes)
}

/// Completes the `count` oldest writes of `outbox` with `outcome`.
pub(crate) fn complete(
    outbox: &Outbox,
    count: usize,
    bytes: usize,
    outcome: impl Fn(&Entry) -> Result<(), String>,
) {
    let mut entries = outbox.entries.lock().expect("entries");
    for entry in entries.drain(..count) {
        let result = outcome(&entry);
        let _ = entry.done.send(result);
    }
    drop(entries);
    *outbox.queued_bytes.lock().expect("queued") -= bytes;
}

/// Asks the metasrv to leave `follower` out of the configuration of every region with
/// writes waiting for it, each at the epoch they were made under.
async fn remove_follower(
    shared: &Shared,
    follower: Replica,
    outbox: &Outbox,
    removed: &mut BTreeSet<(RegionId, u64)>,
    reason: &str,
) {
    let waiting: BTreeSet<(RegionId, u64)> = outbox
        .entries
        .lock()
        .expect("entries")
        .iter()
        .map(|entry| (entry.region, entry.epoch))
        .filter(|key| !removed.contains(key))
        .collect();
    for (region, epoch) in waiting {
        let Some(followers) = shared.leases.configured_followers(region, epoch) else {
            continue;
        };
        let leader = Replica {
            datanode: shared.datanode,
            shard: shared.handle.shard_of(region),
        };
        let command = Command::ReconfigureRegion {
            region,
            epoch,
            leader,
            followers: followers.into_iter().filter(|f| *f != follower).collect(),
        };
        match shared.metasrv.execute(&command).await {
            Ok(_) => {
                tracing::warn!(
                    datanode = shared.datanode,
                    %region,
                    epoch,
                    follower = follower.datanode,
                    %reason,
                    "removed a follower that did not take the leader's writes"
                );
                removed.insert((region, epoch));
            }
            // The configuration moved on (a failover): the writes fail when the leases
            // tell this leader so.
            Err(MetaError::Refused(refusal)) => tracing::warn!(
                datanode = shared.datanode,
                %region,
                %refusal,
                "the metasrv refused to remove a follower"
            ),
            // The others would wait as long: the shipping loop tries again soon.
            Err(error) => {
                tracing::warn!(
                    datanode = shared.datanode,
                    %region,
                    %error,
                    "cannot reach the metasrv to remove a follower; trying again"
                );
                return;
            }
        }
    }
}
