//! Draining a datanode: moving every copy it holds, and its regions' leadership, to the
//! other datanodes before an operator takes it away. Plain code over the catalog, like
//! `Catalog::apply`; the moves are the ones repair and rebalancing already make.
//!
//! [`Command::DrainDatanode`](crate::Command::DrainDatanode) marks a datanode (the mark
//! is in the catalog, so it survives any metasrv leader change and the datanode's own
//! restarts). From then on:
//! - no new region, learner or migration goes to it (`place_among`, `choose_learner`,
//!   `migrate_region`);
//! - a copy on it no longer counts toward the copies its region wants, so repair gives
//!   the region a learner elsewhere (`choose_learner`), and when that learner joins, the
//!   configuration leaves out followers on draining datanodes while it has more copies
//!   than it wants ([`Catalog::surplus_followers`], in `reconfigure_region`): a copy is
//!   added before one is removed, and the region never has fewer than it wants;
//! - a region it leads hands its leadership to a follower on a datanode not draining,
//!   first among rebalancing moves ([`Catalog::drain_move`]); the new leader leads
//!   alone, and its copies come back by catch-up, elsewhere.
//!
//! The datanode is drained once no route names it ([`Catalog::regions_on`]) and the
//! regions it held have their copies elsewhere ([`Catalog::copies_missing`]: a region
//! handed over leads alone for a moment, as after a failover). A copy that
//! has nowhere else to go (every other datanode holds one already, or is draining)
//! stays, and the drain waits; [`Command::DrainDatanode`] with `drain: false` takes the
//! mark away.

use metronome_core::data::RegionId;

use crate::catalog::{Catalog, CatalogError};
use crate::placement::Route;
use crate::replicas::Replica;

