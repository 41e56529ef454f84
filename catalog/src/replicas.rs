//! A region's configuration (PacificA's): its leader, its followers and the epoch they
//! hold it at. The metasrv is the configuration manager: a route's replicas are chosen
//! when the region is created ([`Catalog::choose_followers`]) and change only by
//! compare-and-set on the epoch ([`Command::ReconfigureRegion`]), which gives the route
//! the next epoch: it keeps only members, and a new leader starts alone. Plain code over the catalog, like `Catalog::apply`.
//!
//! The rule that makes a failover lose nothing: a leader acknowledges a write only once
//! it is durable on every member of the configuration it writes under, so any member of
//! that configuration holds every acknowledged write. A reconfiguration therefore only
//! keeps members of the current configuration (it removes followers, or promotes one);
//! a new member must first catch up from the leader, which is not built yet.

use std::collections::BTreeMap;

use metronome_core::data::RegionId;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogError, TableKind};
use crate::lease::Grant;
use crate::placement::Route;

/// Copies of a region beyond its leader's.
pub const FOLLOWERS_MAX: usize = 2;
/// Copies of a region, the leader's included: a table's `replicas` option.
pub const REPLICAS_MAX: u8 = FOLLOWERS_MAX as u8 + 1;

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

    /// The leader, then the followers.
    pub fn replicas(&self) -> impl Iterator<Item = Replica> + '_ {
        std::iter::once(self.leader()).chain(self.followers.as_slice().iter().copied())
    }
}

/// What a datanode does for a region it is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Takes writes and scans, and ships each write to the followers.
    Leader,
    /// Takes the leader's writes, in order, at the route's epoch.
    Follower,
}

/// What a heartbeat's reply tells a datanode about replication, beside its leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationGrants {
    /// The regions it holds a follower's copy of, at their epochs: it takes their
    /// leaders' writes at those epochs only.
    pub follows: Vec<Grant>,
    /// The followers of the regions it leads (at the epochs of its leases) that have any.
    pub followers: Vec<(RegionId, Vec<Replica>)>,
    /// Where those followers' datanodes listen.
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
            }
        }
        replication.peers = peers
            .into_iter()
            .filter_map(|id| self.datanodes.get(&id).map(|info| (id, info.addr.clone())))
            .collect();
        (leases, replication)
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
                let Some((&datanode, info)) = self
                    .datanodes
                    .iter()
                    .filter(|(id, _)| {
                        **id != leader.datanode && members.iter().all(|m| m.datanode != **id)
                    })
                    .min_by_key(|(id, _)| (per_datanode(**id), **id))
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
        let invalid = |reason: String| CatalogError::Invalid {
            what: format!("reconfiguration of region {region}"),
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
        let current: Vec<Replica> = route.replicas().collect();
        let mut next = vec![leader];
        next.extend_from_slice(followers);
        for (i, member) in next.iter().enumerate() {
            if !current.contains(member) {
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
        let followers = Followers::from_slice(followers)
            .ok_or_else(|| invalid(format!("at most {FOLLOWERS_MAX} followers")))?;
        *route = Route {
            datanode: leader.datanode,
            shard: leader.shard,
            epoch: epoch + 1,
            followers,
        };
        assert!(
            route.replicas().all(|r| current.contains(&r)),
            "region {region}: a reconfiguration keeps only members"
        );
        Ok(())
    }

    fn route_mut(&mut self, region: RegionId) -> Option<&mut Route> {
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
    use crate::catalog::{Command, DEFAULT_DATABASE};

    fn catalog(datanodes: u64) -> Catalog {
        let mut catalog = Catalog::default();
        for id in 1..=datanodes {
            catalog
                .apply(&Command::RegisterDatanode {
                    id,
                    addr: format!("10.0.0.{id}:4100"),
                    shards: 2,
                })
                .unwrap();
        }
        catalog
    }

    fn replicated(catalog: &mut Catalog, regions: u32, replicas: u8) -> Vec<(RegionId, Route)> {
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
