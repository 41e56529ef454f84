//! The rebalancer's memory of its own moves: which migrations it started, and which of
//! them ended without the region led where it was sent (cancelled by the leader that
//! could not catch the target up, overtaken by a failover, refused), so that the same
//! move is not tried again at once, blocking every other (one migration runs at a time).
//!
//! Plain code over the catalog and instants, like the catalog's own rules: the metasrv
//! leader's detector loop holds one and tells it what it started and what the catalog
//! became. Soft state: a new metasrv leader starts with none, and tries each move once
//! more.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use metronome_catalog::replicas::Replica;
use metronome_catalog::{Catalog, Command};
use metronome_core::data::RegionId;

/// How long a move that failed is left out of rebalancing.
pub const FAILED_MOVE_BACKOFF: Duration = Duration::from_secs(10 * 60);
/// The most failed moves remembered (the oldest is forgotten first).
const FAILED_MOVES_MAX: usize = 1024;

#[derive(Debug, Default)]
pub struct Moves {
    /// Migrations the rebalancer started, by region: where to.
    started: BTreeMap<RegionId, Replica>,
    /// (region, datanode) whose move failed, and when it was seen failed.
    failed: BTreeMap<(RegionId, u64), Instant>,
}

impl Moves {
    /// The rebalancer proposed `command` (a [`Command::MigrateRegion`]).
    pub fn started(&mut self, command: &Command) {
        if let Command::MigrateRegion { region, to, .. } = command {
            self.started.insert(*region, *to);
        }
    }

    /// The catalog refused `command` (a [`Command::MigrateRegion`]) at `now`: a failed
    /// move too.
    pub fn refused(&mut self, command: &Command, now: Instant) {
        if let Command::MigrateRegion { region, to, .. } = command {
            self.failed.insert((*region, to.datanode), now);
        }
    }

    /// Looks at how the moves started stand in `catalog`, at `now`: one no longer
    /// running whose region is not led at its target failed. Forgets failures older than
    /// [`FAILED_MOVE_BACKOFF`].
    pub fn observe(&mut self, catalog: &Catalog, now: Instant) {
        self.started.retain(|region, to| {
            let Some(route) = catalog.route(*region) else {
                return false;
            };
            if route.moving_to == Some(*to) {
                return true;
            }
            if route.leader() != *to {
                tracing::info!(%region, datanode = to.datanode, "a rebalancing move failed; \
                    it is left out for a while");
                self.failed.insert((*region, to.datanode), now);
            }
            false
        });
        self.failed
            .retain(|_, at| now.saturating_duration_since(*at) < FAILED_MOVE_BACKOFF);
        while self.failed.len() > FAILED_MOVES_MAX {
            let oldest = self
                .failed
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(key, _)| *key)
                .expect("not empty");
            self.failed.remove(&oldest);
        }
    }

    /// Whether moving `region` to `datanode` failed lately.
    pub fn failed_lately(&self, region: RegionId, datanode: u64) -> bool {
        self.failed.contains_key(&(region, datanode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_catalog::DEFAULT_DATABASE;

    /// Three datanodes and one region of two copies; the region, its route's epoch, and
    /// a shard of the datanode holding no copy.
    fn catalog() -> (Catalog, RegionId, u64, Replica) {
        let mut catalog = Catalog::default();
        for id in 1..=3 {
            catalog
                .apply(&Command::RegisterDatanode {
                    id,
                    addr: format!("10.0.0.{id}:4100"),
                    shards: 1,
                    incarnation: 0,
                })
                .unwrap();
        }
        let routes = catalog.place_among(1, None).unwrap();
        catalog
            .apply(&Command::CreateMetricRegions {
                database: DEFAULT_DATABASE.to_string(),
                routes,
                replicas: 2,
            })
            .unwrap();
        let (region, route) = catalog.routes().next().unwrap();
        let outsider = (1..=3).find(|id| !route.holds(*id)).unwrap();
        let to = catalog.migration_target(region, outsider).unwrap();
        (catalog, region, route.epoch, to)
    }

    #[test]
    fn a_move_that_ended_elsewhere_is_left_out_until_its_backoff_passed() {
        let (mut catalog, region, epoch, to) = catalog();
        let migrate = Command::MigrateRegion { region, epoch, to };
        let now = metronome_core::rt::time::now();
        let mut moves = Moves::default();
        catalog.apply(&migrate).unwrap();
        moves.started(&migrate);
        moves.observe(&catalog, now);
        assert!(!moves.failed_lately(region, to.datanode), "still running");
        // The leader could not catch the target up and cancelled.
        catalog
            .apply(&Command::CancelMigration { region, epoch, to })
            .unwrap();
        moves.observe(&catalog, now);
        assert!(moves.failed_lately(region, to.datanode));
        moves.observe(&catalog, now + FAILED_MOVE_BACKOFF / 2);
        assert!(moves.failed_lately(region, to.datanode));
        moves.observe(&catalog, now + FAILED_MOVE_BACKOFF);
        assert!(
            !moves.failed_lately(region, to.datanode),
            "tried again later"
        );

        // One the catalog refused is a failure too.
        let elsewhere = Command::MigrateRegion {
            region,
            epoch: epoch + 7,
            to: Replica {
                datanode: 9,
                shard: 0,
            },
        };
        assert!(catalog.clone().apply(&elsewhere).is_err());
        moves.refused(&elsewhere, now);
        assert!(moves.failed_lately(region, 9));

        // One that completed is no failure.
        catalog.apply(&migrate).unwrap();
        moves.started(&migrate);
        catalog
            .apply(&Command::HandOver { region, epoch, to })
            .unwrap();
        moves.observe(&catalog, now);
        assert!(!moves.failed_lately(region, to.datanode));
    }
}
