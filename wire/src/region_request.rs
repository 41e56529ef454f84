//! Every request a frontend makes of a datanode's regions and every reply: one enum each,
//! carried unchanged from the frontend's store to the datanode's shard, and their
//! FlatBuffers form. The typed helpers over [`RegionService::call`] are
//! [`RegionServiceExt`](crate::RegionServiceExt)'s.
//!
//! A new region RPC is a variant of [`RegionRequest`] (and its encoding and decoding,
//! both in this file), a table in `schema/metronome.fbs`, and an arm in the datanode's
//! handler (`datanode/src/service.rs`). The transport (`region.rs`) knows no RPC by name,
//! except that it cuts a write's rows into frames and gathers a scan's pages.

use std::sync::Arc;

use metronome_core::data::{FieldColumn, RegionId, RegionSchema, ScanRequest};
use metronome_core::write_batch::WriteBatch;

use crate::convert::{self, ConvertError};
use crate::fb;
use crate::frame::{self, Body};
use crate::write_batch::{self, SeriesPiece};
use crate::{ErrorKind, RegionError};

/// The body of a request whose table holds only the region's id.
macro_rules! region_only {
    ($table:ident, $args:ident, $region:expr) => {
        frame::request_body(|builder| {
            let args = fb::$args {
                region: Some(&convert::region_id($region)),
            };
            let table = fb::$table::create(builder, &args);
            (fb::Request::$table, table.as_union_value())
        })
    };
}

/// A request to a datanode's regions.
#[derive(Debug, Clone, PartialEq)]
pub enum RegionRequest {
    /// Creates a region on `shard` (modulo the datanode's shard count); succeeds if it
    /// already exists with this schema, wherever it is.
    Create {
        region: RegionId,
        schema: RegionSchema,
        shard: u16,
    },
    Drop {
        region: RegionId,
    },
    /// The region's schema (`None`: no such region).
    Schema {
        region: RegionId,
    },
    /// Appends tag columns, in order, to the region's primary key, in one schema change.
    AddTags {
        region: RegionId,
        tags: Vec<String>,
    },
    AddField {
        region: RegionId,
        column: FieldColumn,
    },
    SetTtl {
        region: RegionId,
        ttl_ms: Option<i64>,
    },
    /// Writes a batch; answered once it is durable.
    Write {
        region: RegionId,
        /// Shared, so that a frontend can keep a write for one more try on a route that
        /// changed without copying it; the datanode takes it whole
        /// ([`Arc::unwrap_or_clone`] copies nothing when no one else holds it).
        batch: Arc<WriteBatch>,
        /// The batch's bytes as a datanode received them ([`write_batch`]), which it
        /// logs in its WAL as they are; `None` in-process, where the WAL encodes it.
        encoded: Option<Vec<u8>>,
        /// The epoch of the route the sender followed, which a datanode of a cluster
        /// checks against its lease on the region (`metronome_catalog::lease`). 0 from
        /// whoever follows no route: the typed helpers below (the frontend's router
        /// stamps the route's epoch on what it forwards, [`RegionRequest::set_epoch`])
        /// and standalone's in-process calls, whose datanode holds no leases.
        epoch: u64,
    },
    /// The region's rows matching `request`, grouped by series, in (series, ts) order.
    Scan {
        region: RegionId,
        request: ScanRequest,
        /// As a write's.
        epoch: u64,
        /// Where the scan reads: the leader, or a follower (a frontend's read
        /// preference).
        read: ReadAt,
    },
    /// The leader's commit point for the region at `epoch`: the sequence up to which
    /// every write is on every copy of its configuration (a follower read's first step,
    /// served under the leader's lease like a scan).
    CommitPoint {
        region: RegionId,
        epoch: u64,
    },
    /// Closes a region: it finishes the writes in flight, flushes everything, and serves
    /// nothing (requests get `WrongRoute`) until opened again; its data stays.
    Close {
        region: RegionId,
    },
    /// Opens a closed region again.
    Open {
        region: RegionId,
    },
    /// Flushes the region's memtable to an SST now; done once it is stored.
    Flush {
        region: RegionId,
    },
    /// Every shard's figures, for monitoring.
    ShardStats,
    /// The datanode's replication figures, for monitoring.
    Replication,
    /// A leader's writes shipped to shard `shard` of a follower
    /// (`metronome_datanode::replication`): answered `Done` once every one is durable
    /// there. Served under the follower's grants, not a lease.
    Replicate {
        leader: u64,
        shard: u16,
        regions: Vec<ReplicatedRegion>,
    },
    /// Piece `chunk` of `chunks` of a leader's copy of region `region` for its learner on
    /// shard `shard` (`metronome_datanode::catch_up`): the region's rows as of write
    /// `sequence`, as a write batch ([`write_batch`]), in `schema`; the learner installs
    /// them in place of any copy it had once the last piece arrived. Served under the
    /// learner's grant, not a lease.
    Install {
        leader: u64,
        shard: u16,
        region: RegionId,
        epoch: u64,
        sequence: u64,
        schema: RegionSchema,
        chunk: u32,
        chunks: u32,
        batch: bytes::Bytes,
    },
}

