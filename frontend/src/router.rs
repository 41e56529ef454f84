//! Where a frontend's region requests go, and which region a row goes to.
//!
//! [`RegionRouter`] is the frontend's one [`RegionService`]: it maps each region to the
//! datanode its catalog route names and passes the request, unchanged, to that
//! datanode's client. Routes come from the catalog the frontend already follows
//! ([`Meta`]); a region it has not seen yet makes it read the catalog again. A route is
//! remembered after its table is dropped (region ids are never reused), so that the
//! regions of a table just dropped can still be reached to be deleted. In standalone
//! there is one datanode, 0.
//!
//! [`partition`] is the one partition hash: which of a table's (or of the metric
//! layout's) N regions a row belongs to. Writers and readers must agree on it forever,
//! since a row hashed elsewhere is a row a reader of its region does not find.
//!
//! Not here: choosing a region's route (placement) is the catalog's, and the datanode
//! places a region on a shard by its route.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use metronome_catalog::{Catalog, Route, TableKind};
use metronome_core::data::RegionId;
use metronome_wire::{
    BoxFuture, ErrorKind, RegionError, RegionReply, RegionRequest, RegionService,
};

use crate::meta::Meta;

/// The partition (in `0..partitions`) of a key given as its parts: xxh3, seedless and
/// specified, of each part followed by the byte 0xff (which no UTF-8 text contains, so
/// `("ab", "c")` and `("a", "bc")` differ).
pub fn partition<'a>(parts: impl IntoIterator<Item = &'a [u8]>, partitions: usize) -> usize {
    assert!(partitions > 0, "a key needs a partition to go to");
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(part);
        hasher.update(&[0xff]);
    }
    (hasher.digest() % partitions as u64) as usize
}

/// Every region a catalog routes, with its route.
fn catalog_routes(catalog: &Catalog) -> impl Iterator<Item = (RegionId, Route)> + '_ {
    catalog.databases.values().flat_map(|database| {
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

/// The frontend's region service: each request to the datanode of its region's route.
pub struct RegionRouter {
    meta: Arc<Meta>,
    datanodes: BTreeMap<u64, Arc<dyn RegionService>>,
    /// Routes seen in the catalog, kept after their table is dropped.
    routes: RwLock<BTreeMap<RegionId, Route>>,
}

impl RegionRouter {
    /// A router over `datanodes` (by id) that follows `meta`'s catalog.
    pub fn new(meta: Arc<Meta>, datanodes: BTreeMap<u64, Arc<dyn RegionService>>) -> RegionRouter {
        assert!(
            !datanodes.is_empty(),
            "a router needs a datanode to route to"
        );
        RegionRouter {
            meta,
            datanodes,
            routes: RwLock::new(BTreeMap::new()),
        }
    }

    /// The route of `region`, reading the catalog again if it is not known yet.
    fn route(&self, region: RegionId) -> Result<Route, RegionError> {
        if let Some(route) = self.routes.read().expect("routes").get(&region) {
            return Ok(*route);
        }
        let catalog = self.meta.catalog();
        let mut routes = self.routes.write().expect("routes");
        routes.extend(catalog_routes(&catalog));
        routes.get(&region).copied().ok_or_else(|| {
            RegionError::new(
                ErrorKind::NotFound,
                format!("region {region} has no route in the catalog"),
            )
        })
    }

    /// The client of the datanode serving `region`.
    fn datanode(&self, region: RegionId) -> Result<&dyn RegionService, RegionError> {
        let route = self.route(region)?;
        self.datanodes
            .get(&route.datanode)
            .map(|client| client.as_ref())
            .ok_or_else(|| {
                RegionError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "region {region} is on datanode {}, which this frontend cannot reach",
                        route.datanode
                    ),
                )
            })
    }
}

impl RegionService for RegionRouter {
    fn call(&self, request: RegionRequest) -> BoxFuture<'_, Result<RegionReply, RegionError>> {
        Box::pin(async move {
            if let Some(region) = request.region() {
                return self.datanode(region)?.call(request).await;
            }
            // A request of no region (shard figures) is every datanode's, together.
            let mut all = Vec::new();
            for client in self.datanodes.values() {
                match client.call(request.clone()).await? {
                    RegionReply::ShardStats(stats) => all.extend(stats),
                    other => {
                        return Err(RegionError::new(
                            ErrorKind::Internal,
                            format!("{request:?} was answered with {other:?}"),
                        ))
                    }
                }
            }
            Ok(RegionReply::ShardStats(all))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_of_a_key_never_changes() {
        // Rows already written live where these say: a change here hides them.
        let parts =
            |key: &[&'static str]| key.iter().map(|part| part.as_bytes()).collect::<Vec<_>>();
        let golden: Vec<usize> = [
            &["a"][..],
            &["eu", "host-1"],
            &["__name__", "up", "job", "node"],
            &[],
        ]
        .iter()
        .map(|key| partition(parts(key), 1_000_003))
        .collect();
        assert_eq!(golden, GOLDEN);
        // Parts are delimited: moving a byte across a boundary is another key.
        assert_ne!(
            partition(parts(&["ab", "c"]), 1_000_003),
            partition(parts(&["a", "bc"]), 1_000_003)
        );
    }

    const GOLDEN: [usize; 4] = [898_281, 926_547, 579_800, 778_394];
}
