//! Failover: the metasrv leader's failure detector promotes a follower of every region
//! whose leader's lease has lapsed (`metronome_catalog::replicas` holds the rule).
//!
//! A leader datanode is gone when no heartbeat of it reached this metasrv leader for
//! [`LEASE_WAIT`] — the lease plus the margin for this clock running fast — so that every
//! lease it was granted (counted from before its heartbeat left, on a clock that may run
//! slow) has ended in real time. Heartbeats are the leader's soft state: a metasrv that
//! has just taken office knows none of those its predecessor received, so it decides
//! nothing until it has led for [`LEASE_WAIT`] itself.
//!
//! The step is one command, `Command::ReconfigureRegion`, a compare-and-set on the
//! region's epoch that makes a live follower the leader, alone, at the next epoch: a
//! follower holds every write its leader acknowledged, since the leader acknowledged
//! only what every member of its configuration made durable. It is idempotent and needs
//! no state of its own: a metasrv leader that dies before the command commits leaves the
//! region as it was, and its successor decides again once it has waited the lease out;
//! one that dies after leaves it done. The other followers are left out of the new
//! configuration, since one of them may hold a write the promoted one lacks (never
//! acknowledged, but a divergent tail all the same): they come back as learners
//! (`crate::repair`), which replace whatever copy they had with the new leader's.

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::{Duration, Instant};

use metronome_catalog::lease::{ALIVE_SINCE_HEARTBEAT_MAX, CLOCK_DRIFT_PPM_MAX, LEASE};
use metronome_catalog::rebalance::Balance;
use metronome_catalog::replicas::Replica;
use metronome_catalog::Command;
use metronome_core::rt::time;

use crate::moves::Moves;
use crate::service::{ExecuteError, MetaService};

/// How long the metasrv waits, on its own clock, after a datanode's last heartbeat
/// arrived before it counts every lease of that datanode as ended: [`LEASE`] and the
/// drift the metasrv's clock may have (1 % fast counts 16.16 s in 16 s).
pub const LEASE_WAIT: Duration = Duration::from_millis(
    (LEASE.as_millis() as u64) * (1_000_000 + CLOCK_DRIFT_PPM_MAX) / 1_000_000,
);

const _: () = assert!(LEASE_WAIT.as_millis() == 16_160);

/// How often the detector looks.
const DETECT_EVERY: Duration = Duration::from_millis(500);

/// Runs the failure detector of `service` until it is dropped, with the repair and the
/// rebalancing (to `balance`) that follow it.
pub async fn run(service: Weak<MetaService>, balance: Balance) {
    let mut ticks = time::interval(DETECT_EVERY);
    // (term, since when this replica has known it leads in that term)
    let mut leading: Option<(u64, Instant)> = None;
    // The rebalancer's moves in this term.
    let mut moves = Moves::default();
    loop {
        ticks.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        let Some(term) = service.leading_term() else {
            leading = None;
            continue;
        };
        let since = match leading {
            Some((at, since)) if at == term => since,
            _ => {
                leading = Some((term, time::now()));
                moves = Moves::default();
                continue;
            }
        };
        if time::elapsed(since) < LEASE_WAIT {
            continue;
        }
        if let Err(error) = fail_over(&service, since).await {
            tracing::warn!(%error, "the failure detector could not act; it tries again");
        }
        if let Err(error) = crate::quarantine::replace_quarantined(&service).await {
            tracing::warn!(%error, "quarantined copies could not be replaced; trying again");
        }
        if let Err(error) = crate::repair::repair(&service, since, balance, &mut moves).await {
            tracing::warn!(%error, "the region repair could not act; it tries again");
        }
    }
}

/// Promotes a live follower of every replicated region whose leader has been silent for
/// [`LEASE_WAIT`] (counting from `leading_since` for a datanode never heard).
async fn fail_over(service: &MetaService, leading_since: Instant) -> Result<(), ExecuteError> {
    let heard = service.datanodes();
    let now = time::now();
    let silent_for = |datanode: u64| {
        let last = heard
            .get(&datanode)
            .map(|status| status.last_heartbeat.max(leading_since))
            .unwrap_or(leading_since);
        now.saturating_duration_since(last)
    };
    let catalog = service.catalog().await?;
    let gone: BTreeSet<u64> = catalog
        .routes()
        .filter(|(_, route)| !route.followers.is_empty())
        .map(|(_, route)| route.datanode)
        .filter(|datanode| silent_for(*datanode) >= LEASE_WAIT)
        .collect();
    for datanode in gone {
        // Checked again, atomically with the heartbeats' record: from here until the
        // moves are done, the datanode's heartbeats renew no lease.
        if !service.begin_failover(datanode, leading_since, LEASE_WAIT) {
            continue;
        }
        let moved = fail_over_datanode(service, datanode, &silent_for).await;
        service.end_failover(datanode);
        moved?;
    }
    Ok(())
}

/// Promotes a live follower of every replicated region `datanode` leads.
async fn fail_over_datanode(
    service: &MetaService,
    datanode: u64,
    silent_for: &impl Fn(u64) -> Duration,
) -> Result<(), ExecuteError> {
    // Read after the datanode was marked: no grant to it can come from a catalog older
    // than the moves below.
    let catalog = service.catalog().await?;
    for (region, route) in catalog.routes() {
        if route.followers.is_empty() || route.datanode != datanode {
            continue;
        }
        // Not a follower whose datanode found its copy damaged (`crate::quarantine`).
        let heard = service.datanodes();
        let whole = |follower: &Replica| {
            heard
                .get(&follower.datanode)
                .is_none_or(|status| !status.quarantined.contains(&region))
        };
        let Some(promoted) = route.followers.as_slice().iter().copied().find(|follower| {
            silent_for(follower.datanode) <= ALIVE_SINCE_HEARTBEAT_MAX && whole(follower)
        }) else {
            tracing::error!(
                %region,
                leader = route.datanode,
                "the leader of a region is gone and none of its followers is alive: the \
                 region is unavailable until one of them returns"
            );
            continue;
        };
        let command = Command::ReconfigureRegion {
            region,
            epoch: route.epoch,
            leader: promoted,
            followers: Vec::<Replica>::new(),
        };
        match service.execute(command).await {
            Ok(_) => tracing::warn!(
                %region,
                from = route.datanode,
                to = promoted.datanode,
                epoch = route.epoch + 1,
                "failed over: the leader's lease lapsed, a follower leads"
            ),
            // Another change won the compare-and-set: the next look sees it.
            Err(ExecuteError::Refused(reason)) => {
                tracing::info!(%region, %reason, "failover overtaken")
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
