//! Draining a datanode: moving every copy it holds, and its regions' leadership, to the
//! other datanodes before an operator takes it away. Plain code over the catalog, like
//! `Catalog::apply`; the moves are the ones repair and rebalancing already make.
//!
//! [`Command::DrainDatanode`](crate::Command::DrainDatanode) marks a datanode (the mark
//! is in the catalog, so it survives any metasrv leader change and the datanode's own
//! restarts). From then on:
//! - no new region, learner or migration goes to it (`place_among`, `choose_learner`,
//!   `migrate_region`), nor a new region's follower while another datanode can take it
//!   (`choose_followers`);
//! - a copy on it no longer counts toward the copies its region wants, so repair gives
//!   the region a learner elsewhere (`choose_learner`), and when that learner joins, the
//!   configuration leaves out followers on draining datanodes while it has more copies
//!   than it wants ([`Catalog::surplus_followers`], in `reconfigure_region`): for a
//!   follower's copy, a copy is added before one is removed;
//! - a follower there whose region has the copies it wants without it (a learner could
//!   not join: its followers were full; or the drain was undone and done again) leaves
//!   the configuration ([`Catalog::drain_move`]);
//! - a region it leads hands its leadership to a follower on a datanode not draining
//!   ([`Catalog::drain_move`], before any rebalancing move), but only while enough live
//!   datanodes not draining exist to hold the copies it wants: the new leader leads
//!   alone for a moment, as after a failover, and its copies come back by catch-up,
//!   elsewhere.
//!
//! The datanode is drained once no route names it ([`Catalog::regions_on`]) and the
//! regions it held have their copies elsewhere ([`Catalog::copies_missing`]). A copy
//! that has nowhere else to go (too few datanodes not draining) stays, and the drain
//! waits; [`Command::DrainDatanode`] with `drain: false` takes the mark away.

use metronome_core::data::RegionId;

