//! Where regions go: a region's route (datanode, shard, epoch), the datanodes that
//! registered with the metasrv, and the placement of new regions over their shards. Plain
//! code over the catalog, like `Catalog::apply`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogError, TableKind};
use crate::replicas::{Followers, Replica};
use metronome_core::data::RegionId;

/// Where a region is served: (datanode, shard), at an epoch. Standalone has datanode 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub datanode: u64,
    pub shard: u16,
    /// Grows each time the region's route changes ([`crate::lease`]): the datanode holds
    /// the region at this epoch, and requests name the epoch of the route they followed.
    /// The catalog sets it; what a command proposes is ignored. Catalogs written before
    /// epochs existed read as the first.
    #[serde(default = "first_epoch")]
    pub epoch: u64,
    /// The other copies, which take the leader's writes ([`crate::replicas`]); none for
    /// a region of one replica, and in catalogs written before replication.
    #[serde(default, skip_serializing_if = "Followers::is_empty")]
    pub followers: Followers,
    /// A copy catching up from the leader to become a follower ([`crate::replicas`]): it
    /// takes the leader's writes but counts toward no acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learner: Option<Replica>,
    /// The copies the region should have, the leader's included, when more than one:
    /// the metasrv adds a learner while it has fewer. 0 (routes of one copy, catalogs
    /// written before) counts as one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicas: u8,
    /// The copy the region's leadership is moving to, while a migration runs
    /// ([`crate::migration`]): a follower, or the learner. Any reconfiguration ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<Replica>,
}

fn is_zero(replicas: &u8) -> bool {
    *replicas == 0
}

fn first_epoch() -> u64 {
    crate::lease::FIRST_EPOCH
}

impl Route {
    /// A new region's route: (datanode, shard) at the first epoch.
    pub const fn new(datanode: u64, shard: u16) -> Route {
        Route {
            datanode,
            shard,
            epoch: crate::lease::FIRST_EPOCH,
            followers: Followers {
                len: 0,
                members: [Replica {
                    datanode: 0,
                    shard: 0,
                }; crate::replicas::FOLLOWERS_MAX],
            },
            learner: None,
            replicas: 0,
            moving_to: None,
        }
    }
}

/// A datanode as it registered: where its region service listens, and its shard count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatanodeInfo {
    /// The address of its region service (`host:port` for TCP; standalone's in-process
    /// datanode names its in-process endpoint).
    pub addr: String,
    pub shards: u16,
    /// An operator is moving every copy off it ([`crate::drain`]): it gets no new one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Names the data directory it registered with (chosen at random when the directory
    /// was created); 0 when unknown (registered before incarnations existed).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub incarnation: u64,
}

fn is_zero_u64(incarnation: &u64) -> bool {
    *incarnation == 0
}

/// Shards one datanode may declare; a machine has far fewer cores.
pub const DATANODE_SHARDS_MAX: u16 = 1024;

/// Regions one placement may ask for (a table's regions, the metric regions).
pub const PLACED_REGIONS_MAX: u32 = 1024;

/// The longest address a datanode may register.
const DATANODE_ADDR_BYTES_MAX: usize = 256;

