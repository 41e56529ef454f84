//! Rebalancing: the migrations ([`crate::migration`]) that even out the live datanodes'
//! load, one at a time. Plain code over the catalog, like `Catalog::apply`: the metasrv
//! leader asks for a move once every region has its copies and no migration runs
//! (`metronome_metasrv::repair`), and proposes it as a [`Command::MigrateRegion`].
//!
//! Copies first, then leadership, since leadership can only go where a copy is:
//! - **Copies**: a datanode that joined, or came back on an empty disk, or had its
//!   copies re-placed elsewhere while it was down, holds fewer copies than the others. A
//!   region with a copy on the busiest datanode and none on the idlest migrates to the
//!   idlest (through a learner there), the ones the busiest leads first: the new leader
//!   starts alone, so the busiest loses its copy, and the copies the region gets back go
//!   where the fewest are (`Catalog::choose_learner`).
//! - **Leadership**: a datanode leading the most regions hands one to its follower on a
//!   datanode leading fewer: a datanode back from a failure takes its share back.
//!
//! A move is made only between two datanodes whose counts differ by two or more and by
//! more than [`Balance::ratio`], so each move narrows the gap and none goes back and
//! forth; [`Balance::OFF`] makes none. Draining datanodes are left out
//! (`Catalog::drain_move` empties them).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use metronome_core::data::RegionId;

use crate::catalog::{Catalog, Command};
use crate::placement::Route;

/// How uneven the live datanodes may get before the metasrv moves regions: `[metasrv]
/// rebalance_ratio`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    /// The most copies (or leaderships) one datanode may hold as a multiple of the
    /// fewest another holds: at 1.25, 5 against 4 is even, 6 against 4 is not. At least
    /// 1; whatever the ratio, counts one apart are even. `None`: the metasrv moves
    /// nothing by itself (an operator migrates and drains).
    ratio: Option<f64>,
}

impl Balance {
    /// The ratio when the configuration names none.
    pub const RATIO_DEFAULT: f64 = 1.25;
    /// A ratio past this would never move anything anyone notices.
    pub const RATIO_MAX: f64 = 100.0;
    /// No rebalancing (a ratio of 0 in the configuration).
    pub const OFF: Balance = Balance { ratio: None };

    /// The balance at `ratio`, which must be a number in `1..=RATIO_MAX`, or 0 for
    /// [`Balance::OFF`].
    pub fn new(ratio: f64) -> Result<Balance, String> {
        if ratio == 0.0 {
            return Ok(Balance::OFF);
        }
        if !(1.0..=Balance::RATIO_MAX).contains(&ratio) {
            return Err(format!(
                "the rebalance ratio {ratio} is neither 0 (off) nor between 1 and {}: it is \
                 how many times the fewest copies a datanode holds the most may be",
                Balance::RATIO_MAX
            ));
        }
        Ok(Balance { ratio: Some(ratio) })
    }

    pub fn ratio(&self) -> Option<f64> {
        self.ratio
    }

    /// Whether a datanode holding `most` and one holding `least` are uneven enough for a
    /// move from the first to the second.
    pub fn uneven(&self, most: usize, least: usize) -> bool {
        self.ratio
            .is_some_and(|ratio| most >= least + 2 && most as f64 > ratio * least as f64)
    }
}

impl Default for Balance {
    fn default() -> Balance {
        Balance {
            ratio: Some(Balance::RATIO_DEFAULT),
        }
    }
}

