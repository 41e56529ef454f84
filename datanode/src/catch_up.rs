//! A leader's side of catch-up and hand-over (KIP-903's rule: a copy counts toward acknowledgements
//! only once it holds everything): the metasrv gives a region a learner
//! (`Command::AddLearner`, `metronome_catalog::replicas`), and its leader makes the
//! learner a follower.
//!
//! 1. It queues each of the region's writes for the learner from now on, as for a
//!    follower but without waiting for the outcome ([`Learning`]).
//! 2. It takes a snapshot of its own copy — every write up to a sequence, perhaps more
//!    (`engine::install`) — and sends it in pieces (`RegionRequest::Install`); the learner
//!    installs it in place of any copy it had.
//! 3. It ships the queued writes; the learner takes those above the snapshot's sequence.
//! 4. Once the learner has nearly everything, it holds the region's new writes back (the
//!    gate in [`Leases`](crate::lease::Leases)), waits until every write queued for any
//!    copy is done — so the learner holds every write the leader has taken — and asks the
//!    metasrv to make the learner a follower (`Command::ReconfigureRegion`, a
//!    compare-and-set on the epoch). It lets writes in again only once its lease is at
//!    the new epoch, or gone: a write admitted at the old epoch after the change would
//!    be acknowledged without the new follower, which a failover may then promote.
//!
//! The same switch completes a migration (`metronome_catalog::migration`): when the
//! region is moving to the learner, or to a follower, the leader asks for
//! `Command::HandOver` instead, after checking that the target's copy has its schema
//! (the gate holds schema changes as well as writes and scans, so none lands between
//! the check and the change). A hand-over that keeps failing for
//! [`LEARNER_REMOVAL_AFTER`] cancels the migration (`Command::CancelMigration`).
//!
//! A catch-up that fails is tried again (a new snapshot each time); one that keeps
//! failing for
//! [`LEARNER_REMOVAL_AFTER`] asks the metasrv to take the learner away (the metasrv adds
//! another when it can). Known limit: the snapshot is read whole into the leader's
//! memory, outside the shard's memory budget.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use metronome_catalog::client::MetaError;
use metronome_catalog::replicas::Replica;
use metronome_catalog::Command;
use metronome_core::data::RegionId;
use metronome_core::rt::{task, time};
use metronome_wire::{write_batch, RegionReply, RegionRequest, RegionService, RegionServiceExt};

use crate::engine::install_batches;
use crate::replication::{complete, shipment, Outbox, Shared};

/// How often the leader looks for learners of the regions it leads.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);
/// The most rows one piece of a snapshot carries (one SST at the learner).
const PIECE_ROWS_MAX: usize = 256 * 1024;
/// How long one piece, or one shipment, may take.
const PIECE_TIMEOUT: Duration = Duration::from_secs(30);
const SHIPMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a catch-up may keep failing before the leader asks to remove the learner.
pub const LEARNER_REMOVAL_AFTER: Duration = Duration::from_secs(30);
/// How long the leader holds a region's writes back for the writes queued before to be
/// done, before it gives up this attempt.
const SETTLE_WAIT_MAX: Duration = Duration::from_secs(2);
/// The pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A learner being caught up: where the region's writes queue for it.
pub(crate) struct Learning {
    pub(crate) epoch: u64,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) wake: async_channel::Sender<()>,
    failed: AtomicBool,
}

impl Learning {
    /// Whether the learner fell too far behind to queue more: the attempt starts over.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }
}

/// Catches up every learner of the regions this leader leads, and hands over every
/// region migrating to a follower, one task each, until the replicator is dropped.
pub(crate) async fn supervise(shared: Weak<Shared>) {
    // One change per region at a time: the gate and the learner's outbox are the
    // region's, and an attempt for a learner since replaced may still be finishing.
    let running: Arc<Mutex<BTreeSet<RegionId>>> = Arc::default();
    let mut ticks = time::interval(SUPERVISE_EVERY);
    loop {
        ticks.tick().await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let learners = strong
            .leases
            .learners()
            .into_iter()
            .map(|(r, e, l)| (r, e, l, true));
        // A migration to the learner is the learner's catch-up, ending in a hand-over.
        let followers = strong
            .leases
            .migrations()
            .into_iter()
            .filter(|(region, epoch, to)| strong.leases.learner(*region, *epoch) != Some(*to))
            .map(|(r, e, to)| (r, e, to, false));
        for (region, epoch, target, learns) in learners.chain(followers).collect::<Vec<_>>() {
            if !running.lock().expect("running").insert(region) {
                continue;
            }
            let (shared, running) = (strong.clone(), running.clone());
            task::spawn(async move {
                if learns {
                    catch_up(&shared, region, epoch, target).await;
                } else {
                    hand_over(&shared, region, epoch, target).await;
                }
                running.lock().expect("running").remove(&region);
            });
        }
    }
}