impl Catalog {
    /// Records that datanode `id` serves at `addr` with `shards` shards; a datanode that
    /// registers again (after a restart, at a new address) replaces its entry. One back
    /// with another data directory than it had (`incarnation`: its disk was replaced or
    /// wiped) holds none of its copies any more: they leave every route
    /// ([`Catalog::forget_copies`]) before it serves anything.
    pub(crate) fn register_datanode(
        &mut self,
        id: u64,
        addr: &str,
        shards: u16,
        incarnation: u64,
    ) -> Result<(), CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            what: format!("registration of datanode {id}"),
            reason,
        };
        if addr.is_empty() || addr.len() > DATANODE_ADDR_BYTES_MAX {
            return Err(invalid(format!(
                "its address must be 1 to {DATANODE_ADDR_BYTES_MAX} bytes, got {}",
                addr.len()
            )));
        }
        if shards == 0 || shards > DATANODE_SHARDS_MAX {
            return Err(invalid(format!(
                "it must have 1 to {DATANODE_SHARDS_MAX} shards, got {shards}"
            )));
        }
        // A drain outlives the datanode's restarts.
        let draining = self.is_draining(id);
        let known = self.datanodes.get(&id).map_or(0, |info| info.incarnation);
        self.datanodes.insert(
            id,
            DatanodeInfo {
                addr: addr.to_string(),
                shards,
                draining,
                incarnation,
            },
        );
        if known != 0 && incarnation != 0 && known != incarnation {
            self.forget_copies(id);
            assert!(
                self.routes()
                    .filter(|(_, route)| route.holds(id))
                    .all(|(_, route)| route.datanode == id && route.followers.is_empty()),
                "datanode {id} keeps only the regions it held the last copy of"
            );
        }
        Ok(())
    }

    /// Takes datanode `id`'s copies out of every route, for a datanode that lost them
    /// all: a region it led is led by its first follower, alone, at the next epoch (that
    /// follower holds every acknowledged write, as after a failover; the old leader's
    /// process is gone with its disk); one it followed goes on without it, at the next
    /// epoch; its learner's place and a migration to it end. A region whose only copy it
    /// held has nowhere else to be, and stays routed to it.
    pub(crate) fn forget_copies(&mut self, id: u64) {
        let regions: Vec<RegionId> = self
            .routes()
            .filter(|(_, route)| route.holds(id))
            .map(|(region, _)| region)
            .collect();
        for region in regions {
            let route = self.route_mut(region).expect("routed");
            if route.learner.is_some_and(|l| l.datanode == id) {
                route.learner = None;
            }
            if route.moving_to.is_some_and(|to| to.datanode == id) {
                route.moving_to = None;
            }
            let followers = route.followers.as_slice().to_vec();
            if route.datanode == id {
                let Some(next) = followers.first() else {
                    continue;
                };
                *route = Route {
                    datanode: next.datanode,
                    shard: next.shard,
                    epoch: route.epoch + 1,
                    followers: Followers::default(),
                    learner: None,
                    replicas: route.replicas,
                    moving_to: None,
                };
                self.changes.failovers += 1;
            } else if followers.iter().any(|f| f.datanode == id) {
                let kept: Vec<Replica> =
                    followers.into_iter().filter(|f| f.datanode != id).collect();
                route.followers = Followers::from_slice(&kept).expect("fewer than before");
                route.epoch += 1;
                // A reconfiguration ends a migration.
                route.moving_to = None;
                self.changes.followers_removed += 1;
            }
            assert!(
                !self.route(region).expect("routed").holds(id)
                    || self.route(region).expect("routed").datanode == id,
                "region {region}: only a region's last copy stays on a datanode that lost it"
            );
        }
    }

    /// Every region the catalog routes, with its route: the metric regions and the
    /// regular tables' regions of every database.
    pub fn routes(&self) -> impl Iterator<Item = (RegionId, Route)> + '_ {
        self.databases.values().flat_map(|database| {
            let metrics = database
                .metrics
                .iter()
                .flat_map(|m| m.regions.iter().copied());
            let tables = database
                .tables
                .values()
                .flat_map(|table| match &table.kind {
                    TableKind::Regular { regions, .. } => regions.as_slice(),
                    TableKind::Metric { .. } => &[],
                });
            metrics.chain(tables.copied())
        })
    }

    /// Routes for `count` new regions over the registered datanodes' shards — only those
    /// in `alive` when it is given and names a registered one. Each region goes to the
    /// datanode this call has given the fewest regions so far, then to the shard with the
    /// fewest regions now (counting this call's), ties broken by shard number, then
    /// datanode: a table's regions spread over every live datanode before any gets a
    /// second, even onto a datanode that just joined and holds nothing, and the load
    /// evens out across calls.
    pub fn place_among(
        &self,
        count: u32,
        alive: Option<&BTreeSet<u64>>,
    ) -> Result<Vec<Route>, CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            what: "region placement".to_string(),
            reason,
        };
        if count == 0 || count > PLACED_REGIONS_MAX {
            return Err(invalid(format!(
                "1 to {PLACED_REGIONS_MAX} regions may be placed at once, not {count}"
            )));
        }
        if self.datanodes.is_empty() {
            return Err(invalid(
                "no datanode has registered with the metasrv yet".to_string(),
            ));
        }
        let alive = alive.filter(|alive| self.datanodes.keys().any(|id| alive.contains(id)));
        let usable = |id: &u64| alive.is_none_or(|alive| alive.contains(id));
        // A draining datanode gets no new region, unless no usable one is not draining.
        let skip_draining = self
            .datanodes
            .iter()
            .any(|(id, info)| usable(id) && !info.draining);
        // (regions, shard, datanode) per slot.
        let mut slots: Vec<(usize, u16, u64)> = self
            .datanodes
            .iter()
            .filter(|(id, info)| usable(id) && !(skip_draining && info.draining))
            .flat_map(|(id, info)| (0..info.shards).map(move |shard| (0, shard, *id)))
            .collect();
        for (_, route) in self.routes() {
            if let Some(slot) = slots
                .iter_mut()
                .find(|(_, shard, datanode)| (*datanode, *shard) == (route.datanode, route.shard))
            {
                slot.0 += 1;
            }
        }
        let mut placed_on: BTreeMap<u64, usize> = BTreeMap::new();
        let mut routes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let slot = slots
                .iter_mut()
                .min_by_key(|(regions, shard, datanode)| {
                    (
                        placed_on.get(datanode).copied().unwrap_or(0),
                        *regions,
                        *shard,
                        *datanode,
                    )
                })
                .expect("a datanode has a shard at least");
            routes.push(Route::new(slot.2, slot.1));
            slot.0 += 1;
            *placed_on.entry(slot.2).or_default() += 1;
        }
        Ok(routes)
    }
}

