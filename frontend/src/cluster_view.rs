//! The cluster as this frontend sees it: each metasrv replica with the raft state it
//! reports (asked of every replica, not the leader), each registered datanode with its
//! liveness (from the metasrv leader's heartbeats), and every region with its route
//! and, when asked, how far behind each copy is (from the region's leader). One
//! view in two forms: the JSON of `GET /v1/cluster` and the SQL tables
//! `information_schema.cluster_info` and `information_schema.region_peers` (GreptimeDB's
//! names, `sql/information_schema.rs`).
//!
//! Frontends do not register with the metasrv, so the view lists none of them.

use std::collections::{BTreeMap, BTreeSet};

use metronome_catalog::client::MetaError;
use metronome_catalog::replicas::Replica;
use metronome_catalog::request::RaftStatus;
use metronome_catalog::{Catalog, TableKind};
use metronome_core::data::RegionId;
use metronome_wire::{CopyLag, Replication};
use serde_json::{json, Value as Json};

use crate::datanode_figures::DatanodeFigures;
use crate::meta::Meta;
use metronome_catalog::lease::ALIVE_SINCE_HEARTBEAT_MAX;

/// A metasrv replica: the raft state it reported, or why it did not answer.
#[derive(Debug, Clone)]
pub struct MetasrvView {
    pub addr: String,
    pub status: Result<RaftStatus, String>,
}

#[derive(Debug, Clone)]
pub struct DatanodeView {
    pub id: u64,
    pub addr: String,
    pub shards: u16,
    /// Since its last heartbeat reached the metasrv leader; `None` if it never did since
    /// that leader was elected.
    pub since_heartbeat_ms: Option<u64>,
    /// An operator is moving its copies away (`ADMIN drain_datanode`).
    pub draining: bool,
}

impl DatanodeView {
    pub fn alive(&self) -> bool {
        // The bound the metasrv places regions by: a datanode that has not heartbeated
        // within a lease holds no region.
        self.since_heartbeat_ms
            .is_some_and(|ms| ms <= ALIVE_SINCE_HEARTBEAT_MAX.as_millis() as u64)
    }
}

/// A region, the datanode shard that leads it, and its followers.
#[derive(Debug, Clone)]
pub struct RegionView {
    pub database: String,
    /// The table's name; `<metrics>` for the database's shared metric regions.
    pub table: String,
    pub region: RegionId,
    pub datanode: u64,
    pub shard: u16,
    /// The route's epoch, at which the datanode holds the region's lease.
    pub epoch: u64,
    /// The other copies, which take the leader's writes.
    pub followers: Vec<Replica>,
    /// A copy catching up to become a follower.
    pub learner: Option<Replica>,
}

#[derive(Debug, Clone)]
pub struct ClusterView {
    pub metasrvs: Vec<MetasrvView>,
    pub datanodes: Vec<DatanodeView>,
    pub regions: Vec<RegionView>,
    /// The datanodes that told how far behind the copies of the regions they lead are
    /// ([`ClusterView::with_replication`]); none unless asked.
    pub answered: BTreeSet<u64>,
    /// What they told, by (region, copy's datanode), for the regions they lead at the
    /// epoch of the view's route.
    pub lags: BTreeMap<(RegionId, u64), CopyLag>,
    /// The copies their datanodes name quarantined, as (region, datanode): found
    /// damaged as the datanode started, serving nothing (`metronome_metasrv::quarantine`).
    pub quarantined: BTreeSet<(RegionId, u64)>,
}

impl ClusterView {
    /// Asks the metasrv: its leader for the datanodes' liveness (an error if no leader
    /// answers), every replica for its raft state; the routes are this frontend's
    /// catalog's.
    /// With `datanodes`, each leader is asked how far behind its copies are too.
    pub async fn gather(
        meta: &Meta,
        datanodes: Option<&dyn DatanodeFigures>,
    ) -> Result<ClusterView, MetaError> {
        let liveness = meta.liveness().await?;
        let replicas = meta.raft_statuses().await;
        let mut view = ClusterView::of(&meta.catalog(), replicas, &liveness.datanodes);
        view.quarantined = liveness
            .quarantined
            .into_iter()
            .map(|(datanode, region)| (region, datanode))
            .collect();
        Ok(match datanodes {
            Some(datanodes) => view.with_replication(datanodes.replication().await),
            None => view,
        })
    }