impl Catalog {
    /// One migration that evens out copies, else leadership, among the datanodes `alive`
    /// accepts that are not draining, leaving out the moves of a region to a datanode
    /// that `avoid` names (ones that failed lately); `None` while a migration runs, or
    /// when they are even by `balance`. Deterministic over the catalog: the busiest
    /// datanode first and the idlest next, ties by id; the first fitting region by id.
    pub fn rebalance(
        &self,
        balance: Balance,
        alive: impl Fn(u64) -> bool,
        avoid: impl Fn(RegionId, u64) -> bool,
    ) -> Option<Command> {
        if self.migrations().next().is_some() {
            return None;
        }
        let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
        let mut leading: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.datanodes.keys() {
            if alive(*id) && !self.is_draining(*id) {
                copies.insert(*id, 0);
                leading.insert(*id, 0);
            }
        }
        let routes: Vec<(RegionId, Route)> = self.routes().collect();
        for (_, route) in &routes {
            for copy in route.replicas().chain(route.learner) {
                if let Some(count) = copies.get_mut(&copy.datanode) {
                    *count += 1;
                }
            }
            if let Some(count) = leading.get_mut(&route.datanode) {
                *count += 1;
            }
        }
        self.copy_move(balance, &copies, &routes, &avoid)
            .or_else(|| leadership_move(balance, &leading, &routes, &avoid))
    }

    /// A region with a copy on a busy datanode and none on an idle one, migrated to the
    /// idle one (through a learner).
    fn copy_move(
        &self,
        balance: Balance,
        copies: &BTreeMap<u64, usize>,
        routes: &[(RegionId, Route)],
        avoid: &impl Fn(RegionId, u64) -> bool,
    ) -> Option<Command> {
        for (from, most) in busiest_first(copies) {
            for (to, least) in idlest_first(copies) {
                if !balance.uneven(most, least) {
                    break;
                }
                let region = routes
                    .iter()
                    .filter(|(region, route)| {
                        route.learner.is_none()
                            && copies.contains_key(&route.datanode)
                            && route.holds(from)
                            && !route.holds(to)
                            && !avoid(*region, to)
                    })
                    .min_by_key(|(region, route)| (route.datanode != from, *region));
                if let Some((region, route)) = region {
                    let target = self.migration_target(*region, to).ok()?;
                    return Some(Command::MigrateRegion {
                        region: *region,
                        epoch: route.epoch,
                        to: target,
                    });
                }
            }
        }
        None
    }
}

/// A region the busiest datanode leads, handed to its follower on an idle one.
fn leadership_move(
    balance: Balance,
    leading: &BTreeMap<u64, usize>,
    routes: &[(RegionId, Route)],
    avoid: &impl Fn(RegionId, u64) -> bool,
) -> Option<Command> {
    for (from, most) in busiest_first(leading) {
        for (to, least) in idlest_first(leading) {
            if !balance.uneven(most, least) {
                break;
            }
            let moving = routes
                .iter()
                .filter(|(region, route)| {
                    route.datanode == from && route.learner.is_none() && !avoid(*region, to)
                })
                .find_map(|(region, route)| {
                    let follower = route
                        .followers
                        .as_slice()
                        .iter()
                        .find(|f| f.datanode == to)?;
                    Some(Command::MigrateRegion {
                        region: *region,
                        epoch: route.epoch,
                        to: *follower,
                    })
                });
            if moving.is_some() {
                return moving;
            }
        }
    }
    None
}

fn busiest_first(counts: &BTreeMap<u64, usize>) -> Vec<(u64, usize)> {
    let mut sorted: Vec<(u64, usize)> = counts.iter().map(|(id, n)| (*id, *n)).collect();
    sorted.sort_by_key(|(id, n)| (Reverse(*n), *id));
    sorted
}

