//! A region's configuration (PacificA's): its leader, its followers and the epoch they
//! hold it at. The metasrv is the configuration manager: a route's replicas are chosen
//! when the region is created ([`Catalog::choose_followers`]) and change only by
//! compare-and-set on the epoch ([`Command::ReconfigureRegion`]), which gives the route
//! the next epoch: it keeps members, adds the learner, and a new leader starts alone.
//! Plain code over the catalog, like `Catalog::apply`.
//!
//! The rule that makes a failover lose nothing: a leader acknowledges a write only once
//! it is durable on every member of the configuration it writes under, so any member of
//! that configuration holds every acknowledged write. A reconfiguration therefore keeps
//! only members of the current configuration (it removes followers, or promotes one),
//! except for the learner: a copy the metasrv added ([`Command::AddLearner`], epoch
//! unchanged) that installs the leader's copy of the region and takes its writes, counts
//! toward nothing, and becomes a follower only by a reconfiguration its leader asks for
//! once the learner holds every write the leader has taken (KIP-903's rule: a member
//! joins the acknowledgements only once caught up).

use std::collections::BTreeMap;

use metronome_core::data::RegionId;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogError};
use crate::lease::Grant;
use crate::placement::Route;

/// Copies of a region beyond its leader's.
pub const FOLLOWERS_MAX: usize = 2;
/// Copies of a region, the leader's included: a table's `replicas` option.
pub const REPLICAS_MAX: u8 = FOLLOWERS_MAX as u8 + 1;
/// Copies of a new region when neither the table nor the frontend's configuration says,
/// in a cluster of as many datanodes or more (else one).
pub const CLUSTER_REPLICAS_DEFAULT: u8 = 2;

/// One copy of a region: the datanode and its shard that hold it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Replica {
    pub datanode: u64,
    pub shard: u16,
}

/// A route's followers: at most [`FOLLOWERS_MAX`], on datanodes other than the leader's
/// and each other's. A fixed array, so that a route stays `Copy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Followers {
    pub(crate) len: u8,
    pub(crate) members: [Replica; FOLLOWERS_MAX],
}

impl Followers {
    /// `None` when there are more than [`FOLLOWERS_MAX`].
    pub fn from_slice(followers: &[Replica]) -> Option<Followers> {
        if followers.len() > FOLLOWERS_MAX {
            return None;
        }
        let mut members = [Replica::default(); FOLLOWERS_MAX];
        members[..followers.len()].copy_from_slice(followers);
        Some(Followers {
            len: followers.len() as u8,
            members,
        })
    }

    pub fn as_slice(&self) -> &[Replica] {
        &self.members[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, datanode: u64) -> bool {
        self.as_slice().iter().any(|f| f.datanode == datanode)
    }
}

impl Serialize for Followers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Followers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Followers, D::Error> {
        let members = Vec::<Replica>::deserialize(deserializer)?;
        Followers::from_slice(&members).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "a route has at most {FOLLOWERS_MAX} followers, got {}",
                members.len()
            ))
        })
    }
}

impl Route {
    /// The copy that takes writes.
    pub fn leader(&self) -> Replica {
        Replica {
            datanode: self.datanode,
            shard: self.shard,
        }
    }

    /// The leader, then the followers (not the learner).
    pub fn replicas(&self) -> impl Iterator<Item = Replica> + '_ {
        std::iter::once(self.leader()).chain(self.followers.as_slice().iter().copied())
    }

    /// The copies the region should have, the leader's included.
    pub fn replicas_wanted(&self) -> usize {
        usize::from(self.replicas.max(1))
    }

    /// Whether `datanode` holds the leader's copy, a follower's or the learner's.
    pub fn holds(&self, datanode: u64) -> bool {
        self.replicas().any(|r| r.datanode == datanode)
            || self.learner.is_some_and(|l| l.datanode == datanode)
    }
}

