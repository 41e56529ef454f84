//! The replies of the region protocol ([`RegionReply`]) and their wire form; a scan's
//! series go as pages (`crate::region`), not through here.

use metronome_core::data::{RegionSchema, SeriesRows};

use crate::convert::{self, ConvertError};
use crate::fb;
use crate::frame::{self, Body};
use crate::{CopyLag, Replication, ShardStats};

/// A reply to a [`RegionRequest`] that succeeded.
#[derive(Debug, Clone, PartialEq)]
pub enum RegionReply {
    Done,
    Schema(Option<RegionSchema>),
    Series(Vec<SeriesRows>),
    ShardStats(Vec<ShardStats>),
    Replication(Replication),
    /// A leader's commit point ([`RegionRequest::CommitPoint`]).
    CommitPoint(u64),
}

impl RegionReply {
    /// The reply as one frame's body, except `Series`, which the server sends as pages
    /// (`region.rs`).
    pub(crate) fn encode(&self) -> Body {
        match self {
            RegionReply::Done => frame::done_body(),
            RegionReply::Schema(schema) => frame::reply_body(|builder| {
                let schema = schema
                    .as_ref()
                    .map(|schema| convert::region_schema(builder, schema));
                let table =
                    fb::RegionSchemaReply::create(builder, &fb::RegionSchemaReplyArgs { schema });
                (fb::Reply::RegionSchemaReply, table.as_union_value())
            }),
            RegionReply::ShardStats(stats) => frame::reply_body(|builder| {
                let stats: Vec<fb::ShardStats> = stats.iter().map(shard_stats).collect();
                let shards = builder.create_vector(&stats);
                let args = fb::ShardStatsReplyArgs {
                    shards: Some(shards),
                };
                let table = fb::ShardStatsReply::create(builder, &args);
                (fb::Reply::ShardStatsReply, table.as_union_value())
            }),
            RegionReply::Replication(figures) => frame::reply_body(|builder| {
                let copies: Vec<fb::CopyLag> = figures.copies.iter().map(copy_lag).collect();
                let copies = builder.create_vector(&copies);
                let args = fb::ReplicationReplyArgs {
                    copies: Some(copies),
                    fenced_writes: figures.fenced_writes,
                    fenced_shipments: figures.fenced_shipments,
                };
                let table = fb::ReplicationReply::create(builder, &args);
                (fb::Reply::ReplicationReply, table.as_union_value())
            }),
            RegionReply::CommitPoint(sequence) => frame::reply_body(|builder| {
                let args = fb::CommitPointArgs {
                    sequence: *sequence,
                };
                let table = fb::CommitPoint::create(builder, &args);
                (fb::Reply::CommitPoint, table.as_union_value())
            }),
            RegionReply::Series(_) => unreachable!("a scan's reply is sent as pages"),
        }
    }

    /// A one-frame reply (not a scan page, not an error) as a reply; `None` for a kind
    /// this is not.
    pub(crate) fn decode(reply: fb::ReplyMessage<'_>) -> Option<Result<RegionReply, ConvertError>> {
        Some(Ok(match reply.body_type() {
            fb::Reply::Done => RegionReply::Done,
            fb::Reply::RegionSchemaReply => {
                let table = reply.body_as_region_schema_reply().expect("verified");
                match table.schema().map(convert::read_region_schema).transpose() {
                    Ok(schema) => RegionReply::Schema(schema),
                    Err(error) => return Some(Err(error)),
                }
            }
            fb::Reply::ShardStatsReply => {
                let table = reply.body_as_shard_stats_reply().expect("verified");
                RegionReply::ShardStats(table.shards().iter().map(read_shard_stats).collect())
            }
            fb::Reply::ReplicationReply => {
                let table = reply.body_as_replication_reply().expect("verified");
                RegionReply::Replication(Replication {
                    copies: table.copies().iter().map(read_copy_lag).collect(),
                    fenced_writes: table.fenced_writes(),
                    fenced_shipments: table.fenced_shipments(),
                })
            }
            fb::Reply::CommitPoint => {
                let table = reply.body_as_commit_point().expect("verified");
                RegionReply::CommitPoint(table.sequence())
            }
            _ => return None,
        }))
    }
}

pub fn shard_stats(stats: &ShardStats) -> fb::ShardStats {
    fb::ShardStats::new(
        stats.shard,
        stats.memtable_bytes,
        stats.wal_commits,
        stats.wal_commit_micros_total,
        stats.flushes,
        stats.compactions,
        stats.regions,
    )
}

pub fn read_shard_stats(stats: &fb::ShardStats) -> ShardStats {
    ShardStats {
        shard: stats.shard(),
        memtable_bytes: stats.memtable_bytes(),
        wal_commits: stats.wal_commits(),
        wal_commit_micros_total: stats.wal_commit_micros_total(),
        flushes: stats.flushes(),
        compactions: stats.compactions(),
        regions: stats.regions(),
    }
}

fn copy_lag(lag: &CopyLag) -> fb::CopyLag {
    fb::CopyLag::new(
        &convert::region_id(lag.region),
        lag.epoch,
        &fb::Replica::new(lag.datanode, lag.shard),
        lag.learner,
        lag.writes,
        lag.bytes,
        lag.oldest_ms,
    )
}

fn read_copy_lag(lag: &fb::CopyLag) -> CopyLag {
    CopyLag {
        region: convert::read_region_id(lag.region()),
        epoch: lag.epoch(),
        datanode: lag.copy().datanode(),
        shard: lag.copy().shard(),
        learner: lag.learner(),
        writes: lag.writes(),
        bytes: lag.bytes(),
        oldest_ms: lag.oldest_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::data::RegionId;

    #[test]
    fn replication_figures_cross_the_wire_unchanged() {
        let lag = |datanode, learner, writes| CopyLag {
            region: RegionId::new(7, 2),
            epoch: 5,
            datanode,
            shard: 1,
            learner,
            writes,
            bytes: writes * 100,
            oldest_ms: writes * 3,
        };
        for reply in [
            RegionReply::CommitPoint(0),
            RegionReply::CommitPoint(u64::MAX),
            RegionReply::Replication(Replication::default()),
            RegionReply::Replication(Replication {
                copies: vec![lag(2, false, 0), lag(3, true, 40)],
                fenced_writes: 9,
                fenced_shipments: u64::MAX,
            }),
        ] {
            let frame = reply.encode().into_frame(frame::Header {
                kind: frame::FrameKind::Reply,
                request_id: 1,
                last: true,
            });
            let decoded = RegionReply::decode(frame::verify_reply(&frame).unwrap());
            assert_eq!(decoded.unwrap().unwrap(), reply);
        }
    }
}