fn idlest_first(counts: &BTreeMap<u64, usize>) -> Vec<(u64, usize)> {
    let mut sorted: Vec<(u64, usize)> = counts.iter().map(|(id, n)| (*id, *n)).collect();
    sorted.sort_by_key(|(id, n)| (*n, *id));
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicas::tests::{catalog, replicated};
    use crate::replicas::Replica;

    /// Applies `command`, completing a migration it starts: the learner (if any) becomes
    /// a follower and then leads, alone, and every region gets its copies back where
    /// `Catalog::choose_learner` puts them, as the metasrv's repair would.
    fn migrate_and_repair(catalog: &mut Catalog, command: &Command) {
        let Command::MigrateRegion { region, epoch, to } = *command else {
            panic!("a rebalance is a migration: {command:?}");
        };
        catalog.apply(command).unwrap();
        catalog
            .apply(&Command::HandOver { region, epoch, to })
            .unwrap();
        repair(catalog);
    }

    fn repair(catalog: &mut Catalog) {
        loop {
            let short: Vec<RegionId> = catalog.routes().map(|(region, _)| region).collect();
            let mut added = false;
            for region in short {
                let Some(learner) = catalog.choose_learner(region, |_| true) else {
                    continue;
                };
                let route = catalog.route(region).unwrap();
                catalog
                    .apply(&Command::AddLearner {
                        region,
                        epoch: route.epoch,
                        learner,
                    })
                    .unwrap();
                let mut followers: Vec<Replica> = route.followers.as_slice().to_vec();
                followers.push(learner);
                catalog
                    .apply(&Command::ReconfigureRegion {
                        region,
                        epoch: route.epoch,
                        leader: route.leader(),
                        followers,
                    })
                    .unwrap();
                added = true;
            }
            if !added {
                return;
            }
        }
    }

    fn count(catalog: &Catalog, id: u64, copies: bool) -> usize {
        catalog
            .routes()
            .filter(|(_, route)| {
                if copies {
                    route.holds(id)
                } else {
                    route.datanode == id
                }
            })
            .count()
    }

    #[test]
    fn the_ratio_is_checked_and_counts_one_apart_are_even() {
        for bad in [-1.0, 0.5, 0.99, f64::NAN, f64::INFINITY, 101.0] {
            let error = Balance::new(bad).unwrap_err();
            assert!(error.contains("rebalance ratio"), "{error}");
        }
        let even = Balance::new(1.0).unwrap();
        assert!(!even.uneven(1, 0) && !even.uneven(9, 8));
        assert!(even.uneven(2, 0) && even.uneven(10, 8));
        let loose = Balance::default();
        assert!(loose.uneven(6, 4) && !loose.uneven(5, 4) && !loose.uneven(10, 8));
        assert!(loose.uneven(2, 0) && loose.uneven(3, 1));
        let lax = Balance::new(2.0).unwrap();
        assert!(!lax.uneven(6, 3) && lax.uneven(7, 3));
        let off = Balance::new(0.0).unwrap();
        assert_eq!((off, off.ratio()), (Balance::OFF, None));
        assert!(!off.uneven(100, 0));
    }

    #[test]
    fn leadership_moves_to_the_idle_and_converges() {
        let mut catalog = catalog(2);
        let routes = replicated(&mut catalog, 4, 2);
        // Datanode 2 fails and comes back: datanode 1 leads everything.
        for (region, route) in &routes {
            if route.datanode == 2 {
                let follower = route.followers.as_slice()[0];
                catalog
                    .apply(&Command::ReconfigureRegion {
                        region: *region,
                        epoch: route.epoch,
                        leader: follower,
                        followers: vec![],
                    })
                    .unwrap();
            }
        }
        repair(&mut catalog);
        assert_eq!(count(&catalog, 1, false), 4);
        let balance = Balance::default();
        assert_eq!(
            catalog.rebalance(balance, |id| id == 1, |_, _| false),
            None,
            "datanode 2 is down"
        );
        let mut moves = 0;
        while let Some(command) = catalog.rebalance(balance, |_| true, |_, _| false) {
            let Command::MigrateRegion { region, epoch, to } = command else {
                panic!("{command:?}");
            };
            assert_eq!(to.datanode, 2);
            assert!(catalog
                .route(region)
                .unwrap()
                .followers
                .as_slice()
                .contains(&to));
            catalog.apply(&command).unwrap();
            assert_eq!(
                catalog.rebalance(balance, |_| true, |_, _| false),
                None,
                "one at a time"
            );
            catalog
                .apply(&Command::HandOver { region, epoch, to })
                .unwrap();
            repair(&mut catalog);
            moves += 1;
            assert!(moves <= 2, "it converges");
        }
        assert_eq!(
            (count(&catalog, 1, false), count(&catalog, 2, false)),
            (2, 2)
        );
    }

    #[test]
    fn copies_move_onto_a_datanode_that_joined_until_even() {
        for (replicas, ratio) in [(1, 1.0), (2, 1.0), (2, 1.25), (2, 2.0), (3, 1.25)] {
            let balance = Balance::new(ratio).unwrap();
            let mut catalog = catalog(3);
            replicated(&mut catalog, 12, replicas);
            catalog
                .apply(&Command::RegisterDatanode {
                    id: 4,
                    addr: "10.0.0.4:4100".to_string(),
                    shards: 2,
                    incarnation: 0,
                })
                .unwrap();
            assert_eq!(count(&catalog, 4, true), 0);
            let total = 12 * usize::from(replicas);
            let mut moves = 0;
            while let Some(command) = catalog.rebalance(balance, |_| true, |_, _| false) {
                migrate_and_repair(&mut catalog, &command);
                moves += 1;
                assert!(moves <= 24, "{replicas} copies at {ratio}: it converges");
            }
            let held: Vec<usize> = (1..=4).map(|id| count(&catalog, id, true)).collect();
            assert_eq!(held.iter().sum::<usize>(), total, "no copy lost or doubled");
            let (most, least) = (*held.iter().max().unwrap(), *held.iter().min().unwrap());
            assert!(
                !balance.uneven(most, least),
                "{replicas} copies at {ratio}: {held:?}"
            );
            assert!(held[3] > 0, "the joined datanode holds copies: {held:?}");
            let leading: Vec<usize> = (1..=4).map(|id| count(&catalog, id, false)).collect();
            let (most, least) = (
                *leading.iter().max().unwrap(),
                *leading.iter().min().unwrap(),
            );
            assert!(
                !balance.uneven(most, least),
                "{replicas} copies at {ratio}: leading {leading:?}"
            );
            for (region, route) in catalog.routes() {
                assert_eq!(route.replicas().count(), usize::from(replicas), "{region}");
            }
        }
    }

    #[test]
    fn a_move_that_failed_lately_is_left_out_for_another() {
        let mut catalog = catalog(3);
        replicated(&mut catalog, 6, 2);
        catalog
            .apply(&Command::RegisterDatanode {
                id: 4,
                addr: "10.0.0.4:4100".to_string(),
                shards: 2,
                incarnation: 0,
            })
            .unwrap();
        let balance = Balance::default();
        let first = catalog.rebalance(balance, |_| true, |_, _| false).unwrap();
        let Command::MigrateRegion {
            region: failed, to, ..
        } = first
        else {
            panic!("{first:?}");
        };
        let next = catalog
            .rebalance(
                balance,
                |_| true,
                |region, datanode| (region, datanode) == (failed, to.datanode),
            )
            .unwrap();
        let Command::MigrateRegion {
            region, to: other, ..
        } = next
        else {
            panic!("{next:?}");
        };
        assert_ne!(region, failed, "another region moves meanwhile");
        assert_eq!(other.datanode, to.datanode);
        // With every move to it failed, none is made.
        assert_eq!(
            catalog.rebalance(balance, |_| true, |_, datanode| datanode == to.datanode),
            None
        );
    }

    #[test]
    fn nothing_moves_to_a_draining_or_dead_datanode_nor_during_a_migration() {
        let mut catalog = catalog(3);
        replicated(&mut catalog, 6, 2);
        catalog
            .apply(&Command::RegisterDatanode {
                id: 4,
                addr: "10.0.0.4:4100".to_string(),
                shards: 2,
                incarnation: 0,
            })
            .unwrap();
        let balance = Balance::default();
        assert_eq!(catalog.rebalance(balance, |id| id != 4, |_, _| false), None);
        let command = catalog.rebalance(balance, |_| true, |_, _| false).unwrap();
        let mut migrating = catalog.clone();
        migrating.apply(&command).unwrap();
        assert_eq!(migrating.rebalance(balance, |_| true, |_, _| false), None);
        assert_eq!(
            catalog.rebalance(Balance::OFF, |_| true, |_, _| false),
            None,
            "turned off"
        );
        catalog
            .apply(&Command::DrainDatanode { id: 4, drain: true })
            .unwrap();
        assert_eq!(catalog.rebalance(balance, |_| true, |_, _| false), None);
    }
}
