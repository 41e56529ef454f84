//! A cluster datanode serves a region's writes and scans only under a lease from the
//! metasrv (`metronome_catalog::lease` holds the rule): [`Leases`] are what its
//! heartbeats renewed, and [`LeasedRegions`] is its region service with the check in
//! front. Standalone's datanode holds no leases and serves its handle directly: it has
//! no one to give a region to.
//!
//! A request the leases do not admit because the datanode may simply not have heard yet
//! (a region created since the last heartbeat, an epoch newer than the one held, or a
//! lapsed lease) makes the heartbeat go at once, and is checked again when it is back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metronome_catalog::lease::{Grant, Refusal, RegionLeases, Renewal, LEASE_HELD};
use metronome_catalog::replicas::{Replica, ReplicationGrants};
use metronome_core::data::RegionId;
use metronome_core::rt::{rand, time};
use metronome_wire::{
    BoxFuture, ErrorKind, ReadAt, RegionError, RegionReply, RegionRequest, RegionService,
};

/// How long a request waits for a heartbeat it asked for before it is refused.
const RENEWAL_WAIT_MAX: Duration = Duration::from_secs(1);
/// How long a request waits for its region's leader to change its configuration (add a
/// follower, hand the region over), and how often it looks: a change takes a metasrv
/// command and a heartbeat.
const GATE_WAIT_MAX: Duration = Duration::from_secs(3);
const GATE_POLL: Duration = Duration::from_millis(5);

/// The leases one datanode holds, renewed by its heartbeat (`heartbeat::run`).
pub struct Leases {
    datanode: u64,
    held: Mutex<RegionLeases>,
    /// What the reply behind the latest renewal said of replication: replaced whole with
    /// each renewal, so it always describes the epochs of the leases held.
    replication: Mutex<ReplicationGrants>,
    /// Asks the heartbeat to go now (one pending wake at most).
    wake: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Requests waiting for the next heartbeat to complete, told whether it renewed.
    waiting: Mutex<Vec<async_channel::Sender<bool>>>,
    /// Regions whose requests wait while their leader changes their configuration
    /// (`crate::catch_up`).
    gated: Mutex<std::collections::BTreeSet<RegionId>>,
    /// Writes refused for want of a lease at their epoch, since the datanode started.
    fenced_writes: AtomicU64,
    /// Leaders' shipments refused because they came under an older epoch than the one
    /// followed (each try counts).
    fenced_shipments: AtomicU64,
}

impl Leases {
    /// Datanode `datanode`'s leases, none held yet.
    pub fn new(datanode: u64) -> Arc<Leases> {
        Arc::new(Leases {
            datanode,
            held: Mutex::new(RegionLeases::default()),
            replication: Mutex::new(ReplicationGrants::default()),
            wake: async_channel::bounded(1),
            waiting: Mutex::new(Vec::new()),
            gated: Mutex::new(std::collections::BTreeSet::new()),
            fenced_writes: AtomicU64::new(0),
            fenced_shipments: AtomicU64::new(0),
        })
    }

    /// Holds `region`'s new requests back (`true`) or lets them in again.
    pub(crate) fn set_gate(&self, region: RegionId, closed: bool) {
        let mut gated = self.gated.lock().expect("gated");
        if closed {
            gated.insert(region);
        } else {
            gated.remove(&region);
        }
    }

    /// Whether `region`'s new requests are held back.
    pub(crate) fn gated(&self, region: RegionId) -> bool {
        self.gated.lock().expect("gated").contains(&region)
    }

