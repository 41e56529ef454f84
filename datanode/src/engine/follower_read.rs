//! Follower reads, as TiKV's and Raft's read index does them: a frontend that prefers a
//! follower first asks the region's leader for its commit point
//! ([`ShardEngine::commit_point`], under the leader's lease), then asks a follower for
//! the region's rows as of that point ([`ShardEngine::scan_series_committed`]). The
//! follower answers once it has applied every write up to the commit point, with the
//! rows of those writes only: what the leader would have answered when it told its
//! commit point, read off the leader's core.
//!
//! Why that is the leader's answer: the commit point is at least the highest write the
//! leader acknowledged, which every member made durable, and every write below it with
//! it (a member takes writes in sequence order) — so an acknowledged write is always in
//! a follower's answer, however the leader's tasks completed them (out of order: the
//! simulation found a read missing a write acknowledged a moment before, when the point
//! was the leader's applied prefix alone). And a member's copy at an epoch is a prefix of
//! its leader's log at that epoch (`metronome_catalog::replicas`), so its rows of those
//! writes are the leader's. The follower must be a member at the
//! epoch the frontend's route names, under which the leader told the point
//! (`crate::lease::LeasedRegions`); a copy left out of the configuration may hold a
//! deposed leader's writes at those sequences.
//!
//! Known limit: a row that a later write, past the commit point, replaced at the same
//! (series, timestamp) in the same memtable or compacted file reads as missing until that
//! write commits (a memtable keeps one version per point), and a series-only scan lists
//! the series as they are (its SST indexes hold no sequences).

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

    /// Region `id`'s series as of its leader's commit point `committed`: once this copy
    /// applied every write up to it ([`FOLLOWER_READ_WAIT`] at most), the rows of those
    /// writes only.
    pub async fn scan_series_committed(
        &self,
        id: RegionId,
        request: &ScanRequest,
        committed: u64,
    ) -> Result<Vec<SeriesRows>, EngineError> {
        let since = metronome_core::rt::time::now();
        loop {
            let applied = self.applied(id)?;
            if applied >= committed {
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
        self.scan_series_as_of(id, request, Some(committed)).await
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
