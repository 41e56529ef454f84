//! Region migration: moving a region's leadership to another copy, as a procedure whose
//! state is the route's own (`Route::moving_to`), so it lives in the raft state machine
//! and survives any metasrv leader change. Plain code over the catalog, like
//! `Catalog::apply`.
//!
//! 1. [`Command::MigrateRegion`] (compare-and-set on the epoch, which stays) names the
//!    copy the leadership moves to: a follower, or a shard of a datanode holding no copy,
//!    which becomes the region's learner and is caught up first (`crate::replicas`).
//! 2. The region's leader holds its writes back until every write it took is on every
//!    copy, then hands the region over ([`Command::HandOver`], compare-and-set on the
//!    epoch and the target): the target leads alone at the next epoch, and the region
//!    gets its other copies back by catch-up (`crate::replicas`).
//! 3. Any other outcome ends it instead: [`Command::CancelMigration`], the learner's
//!    removal, or any reconfiguration (a failover, a follower's removal). Each is a
//!    compare-and-set on the same route, so a migration completes or rolls back, never
//!    both.
//!
//! Why the new leader starts alone, as after a failover: a copy may hold writes the
//! target lacks (made durable but never shipped, like a write a power cut kept though
//! it was never acknowledged; a learner even installs such a write with its leader's
//! snapshot), and a follower ahead of its leader skips the leader's next write at that
//! sequence as one it has — acknowledged, and missing there. The simulation found the
//! old leader in that position; a review found a learner-made follower in it. The old
//! leader holding writes back until its copies settled vouches only that the target
//! holds every acknowledged write.
//!
//! [`Catalog::rebalance`](crate::rebalance) picks the migrations that even out copies and
//! leadership among live datanodes.

use std::collections::BTreeMap;

use metronome_core::data::RegionId;

use crate::catalog::{Catalog, CatalogError};
use crate::placement::Route;
use crate::replicas::{Followers, Replica};

/// Migrations running at once in the whole cluster: each holds a region's writes back
/// for a moment, and one to a datanode holding no copy costs its leader a snapshot.
pub const MIGRATIONS_MAX: usize = 4;

impl Catalog {
    /// [`Command::MigrateRegion`](crate::Command::MigrateRegion).
    pub(crate) fn migrate_region(
        &mut self,
        region: RegionId,
        epoch: u64,
        to: Replica,
    ) -> Result<(), CatalogError> {
        let what = format!("migration of region {region}");
        let invalid = |reason: String| CatalogError::Invalid {
            what: what.clone(),
            reason,
        };
        self.check_shard(to, &what)?;
        if self.is_draining(to.datanode) {
            return Err(invalid(format!("datanode {} is draining", to.datanode)));
        }
        let running = self.migrations().count();
        let route = self.route_at(region, epoch, &what)?;
        if let Some(moving) = route.moving_to {
            return Err(invalid(format!(
                "it is moving to datanode {} already",
                moving.datanode
            )));
        }
        if running >= MIGRATIONS_MAX {
            return Err(invalid(format!(
                "{running} migrations are running, the most at once is {MIGRATIONS_MAX}"
            )));
        }
        if to.datanode == route.datanode {
            return Err(invalid(format!(
                "datanode {} leads it already",
                to.datanode
            )));
        }
        let follower = route.followers.as_slice().iter().copied();
        if let Some(held) = follower
            .chain(route.learner)
            .find(|r| r.datanode == to.datanode)
        {
            if held != to {
                return Err(invalid(format!(
                    "datanode {} holds its copy on shard {}, not {}",
                    to.datanode, held.shard, to.shard
                )));
            }
        } else if let Some(learner) = route.learner {
            return Err(invalid(format!(
                "datanode {} is catching up a copy of it; migrate once it follows",
                learner.datanode
            )));
        } else {
            route.learner = Some(to);
        }
        route.moving_to = Some(to);
        self.changes.migrations_started += 1;
        Ok(())
    }