    /// The view with what the datanodes told of the copies of the regions they lead
    /// (`(datanode, figures)`): a copy's figures count only from the datanode the view's
    /// route names as the region's leader, at the route's epoch (a datanode that led it
    /// before a failover may still hold writes queued for an older configuration).
    pub fn with_replication(mut self, figures: Vec<(u64, Replication)>) -> ClusterView {
        let routes: BTreeMap<RegionId, (u64, u64)> = self
            .regions
            .iter()
            .map(|r| (r.region, (r.datanode, r.epoch)))
            .collect();
        for (datanode, figures) in figures {
            self.answered.insert(datanode);
            for lag in figures.copies {
                if routes.get(&lag.region) == Some(&(datanode, lag.epoch)) {
                    self.lags.insert((lag.region, lag.datanode), lag);
                }
            }
        }
        self
    }

    /// How far behind `region`'s copy on `datanode` is, if its leader told: none for the
    /// leader's own copy.
    pub fn lag(&self, region: &RegionView, datanode: u64) -> Option<CopyLag> {
        if datanode == region.datanode {
            return self.answered.contains(&datanode).then_some(CopyLag {
                region: region.region,
                epoch: region.epoch,
                datanode,
                shard: region.shard,
                learner: false,
                writes: 0,
                bytes: 0,
                oldest_ms: 0,
            });
        }
        self.lags.get(&(region.region, datanode)).cloned()
    }

    /// The view from the catalog, the replicas' raft states (by address) and the leader's
    /// liveness ((datanode, milliseconds since its last heartbeat)).
    pub fn of(
        catalog: &Catalog,
        replicas: Vec<(String, Result<RaftStatus, MetaError>)>,
        liveness: &[(u64, u64)],
    ) -> ClusterView {
        let since: BTreeMap<u64, u64> = liveness.iter().copied().collect();
        let metasrvs = replicas
            .into_iter()
            .map(|(addr, status)| MetasrvView {
                addr,
                status: status.map_err(|error| error.to_string()),
            })
            .collect();
        let datanodes = catalog
            .datanodes
            .iter()
            .map(|(id, info)| DatanodeView {
                id: *id,
                addr: info.addr.clone(),
                shards: info.shards,
                since_heartbeat_ms: since.get(id).copied(),
                draining: info.draining,
            })
            .collect();
        let mut regions = Vec::new();
        for (database_name, database) in &catalog.databases {
            let metric_regions = database.metrics.iter().flat_map(|metrics| {
                metrics
                    .regions
                    .iter()
                    .map(|region| ("<metrics>".to_string(), region))
            });
            let table_regions = database.tables.values().flat_map(|table| {
                let regions = match &table.kind {
                    TableKind::Regular { regions, .. } => regions.as_slice(),
                    TableKind::Metric { .. } => &[],
                };
                regions
                    .iter()
                    .map(move |region| (table.name.clone(), region))
            });
            for (table, (region, route)) in metric_regions.chain(table_regions) {
                regions.push(RegionView {
                    database: database_name.clone(),
                    table,
                    region: *region,
                    datanode: route.datanode,
                    shard: route.shard,
                    epoch: route.epoch,
                    followers: route.followers.as_slice().to_vec(),
                    learner: route.learner,
                });
            }
        }
        ClusterView {
            metasrvs,
            datanodes,
            regions,
            answered: BTreeSet::new(),
            lags: BTreeMap::new(),
            quarantined: BTreeSet::new(),
        }
    }

    /// The datanode a region's route names, if it registered.
    pub fn datanode(&self, id: u64) -> Option<&DatanodeView> {
        self.datanodes.iter().find(|datanode| datanode.id == id)
    }

