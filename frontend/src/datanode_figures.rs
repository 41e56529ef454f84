//! What the frontend reads of every datanode when a scrape or a query asks: each shard's
//! figures (`/metrics`) and each leader's replication — how far behind the copies of the
//! regions it leads are, and what it fenced off (`/metrics`, `/v1/cluster`,
//! `information_schema.region_peers`).
//!
//! Read when asked, never cached: a datanode alone knows these, and a figure from
//! before the last failover would mislead more than none. A datanode that does not
//! answer within [`ANSWER_WAIT_MAX`] is left out, never waited on.

use std::time::Duration;

use metronome_wire::{BoxFuture, RegionReply, RegionRequest, Replication, ShardStats};

use crate::router::RegionRouter;

/// How long a scrape or a query waits for one datanode's figures.
pub const ANSWER_WAIT_MAX: Duration = Duration::from_secs(2);

/// Every datanode's figures, each with its datanode's id (shard numbers repeat from one
/// datanode to the next).
pub trait DatanodeFigures: Send + Sync {
    fn shards(&self) -> BoxFuture<'_, Vec<(u64, ShardStats)>>;
    fn replication(&self) -> BoxFuture<'_, Vec<(u64, Replication)>>;
}

impl DatanodeFigures for RegionRouter {
    fn shards(&self) -> BoxFuture<'_, Vec<(u64, ShardStats)>> {
        Box::pin(async move {
            let replies = self
                .ask_every(RegionRequest::ShardStats, ANSWER_WAIT_MAX)
                .await;
            let mut all = Vec::new();
            for (id, reply) in replies {
                match reply {
                    RegionReply::ShardStats(stats) => {
                        all.extend(stats.into_iter().map(|s| (id, s)));
                    }
                    other => unexpected(id, "shard figures", &other),
                }
            }
            all
        })
    }

    fn replication(&self) -> BoxFuture<'_, Vec<(u64, Replication)>> {
        Box::pin(async move {
            let replies = self
                .ask_every(RegionRequest::Replication, ANSWER_WAIT_MAX)
                .await;
            let mut all = Vec::new();
            for (id, reply) in replies {
                match reply {
                    RegionReply::Replication(figures) => all.push((id, figures)),
                    other => unexpected(id, "replication figures", &other),
                }
            }
            all
        })
    }
}

fn unexpected(datanode: u64, what: &str, reply: &RegionReply) {
    tracing::warn!(
        datanode,
        ?reply,
        "a datanode answered a request for its {what} with another reply"
    );
}
