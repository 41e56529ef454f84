//! Where a frontend's region requests go, and which region a row goes to.
//!
//! [`RegionRouter`] is the frontend's one [`RegionService`]: it maps each region to the
//! datanode its catalog route names and passes the request, unchanged, to that
//! datanode's client (a scan, the read preference permitting, to one of its followers). Routes come from the catalog the frontend already follows
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

use metronome_catalog::{DatanodeInfo, Route};
use metronome_core::config::ReadPreference;
use metronome_core::data::RegionId;
use metronome_core::rt::rand;
use metronome_wire::{
    BoxFuture, ErrorKind, ReadAt, RegionError, RegionReply, RegionRequest, RegionService,
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

/// How a frontend reaches a datanode that registered at an address (a TCP client in a
/// cluster); standalone has none, its one datanode being given at the start.
pub type Connect = Arc<dyn Fn(u64, &DatanodeInfo) -> Arc<dyn RegionService> + Send + Sync>;

/// A datanode's client, and the address it was dialed at (`None`: given at the start).
type Dialed = (Option<String>, Arc<dyn RegionService>);

/// How many times a read at one of two followers asks its leader for a commit point,
/// while the follower it asks has applied writes past the last one.
const FOLLOWER_READ_TRIES: usize = 3;
/// What a follower says when it applied writes past the commit point it was given
/// (`metronome_datanode::engine::follower_read`).
const PAST_THE_POINT: &str = "past its leader's commit point";

/// How many configurations one schema change follows before it gives up (each round
/// is a region's configuration that changed while the change was made).
const CHANGE_ROUNDS_MAX: usize = 4;

/// The frontend's region service: each request to the datanode of its region's route.
pub struct RegionRouter {
    meta: Arc<Meta>,
    /// Clients by datanode id: those given at the start (no address: they never change),
    /// and those dialed since, with the address they were dialed at.
    datanodes: RwLock<BTreeMap<u64, Dialed>>,
    connect: Option<Connect>,
    /// Where scans of a replicated region go ([`RegionRouter::read_at_follower`]).
    read_preference: ReadPreference,
}

impl RegionRouter {
    /// A router over `datanodes` (by id) that follows `meta`'s catalog, reaching the
    /// datanodes that register later through `connect`.
    pub fn new(
        meta: Arc<Meta>,
        datanodes: BTreeMap<u64, Arc<dyn RegionService>>,
        connect: Option<Connect>,
    ) -> RegionRouter {
        assert!(
            !datanodes.is_empty() || connect.is_some(),
            "a router needs a datanode to route to, or a way to reach one"
        );
        RegionRouter {
            meta,
            datanodes: RwLock::new(
                datanodes
                    .into_iter()
                    .map(|(id, client)| (id, (None, client)))
                    .collect(),
            ),
            connect,
            read_preference: ReadPreference::Leader,
        }
    }

    /// The router, its scans of replicated regions read where `preference` says.
    pub fn reading_at(mut self, preference: ReadPreference) -> RegionRouter {
        self.read_preference = preference;
        self
    }

    /// A scan of `region` at one of its followers (`metronome_datanode::engine::
    /// follower_read`): its only follower as it stands; one of two, chosen at random,
    /// exactly as of the leader's commit point, which the leader tells under its lease
    /// at the route's epoch (asked again, up to [`FOLLOWER_READ_TRIES`] times, while the
    /// follower has applied writes past it).
    async fn read_at_follower(
        &self,
        region: RegionId,
        route: &Route,
        mut request: RegionRequest,
    ) -> Result<RegionReply, RegionError> {
        let followers = route.followers.as_slice();
        if followers.is_empty() {
            return Err(RegionError::new(
                ErrorKind::Unavailable,
                format!(
                    "region {region} has no follower to read at (read_preference = \
                     follower): it has one copy, or its leader leads alone until a new copy \
                     caught up"
                ),
            ));
        }
        let at = |request: &mut RegionRequest, read: ReadAt| {
            if let RegionRequest::Scan {
                epoch, read: at, ..
            } = request
            {
                *epoch = route.epoch;
                *at = read;
            }
        };
        if let [only] = followers {
            at(&mut request, ReadAt::OnlyFollower);
            return self.client(only.datanode).await?.call(request).await;
        }
        let leader = self.client(route.datanode).await?;
        let mut tries = 0;
        loop {
            tries += 1;
            let asked = RegionRequest::CommitPoint {
                region,
                epoch: route.epoch,
            };
            let committed = match leader.call(asked).await? {
                RegionReply::CommitPoint(sequence) => sequence,
                other => {
                    return Err(RegionError::new(
                        ErrorKind::Internal,
                        format!("region {region}'s leader answered a commit point with {other:?}"),
                    ))
                }
            };
            let follower = followers[rand::gen_range(0..followers.len())];
            let mut asking = request.clone();
            at(&mut asking, ReadAt::Follower { committed });
            match self.client(follower.datanode).await?.call(asking).await {
                Err(error)
                    if tries < FOLLOWER_READ_TRIES && error.message.contains(PAST_THE_POINT) =>
                {
                    continue
                }
                outcome => return outcome,
            }
        }
    }

    /// The route of `region`, fetching the catalog from the metasrv if this frontend has
    /// never seen it (another frontend created its table). Routes of dropped tables are
    /// kept ([`Meta::route`]).
    async fn route(&self, region: RegionId) -> Result<Route, RegionError> {
        if let Some(route) = self.meta.route(region) {
            return Ok(route);
        }
        self.meta.refresh().await.map_err(unavailable)?;
        self.meta.route(region).ok_or_else(|| {
            RegionError::new(
                ErrorKind::NotFound,
                format!("region {region} has no route in the catalog"),
            )
        })
    }

    /// The client of datanode `id`: the one given at the start, or one dialed at the
    /// address the catalog has for it (again if the datanode registered a new one).
    async fn client(&self, id: u64) -> Result<Arc<dyn RegionService>, RegionError> {
        let unreachable = |why: &str| {
            RegionError::new(
                ErrorKind::Unavailable,
                format!("datanode {id} {why}, so this frontend cannot reach it"),
            )
        };
        let cached = self.datanodes.read().expect("datanodes").get(&id).cloned();
        let Some(connect) = &self.connect else {
            return cached
                .map(|(_, client)| client)
                .ok_or_else(|| unreachable("is not this process's"));
        };
        let mut catalog = self.meta.catalog();
        if !catalog.datanodes.contains_key(&id) {
            catalog = self.meta.refresh().await.map_err(unavailable)?;
        }
        let info = catalog
            .datanodes
            .get(&id)
            .ok_or_else(|| unreachable("has not registered"))?;
        match cached {
            Some((Some(addr), client)) if addr == info.addr => Ok(client),
            Some((None, client)) => Ok(client),
            _ => {
                let client = connect(id, info);
                self.datanodes
                    .write()
                    .expect("datanodes")
                    .insert(id, (Some(info.addr.clone()), client.clone()));
                Ok(client)
            }
        }
    }

    /// Asks every datanode this frontend can reach (those it has, and the registered
    /// ones) `request`, one that names no region, all at once and each for at most
    /// `wait`: the replies of those that answered, with their ids. One that did not is
    /// logged and left out: figures for monitoring must not wait on a datanode that is
    /// gone.
    pub async fn ask_every(
        &self,
        request: RegionRequest,
        wait: std::time::Duration,
    ) -> Vec<(u64, RegionReply)> {
        assert!(request.region().is_none(), "{request:?} names a region");
        let mut ids: Vec<u64> = self
            .datanodes
            .read()
            .expect("datanodes")
            .keys()
            .copied()
            .collect();
        if self.connect.is_some() {
            ids.extend(self.meta.catalog().datanodes.keys().copied());
        }
        ids.sort_unstable();
        ids.dedup();
        let asked = ids.into_iter().map(|id| {
            let request = request.clone();
            async move {
                let client = self.client(id).await?;
                match metronome_core::rt::time::timeout(wait, client.call(request)).await {
                    Ok(reply) => reply,
                    Err(_) => Err(RegionError::new(
                        ErrorKind::Timeout,
                        format!("datanode {id} did not answer within {wait:?}"),
                    )),
                }
                .map(|reply| (id, reply))
            }
        });
        let mut replies = Vec::new();
        for outcome in futures::future::join_all(asked).await {
            match outcome {
                Ok(reply) => replies.push(reply),
                Err(error) => tracing::warn!(%error, "a datanode's figures are left out"),
            }
        }
        replies
    }
}

/// Whether `request` changes what every copy of a region must have alike: its existence
/// and its schema. Writes reach the followers through their leader.
fn replicated_change(request: &RegionRequest) -> bool {
    matches!(
        request,
        RegionRequest::Create { .. }
            | RegionRequest::Drop { .. }
            | RegionRequest::AddTags { .. }
            | RegionRequest::AddField { .. }
            | RegionRequest::SetTtl { .. }
    )
}

impl RegionRouter {
    /// Makes a replicated change on every copy of `route`, and a schema change again on
    /// every copy of each configuration that followed while it was made: a copy the
    /// route did not name yet (a learner added, a region handed over) may have missed
    /// it. A leader changing its configuration holds schema changes back until it is
    /// done (`metronome_datanode::catch_up`), so once the change is made on the old
    /// copies, the catalog read after names the new ones.
    async fn change_everywhere(
        &self,
        region: RegionId,
        mut route: Route,
        request: RegionRequest,
    ) -> Result<RegionReply, RegionError> {
        let again = matches!(
            request,
            RegionRequest::AddTags { .. }
                | RegionRequest::AddField { .. }
                | RegionRequest::SetTtl { .. }
        );
        for _ in 0..CHANGE_ROUNDS_MAX {
            let reply = match self.change_every_replica(route, request.clone()).await {
                Ok(reply) => reply,
                // A copy that refuses may belong to a configuration this frontend has not
                // seen yet (a follower removed, a datanode back on an empty disk), and the
                // catalog watch may lag: read the catalog at once, and go again on the
                // route as it is now (the simulation found a frontend stuck for good on a
                // removed follower that answered NotFound).
                Err(error)
                    if self.connect.is_some()
                        && matches!(
                            error.kind,
                            ErrorKind::NotFound | ErrorKind::WrongRoute | ErrorKind::Unavailable
                        ) =>
                {
                    self.meta.refresh().await.map_err(unavailable)?;
                    let now = self.route(region).await?;
                    if now == route {
                        return Err(error);
                    }
                    route = now;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if !again || self.connect.is_none() {
                return Ok(reply);
            }
            self.meta.refresh().await.map_err(unavailable)?;
            let now = self.route(region).await?;
            if (now.epoch, now.learner) == (route.epoch, route.learner) {
                return Ok(reply);
            }
            route = now;
        }
        Err(RegionError::new(
            ErrorKind::Unavailable,
            format!(
                "region {region}'s configuration changed {CHANGE_ROUNDS_MAX} times while \
                 its schema changed; try again"
            ),
        ))
    }

    /// Makes a region's creation or schema change on every copy: the followers first,
    /// then the leader, so that no write the leader takes with the new columns can reach
    /// a follower without them. A follower that cannot be reached fails the change
    /// (except a drop: a follower's leftover copy holds nothing anyone reads), and the
    /// caller tries again; a leader that ships to a follower lacking the region or its
    /// columns has it removed from the configuration.
    async fn change_every_replica(
        &self,
        route: Route,
        request: RegionRequest,
    ) -> Result<RegionReply, RegionError> {
        let drop = matches!(request, RegionRequest::Drop { .. });
        // A learner's copy too, though it may have none yet: one that misses a change
        // takes the leader's copy again when the change's first write reaches it.
        if let Some(learner) = route.learner {
            let mut copy = request.clone();
            if let RegionRequest::Create { shard, .. } = &mut copy {
                *shard = learner.shard;
            }
            let outcome = match self.client(learner.datanode).await {
                Ok(client) => client.call(copy).await,
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                tracing::info!(learner = learner.datanode, %error, "a learner missed a change");
            }
        }
        for follower in route.followers.as_slice() {
            let mut copy = request.clone();
            if let RegionRequest::Create { shard, .. } = &mut copy {
                *shard = follower.shard;
            }
            let outcome = match self.client(follower.datanode).await {
                Ok(client) => client.call(copy).await,
                Err(error) => Err(error),
            };
            match outcome {
                Err(error) if drop => tracing::warn!(
                    follower = follower.datanode,
                    %error,
                    "a follower's copy of a dropped region stays"
                ),
                Err(error) => return Err(error),
                Ok(_) => {}
            }
        }
        let mut request = request;
        if let RegionRequest::Create { shard, .. } = &mut request {
            *shard = route.shard;
        }
        self.client(route.datanode).await?.call(request).await
    }
}

fn unavailable(error: impl std::fmt::Display) -> RegionError {
    RegionError::new(
        ErrorKind::Unavailable,
        format!("cannot read the catalog from the metasrv: {error}"),
    )
}

impl RegionService for RegionRouter {
    fn call(&self, mut request: RegionRequest) -> BoxFuture<'_, Result<RegionReply, RegionError>> {
        Box::pin(async move {
            if let Some(region) = request.region() {
                let route = self.route(region).await?;
                if (self.connect.is_some()
                    || !route.followers.is_empty()
                    || route.learner.is_some())
                    && replicated_change(&request)
                {
                    return self.change_everywhere(region, route, request).await;
                }
                // A scan may read at a follower, as the read preference says; one that
                // prefers a follower reads at the leader if the follower's read fails.
                let at_follower = matches!(
                    request,
                    RegionRequest::Scan {
                        read: ReadAt::Leader,
                        ..
                    }
                ) && (self.read_preference == ReadPreference::Follower
                    || (self.read_preference == ReadPreference::FollowerPreferred
                        && !route.followers.is_empty()));
                if at_follower {
                    match self.read_at_follower(region, &route, request.clone()).await {
                        Err(error) if self.read_preference == ReadPreference::FollowerPreferred => {
                            tracing::debug!(%region, %error, "a follower read failed; at the leader");
                        }
                        // Only at a follower: once more if the route changed meanwhile.
                        Err(error) if self.connect.is_some() && error.kind.is_retryable() => {
                            self.meta.refresh().await.map_err(unavailable)?;
                            let now = self.route(region).await?;
                            if now == route {
                                return Err(error);
                            }
                            return self.read_at_follower(region, &now, request).await;
                        }
                        outcome => return outcome,
                    }
                }
                // A datanode of a cluster serves writes and scans under a lease at the
                // route's epoch: the request names the epoch it follows.
                request.set_epoch(route.epoch);
                let client = self.client(route.datanode).await?;
                // A request that cannot reach its datanode, or finds the region gone, may
                // follow a route that changed (a datanode restarted at a new address, a
                // region moved): the catalog is read again at once rather than at the next
                // refresh, and the request goes once more if the route or the address
                // changed. A write may go twice this way (the first datanode may have made
                // it durable before the connection broke): its samples land on the same
                // (series, timestamp) with the same values, which a region keeps once.
                // Only a cluster keeps the copy (a write's batch is shared, not copied);
                // standalone's one datanode never moves.
                let retry = self.connect.is_some().then(|| request.clone());
                let error = match client.call(request).await {
                    Err(error)
                        if self.connect.is_some()
                            && matches!(
                                error.kind,
                                ErrorKind::Unavailable
                                    | ErrorKind::WrongRoute
                                    | ErrorKind::NotFound
                            ) =>
                    {
                        error
                    }
                    outcome => return outcome,
                };
                let addr = |catalog: &metronome_catalog::Catalog, id: u64| {
                    catalog.datanodes.get(&id).map(|info| info.addr.clone())
                };
                let before = addr(&self.meta.catalog(), route.datanode);
                let Ok(catalog) = self.meta.refresh().await else {
                    return Err(error);
                };
                let moved = self
                    .meta
                    .route(region)
                    .filter(|now| *now != route || addr(&catalog, now.datanode) != before);
                return match (moved, retry) {
                    (Some(now), Some(mut request)) => {
                        request.set_epoch(now.epoch);
                        self.client(now.datanode).await?.call(request).await
                    }
                    _ => Err(error),
                };
            }
            // A request of no region (shard figures) is each datanode's: asked of each,
            // answered with which datanode said what (`RegionRouter::ask_every`).
            Err(RegionError::new(
                ErrorKind::Internal,
                format!("{request:?} names no region: ask each datanode (ask_every)"),
            ))
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