use crate::catalog::{Catalog, CatalogError, Command};
use crate::placement::Route;
use crate::replicas::{Replica, FOLLOWERS_MAX};

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

    /// Whether a learner of `route` could join it: the followers it would have then fit
    /// in a route once those on draining datanodes beyond the copies it wants leave.
    pub(crate) fn learner_can_join(&self, route: &Route) -> bool {
        let followers = route.followers.as_slice();
        followers.len() < FOLLOWERS_MAX || followers.iter().any(|f| self.is_draining(f.datanode))
    }

    /// One move off a draining datanode, the first region by id first; `None` while a
    /// migration runs. A follower there leaves its region's configuration once the
    /// region has the copies it wants without it ([`Command::ReconfigureRegion`] at the
    /// same leader: a follower left out loses no acknowledged write). A region led there
    /// hands its leadership to a follower on a datanode `alive` accepts that is not
    /// draining ([`Command::MigrateRegion`]), but only while as many such datanodes
    /// exist as the region wants copies: the new leader starts alone, and its copies
    /// must have somewhere to come back to. Repair gives a region a learner first,
    /// where one could join (`choose_learner`).
    pub fn drain_move(&self, alive: impl Fn(u64) -> bool) -> Option<Command> {
        if self.migrations().next().is_some() {
            return None;
        }
        let usable = self
            .datanodes
            .iter()
            .filter(|(id, info)| !info.draining && alive(**id))
            .count();
        let mut routes: Vec<(RegionId, Route)> = self
            .routes()
            .filter(|(_, route)| route.learner.is_none())
            .filter(|(_, route)| route.replicas().any(|r| self.is_draining(r.datanode)))
            .collect();
        routes.sort_by_key(|(region, _)| *region);
        routes.into_iter().find_map(|(region, route)| {
            let followers = route.followers.as_slice();
            if let Some(leaving) = followers.iter().find(|f| self.is_draining(f.datanode)) {
                if self.copies_kept(&route) >= route.replicas_wanted() {
                    assert!(
                        route.replicas_wanted() < 1 + followers.len(),
                        "region {region}: a follower leaves only a region with copies to spare"
                    );
                    return Some(Command::ReconfigureRegion {
                        region,
                        epoch: route.epoch,
                        leader: route.leader(),
                        followers: followers
                            .iter()
                            .filter(|f| *f != leaving)
                            .copied()
                            .collect(),
                    });
                }
            }
            if !self.is_draining(route.datanode) || usable < route.replicas_wanted() {
                return None;
            }
            let to = followers
                .iter()
                .find(|f| alive(f.datanode) && !self.is_draining(f.datanode))?;
            Some(Command::MigrateRegion {
                region,
                epoch: route.epoch,
                to: *to,
            })
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
    /// datanodes not draining, and wanting no more than there are datanodes not
    /// draining that `usable` accepts (the live ones, for a drain's wait: a datanode that
    /// is down takes no copy).
    pub fn copies_missing(&self, region: RegionId, usable: impl Fn(u64) -> bool) -> usize {
        let Some(route) = self.route(region) else {
            return 0;
        };
        let usable = self
            .datanodes
            .iter()
            .filter(|(id, d)| !d.draining && usable(**id))
            .count();
        route
            .replicas_wanted()
            .min(usable)
            .saturating_sub(self.copies_kept(&route))
    }
}

#[cfg(test)]
mod tests {
    use metronome_core::data::RegionId;

    use crate::catalog::{Catalog, Command};
    use crate::placement::Route;
    use crate::replicas::tests::{catalog, replicated};
    use crate::replicas::Replica;

    fn drain(id: u64, drain: bool) -> Command {
        Command::DrainDatanode { id, drain }
    }

    /// Gives `region` (at `route`) the learner repair would, and makes it a follower as
    /// its leader would once caught up; returns the learner.
    fn join_learner(catalog: &mut Catalog, region: RegionId, route: &Route) -> Replica {
        let learner = catalog.choose_learner(region, |_| true).unwrap();
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
        learner
    }

    #[test]
    fn a_drain_wants_no_copy_on_a_datanode_that_is_down() {
        let mut catalog = catalog(3);
        let (region, route) = replicated(&mut catalog, 1, 2)[0];
        let outsider = (1..=3).find(|id| !route.holds(*id)).unwrap();
        catalog.apply(&drain(route.datanode, true)).unwrap();
        // Its leader's copy no longer counts: one copy kept of the two wanted, while the
        // datanode that could take the second is up.
        assert_eq!(catalog.copies_missing(region, |_| true), 1);
        // With that datanode down, the one copy is all the region can have.
        assert_eq!(catalog.copies_missing(region, |id| id != outsider), 0);
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
                incarnation: 0,
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
        let learner = join_learner(&mut catalog, region, &route);
        assert!(!route.holds(learner.datanode));
        let after = catalog.route(region).unwrap();
        assert_eq!(after.followers.as_slice(), &[learner]);
        assert!(!after.holds(drained));
        // A region it leads hands leadership to a follower elsewhere, first of all moves.
        let (led, led_route) = *routes
            .iter()
            .find(|(_, route)| route.datanode == drained)
            .expect("some region is led on datanode 1");
        let Some(Command::MigrateRegion {
            region: moved,
            epoch,
            to,
        }) = catalog.drain_move(|_| true)
        else {
            panic!("a hand-over of the region datanode 1 leads");
        };
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
    fn a_led_copy_with_nowhere_to_go_stays_rather_than_be_lost() {
        // Two datanodes, two copies of each region: a region datanode 1 leads would be
        // left with one copy for good if it handed over.
        let mut catalog = catalog(2);
        let routes = replicated(&mut catalog, 2, 2);
        catalog.apply(&drain(1, true)).unwrap();
        assert_eq!(catalog.drain_move(|_| true), None);
        for (region, _) in &routes {
            assert_eq!(catalog.choose_learner(*region, |_| true), None);
        }
        // The drain waits: every region still holds a copy there.
        assert_eq!(catalog.regions_on(1).len(), routes.len());
    }

    #[test]
    fn three_copies_hand_over_when_no_learner_could_join() {
        let mut catalog = catalog(4);
        let routes = replicated(&mut catalog, 4, 3);
        let (region, route) = routes[0];
        catalog.apply(&drain(route.datanode, true)).unwrap();
        // Its two followers are full and none is draining: a learner could never join.
        assert_eq!(catalog.choose_learner(region, |_| true), None);
        let learner = Replica {
            datanode: (1..=4).find(|id| !route.holds(*id)).unwrap(),
            shard: 0,
        };
        let add = Command::AddLearner {
            region,
            epoch: route.epoch,
            learner,
        };
        assert!(catalog.clone().apply(&add).is_err());
        // A region where it follows takes a learner, which replaces it when it joins.
        let (other, _) = routes
            .iter()
            .find(|(_, r)| r.followers.contains(route.datanode))
            .expect("it follows some region");
        assert!(catalog.choose_learner(*other, |_| true).is_some());
        // The region it leads hands over: three datanodes not draining can hold its copies.
        let handed = routes
            .iter()
            .filter(|(_, r)| r.datanode == route.datanode)
            .map(|(r, _)| *r)
            .collect::<Vec<_>>();
        match catalog.drain_move(|_| true) {
            Some(Command::MigrateRegion { region, to, .. }) => {
                assert!(handed.contains(&region));
                assert_ne!(to.datanode, route.datanode);
            }
            other => panic!("a hand-over, not {other:?}"),
        }
    }

    #[test]
    fn a_copy_left_over_by_an_undone_drain_leaves_when_drained() {
        let mut catalog = catalog(3);
        let (region, route) = replicated(&mut catalog, 1, 2)[0];
        catalog.apply(&drain(route.datanode, true)).unwrap();
        let learner = join_learner(&mut catalog, region, &route);
        // Undone before the hand-over: three copies of a region that wants two.
        catalog.apply(&drain(route.datanode, false)).unwrap();
        assert_eq!(catalog.route(region).unwrap().replicas().count(), 3);
        assert_eq!(catalog.drain_move(|_| true), None);
        // Draining the learner's datanode now takes its copy straight out.
        catalog.apply(&drain(learner.datanode, true)).unwrap();
        let Some(removal @ Command::ReconfigureRegion { .. }) = catalog.drain_move(|_| true) else {
            panic!("the copy on datanode {} leaves", learner.datanode);
        };
        catalog.apply(&removal).unwrap();
        let after = catalog.route(region).unwrap();
        assert!(!after.holds(learner.datanode));
        assert_eq!(after.leader(), route.leader());
        assert_eq!(catalog.copies_missing(region, |_| true), 0);
        assert_eq!(catalog.regions_on(learner.datanode), vec![]);
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
