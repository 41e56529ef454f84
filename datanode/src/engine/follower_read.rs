//! Follower reads (a frontend's read preference, `metronome_wire::ReadAt`). What a
//! follower may answer rests on two facts of replication: a leader acknowledges a write
//! only once every member of its configuration applied it (a follower applies a
//! shipment before it answers it), so every follower holds every acknowledged write;
//! and a member's copy at an epoch is a prefix of its leader's log at that epoch
//! (`metronome_catalog::replicas`), so its rows are the leader's.
//!
//! - A region's **only** follower answers with all it applied: each of those writes is
//!   durable on both members (the leader ships a write only once its own WAL has it),
//!   so committed; a newer configuration is a newer epoch, which the follower's
//!   admission refuses (`crate::lease::LeasedRegions`).
//! - One of **two** followers may have applied a write the other lacks, which a
//!   failover to the other would lose. The frontend first asks the leader for its commit
//!   point ([`ShardEngine::commit_point`], read index as TiKV does it, under the
//!   leader's lease); the follower waits to have applied every write up to it
//!   ([`FOLLOWER_READ_WAIT`] at most), and refuses while it applied more (the frontend
//!   asks for a newer point). It answers with all it holds, never a filtered view: a
//!   memtable keeps one version of a point, so leaving out a write past the point
//!   could lose the committed version it replaced (a review's find).
//!
//! A copy left out of the configuration, or a learner's, serves no follower read: it
//! may hold a deposed leader's writes at those sequences.

use metronome_wire::ReadAt;

use super::*;

/// How long a follower waits to have applied every write up to the commit point it was
/// given before it refuses the read (the frontend then reads at the leader, if the read
/// preference lets it): a follower that far behind is better left alone.
pub const FOLLOWER_READ_WAIT: Duration = Duration::from_secs(2);
/// How often a follower behind the commit point looks again.
const FOLLOWER_READ_POLL: Duration = Duration::from_millis(2);

impl ShardEngine {
    /// The commit point of region `id` led here: at least every write it acknowledged
    /// (the highest one, every member holding every write below it), and every write it
    /// applied (a leader applies a write once every member made it durable or it failed;
    /// after a restart or a promotion, what it holds: a follower that lacks some of it
    /// never reaches the point, and refuses the read rather than answer without it).
    pub fn commit_point(&self, id: RegionId) -> Result<u64, EngineError> {
        let regions = self.regions.borrow();
        Ok(commit_point(region(&regions, id, Need::Serving)?))
    }

    /// How far this copy of region `id` has applied its writes, all of them up to it.
    pub fn applied(&self, id: RegionId) -> Result<u64, EngineError> {
        let regions = self.regions.borrow();
        Ok(applied(region(&regions, id, Need::Serving)?))
    }

    /// Region `id`'s series at this follower (`read`, never `ReadAt::Leader`): at once
    /// if it is the region's only follower; else once it applied every write up to its
    /// leader's commit point ([`FOLLOWER_READ_WAIT`] at most), and only while it applied
    /// none past it.
    pub async fn scan_series_at_follower(
        &self,
        id: RegionId,
        request: &ScanRequest,
        read: ReadAt,
    ) -> Result<Vec<SeriesRows>, EngineError> {
        let committed = match read {
            ReadAt::Leader => unreachable!("a leader's scan is no follower read"),
            ReadAt::OnlyFollower => return self.scan_series(id, request).await,
            ReadAt::Follower { committed } => committed,
        };
        let since = metronome_core::rt::time::now();
        loop {
            let applied = self.applied(id)?;
            if applied > committed {
                return Err(EngineError::Unavailable(format!(
                    "region {id}: this copy applied writes up to {applied}, past its \
                     leader's commit point {committed}: ask for a newer one"
                )));
            }
            if applied == committed {
                break;
            }
            if metronome_core::rt::time::elapsed(since) >= FOLLOWER_READ_WAIT {
                return Err(EngineError::Unavailable(format!(
                    "region {id}: this copy applied the writes up to {applied}, its leader \
                     committed up to {committed}, and it did not catch up within \
                     {FOLLOWER_READ_WAIT:?}: read at the leader"
                )));
            }
            metronome_core::rt::time::sleep_local(FOLLOWER_READ_POLL).await;
        }
        // The scan takes its memtables and files in its first step, in this one (a shard
        // runs one task at a time): it holds exactly the writes up to `committed`.
        self.scan_series(id, request).await
    }
}

/// [`ShardEngine::commit_point`] of `region`.
fn commit_point(region: &Region) -> u64 {
    applied(region).max(region.acknowledged_max)
}

/// The sequence up to which every write `region` took is applied to its memtable (or
/// failed): below the lowest still in flight.
fn applied(region: &Region) -> u64 {
    let last = region.manifest.last_sequence;
    match region.in_flight.first() {
        Some(lowest) => {
            assert!(
                *lowest >= 1 && *lowest <= last,
                "a write in flight ({lowest}) is one the region took (up to {last})"
            );
            lowest - 1
        }
        None => last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_covers_every_acknowledged_write_however_writes_complete() {
        let mut region = super::super::region::tests::region();
        assert_eq!(commit_point(&region), 0);
        // Writes 1..=10 taken; 9 still in flight (its task not yet run) while 10 was
        // acknowledged: 10 is on every member, and 9 with it.
        region.manifest.last_sequence = 10;
        region.in_flight.insert(9);
        assert_eq!(applied(&region), 8);
        region.acknowledged_max = 10;
        assert_eq!(commit_point(&region), 10);
        // A restarted or promoted leader: what it applied, acknowledged or not.
        region.in_flight.clear();
        region.manifest.last_sequence = 12;
        region.acknowledged_max = 0;
        assert_eq!(commit_point(&region), 12);
    }
}