    /// Waits while `region`'s requests are held back, at most [`GATE_WAIT_MAX`]; refuses
    /// the request past it: admitted at the epoch it names, it could be acknowledged
    /// under a configuration that may have changed meanwhile.
    async fn pass_gate(&self, region: RegionId) -> Result<(), RegionError> {
        let since = time::now();
        while self.gated(region) {
            if time::elapsed(since) >= GATE_WAIT_MAX {
                return Err(RegionError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "datanode {}: region {region} is held back while its leader changes \
                         its configuration; try again",
                        self.datanode
                    ),
                ));
            }
            time::sleep(GATE_POLL).await;
        }
        Ok(())
    }

    /// The learner of `region` if this datanode leads it at `epoch` under a lease that
    /// has not lapsed.
    pub fn learner(&self, region: RegionId, epoch: u64) -> Option<Replica> {
        self.led_grant(region, epoch, |grants| &grants.learners)
    }

    /// Where `region` is moving to if this datanode leads it at `epoch` under a lease
    /// that has not lapsed and it is migrating (`metronome_catalog::migration`).
    pub fn moving_to(&self, region: RegionId, epoch: u64) -> Option<Replica> {
        self.led_grant(region, epoch, |grants| &grants.moving)
    }

    /// Every (region, epoch, target) this datanode leads under a lease now and moves.
    pub fn migrations(&self) -> Vec<(RegionId, u64, Replica)> {
        self.led_grants(|grants| &grants.moving)
    }

    /// Every (region, epoch, learner) this datanode leads under a lease now.
    pub fn learners(&self) -> Vec<(RegionId, u64, Replica)> {
        self.led_grants(|grants| &grants.learners)
    }

    /// Every (region, epoch, followers) this datanode leads under a lease now, for the
    /// regions that have followers.
    pub fn led_followers(&self) -> Vec<(RegionId, u64, Vec<Replica>)> {
        let regions: Vec<RegionId> = self
            .replication
            .lock()
            .expect("replication")
            .followers
            .iter()
            .map(|(region, _)| *region)
            .collect();
        regions
            .into_iter()
            .filter_map(|region| {
                let epoch = self.granted_epoch(region)?;
                Some((region, epoch, self.followers(region, epoch)?))
            })
            .collect()
    }

    /// (writes, shipments) fenced off since the datanode started: writes refused for
    /// want of a lease at their route's epoch, and leaders' shipments (writes or a copy)
    /// refused because a newer epoch had replaced their leader.
    pub fn fenced(&self) -> (u64, u64) {
        (
            self.fenced_writes.load(Ordering::Relaxed),
            self.fenced_shipments.load(Ordering::Relaxed),
        )
    }

    /// What the latest renewal's `list` says of `region`, if this datanode leads it at
    /// `epoch` under a lease that has not lapsed.
    fn led_grant(
        &self,
        region: RegionId,
        epoch: u64,
        list: fn(&ReplicationGrants) -> &Vec<(RegionId, Replica)>,
    ) -> Option<Replica> {
        self.check(region, epoch).ok()?;
        let held = self.held.lock().expect("leases");
        if held.granted_epoch(region) != Some(epoch) {
            return None;
        }
        // Read under the leases' lock: a renewal replaces both under it.
        let replication = self.replication.lock().expect("replication");
        list(&replication)
            .iter()
            .find(|(id, _)| *id == region)
            .map(|(_, replica)| *replica)
    }

    /// Every entry of `list` whose region this datanode leads under a lease now.
    fn led_grants(
        &self,
        list: fn(&ReplicationGrants) -> &Vec<(RegionId, Replica)>,
    ) -> Vec<(RegionId, u64, Replica)> {
        let entries = list(&self.replication.lock().expect("replication")).clone();
        entries
            .into_iter()
            .filter_map(|(region, replica)| {
                let epoch = self.held.lock().expect("leases").granted_epoch(region)?;
                (self.led_grant(region, epoch, list) == Some(replica))
                    .then_some((region, epoch, replica))
            })
            .collect()
    }

    /// Whether a request for `region` that followed a route at `epoch` may be served now.
    pub fn check(&self, region: RegionId, epoch: u64) -> Result<(), Refusal> {
        self.held
            .lock()
            .expect("leases")
            .check(region, epoch, time::now())
    }

    /// The regions held, with their epochs.
    pub fn held(&self) -> Vec<Grant> {
        self.held.lock().expect("leases").held().collect()
    }

    /// The id of the datanode holding these leases.
    pub fn datanode(&self) -> u64 {
        self.datanode
    }

    /// The followers of `region` if this datanode leads it at `epoch` under a lease that
    /// has not lapsed (none: a region of one copy); `None` otherwise.
    pub fn followers(&self, region: RegionId, epoch: u64) -> Option<Vec<Replica>> {
        // A renewal between the two reads changes the followers only with the epoch,
        // which the second read checks again.
        self.check(region, epoch).ok()?;
        self.configured_followers(region, epoch)
    }

    /// The followers of `region` as the latest renewal configured it, if it was granted
    /// to this datanode at `epoch` then, even if the lease has lapsed since: a lapse is no
    /// change of configuration, and a write the leader made durable must still reach its
    /// followers, or their copies would no longer be a prefix of its own.
    pub fn configured_followers(&self, region: RegionId, epoch: u64) -> Option<Vec<Replica>> {
        let held = self.held.lock().expect("leases");
        if held.granted_epoch(region) != Some(epoch) {
            return None;
        }
        // Read under the leases' lock: a renewal replaces both under it.
        let replication = self.replication.lock().expect("replication");
        Some(
            replication
                .followers
                .iter()
                .find(|(id, _)| *id == region)
                .map(|(_, followers)| followers.clone())
                .unwrap_or_default(),
        )
    }

    /// The epoch at which this datanode holds a follower's or a learner's copy of
    /// `region`, if it does: it takes the leader's writes at that epoch.
    pub fn follows(&self, region: RegionId) -> Option<u64> {
        let replication = self.replication.lock().expect("replication");
        replication
            .follows
            .iter()
            .chain(&replication.learns)
            .find(|(id, _)| *id == region)
            .map(|(_, epoch)| *epoch)
    }

    /// The epoch at which this datanode is a follower of `region` (a member of its
    /// configuration, not a learner), if it is.
    fn member_at(&self, region: RegionId) -> Option<u64> {
        let replication = self.replication.lock().expect("replication");
        replication
            .follows
            .iter()
            .find(|(id, _)| *id == region)
            .map(|(_, epoch)| *epoch)
    }

    /// Admits a read of `region` at this datanode as its follower at `epoch` (the epoch
    /// of the route under which its leader told the commit point, `engine::follower_read`),
    /// asking the metasrv once if it may only not have heard yet. A learner's copy, or one
    /// left out of the configuration, serves no read: it may hold writes the leader's log
    /// does not.
    async fn admit_follower_read(&self, region: RegionId, epoch: u64) -> Result<(), RegionError> {
        let mut asked = false;
        loop {
            match self.member_at(region) {
                Some(held) if held == epoch => return Ok(()),
                held if asked || held.is_some_and(|held| held > epoch) => {
                    return Err(RegionError::new(
                        ErrorKind::WrongRoute,
                        format!(
                            "datanode {} does not follow region {region} at epoch {epoch} \
                             (it follows it at {held:?}): read at the leader",
                            self.datanode
                        ),
                    ))
                }
                _ => {
                    asked = true;
                    self.renew_now().await;
                }
            }
        }
    }

    /// The epoch at which this datanode is a learner of `region`, if it is: it takes the
    /// leader's copy at that epoch.
    pub fn learns(&self, region: RegionId) -> Option<u64> {
        let replication = self.replication.lock().expect("replication");
        replication
            .learns
            .iter()
            .find(|(id, _)| *id == region)
            .map(|(_, epoch)| *epoch)
    }

    /// Where datanode `id`'s region service listens, as the latest renewal said.
    pub fn peer_addr(&self, id: u64) -> Option<String> {
        let replication = self.replication.lock().expect("replication");
        replication
            .peers
            .iter()
            .find(|(peer, _)| *peer == id)
            .map(|(_, addr)| addr.clone())
    }

    /// Takes the grants of the reply to the heartbeat sent at `sent_at`.
    /// Returns whether they were taken (not a late reply to an earlier heartbeat).
    pub(crate) fn renew(
        &self,
        sent_at: Instant,
        grants: &[Grant],
        replication: ReplicationGrants,
    ) -> bool {
        let mut held = self.held.lock().expect("leases");
        let renewal = held.renew(sent_at, grants, LEASE_HELD);
        if let Ok(Renewal::Taken) = renewal {
            *self.replication.lock().expect("replication") = replication;
        }
        drop(held);
        let taken = matches!(renewal, Ok(Renewal::Taken));
        match renewal {
            Ok(Renewal::Taken) => {}
            Ok(Renewal::Outdated) => {
                tracing::debug!(datanode = self.datanode, "a late heartbeat reply ignored")
            }
            Err(reason) => tracing::error!(
                datanode = self.datanode,
                %reason,
                "the metasrv's lease grants contradict the leases held: ignored, the leases \
                 run out"
            ),
        }
        taken
    }

    /// The heartbeat is about to go: the requests waiting so far are waiting for it.
    /// Those that come later wait for the next, which their wake starts at once, since
    /// this one may have read the catalog before their region was in it.
    pub(crate) fn starting(&self) -> Vec<async_channel::Sender<bool>> {
        std::mem::take(&mut *self.waiting.lock().expect("leases"))
    }

    /// Resolves when a request asked the heartbeat to go before its next tick.
    pub(crate) async fn woken(&self) {
        // The sender lives as long as `self`: the channel never closes.
        let _ = self.wake.1.recv().await;
    }

    /// Asks for a heartbeat now and waits (a bounded time) until one completed; true if
    /// one did, sent after this was asked (so its grants were read after).
    pub(crate) async fn renew_now(&self) -> bool {
        let (done, completed) = async_channel::bounded(1);
        self.waiting.lock().expect("leases").push(done);
        // A full channel is a wake already pending: one heartbeat serves both.
        let _ = self.wake.0.try_send(());
        matches!(
            time::timeout(RENEWAL_WAIT_MAX, completed.recv()).await,
            Ok(Ok(true))
        )
    }

    /// The epoch at which the latest renewal granted `region`, lapsed or not.
    pub(crate) fn granted_epoch(&self, region: RegionId) -> Option<u64> {
        self.held.lock().expect("leases").granted_epoch(region)
    }

    /// Admits a request for `region` at `epoch`, asking the metasrv once if the refusal
    /// may only mean the datanode has not heard yet.
    async fn admit(&self, region: RegionId, epoch: u64) -> Result<(), RegionError> {
        let refusal = match self.check(region, epoch) {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        let may_be_news = match refusal {
            Refusal::NotHeld { .. } | Refusal::Lapsed { .. } | Refusal::Unheard { .. } => true,
            Refusal::OtherEpoch { asked, held, .. } => asked > held,
        };
        if may_be_news {
            self.renew_now().await;
            if self.check(region, epoch).is_ok() {
                return Ok(());
            }
        }
        Err(self.refused(self.check(region, epoch).err().unwrap_or(refusal)))
    }

    /// Admits a leader's shipment of `region`'s writes made at `epoch`: only if the
    /// metasrv said this datanode follows the region at that epoch, asking it once if it
    /// may only not have heard yet. A shipment of an older epoch is fenced off: its
    /// leader was replaced.
    async fn admit_follower(
        &self,
        region: RegionId,
        epoch: u64,
        install: bool,
    ) -> Result<(), RegionError> {
        let mut asked = false;
        loop {
            // A leader's copy goes to a learner only; its writes to followers and learners.
            let held = if install {
                self.learns(region)
            } else {
                self.follows(region)
            };
            match held {
                Some(held) if held == epoch => return Ok(()),
                Some(held) if held > epoch => {
                    self.fenced_shipments.fetch_add(1, Ordering::Relaxed);
                    return Err(RegionError::new(
                        ErrorKind::WrongRoute,
                        format!(
                            "datanode {} follows region {region} at epoch {held}: a leader \
                             of epoch {epoch} was replaced",
                            self.datanode
                        ),
                    ));
                }
                _ if !asked => {
                    asked = true;
                    self.renew_now().await;
                }
                _ => {
                    return Err(RegionError::new(
                        ErrorKind::WrongRoute,
                        format!(
                            "datanode {} does not follow region {region} at epoch {epoch} \
                             (it follows it at {held:?})",
                            self.datanode
                        ),
                    ))
                }
            }
        }
    }

    fn refused(&self, refusal: Refusal) -> RegionError {
        let kind = if refusal.is_wrong_route() {
            ErrorKind::WrongRoute
        } else {
            ErrorKind::Unavailable
        };
        RegionError::new(kind, format!("datanode {}: {refusal}", self.datanode))
    }
}