/// Configuration changes the catalog applied, by kind, since it was created: replicated
/// like the rest of the catalog, so every metasrv replica and frontend reports the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteChanges {
    /// A follower made the leader by `ReconfigureRegion` (its leader was gone).
    pub failovers: u64,
    /// Leadership handed over by a migration (`HandOver`).
    pub hand_overs: u64,
    /// Learners that caught up and became followers.
    pub followers_added: u64,
    /// Followers left out of a configuration by a leader that kept leading (one it could
    /// not reach, or a copy on a draining datanode).
    pub followers_removed: u64,
    pub migrations_started: u64,
    /// Migrations ended without moving (`CancelMigration`).
    pub migrations_cancelled: u64,
}

/// What a datanode does for a region it is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Takes writes and scans, and ships each write to the followers.
    Leader,
    /// Takes the leader's writes, in order, at the route's epoch.
    Follower,
    /// Installs the leader's copy, then takes its writes as a follower does, counting
    /// toward no acknowledgement.
    Learner,
}

/// What a heartbeat's reply tells a datanode about replication, beside its leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationGrants {
    /// The regions it holds a follower's copy of, at their epochs: it takes their
    /// leaders' writes at those epochs only.
    pub follows: Vec<Grant>,
    /// The followers of the regions it leads (at the epochs of its leases) that have any.
    pub followers: Vec<(RegionId, Vec<Replica>)>,
    /// The regions it is a learner of, at their epochs: it takes their leaders' copies
    /// and writes at those epochs only.
    pub learns: Vec<Grant>,
    /// The learners of the regions it leads (at the epochs of its leases).
    pub learners: Vec<(RegionId, Replica)>,
    /// Where the regions it leads are moving to, for those migrating
    /// (`crate::migration`): a follower, or the learner.
    pub moving: Vec<(RegionId, Replica)>,
    /// Where those followers' and learners' datanodes listen.
    pub peers: Vec<(u64, String)>,
}

impl Catalog {
    /// What [`ReplicationGrants`] `datanode` gets, with the leases on the regions it leads.
    pub fn grants(&self, datanode: u64) -> (Vec<Grant>, ReplicationGrants) {
        let mut leases = Vec::new();
        let mut replication = ReplicationGrants::default();
        let mut peers = std::collections::BTreeSet::new();
        for (region, route, role) in self.replicas_on(datanode) {
            match role {
                Role::Leader => {
                    leases.push((region, route.epoch));
                    if !route.followers.is_empty() {
                        let followers = route.followers.as_slice().to_vec();
                        peers.extend(followers.iter().map(|f| f.datanode));
                        replication.followers.push((region, followers));
                    }
                }
                Role::Follower => replication.follows.push((region, route.epoch)),
                Role::Learner => replication.learns.push((region, route.epoch)),
            }
            if let (Role::Leader, Some(learner)) = (role, route.learner) {
                peers.insert(learner.datanode);
                replication.learners.push((region, learner));
            }
            if let (Role::Leader, Some(to)) = (role, route.moving_to) {
                replication.moving.push((region, to));
            }
        }
        replication.peers = peers
            .into_iter()
            .filter_map(|id| self.datanodes.get(&id).map(|info| (id, info.addr.clone())))
            .collect();
        (leases, replication)
    }

    /// Copies of a new region when nothing says: [`CLUSTER_REPLICAS_DEFAULT`] once as
    /// many datanodes registered, else one (standalone's single datanode).
    pub fn default_replicas(&self) -> u8 {
        if self.datanodes.len() >= usize::from(CLUSTER_REPLICAS_DEFAULT) {
            CLUSTER_REPLICAS_DEFAULT
        } else {
            1
        }
    }

