//! What the cluster harness's faults wait for, read from the cluster itself: the metasrv
//! replica that leads, a region taking a datanode back as a follower, every region
//! with all its copies, or with a copy off a datanode. Each asks as a client would and changes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use metronome_core::rt::time;
use metronome_simulation::cluster::{self, client_of, metasrv_addr, raft_status};

use super::METASRVS;

/// The metasrv replica that says it leads, if one does.
pub async fn metasrv_leader() -> Option<u64> {
    for id in 1..=METASRVS {
        let client = client_of(metasrv_addr(id), Duration::from_millis(500));
        if let Some(status) = raft_status(&client).await {
            if status.state == "Leader" {
                return Some(status.node_id);
            }
        }
    }
    None
}

/// The leader of the first region seen to make `datanode` a follower after it was the
/// region's learner, watching the catalog for at most `within`.
pub async fn leader_after_catch_up(datanode: u64, within: Duration) -> Option<u64> {
    let metasrv = cluster::meta_client(METASRVS);
    let since = time::now();
    let mut learning = BTreeSet::new();
    while time::now().duration_since(since) < within {
        if let Ok(catalog) = metasrv.catalog().await {
            for (region, route) in catalog.routes() {
                if route.learner.is_some_and(|l| l.datanode == datanode) {
                    learning.insert(region);
                } else if learning.contains(&region)
                    && route.datanode != datanode
                    && route.followers.contains(datanode)
                {
                    return Some(route.datanode);
                }
            }
        }
        time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Whether every region has all the copies it wants and no learner, watching the
/// catalog for at most `within`.
pub async fn every_region_whole(within: Duration) -> bool {
    let metasrv = cluster::meta_client(METASRVS);
    let since = time::now();
    while time::now().duration_since(since) < within {
        if let Ok(catalog) = metasrv.catalog().await {
            if catalog.routes().all(|(region, route)| {
                route.learner.is_none() && catalog.copies_missing(region, |_| true) == 0
            }) {
                return true;
            }
        }
        time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits up to `within` until every region has a copy in its configuration off
/// `datanode`: true once it does (that datanode's disk may go then, losing nothing).
pub async fn held_without(datanode: u64, within: Duration) -> bool {
    let metasrv = cluster::meta_client(METASRVS);
    let since = time::now();
    while time::now().duration_since(since) < within {
        if let Ok(catalog) = metasrv.catalog().await {
            if catalog
                .routes()
                .all(|(_, route)| route.replicas().any(|copy| copy.datanode != datanode))
            {
                return true;
            }
        }
        time::sleep(Duration::from_millis(100)).await;
    }
    false
}