/// A datanode's region service in a cluster: writes, scans and commit points only under a
/// lease, held when they are admitted and still when they complete; a follower's reads
/// (`engine::follower_read`) only at the epoch it follows at.
pub struct LeasedRegions {
    regions: Arc<dyn RegionService>,
    leases: Arc<Leases>,
}

impl LeasedRegions {
    pub fn new(regions: Arc<dyn RegionService>, leases: Arc<Leases>) -> LeasedRegions {
        LeasedRegions { regions, leases }
    }
}

impl RegionService for LeasedRegions {
    fn call(&self, request: RegionRequest) -> BoxFuture<'_, Result<RegionReply, RegionError>> {
        Box::pin(async move {
            if let RegionRequest::Replicate { regions, .. } = &request {
                for one in regions {
                    self.leases
                        .admit_follower(one.region, one.epoch, false)
                        .await?;
                }
                // Rare but legal: a follower slow to take a shipment (a long fsync), past
                // the leader's patience some of the time, so that it sends again.
                if metronome_core::buggify!(0.002) {
                    time::sleep(Duration::from_millis(rand::gen_range(100..3000))).await;
                }
                let admitted: Vec<(RegionId, u64)> =
                    regions.iter().map(|one| (one.region, one.epoch)).collect();
                let reply = self.regions.call(request).await?;
                // A follower promoted while it took the shipment may have written its own
                // writes at those sequences, and skipped the old leader's: the old leader
                // must not count them as replicated.
                for (region, epoch) in admitted {
                    if self.leases.follows(region) != Some(epoch) {
                        self.leases.fenced_shipments.fetch_add(1, Ordering::Relaxed);
                        return Err(RegionError::new(
                            ErrorKind::WrongRoute,
                            format!(
                                "datanode {} stopped following region {region} at epoch \
                                 {epoch} while it took the shipment",
                                self.leases.datanode
                            ),
                        ));
                    }
                }
                return Ok(reply);
            }
            if let RegionRequest::Install { region, epoch, .. } = &request {
                self.leases.admit_follower(*region, *epoch, true).await?;
                return self.regions.call(request).await;
            }
            if let RegionRequest::Scan {
                region,
                epoch,
                read: ReadAt::OnlyFollower | ReadAt::Follower { .. },
                ..
            } = &request
            {
                let (region, epoch) = (*region, *epoch);
                self.leases.admit_follower_read(region, epoch).await?;
                let reply = self.regions.call(request).await?;
                // Left out of the configuration while it read (a follower may wait for
                // its commit point): its answer may hold what a later leader does not.
                if self.leases.member_at(region) != Some(epoch) {
                    return Err(RegionError::new(
                        ErrorKind::WrongRoute,
                        format!(
                            "datanode {} stopped following region {region} at epoch {epoch} \
                             while it read: read at the leader",
                            self.leases.datanode
                        ),
                    ));
                }
                return Ok(reply);
            }
            // Its leader is changing its configuration: a write takes its sequence after,
            // a scan sees what the next leader acknowledged, if it moved, and a schema
            // change lands after the leader compared its schema with the next member's
            // (`crate::catch_up`): the frontend then finds the route changed and makes
            // the change on the next configuration's copies too.
            if let Some(region) = request.region() {
                self.leases.pass_gate(region).await?;
            }
            if let RegionRequest::Replication = request {
                let mut figures = match self.regions.call(request).await? {
                    RegionReply::Replication(figures) => figures,
                    other => return Ok(other),
                };
                (figures.fenced_writes, figures.fenced_shipments) = self.leases.fenced();
                return Ok(RegionReply::Replication(figures));
            }
            let (Some(region), Some(epoch)) = (request.region(), request.epoch()) else {
                return self.regions.call(request).await;
            };
            let write = matches!(request, RegionRequest::Write { .. });
            let fenced = |error: RegionError| {
                if write {
                    self.leases.fenced_writes.fetch_add(1, Ordering::Relaxed);
                }
                error
            };
            self.leases.admit(region, epoch).await.map_err(fenced)?;
            // Rare but legal: a shard slow to take the request (a long fsync, a busy
            // core), sometimes past the lease, so the check below is exercised.
            if metronome_core::buggify!(0.001) {
                time::sleep(Duration::from_millis(rand::gen_range(100..3000))).await;
            }
            let reply = self.regions.call(request).await?;
            // A write that became durable after the lease lapsed (a slow disk) may
            // overlap another datanode's, if the region moved meanwhile: it is not
            // acknowledged, and counts as indeterminate, as any failed write does. A scan
            // that ended past the lease may have missed what the region's next holder
            // took meanwhile: it is refused too.
            if let Err(refusal) = self.leases.check(region, epoch) {
                return Err(fenced(self.leases.refused(refusal)));
            }
            Ok(reply)
        })
    }
}