    /// Followers for new regions led by `leaders`: `replicas - 1` each, on the registered
    /// datanodes other than the leader's, those holding the fewest copies first (counting
    /// the ones chosen here), ties by datanode; each on the shard of that datanode that
    /// holds the fewest copies. Deterministic over the catalog, so every replica of the
    /// metasrv chooses the same.
    pub(crate) fn choose_followers(
        &self,
        what: &str,
        leaders: &[Route],
        replicas: u8,
    ) -> Result<Vec<Route>, CatalogError> {
        if replicas == 0 || replicas > REPLICAS_MAX {
            return Err(CatalogError::Invalid {
                what: what.to_string(),
                reason: format!("replicas must be 1 to {REPLICAS_MAX}, got {replicas}"),
            });
        }
        let followers = usize::from(replicas - 1);
        if followers > 0 && self.datanodes.len() < usize::from(replicas) {
            return Err(CatalogError::Invalid {
                what: what.to_string(),
                reason: format!(
                    "{replicas} replicas need as many datanodes, and {} registered",
                    self.datanodes.len()
                ),
            });
        }
        // Copies per (datanode, shard), and per datanode.
        let mut per_shard: BTreeMap<(u64, u16), usize> = BTreeMap::new();
        for (_, route) in self.routes() {
            for replica in route.replicas() {
                *per_shard
                    .entry((replica.datanode, replica.shard))
                    .or_default() += 1;
            }
        }
        for route in leaders {
            *per_shard.entry((route.datanode, route.shard)).or_default() += 1;
        }
        let mut chosen = Vec::with_capacity(leaders.len());
        for leader in leaders {
            let mut members: Vec<Replica> = Vec::with_capacity(followers);
            for _ in 0..followers {
                let per_datanode = |id: u64| -> usize {
                    per_shard
                        .range((id, 0)..=(id, u16::MAX))
                        .map(|(_, n)| *n)
                        .sum()
                };
                // A draining datanode only when no other will do (`crate::drain`).
                let Some((&datanode, info)) = self
                    .datanodes
                    .iter()
                    .filter(|(id, _)| {
                        **id != leader.datanode && members.iter().all(|m| m.datanode != **id)
                    })
                    .min_by_key(|(id, info)| (info.draining, per_datanode(**id), **id))
                else {
                    unreachable!("checked: as many datanodes as replicas");
                };
                let shard = (0..info.shards)
                    .min_by_key(|shard| {
                        (
                            per_shard.get(&(datanode, *shard)).copied().unwrap_or(0),
                            *shard,
                        )
                    })
                    .expect("a registered datanode has a shard");
                *per_shard.entry((datanode, shard)).or_default() += 1;
                members.push(Replica { datanode, shard });
            }
            let mut route = Route::new(leader.datanode, leader.shard);
            route.followers = Followers::from_slice(&members).expect("at most FOLLOWERS_MAX");
            if replicas > 1 {
                route.replicas = replicas;
            }
            chosen.push(route);
        }
        Ok(chosen)
    }

    /// The route of `region`, wherever it is.
    pub fn route(&self, region: RegionId) -> Option<Route> {
        self.routes()
            .find(|(id, _)| *id == region)
            .map(|(_, route)| route)
    }

