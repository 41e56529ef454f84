//! Cluster administration a frontend runs on an operator's behalf, from SQL
//! (`ADMIN migrate_region('7.0', 2)`, `ADMIN drain_datanode(2)`,
//! `ADMIN undrain_datanode(2)`: `sql::admin`) and HTTP
//! (`POST /v1/admin/migrate_region?region=7.0&to=2`,
//! `POST /v1/admin/drain_datanode?id=2`, `POST /v1/admin/undrain_datanode?id=2`).
//!
//! A migration is the metasrv's procedure (`metronome_catalog::migration`): the frontend
//! starts it with one compare-and-set command and waits until the route says it
//! completed, starting it again if a reconfiguration overtook it (a failover, or the
//! learner becoming a follower just before), at most [`MIGRATION_STARTS_MAX`] times.
//!
//! A drain is the metasrv's too (`metronome_catalog::drain`): one command marks the
//! datanode, the metasrv's repair and rebalancing move its copies, and the frontend
//! waits until no route names it.

use std::collections::BTreeSet;
use std::time::Duration;

use metronome_catalog::client::MetaError;
use metronome_catalog::lease::ALIVE_SINCE_HEARTBEAT_MAX;
use metronome_catalog::Command;
use metronome_core::data::RegionId;
use metronome_core::error::{Error, ErrorKind};
use metronome_core::rt::time;

use crate::meta::Meta;

/// How long a migration may take before the caller is told it has not completed (it
/// may still: the procedure goes on without the caller).
pub const MIGRATION_WAIT_MAX: Duration = Duration::from_secs(120);
/// How many times a migration overtaken by another change is started again.
pub const MIGRATION_STARTS_MAX: u32 = 5;
/// How long a drain may take before the caller is told it has not completed (it goes
/// on without the caller; asking again waits again).
pub const DRAIN_WAIT_MAX: Duration = Duration::from_secs(300);
/// How often the route is looked at while a migration or a drain runs.
const POLL: Duration = Duration::from_millis(100);

/// A completed migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub region: RegionId,
    /// The datanode that led the region before.
    pub from: u64,
    /// The datanode that leads it now, and its shard.
    pub to: u64,
    pub shard: u16,
    /// The epoch the region is at now.
    pub epoch: u64,
    pub took_ms: u64,
}

/// Moves the leadership of `region` to `datanode` (its copy there, or a new one caught
/// up first) and returns once it leads the region.
pub async fn migrate_region(
    meta: &Meta,
    region: RegionId,
    datanode: u64,
) -> Result<Migrated, Error> {
    let started = time::now();
    let mut from = None;
    let mut starts = 0;
    loop {
        let catalog = meta.refresh().await?;
        let route = catalog
            .route(region)
            .ok_or_else(|| Error::invalid(format!("no table has region {region}")))?;
        let from = *from.get_or_insert(route.datanode);
        if route.datanode == datanode {
            return Ok(Migrated {
                region,
                from,
                to: datanode,
                shard: route.shard,
                epoch: route.epoch,
                took_ms: time::elapsed(started).as_millis() as u64,
            });
        }
        if time::elapsed(started) >= MIGRATION_WAIT_MAX {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "region {region} has not moved to datanode {datanode} within \
                     {MIGRATION_WAIT_MAX:?}; the migration may still complete \
                     (information_schema.region_peers shows where it is)"
                ),
            ));
        }
        match route.moving_to {
            Some(to) if to.datanode == datanode => {}
            Some(to) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "region {region} is moving to datanode {} already; try again once \
                         it has",
                        to.datanode
                    ),
                ))
            }
            None if starts >= MIGRATION_STARTS_MAX => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the migration of region {region} to datanode {datanode} was \
                         overtaken or rolled back {starts} times; the region stays on \
                         datanode {}",
                        route.datanode
                    ),
                ))
            }
            None => {
                let to = catalog
                    .migration_target(region, datanode)
                    .map_err(|error| Error::invalid(error.to_string()))?;
                starts += 1;
                let command = Command::MigrateRegion {
                    region,
                    epoch: route.epoch,
                    to,
                };
                match meta.lock().await.execute(command).await {
                    Ok(()) => tracing::info!(%region, datanode, "migration started"),
                    // Refused at the epoch read: the route changed since (look again),
                    // or the migration cannot be now (too many running, a copy catching
                    // up: say why, as a refusal to try again later). What cannot ever
                    // be (an unknown datanode) was refused above.
                    Err(MetaError::Refused(reason)) => {
                        let now = meta.refresh().await?.route(region);
                        if now.is_some_and(|now| now.epoch == route.epoch) {
                            return Err(Error::new(ErrorKind::Unavailable, reason));
                        }
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        time::sleep(POLL).await;
    }
}

/// A datanode drained, or no longer draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    pub datanode: u64,
    pub draining: bool,
    /// The regions it still holds a copy of: 0 once drained.
    pub copies: u64,
    /// The regions it held a copy of when asked, each with its copies elsewhere now.
    pub moved: u64,
    pub took_ms: u64,
}