/// Hands `region`, led here at `epoch`, over to its follower `to`, trying again while it
/// is still moving there; cancels the migration if it keeps failing.
async fn hand_over(shared: &Shared, region: RegionId, epoch: u64, to: Replica) {
    let started = time::now();
    while shared.leases.moving_to(region, epoch) == Some(to) {
        let Some(addr) = shared.leases.peer_addr(to.datanode) else {
            tracing::warn!(%region, to = to.datanode, "no address for a hand-over's target");
            time::sleep(RETRY_PAUSE).await;
            continue;
        };
        let service = (shared.dial)(to.datanode, &addr);
        match switch(shared, region, epoch, to, &*service, None).await {
            Ok(()) => {
                tracing::info!(
                    datanode = shared.datanode,
                    %region,
                    epoch = epoch + 1,
                    to = to.datanode,
                    took_ms = time::elapsed(started).as_millis() as u64,
                    "handed a region over to its follower"
                );
                return;
            }
            Err(reason) => {
                tracing::warn!(%region, to = to.datanode, %reason, "a hand-over failed");
                if time::elapsed(started) >= LEARNER_REMOVAL_AFTER {
                    let command = Command::CancelMigration { region, epoch, to };
                    if let Err(error) = shared.metasrv.execute(&command).await {
                        tracing::warn!(%region, %error, "could not cancel a migration");
                    }
                    return;
                }
                time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Makes `learner` a follower of `region` at `epoch`, trying again while it is still
/// the learner and this datanode still leads the region at that epoch.
async fn catch_up(shared: &Shared, region: RegionId, epoch: u64, learner: Replica) {
    let mut failing_since = None;
    while shared.leases.learner(region, epoch) == Some(learner) {
        let started = time::now();
        let outcome = attempt(shared, region, epoch, learner).await;
        shared.learning.lock().expect("learning").remove(&region);
        match outcome {
            Ok(()) => {
                tracing::info!(
                    datanode = shared.datanode,
                    %region,
                    epoch = epoch + 1,
                    learner = learner.datanode,
                    took_ms = time::elapsed(started).as_millis() as u64,
                    "a learner caught up: it follows, or leads if the region was moving to it"
                );
                return;
            }
            Err(reason) => {
                tracing::warn!(
                    datanode = shared.datanode,
                    %region,
                    learner = learner.datanode,
                    %reason,
                    "a learner's catch-up failed; trying again"
                );
                let since = *failing_since.get_or_insert_with(time::now);
                if time::elapsed(since) >= LEARNER_REMOVAL_AFTER {
                    let command = Command::RemoveLearner {
                        region,
                        epoch,
                        learner,
                    };
                    match shared.metasrv.execute(&command).await {
                        Ok(_) => tracing::warn!(
                            %region,
                            learner = learner.datanode,
                            "removed a learner that could not catch up"
                        ),
                        Err(error) => tracing::warn!(%region, %error, "could not remove a learner"),
                    }
                    return;
                }
                time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// One attempt: queue, install, ship, then the switch.
async fn attempt(
    shared: &Shared,
    region: RegionId,
    epoch: u64,
    learner: Replica,
) -> Result<(), String> {
    let outbox = Arc::new(Outbox::default());
    let (wake, woken) = async_channel::bounded(1);
    shared.learning.lock().expect("learning").insert(
        region,
        Learning {
            epoch,
            outbox: outbox.clone(),
            wake,
            failed: AtomicBool::new(false),
        },
    );
    // From here every write of the region is queued for the learner, or is in the
    // snapshot: the snapshot holds every write up to the last one sequenced now.
    let (schema, sequence, series) = shared
        .handle
        .snapshot(region)
        .await
        .map_err(|error| format!("the snapshot failed: {error}"))?;
    let addr = shared
        .leases
        .peer_addr(learner.datanode)
        .ok_or_else(|| format!("no address for datanode {}", learner.datanode))?;
    let service = (shared.dial)(learner.datanode, &addr);
    let pieces = install_batches(series, PIECE_ROWS_MAX);
    let chunks = pieces.len() as u32;
    for (chunk, piece) in pieces.iter().enumerate() {
        let batch = write_batch::encode(piece).map_err(|error| error.0)?;
        let request = RegionRequest::Install {
            leader: shared.datanode,
            shard: learner.shard,
            region,
            epoch,
            sequence,
            schema: schema.clone(),
            chunk: chunk as u32,
            chunks,
            batch: batch.into(),
        };
        call(&*service, request, PIECE_TIMEOUT).await?;
    }
    // What the learner lacks now is in its outbox: ship it while writes go on.
    loop {
        check_learning(shared, region, &outbox)?;
        let shipped = ship_once(shared, region, learner, &outbox, &*service, &woken).await?;
        if shipped == 0 || outbox.is_empty() {
            break;
        }
    }
    let catching = Catching {
        outbox: &outbox,
        woken: &woken,
    };
    switch(shared, region, epoch, learner, &*service, Some(catching)).await
}

/// A learner's side of a switch: where its writes queue, and what wakes its shipper.
#[derive(Clone, Copy)]
struct Catching<'a> {
    outbox: &'a Outbox,
    woken: &'a async_channel::Receiver<()>,
}

/// Holds the region's requests back until every write taken is on every copy (the
/// learner's included, when `catching` one), then asks the metasrv for the change:
/// handing the region over to `target` if it is moving there, else making the learner
/// `target` a follower; and lets requests in at the new epoch.
async fn switch(
    shared: &Shared,
    region: RegionId,
    epoch: u64,
    target: Replica,
    service: &dyn RegionService,
    catching: Option<Catching<'_>>,
) -> Result<(), String> {
    shared.leases.set_gate(region, true);
    // What the metasrv said of the change: `None` until it was asked.
    let answer: Mutex<Option<Answer>> = Mutex::new(None);
    // The command that rules the change out, should its answer never come.
    let fence: Mutex<Option<Command>> = Mutex::new(None);
    let outcome = async {
        let since = time::now();
        while !settled(shared, region, catching.map(|c| c.outbox)) {
            if let Some(c) = catching {
                check_learning(shared, region, c.outbox)?;
            }
            if time::elapsed(since) >= SETTLE_WAIT_MAX {
                return Err(format!(
                    "the writes of region {region} did not settle within {SETTLE_WAIT_MAX:?}"
                ));
            }
            let shipped = match catching {
                Some(c) => ship_once(shared, region, target, c.outbox, service, c.woken).await?,
                None => 0,
            };
            if shipped == 0 {
                time::sleep(Duration::from_millis(2)).await;
            }
        }
        if let Some(c) = catching {
            // A write the learner's full outbox could not take is in no outbox.
            check_learning(shared, region, c.outbox)?;
        }
        // A copy that missed a schema change (the frontend's route did not name it yet)
        // would lead, or follow, without a column the leader's writes use. The gate
        // holds schema changes too, so none lands here between the look and the change.
        same_schema(shared, region, target, service).await?;
        let command = if shared.leases.moving_to(region, epoch) == Some(target) {
            Command::HandOver {
                region,
                epoch,
                to: target,
            }
        } else if catching.is_some() {
            let mut followers = shared
                .leases
                .configured_followers(region, epoch)
                .ok_or_else(|| {
                    format!("this datanode no longer leads region {region} at {epoch}")
                })?;
            followers.push(target);
            Command::ReconfigureRegion {
                region,
                epoch,
                leader: Replica {
                    datanode: shared.datanode,
                    shard: shared.handle.shard_of(region),
                },
                followers,
            }
        } else {
            return Err(format!(
                "region {region} is no longer moving to datanode {}",
                target.datanode
            ));
        };
        // Until the metasrv says yes or no, the change may have been made: writes stay
        // held back, and the same command goes again (it cannot take effect twice).
        *answer.lock().expect("answer") = Some(Answer::Unknown);
        *fence.lock().expect("fence") = Some(match &command {
            Command::HandOver { to, .. } => Command::CancelMigration {
                region,
                epoch,
                to: *to,
            },
            _ => Command::RemoveLearner {
                region,
                epoch,
                learner: target,
            },
        });
        loop {
            let (said, outcome) = match shared.metasrv.execute(&command).await {
                Ok(_) => (Answer::Made, Ok(())),
                // A refusal is final, but an earlier try of the same command (the client
                // sends again when an answer is lost) may have made the change: the
                // refusal is then its own ("the region is at the next epoch").
                Err(MetaError::Refused(refusal)) => (
                    Answer::Refused,
                    Err(format!("the metasrv refused the change: {refusal}")),
                ),
                Err(error) if shared.leases.check(region, epoch).is_err() => (
                    Answer::Unknown,
                    Err(format!(
                        "the metasrv did not answer ({error}) before the lease at epoch \
                         {epoch} ended"
                    )),
                ),
                Err(_) => {
                    time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            *answer.lock().expect("answer") = Some(said);
            return outcome;
        }
    }
    .await;
    let answer = *answer.lock().expect("answer");
    if answer == Some(Answer::Unknown) {
        // The change may still commit, later than its caller's patience (a proposal in
        // the metasrv's log outlives a timeout) — after a heartbeat has granted this
        // epoch again, which would leave two leaders, or a follower without the writes
        // taken meanwhile. Its compare-and-set opposite decides it: both are in one
        // log, so one of them applies first, and the other is refused.
        let fence = fence.lock().expect("fence").clone();
        if let Some(fence) = fence {
            loop {
                match shared.metasrv.execute(&fence).await {
                    Ok(_) | Err(MetaError::Refused(_)) => break,
                    Err(_) => time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
    if let Some(answer) = answer {
        // The configuration may be at the next epoch: a write admitted at this one must
        // not be acknowledged without the new follower, so writes wait until the lease at
        // this epoch is gone (renewed at the next, or lapsed) — or, after a refusal, until
        // a heartbeat sent since still grants this epoch: the change was never made.
        while shared.leases.check(region, epoch).is_ok() {
            let renewed = shared.leases.renew_now().await;
            if answer == Answer::Refused
                && renewed
                && shared.leases.granted_epoch(region) == Some(epoch)
            {
                break;
            }
        }
    }
    shared.leases.set_gate(region, false);
    outcome
}

/// Fails unless `target`'s copy of `region` has this leader's tags and fields.
async fn same_schema(
    shared: &Shared,
    region: RegionId,
    target: Replica,
    service: &dyn RegionService,
) -> Result<(), String> {
    let own = shared
        .handle
        .schema(region)
        .await
        .map_err(|error| format!("reading region {region}'s schema: {error}"))?;
    let theirs = time::timeout(SHIPMENT_TIMEOUT, service.region_schema(region))
        .await
        .map_err(|_| {
            format!(
                "datanode {} did not answer with its schema",
                target.datanode
            )
        })?
        .map_err(|error| format!("reading datanode {}'s schema: {error}", target.datanode))?;
    match theirs {
        Some(theirs) if theirs.tags == own.tags && theirs.fields == own.fields => Ok(()),
        other => Err(format!(
            "datanode {}'s copy of region {region} has the schema {other:?}, the leader's is \
             {own:?}: it missed a change",
            target.datanode
        )),
    }
}

/// What the metasrv answered to the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Made,
    Refused,
    /// No answer came: the change may have been made.
    Unknown,
}

/// Whether every write of `region` queued for a copy is done: each is on every follower
/// and on the learner, if there is one.
fn settled(shared: &Shared, region: RegionId, learner: Option<&Outbox>) -> bool {
    learner.is_none_or(Outbox::is_empty) && shared.queued_writes(region) == 0
}

/// Fails the attempt if the learner fell behind or a write failed at the leader.
fn check_learning(shared: &Shared, region: RegionId, outbox: &Outbox) -> Result<(), String> {
    let failed = shared
        .learning
        .lock()
        .expect("learning")
        .get(&region)
        .is_none_or(Learning::failed);
    if failed {
        return Err("the learner fell too far behind".to_string());
    }
    if outbox.holds_failed() {
        return Err("a write failed at the leader's WAL".to_string());
    }
    Ok(())
}

/// Ships what of `outbox` is durable at the leader, once; returns how many writes (0:
/// none was ready, after waiting a little for one).
async fn ship_once(
    shared: &Shared,
    region: RegionId,
    learner: Replica,
    outbox: &Outbox,
    service: &dyn RegionService,
    woken: &async_channel::Receiver<()>,
) -> Result<usize, String> {
    let (regions, count, bytes) = shipment(outbox);
    if count == 0 {
        // The oldest is not durable at the leader yet: its release wakes this.
        let _ = time::timeout(Duration::from_millis(50), woken.recv()).await;
        return Ok(0);
    }
    let request = RegionRequest::Replicate {
        leader: shared.datanode,
        shard: learner.shard,
        regions,
    };
    call(service, request, SHIPMENT_TIMEOUT)
        .await
        .map_err(|error| format!("shipping region {region}'s writes: {error}"))?;
    complete(outbox, count, bytes, |_| Ok(()));
    Ok(count)
}

async fn call(
    service: &dyn RegionService,
    request: RegionRequest,
    timeout: Duration,
) -> Result<(), String> {
    match time::timeout(timeout, service.call(request)).await {
        Ok(Ok(RegionReply::Done)) => Ok(()),
        Ok(Ok(other)) => Err(format!("answered {other:?}")),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