    /// The document `GET /v1/cluster` answers.
    pub fn to_json(&self) -> Json {
        let mut nodes = Vec::new();
        for replica in &self.metasrvs {
            nodes.push(match &replica.status {
                Ok(status) => json!({
                    "role": "metasrv",
                    "id": status.node_id,
                    "addr": replica.addr,
                    "alive": true,
                    "leader": status.state == "Leader",
                    "state": status.state,
                    "term": status.term,
                    "leader_id": status.leader,
                    "last_log_index": status.last_log_index,
                    "last_applied_index": status.last_applied_index,
                    "catalog_version": status.catalog_version,
                    "voters": status.voters,
                }),
                Err(error) => json!({
                    "role": "metasrv",
                    "addr": replica.addr,
                    "alive": false,
                    "leader": false,
                    "error": error,
                }),
            });
        }
        for datanode in &self.datanodes {
            nodes.push(json!({
                "role": "datanode",
                "id": datanode.id,
                "addr": datanode.addr,
                "shards": datanode.shards,
                "alive": datanode.alive(),
                "since_heartbeat_ms": datanode.since_heartbeat_ms,
                "draining": datanode.draining,
            }));
        }
        let regions: Vec<Json> = self
            .regions
            .iter()
            .map(|region| {
                json!({
                    "table": format!("{}.{}", region.database, region.table),
                    "region": region.region.to_string(),
                    "leader": region.datanode,
                    "shard": region.shard,
                    "followers": region
                        .followers
                        .iter()
                        .map(|f| self.copy_json(region, *f))
                        .collect::<Vec<Json>>(),
                    "learner": region.learner.map(|l| self.copy_json(region, l)),
                    "epoch": region.epoch,
                })
            })
            .collect();
        json!({"nodes": nodes, "regions": regions})
    }

    /// A follower or learner of `region`, with its lag if its leader told it.
    fn copy_json(&self, region: &RegionView, copy: Replica) -> Json {
        let lag = self
            .lag(region, copy.datanode)
            .map(|lag| json!({"writes": lag.writes, "bytes": lag.bytes, "ms": lag.oldest_ms}));
        let quarantined = self.quarantined.contains(&(region.region, copy.datanode));
        json!({
            "datanode": copy.datanode,
            "shard": copy.shard,
            "lag": lag,
            "quarantined": quarantined,
        })
    }
}

/// A catalog for tests: `datanodes` registered (one shard each, at `10.0.0.<id>:4100`)
/// and `regions` metric regions placed over them with `replicas` copies each.
#[cfg(test)]
pub(crate) fn test_catalog(datanodes: u64, regions: u32, replicas: u8) -> Catalog {
    use metronome_catalog::{Command, DEFAULT_DATABASE};
    let mut catalog = Catalog::default();
    for id in 1..=datanodes {
        let register = Command::RegisterDatanode {
            id,
            addr: format!("10.0.0.{id}:4100"),
            shards: 1,
            incarnation: 0,
        };
        catalog.apply(&register).unwrap();
    }
    let create = Command::CreateMetricRegions {
        database: DEFAULT_DATABASE.to_string(),
        routes: catalog.place_among(regions, None).unwrap(),
        replicas,
    };
    catalog.apply(&create).unwrap();
    catalog
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_lag_counts_only_from_its_region_leader_at_the_route_epoch() {
        let catalog = test_catalog(3, 1, 2);
        let (region, route) = catalog.routes().next().unwrap();
        let follower = route.followers.as_slice()[0].datanode;
        let stranger = (1..=3)
            .find(|d| *d != route.datanode && *d != follower)
            .unwrap();
        let lag = |epoch, writes| CopyLag {
            region,
            epoch,
            datanode: follower,
            shard: 0,
            learner: false,
            writes,
            bytes: writes,
            oldest_ms: writes,
        };
        let figures = |copies| Replication {
            copies,
            ..Replication::default()
        };
        let view = ClusterView::of(&catalog, Vec::new(), &[]);
        let of = |view: &ClusterView, datanode| view.lag(&view.regions[0], datanode);
        // Nothing asked: nothing known, the leader's own copy included.
        assert_eq!(of(&view, route.datanode), None);
        assert_eq!(of(&view, follower), None);
        // The leader at an older epoch (before a failover) and another datanode do not
        // speak for the region; its leader at the route's epoch does.
        let view = view.with_replication(vec![
            (route.datanode, figures(vec![lag(route.epoch - 1, 70)])),
            (stranger, figures(vec![lag(route.epoch, 80)])),
        ]);
        assert_eq!(of(&view, follower), None);
        assert_eq!(of(&view, route.datanode).map(|l| l.writes), Some(0));
        let view =
            view.with_replication(vec![(route.datanode, figures(vec![lag(route.epoch, 9)]))]);
        assert_eq!(of(&view, follower), Some(lag(route.epoch, 9)));
        let mut view = view;
        view.quarantined.insert((region, follower));
        let document = view.to_json();
        assert_eq!(
            document["regions"][0]["followers"][0]["lag"],
            json!({"writes": 9, "bytes": 9, "ms": 9}),
            "{document}"
        );
        assert_eq!(
            document["regions"][0]["followers"][0]["quarantined"], true,
            "{document}"
        );
    }
}