impl Catalog {
    /// [`Command::DrainDatanode`](crate::Command::DrainDatanode).
    pub(crate) fn drain_datanode(&mut self, id: u64, drain: bool) -> Result<(), CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            what: format!("drain of datanode {id}"),
            reason,
        };
        if !self.datanodes.contains_key(&id) {
            return Err(invalid("it is not registered".to_string()));
        }
        if drain
            && !self
                .datanodes
                .iter()
                .any(|(other, info)| *other != id && !info.draining)
        {
            return Err(invalid(
                "every other datanode is draining or there is none: its regions would have \
                 nowhere to go"
                    .to_string(),
            ));
        }
        self.datanodes.get_mut(&id).expect("registered").draining = drain;
        Ok(())
    }

    /// Whether datanode `id` is registered and being drained.
    pub fn is_draining(&self, id: u64) -> bool {
        self.datanodes.get(&id).is_some_and(|info| info.draining)
    }

    /// The copies of `route` (leader and followers) that count toward the copies it
    /// wants: those on datanodes not draining.
    pub fn copies_kept(&self, route: &Route) -> usize {
        route
            .replicas()
            .filter(|copy| !self.is_draining(copy.datanode))
            .count()
    }

    /// The followers a configuration of `route` with `followers` leaves out: while it
    /// would hold more copies than the route wants, those on draining datanodes, first
    /// named first. The learner joining is never left out (it is why there are more).
    pub(crate) fn surplus_followers(&self, route: &Route, followers: &[Replica]) -> Vec<Replica> {
        let mut copies = 1 + followers.len();
        let mut surplus = Vec::new();
        for follower in followers {
            if copies <= route.replicas_wanted() {
                break;
            }
            if self.is_draining(follower.datanode) && Some(*follower) != route.learner {
                surplus.push(*follower);
                copies -= 1;
            }
        }
        surplus
    }

    /// One move of leadership off a draining datanode: the first region by id that one
    /// leads, to its first follower on a datanode `alive` accepts that is not draining.
    /// `None` while a migration runs, or when no such region has such a follower (repair
    /// gives it one first).
    pub fn drain_move(&self, alive: impl Fn(u64) -> bool) -> Option<(RegionId, u64, Replica)> {
        if self.migrations().next().is_some() {
            return None;
        }
        let mut routes: Vec<(RegionId, Route)> = self
            .routes()
            .filter(|(_, route)| self.is_draining(route.datanode) && route.learner.is_none())
            .collect();
        routes.sort_by_key(|(region, _)| *region);
        routes.into_iter().find_map(|(region, route)| {
            let to = route
                .followers
                .as_slice()
                .iter()
                .find(|f| alive(f.datanode) && !self.is_draining(f.datanode))?;
            Some((region, route.epoch, *to))
        })
    }

    /// The regions datanode `id` holds a copy of (leader, follower or learner).
    pub fn regions_on(&self, id: u64) -> Vec<RegionId> {
        self.routes()
            .filter(|(_, route)| route.holds(id))
            .map(|(region, _)| region)
            .collect()
    }

    /// How many copies `region` lacks of those it wants, counting only copies on
    /// datanodes not draining, and wanting no more than there are such datanodes.
    pub fn copies_missing(&self, region: RegionId) -> usize {
        let Some(route) = self.route(region) else {
            return 0;
        };
        let usable = self.datanodes.values().filter(|d| !d.draining).count();
        route
            .replicas_wanted()
            .min(usable)
            .saturating_sub(self.copies_kept(&route))
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::Command;
    use crate::replicas::tests::{catalog, replicated};
    use crate::replicas::Replica;

    fn drain(id: u64, drain: bool) -> Command {
        Command::DrainDatanode { id, drain }
    }

    #[test]
    fn a_drained_datanode_gets_nothing_new_and_its_copies_move_before_they_go() {
        let mut catalog = catalog(3);
        let routes = replicated(&mut catalog, 6, 2);
        let drained = 1;
        assert!(catalog.apply(&drain(9, true)).is_err(), "not registered");
        catalog.apply(&drain(drained, true)).unwrap();
        // It survives the datanode registering again (a restart).
        catalog
            .apply(&Command::RegisterDatanode {
                id: drained,
                addr: "10.0.0.1:4200".to_string(),
                shards: 2,
            })
            .unwrap();
        assert!(catalog.is_draining(drained));
        // Nothing new goes there.
        let placed = catalog.place_among(8, None).unwrap();
        assert!(placed.iter().all(|route| route.datanode != drained));
        for (region, _) in &routes {
            if let Some(learner) = catalog.choose_learner(*region, |_| true) {
                assert_ne!(learner.datanode, drained);
            }
        }
        // A region with a follower there gets a learner, which replaces that follower
        // when it joins: a copy added before one is removed.
        let (region, route) = *routes
            .iter()
            .find(|(_, route)| route.followers.contains(drained))
            .expect("some region follows on datanode 1");
        assert_eq!(catalog.copies_kept(&route), 1);
        let learner = catalog.choose_learner(region, |_| true).unwrap();
        assert!(!route.holds(learner.datanode));
        catalog
            .apply(&Command::AddLearner {
                region,
                epoch: route.epoch,
                learner,
            })
            .unwrap();
        let mut followers = route.followers.as_slice().to_vec();
        followers.push(learner);
        catalog
            .apply(&Command::ReconfigureRegion {
                region,
                epoch: route.epoch,
                leader: route.leader(),
                followers,
            })
            .unwrap();
        let after = catalog.route(region).unwrap();
        assert_eq!(after.followers.as_slice(), &[learner]);
        assert!(!after.holds(drained));
        // A region it leads hands leadership to a follower elsewhere, first of all moves.
        let (led, led_route) = *routes
            .iter()
            .find(|(_, route)| route.datanode == drained)
            .expect("some region is led on datanode 1");
        let (moved, epoch, to) = catalog.drain_move(|_| true).unwrap();
        assert_eq!((moved, epoch), (led, led_route.epoch));
        assert_ne!(to.datanode, drained);
        assert_eq!(
            catalog.drain_move(|id| id == drained),
            None,
            "no live target"
        );
        // Migrations to it are refused; taking the mark away ends the drain.
        let some = routes.iter().find(|(_, r)| !r.holds(drained)).unwrap();
        let onto = Command::MigrateRegion {
            region: some.0,
            epoch: catalog.route(some.0).unwrap().epoch,
            to: Replica {
                datanode: drained,
                shard: 0,
            },
        };
        assert!(catalog.clone().apply(&onto).is_err());
        catalog.apply(&drain(drained, false)).unwrap();
        assert!(!catalog.is_draining(drained));
        assert_eq!(catalog.drain_move(|_| true), None);
    }

    #[test]
    fn the_last_datanode_not_draining_cannot_drain() {
        let mut catalog = catalog(2);
        catalog.apply(&drain(1, true)).unwrap();
        assert!(catalog.apply(&drain(2, true)).is_err());
        let mut alone = crate::replicas::tests::catalog(1);
        assert!(alone.apply(&drain(1, true)).is_err());
    }
}