/// Marks `datanode` as draining (`drain`) and returns once it holds no copy of any
/// region and the regions it held have their copies elsewhere; or takes the mark away
/// (`!drain`) and returns at once.
pub async fn drain_datanode(meta: &Meta, datanode: u64, drain: bool) -> Result<Drained, Error> {
    let started = time::now();
    let held = meta.refresh().await?.regions_on(datanode);
    let command = Command::DrainDatanode {
        id: datanode,
        drain,
    };
    match meta.lock().await.execute(command).await {
        Ok(()) => tracing::info!(datanode, drain, "drain mark set"),
        Err(MetaError::Refused(reason)) => return Err(Error::invalid(reason)),
        Err(error) => return Err(error.into()),
    }
    loop {
        let catalog = meta.refresh().await?;
        let copies = catalog.regions_on(datanode).len() as u64;
        // A datanode that is down takes no copy: the regions want no more copies than
        // the others can hold. Down is what the metasrv leader heard fall silent; one it
        // has not heard of (a leader just elected has heard of none) counts as up.
        let silent: BTreeSet<u64> = meta
            .liveness()
            .await
            .map(|liveness| {
                liveness
                    .datanodes
                    .iter()
                    .filter(|(_, ms)| *ms > ALIVE_SINCE_HEARTBEAT_MAX.as_millis() as u64)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        let usable = |id: u64| !silent.contains(&id);
        let short = held
            .iter()
            .filter(|region| catalog.copies_missing(**region, usable) > 0)
            .count();
        let drained = Drained {
            datanode,
            draining: drain,
            copies,
            moved: if drain { held.len() as u64 } else { 0 },
            took_ms: time::elapsed(started).as_millis() as u64,
        };
        if !drain || (copies == 0 && short == 0) {
            return Ok(drained);
        }
        if time::elapsed(started) >= DRAIN_WAIT_MAX {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "datanode {datanode} still holds copies of {copies} regions, and {short} \
                     of those it held lack copies elsewhere, after {DRAIN_WAIT_MAX:?}; the \
                     metasrv goes on moving them (information_schema.region_peers shows \
                     where they are; a copy stays while every other datanode holds one or \
                     is draining), and asking again waits again"
                ),
            ));
        }
        time::sleep(POLL).await;
    }
}

/// A region named as `information_schema.region_peers` shows it (`table.number`), or
/// as its packed 64-bit id.
pub fn parse_region(text: &str) -> Result<RegionId, Error> {
    let bad = || {
        Error::invalid(format!(
            "{text:?} is not a region: write it as region_peers shows it (\"7.0\": table \
             7, region 0) or as its 64-bit id"
        ))
    };
    match text.split_once('.') {
        Some((table, number)) => Ok(RegionId::new(
            table.trim().parse().map_err(|_| bad())?,
            number.trim().parse().map_err(|_| bad())?,
        )),
        None => Ok(RegionId::from_u64(text.trim().parse().map_err(|_| bad())?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_parse_in_both_spellings() {
        assert_eq!(parse_region("7.3").unwrap(), RegionId::new(7, 3));
        let packed = RegionId::new(7, 3).as_u64().to_string();
        assert_eq!(parse_region(&packed).unwrap(), RegionId::new(7, 3));
        for bad in ["", "7.", "x.1", "7.3.1", "-1"] {
            let error = parse_region(bad).unwrap_err();
            assert!(
                error.message.contains("is not a region"),
                "{bad}: {error:?}"
            );
        }
    }
}
