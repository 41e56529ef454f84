//! Quarantined copies: a datanode that found a region's copy damaged as it started (a
//! WAL record that was durable and no longer reads back, a manifest that does not load)
//! serves nothing of that copy, and names the region in its heartbeats. The copy may lack
//! writes the region acknowledged, so it must neither serve nor count as a copy (Kafka's
//! KIP-966: a replica that restarted with a damaged log is not in sync). The metasrv
//! leader's detector replaces it ([`replace_quarantined`]):
//!
//! - a quarantined leader hands its region to a live follower whose copy is whole, at
//!   once, by the failover's command (`Command::ReconfigureRegion` at the next epoch, the
//!   follower alone): there is no lease to wait out, since the quarantined copy takes no
//!   write and serves no read. While the command runs, the leader's datanode is marked as
//!   being failed over, after a check, atomic with its heartbeats' record, that it still
//!   names the region: a datanode restarted since with the copy whole holds a lease from
//!   its first heartbeat, which no promotion may overtake;
//! - a quarantined follower leaves the configuration (the leader unchanged), so that the
//!   region counts it no longer and repair gives it a copy elsewhere;
//! - a quarantined learner is removed: its install could not replace the copy.
//!
//! Repair gives no region a learner on a datanode that holds its copy quarantined
//! (`crate::repair`). A region whose only copy is quarantined stays so, for an operator:
//! its datanode answers every request for it with the quarantine's reason
//! (`ErrorKind::Quarantined`), and replacing that datanode's disk (a new incarnation)
//! makes the metasrv forget the copy.
//!
//! What a datanode names is soft state, like its liveness: a metasrv leader that has just
//! taken office acts on the heartbeats it received itself.

use metronome_catalog::lease::ALIVE_SINCE_HEARTBEAT_MAX;
use metronome_catalog::replicas::Replica;
use metronome_catalog::Command;
use metronome_core::data::RegionId;
use metronome_core::rt::time;
use std::collections::{BTreeMap, BTreeSet};

use crate::service::{ExecuteError, MetaService};

/// Replaces every copy a live datanode reports quarantined, one command per region.
pub async fn replace_quarantined(service: &MetaService) -> Result<(), ExecuteError> {
    let heard = service.datanodes();
    let now = time::now();
    let alive = |datanode: u64| {
        heard.get(&datanode).is_some_and(|status| {
            now.saturating_duration_since(status.last_heartbeat) <= ALIVE_SINCE_HEARTBEAT_MAX
        })
    };
    let quarantined: BTreeMap<u64, BTreeSet<RegionId>> = heard
        .iter()
        .filter(|(_, status)| !status.quarantined.is_empty())
        .map(|(datanode, status)| (*datanode, status.quarantined.clone()))
        .collect();
    if quarantined.is_empty() {
        return Ok(());
    }
    let damaged = |region: RegionId, datanode: u64| {
        quarantined
            .get(&datanode)
            .is_some_and(|regions| regions.contains(&region))
    };
    let catalog = service.catalog().await?;
    for (region, route) in catalog.routes() {
        let leader = route.leader();
        // With no whole live follower to promote, the damaged leader stays (the region
        // refuses every request, naming the damage); its damaged copies go all the same.
        let promoted = route
            .followers
            .as_slice()
            .iter()
            .copied()
            .find(|f| alive(f.datanode) && !damaged(region, f.datanode))
            .filter(|_| damaged(region, leader.datanode));
        let command = if let Some(promoted) = promoted {
            Command::ReconfigureRegion {
                region,
                epoch: route.epoch,
                leader: promoted,
                followers: Vec::new(),
            }
        } else if route
            .followers
            .as_slice()
            .iter()
            .any(|f| damaged(region, f.datanode))
        {
            Command::ReconfigureRegion {
                region,
                epoch: route.epoch,
                leader,
                followers: route
                    .followers
                    .as_slice()
                    .iter()
                    .copied()
                    .filter(|f| !damaged(region, f.datanode))
                    .collect::<Vec<Replica>>(),
            }
        } else if let Some(learner) = route.learner.filter(|l| damaged(region, l.datanode)) {
            Command::RemoveLearner {
                region,
                epoch: route.epoch,
                learner,
            }
        } else {
            continue;
        };
        // A new leader: the old one's datanode renews no lease until the change committed
        // (`MetaService::begin_replacing`), and only if it still names the region.
        let promoting =
            matches!(&command, Command::ReconfigureRegion { leader: to, .. } if *to != leader);
        if promoting && !service.begin_replacing(leader.datanode, region) {
            continue;
        }
        let outcome = service.execute(command.clone()).await;
        if promoting {
            service.end_failover(leader.datanode);
        }
        match outcome {
            Ok(_) => tracing::warn!(
                %region,
                ?command,
                "replaced a quarantined copy: its datanode found it damaged"
            ),
            Err(ExecuteError::Refused(reason)) => {
                tracing::info!(%region, %reason, "a quarantined copy's replacement was overtaken")
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