    /// [`Command::HandOver`](crate::Command::HandOver).
    pub(crate) fn hand_over(
        &mut self,
        region: RegionId,
        epoch: u64,
        to: Replica,
    ) -> Result<(), CatalogError> {
        // Named, not implied: a hand-over sent again after its migration ended and
        // another began at the same epoch must not hand the region to the new target.
        let route = self.moving_route(region, epoch, to, "hand-over")?;
        let old = *route;
        assert!(
            route.learner == Some(to) || route.followers.as_slice().contains(&to),
            "region {region}: a migration's target is a follower or the learner"
        );
        *route = Route {
            datanode: to.datanode,
            shard: to.shard,
            epoch: epoch + 1,
            followers: Followers::default(),
            learner: None,
            replicas: route.replicas,
            moving_to: None,
        };
        assert!(
            route.followers.is_empty() && !route.holds(old.datanode),
            "region {region}: the new leader starts alone"
        );
        self.changes.hand_overs += 1;
        Ok(())
    }

    /// [`Command::CancelMigration`](crate::Command::CancelMigration): the learner the
    /// migration added goes with it.
    pub(crate) fn cancel_migration(
        &mut self,
        region: RegionId,
        epoch: u64,
        to: Replica,
    ) -> Result<(), CatalogError> {
        let route = self.moving_route(region, epoch, to, "migration")?;
        if route.learner == route.moving_to {
            route.learner = None;
        }
        route.moving_to = None;
        self.changes.migrations_cancelled += 1;
        Ok(())
    }

    /// The route of `region` at `epoch` if it is moving to `to`; refused otherwise,
    /// naming `step` of the migration.
    fn moving_route(
        &mut self,
        region: RegionId,
        epoch: u64,
        to: Replica,
        step: &str,
    ) -> Result<&mut Route, CatalogError> {
        let what = format!("{step} of region {region}");
        let route = self.route_at(region, epoch, &what)?;
        if route.moving_to != Some(to) {
            return Err(CatalogError::Invalid {
                what,
                reason: format!(
                    "it is not moving to datanode {} at epoch {epoch}",
                    to.datanode
                ),
            });
        }
        Ok(route)
    }