/// Which copy of a region a scan reads (`metronome_datanode::engine::follower_read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadAt {
    /// The leader, under its lease.
    #[default]
    Leader,
    /// The region's only follower at the route's epoch: every write it applied is on
    /// every member (its leader shipped it only once durable), and every write its
    /// leader acknowledged it applied first.
    OnlyFollower,
    /// One of two followers, exactly as of its leader's commit point: the follower
    /// waits to have applied every write up to it, and refuses while it applied writes
    /// past it (the other follower may lack them).
    Follower { committed: u64 },
}

/// One region's writes in a [`RegionRequest::Replicate`], in sequence order, under the
/// leader's epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicatedRegion {
    pub region: RegionId,
    pub epoch: u64,
    /// (sequence, the batch as logged): shared, since a leader keeps a shipment until
    /// every follower took it.
    pub writes: Vec<(u64, bytes::Bytes)>,
}

impl RegionRequest {
    /// The region it names, if it names one.
    pub fn region(&self) -> Option<RegionId> {
        match self {
            RegionRequest::Create { region, .. }
            | RegionRequest::Drop { region }
            | RegionRequest::Schema { region }
            | RegionRequest::AddTags { region, .. }
            | RegionRequest::AddField { region, .. }
            | RegionRequest::SetTtl { region, .. }
            | RegionRequest::Write { region, .. }
            | RegionRequest::Scan { region, .. }
            | RegionRequest::CommitPoint { region, .. }
            | RegionRequest::Close { region }
            | RegionRequest::Open { region }
            | RegionRequest::Flush { region }
            | RegionRequest::Install { region, .. } => Some(*region),
            RegionRequest::ShardStats
            | RegionRequest::Replication
            | RegionRequest::Replicate { .. } => None,
        }
    }