/// Finding a route to change, for the state machine's commands.
impl Catalog {
    /// The route of `region` for a change that expects it at `epoch` (compare-and-set);
    /// refused, naming `what`, when no table has the region or it is at another epoch.
    pub(crate) fn route_at(
        &mut self,
        region: RegionId,
        epoch: u64,
        what: &str,
    ) -> Result<&mut Route, CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            what: what.to_string(),
            reason,
        };
        let route = self
            .route_mut(region)
            .ok_or_else(|| invalid("no table has that region".to_string()))?;
        if route.epoch != epoch {
            return Err(invalid(format!(
                "it expected epoch {epoch}, the region is at epoch {}",
                route.epoch
            )));
        }
        Ok(route)
    }

    /// Refuses, naming `what`, a replica on a datanode not registered or a shard it
    /// does not have.
    pub(crate) fn check_shard(&self, replica: Replica, what: &str) -> Result<(), CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            what: what.to_string(),
            reason,
        };
        let shards = self
            .datanodes
            .get(&replica.datanode)
            .map(|info| info.shards)
            .ok_or_else(|| invalid(format!("datanode {} is not registered", replica.datanode)))?;
        if replica.shard >= shards {
            return Err(invalid(format!(
                "datanode {} has {shards} shards, not {}",
                replica.datanode,
                replica.shard + 1
            )));
        }
        Ok(())
    }

    pub(crate) fn route_mut(&mut self, region: RegionId) -> Option<&mut Route> {
        self.databases.values_mut().find_map(|database| {
            let metrics = database
                .metrics
                .iter_mut()
                .flat_map(|m| m.regions.iter_mut());
            let tables = database
                .tables
                .values_mut()
                .flat_map(|table| match &mut table.kind {
                    TableKind::Regular { regions, .. } => regions.as_mut_slice(),
                    TableKind::Metric { .. } => &mut [],
                });
            metrics
                .chain(tables)
                .find(|(id, _)| *id == region)
                .map(|(_, route)| route)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Command;

    fn register(catalog: &mut Catalog, id: u64, shards: u16) {
        catalog
            .apply(&Command::RegisterDatanode {
                id,
                addr: format!("10.0.0.{id}:4100"),
                shards,
                incarnation: 0,
            })
            .unwrap();
    }

    #[test]
    fn regions_spread_over_every_datanode_and_shard_least_loaded_first() {
        let mut catalog = Catalog::default();
        assert!(catalog
            .place_among(1, None)
            .unwrap_err()
            .to_string()
            .contains("no datanode"));
        register(&mut catalog, 1, 2);
        register(&mut catalog, 2, 2);
        let routes = catalog.place_among(5, None).unwrap();
        let pairs: Vec<(u64, u16)> = routes.iter().map(|r| (r.datanode, r.shard)).collect();
        assert_eq!(pairs, [(1, 0), (2, 0), (1, 1), (2, 1), (1, 0)]);
        // Regions already routed count: a new datanode gets the next ones.
        catalog
            .apply(&Command::CreateMetricRegions {
                database: crate::catalog::DEFAULT_DATABASE.to_string(),
                routes: catalog.place_among(4, None).unwrap(),
                replicas: 1,
            })
            .unwrap();
        register(&mut catalog, 3, 1);
        let next = catalog.place_among(2, None).unwrap();
        assert_eq!(next[0].datanode, 3, "the empty one first: {next:?}");
        assert_eq!(
            (next[1].datanode, next[1].shard),
            (1, 0),
            "then every shard has one: {next:?}"
        );
    }

    #[test]
    fn placement_skips_dead_datanodes_and_spreads_a_table_even_onto_an_empty_one() {
        let mut catalog = Catalog::default();
        register(&mut catalog, 1, 2);
        register(&mut catalog, 2, 2);
        catalog
            .apply(&Command::CreateMetricRegions {
                database: crate::catalog::DEFAULT_DATABASE.to_string(),
                routes: catalog.place_among(8, None).unwrap(),
                replicas: 1,
            })
            .unwrap();
        // Datanode 3 joins empty: a new table still lands on all three, not on 3 alone.
        register(&mut catalog, 3, 2);
        let routes = catalog.place_among(3, None).unwrap();
        let datanodes: BTreeSet<u64> = routes.iter().map(|r| r.datanode).collect();
        assert_eq!(datanodes, BTreeSet::from([1, 2, 3]), "{routes:?}");
        assert_eq!(routes[0].datanode, 3, "the emptiest first: {routes:?}");
        // Datanode 2 is down: nothing goes there.
        let alive = BTreeSet::from([1, 3]);
        let routes = catalog.place_among(6, Some(&alive)).unwrap();
        assert!(routes.iter().all(|r| r.datanode != 2), "{routes:?}");
        // Liveness that names no registered datanode (a new leader heard no heartbeat
        // yet) is no reason to refuse: every registered one is a candidate.
        let routes = catalog.place_among(3, Some(&BTreeSet::from([9]))).unwrap();
        assert_eq!(routes.len(), 3);
        assert!(catalog.place_among(0, None).is_err());
        assert!(catalog.place_among(PLACED_REGIONS_MAX + 1, None).is_err());
    }

    #[test]
    fn a_datanode_back_with_another_disk_loses_its_copies_to_the_others() {
        let mut catalog = crate::replicas::tests::catalog(3);
        let before = crate::replicas::tests::replicated(&mut catalog, 6, 2);
        let register = |incarnation: u64| Command::RegisterDatanode {
            id: 1,
            addr: "10.0.0.1:4100".to_string(),
            shards: 2,
            incarnation,
        };
        // Unknown incarnations (0) and the same one again change no route.
        catalog.apply(&register(0)).unwrap();
        catalog.apply(&register(7)).unwrap();
        catalog.apply(&register(7)).unwrap();
        assert!(catalog.is_noop(&register(7)));
        assert_eq!(catalog.routes().collect::<Vec<_>>(), before);
        // Another one: its disk was replaced.
        catalog.apply(&register(8)).unwrap();
        assert_eq!(catalog.regions_on(1), vec![]);
        for (region, old) in &before {
            let now = catalog.route(*region).unwrap();
            if old.datanode == 1 {
                // Led by its follower, which holds every acknowledged write, alone.
                assert_eq!(now.leader(), old.followers.as_slice()[0]);
                assert!(now.followers.is_empty());
                assert_eq!(now.epoch, old.epoch + 1);
            } else if old.followers.contains(1) {
                assert_eq!(now.leader(), old.leader());
                assert!(now.followers.is_empty());
                assert_eq!(now.epoch, old.epoch + 1);
            } else {
                assert_eq!(now, *old);
            }
        }
        let led = before.iter().filter(|(_, r)| r.datanode == 1).count() as u64;
        assert!(led > 0);
        assert_eq!(catalog.changes.failovers, led);
        // A region of one copy there has nowhere else to be.
        let mut alone = crate::replicas::tests::catalog(1);
        let routes = alone.place_among(1, None).unwrap();
        alone
            .apply(&Command::CreateMetricRegions {
                database: crate::DEFAULT_DATABASE.to_string(),
                routes,
                replicas: 1,
            })
            .unwrap();
        alone.apply(&register(3)).unwrap();
        alone.apply(&register(4)).unwrap();
        assert_eq!(alone.regions_on(1).len(), 1);
    }

    #[test]
    fn a_registration_is_checked_and_a_second_one_replaces_the_first() {
        let mut catalog = Catalog::default();
        for (addr, shards) in [("", 1), ("a:1", 0), ("a:1", DATANODE_SHARDS_MAX + 1)] {
            let refused = catalog.apply(&Command::RegisterDatanode {
                id: 1,
                addr: addr.to_string(),
                shards,
                incarnation: 0,
            });
            assert!(refused.is_err(), "{addr} {shards}");
        }
        assert_eq!(catalog.version, 0, "a refused command changes nothing");
        register(&mut catalog, 1, 2);
        let again = Command::RegisterDatanode {
            id: 1,
            addr: "10.0.0.1:4100".to_string(),
            shards: 2,
            incarnation: 0,
        };
        assert!(catalog.is_noop(&again));
        catalog
            .apply(&Command::RegisterDatanode {
                id: 1,
                addr: "10.0.0.9:4100".to_string(),
                shards: 4,
                incarnation: 0,
            })
            .unwrap();
        assert_eq!(catalog.datanodes[&1].addr, "10.0.0.9:4100");
        assert_eq!(catalog.datanodes[&1].shards, 4);
    }
}