    /// The regions moving, with where to.
    pub fn migrations(&self) -> impl Iterator<Item = (RegionId, Replica)> + '_ {
        self.routes()
            .filter_map(|(region, route)| route.moving_to.map(|to| (region, to)))
    }

    /// Where on `datanode` a migration of `region` would go: its copy there if it holds
    /// one, else its shard holding the fewest copies of any region.
    pub fn migration_target(
        &self,
        region: RegionId,
        datanode: u64,
    ) -> Result<Replica, CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            what: format!("migration of region {region}"),
            reason,
        };
        let route = self
            .route(region)
            .ok_or_else(|| invalid("no table has that region".to_string()))?;
        let info = self
            .datanodes
            .get(&datanode)
            .ok_or_else(|| invalid(format!("datanode {datanode} is not registered")))?;
        if let Some(held) = route
            .replicas()
            .chain(route.learner)
            .find(|r| r.datanode == datanode)
        {
            return Ok(held);
        }
        let mut per_shard: BTreeMap<u16, usize> = BTreeMap::new();
        for (_, other) in self.routes() {
            for copy in other.replicas().chain(other.learner) {
                if copy.datanode == datanode {
                    *per_shard.entry(copy.shard).or_default() += 1;
                }
            }
        }
        let shard = (0..info.shards)
            .min_by_key(|shard| (per_shard.get(shard).copied().unwrap_or(0), *shard))
            .expect("a registered datanode has a shard");
        Ok(Replica { datanode, shard })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Command;
    use crate::replicas::tests::{catalog, replicated};

    #[test]
    fn leadership_moves_to_a_follower_which_leads_alone() {
        let mut catalog = catalog(3);
        let (region, route) = replicated(&mut catalog, 1, 3)[0];
        let to = route.followers.as_slice()[0];
        let other = route.followers.as_slice()[1];
        let migrate = Command::MigrateRegion {
            region,
            epoch: route.epoch,
            to,
        };
        catalog.apply(&migrate).unwrap();
        assert_eq!(catalog.route(region).unwrap().moving_to, Some(to));
        assert_eq!(catalog.route(region).unwrap().epoch, route.epoch);
        assert!(catalog.apply(&migrate).is_err(), "one migration at a time");
        let hand_over = Command::HandOver {
            region,
            epoch: route.epoch,
            to,
        };
        catalog.apply(&hand_over).unwrap();
        let now = catalog.route(region).unwrap();
        assert_eq!(now.leader(), to);
        assert_eq!(now.epoch, route.epoch + 1);
        assert!(now.followers.is_empty(), "the new leader starts alone");
        assert!(!now.holds(route.datanode) && !now.holds(other.datanode));
        assert_eq!(now.moving_to, None);
        // Copies short: they come back by catch-up, on the datanodes that held them.
        let learner = catalog.choose_learner(region, |_| true).unwrap();
        assert!([route.datanode, other.datanode].contains(&learner.datanode));
        assert!(catalog.apply(&hand_over).is_err(), "it happens once");
    }

    #[test]
    fn a_copy_moves_through_a_learner_and_the_old_leader_leaves() {
        let mut catalog = catalog(3);
        let (region, route) = replicated(&mut catalog, 1, 2)[0];
        let outsider = (1..=3).find(|id| !route.holds(*id)).unwrap();
        let to = catalog.migration_target(region, outsider).unwrap();
        assert_eq!(to.datanode, outsider);
        let wrong_shard = Replica {
            datanode: route.followers.as_slice()[0].datanode,
            shard: 1 - route.followers.as_slice()[0].shard,
        };
        for refused in [
            Command::MigrateRegion {
                region,
                epoch: route.epoch + 1,
                to,
            },
            Command::MigrateRegion {
                region,
                epoch: route.epoch,
                to: route.leader(),
            },
            Command::MigrateRegion {
                region,
                epoch: route.epoch,
                to: wrong_shard,
            },
            Command::HandOver {
                region,
                epoch: route.epoch,
                to,
            },
        ] {
            assert!(catalog.apply(&refused).is_err(), "{refused:?}");
        }
        catalog
            .apply(&Command::MigrateRegion {
                region,
                epoch: route.epoch,
                to,
            })
            .unwrap();
        let moving = catalog.route(region).unwrap();
        assert_eq!((moving.learner, moving.moving_to), (Some(to), Some(to)));
        // Its leader is told, and the learner too.
        let (_, grants) = catalog.grants(route.datanode);
        assert_eq!(grants.learners, vec![(region, to)]);
        // Rolled back and started again: the learner goes with the cancelled move.
        let mut cancelled = catalog.clone();
        cancelled
            .apply(&Command::CancelMigration {
                region,
                epoch: route.epoch,
                to,
            })
            .unwrap();
        let after = cancelled.route(region).unwrap();
        assert_eq!((after.learner, after.moving_to), (None, None));
        // A failover overtakes it.
        let mut failed_over = catalog.clone();
        failed_over
            .apply(&Command::ReconfigureRegion {
                region,
                epoch: route.epoch,
                leader: route.followers.as_slice()[0],
                followers: vec![],
            })
            .unwrap();
        let after = failed_over.route(region).unwrap();
        assert_eq!((after.learner, after.moving_to), (None, None));
        assert!(failed_over
            .apply(&Command::HandOver {
                region,
                epoch: route.epoch,
                to,
            })
            .is_err());
        // A hand-over names its target: one meant for another move does not apply.
        let elsewhere = route.followers.as_slice()[0];
        assert!(catalog
            .clone()
            .apply(&Command::HandOver {
                region,
                epoch: route.epoch,
                to: elsewhere,
            })
            .is_err());
        // Completed: the learner leads, alone; the others get copies back by catch-up.
        catalog
            .apply(&Command::HandOver {
                region,
                epoch: route.epoch,
                to,
            })
            .unwrap();
        let now = catalog.route(region).unwrap();
        assert_eq!(now.leader(), to);
        assert!(now.followers.is_empty());
        assert!(!now.holds(route.datanode));
        assert_eq!(now.replicas_wanted(), 2);
    }

    #[test]
    fn migrations_are_bounded() {
        let mut catalog = catalog(3);
        let routes = replicated(&mut catalog, 6, 2);
        let mut started = 0;
        for (region, route) in routes {
            let to = route.followers.as_slice()[0];
            let result = catalog.apply(&Command::MigrateRegion {
                region,
                epoch: route.epoch,
                to,
            });
            if started < MIGRATIONS_MAX {
                result.unwrap();
                started += 1;
            } else {
                assert!(result.is_err());
            }
        }
        assert_eq!(catalog.migrations().count(), MIGRATIONS_MAX);
    }
}
