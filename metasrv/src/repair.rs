//! Repair: the metasrv leader gives each region with fewer copies than it wants a
//! learner (`Command::AddLearner`), which its leader catches up and makes a follower
//! (`metronome_datanode::catch_up`); it takes a learner away once its datanode is gone.
//! Once every region has its copies, it moves leadership off draining datanodes
//! (`Catalog::drain_move`, `metronome_catalog::drain`), then evens out copies and
//! leadership among the live datanodes, one migration at a time, as far as the
//! configured [`Balance`] asks (`Catalog::rebalance`, `metronome_catalog::rebalance`): a
//! datanode that joined takes copies, and one back from a failure its share back. Copies on a draining datanode count as missing, so they get
//! learners elsewhere like any region short of copies.
//!
//! Run from the failure detector's loop, so with its wait: a metasrv leader decides
//! nothing until it has led for a lease and heard the datanodes' heartbeats itself. A
//! learner goes only to a datanode this leader heard within
//! [`ALIVE_SINCE_HEARTBEAT_MAX`], and only for a region whose leader it heard too.

use std::time::Instant;

use metronome_catalog::lease::ALIVE_SINCE_HEARTBEAT_MAX;
use metronome_catalog::rebalance::Balance;

use crate::moves::Moves;
use metronome_catalog::Command;
use metronome_core::rt::time;

use crate::failover::LEASE_WAIT;
use crate::service::{ExecuteError, MetaService};

/// Learners caught up at once in the whole cluster: each costs its leader a snapshot
/// and the network a copy of the region.
pub const LEARNERS_MAX: usize = 4;

/// Adds learners where copies are missing and removes those on datanodes gone.
pub async fn repair(
    service: &MetaService,
    leading_since: Instant,
    balance: Balance,
    moves: &mut Moves,
) -> Result<(), ExecuteError> {
    let heard = service.datanodes();
    let now = time::now();
    let silent_for = |datanode: u64| {
        let last = heard.get(&datanode).map_or(leading_since, |status| {
            status.last_heartbeat.max(leading_since)
        });
        now.saturating_duration_since(last)
    };
    let alive = |datanode: u64| {
        heard.get(&datanode).is_some_and(|status| {
            now.saturating_duration_since(status.last_heartbeat) <= ALIVE_SINCE_HEARTBEAT_MAX
        })
    };
    let catalog = service.catalog().await?;
    let mut learners = catalog
        .routes()
        .filter(|(_, route)| route.learner.is_some())
        .count();
    for (region, route) in catalog.routes() {
        let command = match route.learner {
            Some(learner) if silent_for(learner.datanode) >= LEASE_WAIT => {
                learners -= 1;
                Command::RemoveLearner {
                    region,
                    epoch: route.epoch,
                    learner,
                }
            }
            Some(_) => continue,
            None if learners >= LEARNERS_MAX || !alive(route.datanode) => continue,
            // Not where the region's copy is quarantined: the install would not replace it.
            None => match catalog.choose_learner(region, |datanode| {
                alive(datanode)
                    && heard
                        .get(&datanode)
                        .is_none_or(|status| !status.quarantined.contains(&region))
            }) {
                Some(learner) => {
                    learners += 1;
                    Command::AddLearner {
                        region,
                        epoch: route.epoch,
                        learner,
                    }
                }
                None => continue,
            },
        };
        match service.execute(command.clone()).await {
            Ok(_) => tracing::info!(%region, ?command, "region copies repaired"),
            // The region moved on meanwhile: the next look sees it.
            Err(ExecuteError::Refused(reason)) => {
                tracing::info!(%region, %reason, "a repair was overtaken")
            }
            Err(error) => return Err(error),
        }
    }
    if learners > 0 {
        return Ok(());
    }
    let leaders_alive = |datanode: u64| alive(datanode) && silent_for(datanode) < LEASE_WAIT;
    // Copies leave a draining datanode first.
    moves.observe(&catalog, now);
    let (moving, rebalancing) = match catalog.drain_move(leaders_alive) {
        Some(command) => (Some(command), false),
        None => (
            // Not where the region's copy is quarantined: the install would not replace it.
            catalog.rebalance(balance, leaders_alive, |region, datanode| {
                moves.failed_lately(region, datanode)
                    || heard
                        .get(&datanode)
                        .is_some_and(|status| status.quarantined.contains(&region))
            }),
            true,
        ),
    };
    if let Some(command) = moving {
        match service.execute(command.clone()).await {
            Ok(_) => {
                if rebalancing {
                    moves.started(&command);
                }
                tracing::info!(?command, "a copy or a leadership moves")
            }
            Err(ExecuteError::Refused(reason)) => {
                if rebalancing {
                    moves.refused(&command, now);
                }
                tracing::info!(?command, %reason, "a move was overtaken")
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