    /// The route epoch a request that a datanode serves under a lease names: writes and
    /// scans. Other requests (schema changes, creating and dropping regions) are the
    /// catalog's changes carried out, which the frontend makes only after the metasrv
    /// committed them.
    pub fn epoch(&self) -> Option<u64> {
        match self {
            RegionRequest::Write { epoch, .. }
            | RegionRequest::Scan { epoch, .. }
            | RegionRequest::CommitPoint { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }

    /// Names the epoch of the route the request follows (see [`RegionRequest::epoch`]).
    pub fn set_epoch(&mut self, route_epoch: u64) {
        if let RegionRequest::Write { epoch, .. }
        | RegionRequest::Scan { epoch, .. }
        | RegionRequest::CommitPoint { epoch, .. } = self
        {
            *epoch = route_epoch;
        }
    }

    /// The request as one frame's body. A write goes as one batch payload: the client
    /// cuts big writes into frames first (`region.rs`).
    pub(crate) fn encode(&self) -> Result<Body, RegionError> {
        Ok(match self {
            RegionRequest::Create {
                region,
                schema,
                shard,
            } => frame::request_body(|builder| {
                let schema = convert::region_schema(builder, schema);
                let args = fb::CreateRegionArgs {
                    region: Some(&convert::region_id(*region)),
                    schema: Some(schema),
                    shard: *shard,
                };
                let table = fb::CreateRegion::create(builder, &args);
                (fb::Request::CreateRegion, table.as_union_value())
            }),
            RegionRequest::Drop { region } => region_only!(DropRegion, DropRegionArgs, *region),
            RegionRequest::Schema { region } => {
                region_only!(GetRegionSchema, GetRegionSchemaArgs, *region)
            }
            RegionRequest::AddTags { region, tags } => frame::request_body(|builder| {
                let names: Vec<_> = tags.iter().map(|tag| builder.create_string(tag)).collect();
                let tags = builder.create_vector(&names);
                let args = fb::AddTagsArgs {
                    region: Some(&convert::region_id(*region)),
                    tags: Some(tags),
                };
                let table = fb::AddTags::create(builder, &args);
                (fb::Request::AddTags, table.as_union_value())
            }),
            RegionRequest::AddField { region, column } => frame::request_body(|builder| {
                let column = convert::field_column(builder, column);
                let args = fb::AddFieldArgs {
                    region: Some(&convert::region_id(*region)),
                    column: Some(column),
                };
                let table = fb::AddField::create(builder, &args);
                (fb::Request::AddField, table.as_union_value())
            }),
            RegionRequest::SetTtl { region, ttl_ms } => frame::request_body(|builder| {
                let args = fb::SetTtlArgs {
                    region: Some(&convert::region_id(*region)),
                    ttl_ms: *ttl_ms,
                };
                let table = fb::SetTtl::create(builder, &args);
                (fb::Request::SetTtl, table.as_union_value())
            }),
            RegionRequest::Write {
                region,
                batch,
                epoch,
                ..
            } => {
                let pieces: Vec<_> = batch.series.iter().map(SeriesPiece::whole).collect();
                encode_write(*region, *epoch, &pieces)?
            }
            RegionRequest::Scan {
                region,
                request,
                epoch,
                read,
            } => frame::request_body(|builder| {
                let table = convert::scan(builder, *region, request, *epoch, *read);
                (fb::Request::Scan, table.as_union_value())
            }),
            RegionRequest::CommitPoint { region, epoch } => frame::request_body(|builder| {
                let args = fb::GetCommitPointArgs {
                    region: Some(&convert::region_id(*region)),
                    epoch: *epoch,
                };
                let table = fb::GetCommitPoint::create(builder, &args);
                (fb::Request::GetCommitPoint, table.as_union_value())
            }),
            RegionRequest::Close { region } => region_only!(CloseRegion, CloseRegionArgs, *region),
            RegionRequest::Open { region } => region_only!(OpenRegion, OpenRegionArgs, *region),
            RegionRequest::Flush { region } => {
                region_only!(FlushRegion, FlushRegionArgs, *region)
            }
            RegionRequest::ShardStats => frame::request_body(|builder| {
                let table = fb::GetShardStats::create(builder, &fb::GetShardStatsArgs {});
                (fb::Request::GetShardStats, table.as_union_value())
            }),
            RegionRequest::Replication => frame::request_body(|builder| {
                let table = fb::GetReplication::create(builder, &fb::GetReplicationArgs {});
                (fb::Request::GetReplication, table.as_union_value())
            }),
            RegionRequest::Replicate {
                leader,
                shard,
                regions,
            } => frame::request_body(|builder| {
                let regions: Vec<_> = regions
                    .iter()
                    .map(|one| {
                        let writes: Vec<_> = one
                            .writes
                            .iter()
                            .map(|(sequence, batch)| {
                                let batch = builder.create_vector(batch);
                                fb::ReplicatedWrite::create(
                                    builder,
                                    &fb::ReplicatedWriteArgs {
                                        sequence: *sequence,
                                        batch: Some(batch),
                                    },
                                )
                            })
                            .collect();
                        let writes = builder.create_vector(&writes);
                        fb::ReplicatedRegion::create(
                            builder,
                            &fb::ReplicatedRegionArgs {
                                region: Some(&convert::region_id(one.region)),
                                epoch: one.epoch,
                                writes: Some(writes),
                            },
                        )
                    })
                    .collect();
                let regions = builder.create_vector(&regions);
                let table = fb::Replicate::create(
                    builder,
                    &fb::ReplicateArgs {
                        leader: *leader,
                        shard: *shard,
                        regions: Some(regions),
                    },
                );
                (fb::Request::Replicate, table.as_union_value())
            }),
            RegionRequest::Install {
                leader,
                shard,
                region,
                epoch,
                sequence,
                schema,
                chunk,
                chunks,
                batch,
            } => frame::request_body(|builder| {
                let schema = convert::region_schema(builder, schema);
                let batch = builder.create_vector(batch);
                let table = fb::InstallRegion::create(
                    builder,
                    &fb::InstallRegionArgs {
                        leader: *leader,
                        shard: *shard,
                        region: Some(&convert::region_id(*region)),
                        epoch: *epoch,
                        sequence: *sequence,
                        schema: Some(schema),
                        chunk: *chunk,
                        chunks: *chunks,
                        batch: Some(batch),
                    },
                );
                (fb::Request::InstallRegion, table.as_union_value())
            }),
        })
    }

    /// A verified request message as a request; what this build cannot accept is an
    /// error naming it.
    pub(crate) fn decode(request: fb::RequestMessage<'_>) -> Result<RegionRequest, String> {
        let convert = |error: ConvertError| error.0;
        let region = convert::read_region_id;
        Ok(match request.body_type() {
            fb::Request::CreateRegion => {
                let table = request.body_as_create_region().expect("verified");
                RegionRequest::Create {
                    region: region(table.region()),
                    schema: convert::read_region_schema(table.schema()).map_err(convert)?,
                    shard: table.shard(),
                }
            }
            fb::Request::DropRegion => RegionRequest::Drop {
                region: region(request.body_as_drop_region().expect("verified").region()),
            },
            fb::Request::GetRegionSchema => RegionRequest::Schema {
                region: region(
                    request
                        .body_as_get_region_schema()
                        .expect("verified")
                        .region(),
                ),
            },
            fb::Request::AddTags => {
                let table = request.body_as_add_tags().expect("verified");
                RegionRequest::AddTags {
                    region: region(table.region()),
                    tags: table.tags().iter().map(str::to_string).collect(),
                }
            }
            fb::Request::AddField => {
                let table = request.body_as_add_field().expect("verified");
                RegionRequest::AddField {
                    region: region(table.region()),
                    column: convert::read_field_column(table.column()).map_err(convert)?,
                }
            }
            fb::Request::SetTtl => {
                let table = request.body_as_set_ttl().expect("verified");
                RegionRequest::SetTtl {
                    region: region(table.region()),
                    ttl_ms: table.ttl_ms(),
                }
            }
            fb::Request::Write => {
                let table = request.body_as_write().expect("verified");
                let id = region(table.region());
                let bytes = table.batch().bytes();
                let batch = write_batch::decode(bytes)
                    .map_err(|error| format!("write to region {id}: {error}"))?;
                RegionRequest::Write {
                    region: id,
                    batch: Arc::new(batch),
                    encoded: Some(bytes.to_vec()),
                    epoch: table.epoch(),
                }
            }
            fb::Request::Scan => {
                let table = request.body_as_scan().expect("verified");
                let (id, scan) = convert::read_scan(table).map_err(convert)?;
                RegionRequest::Scan {
                    region: id,
                    request: scan,
                    epoch: table.epoch(),
                    read: match (table.at_follower(), table.committed()) {
                        (false, _) => ReadAt::Leader,
                        (true, None) => ReadAt::OnlyFollower,
                        (true, Some(committed)) => ReadAt::Follower { committed },
                    },
                }
            }
            fb::Request::GetCommitPoint => {
                let table = request.body_as_get_commit_point().expect("verified");
                RegionRequest::CommitPoint {
                    region: convert::read_region_id(table.region()),
                    epoch: table.epoch(),
                }
            }
            fb::Request::GetShardStats => RegionRequest::ShardStats,
            fb::Request::GetReplication => RegionRequest::Replication,
            fb::Request::Replicate => {
                let table = request.body_as_replicate().expect("verified");
                RegionRequest::Replicate {
                    leader: table.leader(),
                    shard: table.shard(),
                    regions: table
                        .regions()
                        .iter()
                        .map(|one| ReplicatedRegion {
                            region: region(one.region()),
                            epoch: one.epoch(),
                            writes: one
                                .writes()
                                .iter()
                                .map(|write| {
                                    (
                                        write.sequence(),
                                        bytes::Bytes::copy_from_slice(write.batch().bytes()),
                                    )
                                })
                                .collect(),
                        })
                        .collect(),
                }
            }
            fb::Request::InstallRegion => {
                let table = request.body_as_install_region().expect("verified");
                RegionRequest::Install {
                    leader: table.leader(),
                    shard: table.shard(),
                    region: region(table.region()),
                    epoch: table.epoch(),
                    sequence: table.sequence(),
                    schema: convert::read_region_schema(table.schema()).map_err(convert)?,
                    chunk: table.chunk(),
                    chunks: table.chunks(),
                    batch: bytes::Bytes::copy_from_slice(table.batch().bytes()),
                }
            }
            fb::Request::CloseRegion => RegionRequest::Close {
                region: region(request.body_as_close_region().expect("verified").region()),
            },
            fb::Request::OpenRegion => RegionRequest::Open {
                region: region(request.body_as_open_region().expect("verified").region()),
            },
            fb::Request::FlushRegion => RegionRequest::Flush {
                region: region(request.body_as_flush_region().expect("verified").region()),
            },
            other => return Err(format!("a datanode does not serve {other:?} requests")),
        })
    }
}

/// A write of `pieces` (one frame's worth) to `region`: the client encodes each frame of
/// a big write from its pieces of series, without copying them into a batch of their own.
pub(crate) fn encode_write(
    region: RegionId,
    epoch: u64,
    pieces: &[SeriesPiece<'_>],
) -> Result<Body, RegionError> {
    let payload = write_batch::encode_pieces(pieces).map_err(|error| {
        RegionError::new(ErrorKind::Invalid, format!("region {region}: {error}"))
    })?;
    Ok(frame::request_body(|builder| {
        let batch = builder.create_vector(&payload);
        let args = fb::WriteArgs {
            region: Some(&convert::region_id(region)),
            batch: Some(batch),
            epoch,
        };
        let table = fb::Write::create(builder, &args);
        (fb::Request::Write, table.as_union_value())
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use metronome_core::data::{FieldType, MatchOp, Row, TagMatcher, TimeUnit, Value};

    /// One request of every kind, with structure where it has any.
    pub(crate) fn sample_requests() -> Vec<RegionRequest> {
        let schema = RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Nanosecond,
            fields: vec![FieldColumn {
                name: "value".into(),
                field_type: FieldType::Float64,
            }],
        };
        let region = RegionId::new(3, 1);
        let scan = ScanRequest {
            matchers: vec![TagMatcher {
                tag: "host".into(),
                op: MatchOp::Regex,
                value: "a|b".into(),
            }],
            limit: Some(3),
            ..ScanRequest::all()
        };
        vec![
            RegionRequest::Create {
                region,
                schema: schema.clone(),
                shard: 1,
            },
            RegionRequest::Write {
                region,
                batch: Arc::new(WriteBatch::from_rows(vec![row(5, 3), row(6, 0)])),
                encoded: None,
                epoch: 4,
            },
            RegionRequest::Scan {
                region,
                request: scan.clone(),
                epoch: 9,
                read: ReadAt::Leader,
            },
            RegionRequest::Scan {
                region,
                request: scan.clone(),
                epoch: 9,
                read: ReadAt::OnlyFollower,
            },
            RegionRequest::Scan {
                region,
                request: scan,
                epoch: 9,
                read: ReadAt::Follower {
                    committed: u64::MAX,
                },
            },
            RegionRequest::CommitPoint { region, epoch: 11 },
            RegionRequest::Drop { region },
            RegionRequest::Schema { region },
            RegionRequest::AddTags {
                region,
                tags: vec!["dc".into(), "rack".into()],
            },
            RegionRequest::AddField {
                region,
                column: schema.fields[0].clone(),
            },
            RegionRequest::SetTtl {
                region,
                ttl_ms: Some(60_000),
            },
            RegionRequest::Close { region },
            RegionRequest::Open { region },
            RegionRequest::Flush { region },
            RegionRequest::ShardStats,
            RegionRequest::Replication,
            RegionRequest::Replicate {
                leader: 2,
                shard: 1,
                regions: vec![ReplicatedRegion {
                    region,
                    epoch: 3,
                    writes: vec![
                        (7, bytes::Bytes::from_static(b"batch seven")),
                        (8, bytes::Bytes::from_static(b"")),
                    ],
                }],
            },
            RegionRequest::Install {
                leader: 2,
                shard: 1,
                region,
                epoch: 4,
                sequence: 90,
                schema: schema.clone(),
                chunk: 1,
                chunks: 3,
                batch: bytes::Bytes::from_static(b"rows"),
            },
        ]
    }

    #[test]
    fn every_request_crosses_the_wire_unchanged() {
        for request in sample_requests() {
            let frame = crate::region::tests::frame_of(&request);
            let mut decoded = RegionRequest::decode(frame::verify_request(&frame).unwrap());
            // A datanode keeps a write's bytes as received, to log them as they are.
            if let Ok(RegionRequest::Write { batch, encoded, .. }) = &mut decoded {
                assert_eq!(encoded.take(), Some(write_batch::encode(batch).unwrap()));
            }
            assert_eq!(decoded.as_ref(), Ok(&request));
        }
    }

    fn row(ts: i64, text_len: usize) -> Row {
        Row {
            tags: vec!["a".into()],
            ts,
            fields: vec![Value::String("x".repeat(text_len))],
        }
    }
}