    /// Every region `datanode` holds a copy of, with the route and its role there.
    pub fn replicas_on(&self, datanode: u64) -> impl Iterator<Item = (RegionId, Route, Role)> + '_ {
        self.routes().filter_map(move |(region, route)| {
            if route.datanode == datanode {
                Some((region, route, Role::Leader))
            } else if route.followers.contains(datanode) {
                Some((region, route, Role::Follower))
            } else if route.learner.is_some_and(|l| l.datanode == datanode) {
                Some((region, route, Role::Learner))
            } else {
                None
            }
        })
    }

    /// [`Command::ReconfigureRegion`]: compare-and-set on the epoch; the new leader and
    /// followers must be members of the current configuration, each once.
    pub(crate) fn reconfigure_region(
        &mut self,
        region: RegionId,
        epoch: u64,
        leader: Replica,
        followers: &[Replica],
    ) -> Result<(), CatalogError> {
        let what = format!("reconfiguration of region {region}");
        let invalid = |reason: String| CatalogError::Invalid {
            what: what.clone(),
            reason,
        };
        let route = self.route_at(region, epoch, &what)?;
        // A leader names itself by the shard holding its copy, which may not be the one
        // the route says: a learner installs where a stale copy of the region already
        // lives. The datanode is what identifies a member.
        let leader = if leader.datanode == route.datanode {
            route.leader()
        } else {
            leader
        };
        let current: Vec<Replica> = route.replicas().collect();
        // The learner joins only under the leader it caught up from.
        let learner = route.learner.filter(|_| leader == route.leader());
        let mut next = vec![leader];
        next.extend_from_slice(followers);
        for (i, member) in next.iter().enumerate() {
            if !current.contains(member) && Some(*member) != learner {
                return Err(invalid(format!(
                    "datanode {} shard {} is not a member at epoch {epoch}: a new member \
                     must catch up first",
                    member.datanode, member.shard
                )));
            }
            if next[..i].iter().any(|m| m.datanode == member.datanode) {
                return Err(invalid(format!(
                    "datanode {} would hold two copies",
                    member.datanode
                )));
            }
        }
        // A new leader leads alone: another member may hold a write the new leader lacks
        // (never acknowledged, but at a sequence the new leader will give another write),
        // and would then skip the new leader's write as one it has. Members join a new
        // leader only by catching up from it.
        if leader != route.leader() && !followers.is_empty() {
            return Err(invalid(format!(
                "datanode {} would lead with followers from the previous configuration; a \
                 new leader starts alone",
                leader.datanode
            )));
        }
        // Copies beyond those wanted on draining datanodes leave as the learner joins.
        let before = self.route(region).expect("routed");
        let surplus = self.surplus_followers(&before, followers);
        assert!(
            surplus
                .iter()
                .all(|f| self.is_draining(f.datanode) && Some(*f) != before.learner),
            "region {region}: only followers on draining datanodes leave as a learner joins"
        );
        let kept: Vec<Replica> = followers
            .iter()
            .filter(|f| !surplus.contains(f))
            .copied()
            .collect();
        let followers = Followers::from_slice(&kept)
            .ok_or_else(|| invalid(format!("at most {FOLLOWERS_MAX} followers")))?;
        let old = self.route(region).expect("routed");
        if leader.datanode != old.datanode {
            self.changes.failovers += 1;
        } else {
            let joined = learner.is_some_and(|l| followers.as_slice().contains(&l));
            self.changes.followers_added += u64::from(joined);
            self.changes.followers_removed += old
                .followers
                .as_slice()
                .iter()
                .filter(|f| !followers.as_slice().contains(f))
                .count() as u64;
        }
        let route = self.route_mut(region).expect("routed");
        // A learner left out is dropped: it caught up under this configuration only.
        *route = Route {
            datanode: leader.datanode,
            shard: leader.shard,
            epoch: epoch + 1,
            followers,
            learner: None,
            replicas: route.replicas,
            // A migration ends with any reconfiguration: it moved, or was overtaken.
            moving_to: None,
        };
        assert!(
            route
                .replicas()
                .all(|r| current.contains(&r) || Some(r) == learner),
            "region {region}: a reconfiguration keeps only members and the learner"
        );
        Ok(())
    }

    /// [`Command::AddLearner`]: at `epoch` (compare-and-set, the epoch stays), a region
    /// with no learner and fewer copies than it wants takes `learner`, a registered
    /// shard of a datanode holding no copy of it.
    pub(crate) fn add_learner(
        &mut self,
        region: RegionId,
        epoch: u64,
        learner: Replica,
    ) -> Result<(), CatalogError> {
        let what = format!("learner of region {region}");
        let invalid = |reason: String| CatalogError::Invalid {
            what: what.clone(),
            reason,
        };
        self.check_shard(learner, &what)?;
        let route = self.route_at(region, epoch, &what)?;
        if let Some(existing) = route.learner {
            return Err(invalid(format!(
                "datanode {} is its learner already",
                existing.datanode
            )));
        }
        if route.holds(learner.datanode) {
            return Err(invalid(format!(
                "datanode {} holds a copy already",
                learner.datanode
            )));
        }
        // Copies on draining datanodes do not count: a learner replaces them.
        let copies = route.replicas().count();
        let route = *route;
        let kept = self.copies_kept(&route);
        if kept >= route.replicas_wanted() || kept >= usize::from(REPLICAS_MAX) {
            return Err(invalid(format!("it has the {copies} copies it wants")));
        }
        if self.is_draining(learner.datanode) {
            return Err(invalid(format!(
                "datanode {} is draining",
                learner.datanode
            )));
        }
        if !self.learner_can_join(&route) {
            return Err(invalid(format!(
                "it has {FOLLOWERS_MAX} followers, none on a draining datanode: a learner \
                 could never join"
            )));
        }
        self.route_mut(region).expect("routed").learner = Some(learner);
        Ok(())
    }

    /// [`Command::RemoveLearner`]: at `epoch` (the epoch stays), if `learner` is still
    /// the region's learner.
    pub(crate) fn remove_learner(
        &mut self,
        region: RegionId,
        epoch: u64,
        learner: Replica,
    ) -> Result<(), CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            what: format!("learner of region {region}"),
            reason,
        };
        let route = self
            .route_mut(region)
            .ok_or_else(|| invalid("no table has that region".to_string()))?;
        if route.epoch != epoch || route.learner != Some(learner) {
            return Err(invalid(format!(
                "datanode {} is not its learner at epoch {epoch}",
                learner.datanode
            )));
        }
        route.learner = None;
        // A migration to that learner ends with it.
        if route.moving_to == Some(learner) {
            route.moving_to = None;
        }
        Ok(())
    }

    /// A shard for a new learner of `region`: on a datanode that `alive` accepts and that
    /// holds no copy of it, the one holding the fewest copies of any region first, ties
    /// by datanode; its shard holding the fewest. `None` when the region has a learner,
    /// the copies it wants, or no datanode fits. Deterministic over the catalog.
    pub fn choose_learner(&self, region: RegionId, alive: impl Fn(u64) -> bool) -> Option<Replica> {
        let route = self.route(region)?;
        if route.learner.is_some()
            || self.copies_kept(&route) >= route.replicas_wanted().min(usize::from(REPLICAS_MAX))
            || !self.learner_can_join(&route)
        {
            return None;
        }
        let mut per_shard: BTreeMap<(u64, u16), usize> = BTreeMap::new();
        for (_, route) in self.routes() {
            for replica in route.replicas().chain(route.learner) {
                *per_shard
                    .entry((replica.datanode, replica.shard))
                    .or_default() += 1;
            }
        }
        let per_datanode = |id: u64| -> usize {
            per_shard
                .range((id, 0)..=(id, u16::MAX))
                .map(|(_, n)| *n)
                .sum()
        };
        let (&datanode, info) = self
            .datanodes
            .iter()
            .filter(|(id, info)| !route.holds(**id) && !info.draining && alive(**id))
            .min_by_key(|(id, _)| (per_datanode(**id), **id))?;
        let shard = (0..info.shards).min_by_key(|shard| {
            (
                per_shard.get(&(datanode, *shard)).copied().unwrap_or(0),
                *shard,
            )
        })?;
        Some(Replica { datanode, shard })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::{Command, DEFAULT_DATABASE};

    /// A catalog with `datanodes` registered, two shards each.
    pub(crate) fn catalog(datanodes: u64) -> Catalog {
        let mut catalog = Catalog::default();
        for id in 1..=datanodes {
            catalog
                .apply(&Command::RegisterDatanode {
                    id,
                    addr: format!("10.0.0.{id}:4100"),
                    shards: 2,
                    incarnation: 0,
                })
                .unwrap();
        }
        catalog
    }

    /// `regions` metric regions of `replicas` copies, placed; every route after.
    pub(crate) fn replicated(
        catalog: &mut Catalog,
        regions: u32,
        replicas: u8,
    ) -> Vec<(RegionId, Route)> {
        let routes = catalog.place_among(regions, None).unwrap();
        catalog
            .apply(&Command::CreateMetricRegions {
                database: DEFAULT_DATABASE.to_string(),
                routes,
                replicas,
            })
            .unwrap();
        catalog.routes().collect()
    }

    #[test]
    fn followers_go_to_other_datanodes_least_loaded_first() {
        let mut catalog = catalog(3);
        let routes = replicated(&mut catalog, 6, 3);
        for (region, route) in &routes {
            let datanodes: std::collections::BTreeSet<u64> =
                route.replicas().map(|r| r.datanode).collect();
            assert_eq!(datanodes.len(), 3, "{region}: {route:?}");
        }
        // Every datanode holds as many copies: 6 regions × 3 copies over 3 datanodes.
        for id in 1..=3 {
            assert_eq!(catalog.replicas_on(id).count(), 6);
        }
        let mut too_many = catalog.clone();
        let refused = too_many.apply(&Command::CreateMetricRegions {
            database: "other".to_string(),
            routes: vec![Route::new(1, 0)],
            replicas: 4,
        });
        assert!(refused.is_err());
    }

    #[test]
    fn a_reconfiguration_is_a_compare_and_set_among_the_members() {
        let mut catalog = catalog(3);
        let (region, route) = replicated(&mut catalog, 1, 2)[0];
        let follower = route.followers.as_slice()[0];
        let outsider = (1..=3)
            .find(|id| route.replicas().all(|r| r.datanode != *id))
            .unwrap();
        let version = catalog.version;
        for (epoch, leader, followers) in [
            // A stale epoch.
            (route.epoch + 1, follower, vec![]),
            // A member that is not one.
            (
                route.epoch,
                Replica {
                    datanode: outsider,
                    shard: 0,
                },
                vec![],
            ),
            (
                route.epoch,
                follower,
                vec![Replica {
                    datanode: outsider,
                    shard: 0,
                }],
            ),
            // One datanode twice.
            (route.epoch, follower, vec![follower]),
            // A new leader that keeps the old one as a follower.
            (route.epoch, follower, vec![route.leader()]),
        ] {
            let refused = catalog.apply(&Command::ReconfigureRegion {
                region,
                epoch,
                leader,
                followers,
            });
            assert!(refused.is_err(), "{epoch} {leader:?}");
        }
        assert_eq!(catalog.version, version, "refusals change nothing");
        // The follower takes over, alone, at the next epoch.
        let failover = Command::ReconfigureRegion {
            region,
            epoch: route.epoch,
            leader: follower,
            followers: vec![],
        };
        catalog.apply(&failover).unwrap();
        let now = catalog.route(region).unwrap();
        assert_eq!(now.leader(), follower);
        assert!(now.followers.is_empty());
        assert_eq!(now.epoch, route.epoch + 1);
        // The same command again is stale: at most one of two racing changes wins.
        assert!(catalog.apply(&failover).is_err());
        let roles: Vec<Role> = catalog.replicas_on(route.datanode).map(|r| r.2).collect();
        assert!(roles.is_empty(), "the old leader holds nothing: {roles:?}");
    }

    #[test]
    fn a_learner_joins_only_under_the_leader_it_caught_up_from() {
        let mut catalog = catalog(3);
        let (region, route) = replicated(&mut catalog, 1, 2)[0];
        assert_eq!(route.replicas_wanted(), 2);
        let follower = route.followers.as_slice()[0];
        let all_alive = |_: u64| true;
        assert_eq!(
            catalog.choose_learner(region, all_alive),
            None,
            "it has its copies"
        );
        // Failover: the follower leads alone, and the region wants a second copy.
        catalog
            .apply(&Command::ReconfigureRegion {
                region,
                epoch: route.epoch,
                leader: follower,
                followers: vec![],
            })
            .unwrap();
        let epoch = route.epoch + 1;
        assert_eq!(
            catalog.choose_learner(region, |_| false),
            None,
            "none alive"
        );
        let learner = catalog.choose_learner(region, all_alive).unwrap();
        assert_ne!(learner.datanode, follower.datanode);
        let add = |epoch, learner| Command::AddLearner {
            region,
            epoch,
            learner,
        };
        assert!(
            catalog.apply(&add(epoch - 1, learner)).is_err(),
            "stale epoch"
        );
        assert!(
            catalog.apply(&add(epoch, follower)).is_err(),
            "the leader cannot learn"
        );
        let unknown = Replica {
            datanode: 9,
            shard: 0,
        };
        assert!(
            catalog.apply(&add(epoch, unknown)).is_err(),
            "not registered"
        );
        catalog.apply(&add(epoch, learner)).unwrap();
        let now = catalog.route(region).unwrap();
        assert_eq!(
            (now.epoch, now.learner),
            (epoch, Some(learner)),
            "epoch kept"
        );
        assert!(catalog.apply(&add(epoch, learner)).is_err(), "one learner");
        let (_, grants) = catalog.grants(learner.datanode);
        assert_eq!(grants.learns, vec![(region, epoch)]);
        let (leases, grants) = catalog.grants(follower.datanode);
        assert_eq!(leases, vec![(region, epoch)]);
        assert_eq!(grants.learners, vec![(region, learner)]);
        assert!(grants.peers.iter().any(|(id, _)| *id == learner.datanode));
        // Only its leader may make it a follower: a failover to the learner is refused.
        let mut other = catalog.clone();
        assert!(other
            .apply(&Command::ReconfigureRegion {
                region,
                epoch,
                leader: learner,
                followers: vec![],
            })
            .is_err());
        // Removal by compare-and-set, then the learner joins by a reconfiguration.
        let mut removed = catalog.clone();
        let remove = Command::RemoveLearner {
            region,
            epoch,
            learner,
        };
        removed.apply(&remove).unwrap();
        assert_eq!(removed.route(region).unwrap().learner, None);
        assert!(removed.apply(&remove).is_err(), "removed already");
        catalog
            .apply(&Command::ReconfigureRegion {
                region,
                epoch,
                leader: follower,
                followers: vec![learner],
            })
            .unwrap();
        let now = catalog.route(region).unwrap();
        assert_eq!(now.epoch, epoch + 1);
        assert_eq!(now.followers.as_slice(), &[learner]);
        // A leader whose copy lives on another shard than the route says (a learner
        // installs where a stale copy lives) is still the leader: the datanode counts.
        catalog
            .apply(&Command::ReconfigureRegion {
                region,
                epoch: epoch + 1,
                leader: Replica {
                    datanode: follower.datanode,
                    shard: 1 - follower.shard,
                },
                followers: vec![],
            })
            .unwrap();
        let now = catalog.route(region).unwrap();
        assert_eq!((now.leader(), now.epoch), (follower, epoch + 2));
        assert_eq!(now.learner, None);
        assert_eq!(
            now.replicas_wanted(),
            2,
            "the wish survives reconfigurations"
        );
    }

    #[test]
    fn followers_serialize_as_a_list_and_routes_without_them_as_before() {
        let plain = Route::new(1, 0);
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("followers"), "{json}");
        let mut route = plain;
        route.followers = Followers::from_slice(&[Replica {
            datanode: 2,
            shard: 1,
        }])
        .unwrap();
        let json = serde_json::to_string(&route).unwrap();
        assert_eq!(serde_json::from_str::<Route>(&json).unwrap(), route);
        let three = json.replace(
            r#"[{"datanode":2,"shard":1}]"#,
            r#"[{"datanode":2,"shard":1},{"datanode":3,"shard":1},{"datanode":4,"shard":1}]"#,
        );
        assert!(serde_json::from_str::<Route>(&three).is_err(), "{three}");
    }
}
