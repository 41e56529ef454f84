//! [`RegionService`] over the protocol: [`RegionClient`] sends a frontend's region
//! requests to a datanode, [`RegionServer`] answers them there from the datanode's own
//! implementation.

use std::sync::Arc;

use metronome_core::data::{FieldColumn, RegionId, RegionSchema, Row, ScanRequest, SeriesRows};

use crate::convert::{self, ConvertError};
use crate::fb;
use crate::frame::{self, Body};
use crate::rows::{
    ipc_to_rows, ipc_to_series, rows_to_ipc, RowView, RowsError, SeriesRow, IPC_ROWS_MAX,
};
use crate::rpc::{BoxFuture as RpcFuture, Dispatch, RpcClient, RpcError};
use crate::{BoxFuture, ErrorKind, RegionError, RegionService, ShardStats};

/// Rows per Write frame, and per page of a scan's reply.
pub const ROWS_PER_FRAME_MAX: usize = 65_536;
/// Estimated in-memory bytes of the rows per frame; with Arrow's denser encoding this
/// keeps every frame well under the transport's 64 MiB limit.
pub const ROW_BYTES_PER_FRAME_MAX: usize = 16 * 1024 * 1024;

const _: () = assert!(ROWS_PER_FRAME_MAX <= IPC_ROWS_MAX);

/// `rows` cut into runs that each fit one frame, in order.
fn frame_chunks<R: RowView>(rows: &[R]) -> Vec<&[R]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, row) in rows.iter().enumerate() {
        let row_bytes = row.estimated_bytes();
        if index > start
            && (index - start == ROWS_PER_FRAME_MAX || bytes + row_bytes > ROW_BYTES_PER_FRAME_MAX)
        {
            chunks.push(&rows[start..index]);
            start = index;
            bytes = 0;
        }
        bytes += row_bytes;
    }
    if start < rows.len() || rows.is_empty() {
        chunks.push(&rows[start..]);
    }
    chunks
}

impl From<RpcError> for RegionError {
    fn from(error: RpcError) -> RegionError {
        match error {
            RpcError::Unavailable(message) => RegionError::new(ErrorKind::Unavailable, message),
            RpcError::Protocol(message) => RegionError::new(ErrorKind::Internal, message),
        }
    }
}

fn protocol(peer: &str, what: impl std::fmt::Display) -> RegionError {
    RegionError::new(
        ErrorKind::Internal,
        format!("bad reply from {peer}: {what}"),
    )
}

/// The body of a request whose table holds only the region's id.
macro_rules! region_only_request {
    ($table:ident, $args:ident, $region:expr) => {
        frame::request_body(|builder| {
            let table = fb::$table::create(
                builder,
                &fb::$args {
                    region: Some(&convert::region_id($region)),
                },
            );
            (fb::Request::$table, table.as_union_value())
        })
    };
}

/// The frontend's end: region requests to one datanode.
pub struct RegionClient {
    rpc: RpcClient,
}

impl RegionClient {
    pub fn new(rpc: RpcClient) -> RegionClient {
        RegionClient { rpc }
    }

    /// Sends a request with a one-frame reply: an `Error` reply becomes its region
    /// error; `read` takes the expected reply and returns `None` for any other.
    async fn call_reply<T>(
        &self,
        request: Body,
        read: impl FnOnce(fb::ReplyMessage<'_>) -> Option<Result<T, RegionError>>,
    ) -> Result<T, RegionError> {
        let peer = self.rpc.peer();
        self.rpc
            .call_one(request, |reply| {
                if let Some(error) = reply.body_as_error() {
                    return Ok(Err(convert::read_error(error)));
                }
                let kind = reply.body_type();
                Ok(read(reply)
                    .unwrap_or_else(|| Err(protocol(peer, format!("unexpected reply {kind:?}")))))
            })
            .await?
    }

    /// Sends a request whose success is a `Done` reply.
    async fn call_done(&self, request: Body) -> Result<(), RegionError> {
        self.call_reply(request, |reply| reply.body_as_done().map(|_| Ok(())))
            .await
    }
}

impl RegionClient {
    /// Sends a scan and hands each reply page's Arrow IPC rows to `each`, in order.
    async fn scan_payloads(
        &self,
        region: RegionId,
        request: &ScanRequest,
        mut each: impl FnMut(&[u8]) -> Result<(), RowsError> + Send,
    ) -> Result<(), RegionError> {
        let body = frame::request_body(|builder| {
            let table = convert::scan(builder, region, request);
            (fb::Request::Scan, table.as_union_value())
        });
        let peer = self.rpc.peer();
        let frames = self.rpc.call(body).await?;
        for frame in &frames {
            let reply = frame::verify_reply(frame).map_err(|error| protocol(peer, error))?;
            match reply.body_type() {
                fb::Reply::Rows => {
                    let page = reply.body_as_rows().expect("verified");
                    each(page.rows().bytes()).map_err(|error| protocol(peer, error))?;
                }
                fb::Reply::Error => {
                    return Err(convert::read_error(
                        reply.body_as_error().expect("verified"),
                    ))
                }
                other => return Err(protocol(peer, format!("unexpected reply {other:?}"))),
            }
        }
        Ok(())
    }
}

impl RegionService for RegionClient {
    fn create_region(
        &self,
        region: RegionId,
        schema: RegionSchema,
        shard: u16,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        let body = frame::request_body(|builder| {
            let schema = convert::region_schema(builder, &schema);
            let table = fb::CreateRegion::create(
                builder,
                &fb::CreateRegionArgs {
                    region: Some(&convert::region_id(region)),
                    schema: Some(schema),
                    shard,
                },
            );
            (fb::Request::CreateRegion, table.as_union_value())
        });
        Box::pin(self.call_done(body))
    }

    fn drop_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        let body = region_only_request!(DropRegion, DropRegionArgs, region);
        Box::pin(self.call_done(body))
    }

    fn region_schema(
        &self,
        region: RegionId,
    ) -> BoxFuture<'_, Result<Option<RegionSchema>, RegionError>> {
        let body = region_only_request!(GetRegionSchema, GetRegionSchemaArgs, region);
        Box::pin(async move {
            let peer = self.rpc.peer();
            self.call_reply(body, |reply| {
                let reply = reply.body_as_region_schema_reply()?;
                Some(
                    reply
                        .schema()
                        .map(convert::read_region_schema)
                        .transpose()
                        .map_err(|error| protocol(peer, error)),
                )
            })
            .await
        })
    }

    fn add_tags(
        &self,
        region: RegionId,
        tags: Vec<String>,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        let body = frame::request_body(|builder| {
            let names: Vec<_> = tags.iter().map(|tag| builder.create_string(tag)).collect();
            let tags = builder.create_vector(&names);
            let table = fb::AddTags::create(
                builder,
                &fb::AddTagsArgs {
                    region: Some(&convert::region_id(region)),
                    tags: Some(tags),
                },
            );
            (fb::Request::AddTags, table.as_union_value())
        });
        Box::pin(self.call_done(body))
    }

    fn add_field(
        &self,
        region: RegionId,
        column: FieldColumn,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        let body = frame::request_body(|builder| {
            let column = convert::field_column(builder, &column);
            let table = fb::AddField::create(
                builder,
                &fb::AddFieldArgs {
                    region: Some(&convert::region_id(region)),
                    column: Some(column),
                },
            );
            (fb::Request::AddField, table.as_union_value())
        });
        Box::pin(self.call_done(body))
    }

    fn set_ttl(
        &self,
        region: RegionId,
        ttl_ms: Option<i64>,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        let body = frame::request_body(|builder| {
            let table = fb::SetTtl::create(
                builder,
                &fb::SetTtlArgs {
                    region: Some(&convert::region_id(region)),
                    ttl_ms,
                },
            );
            (fb::Request::SetTtl, table.as_union_value())
        });
        Box::pin(self.call_done(body))
    }

    fn write(&self, region: RegionId, rows: Vec<Row>) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move {
            // Frames go one after another, so a later row of the same (series, ts)
            // still wins, as it does in one write.
            for chunk in frame_chunks(&rows) {
                let payload = rows_to_ipc(chunk).map_err(|error| {
                    RegionError::new(ErrorKind::Invalid, format!("region {region}: {error}"))
                })?;
                let body = frame::request_body(|builder| {
                    let rows = builder.create_vector(&payload);
                    let table = fb::Write::create(
                        builder,
                        &fb::WriteArgs {
                            region: Some(&convert::region_id(region)),
                            rows: Some(rows),
                        },
                    );
                    (fb::Request::Write, table.as_union_value())
                });
                self.call_done(body).await?;
            }
            Ok(())
        })
    }

    fn scan(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> BoxFuture<'_, Result<Vec<Row>, RegionError>> {
        Box::pin(async move {
            let mut rows = Vec::new();
            self.scan_payloads(region, &request, |payload| {
                rows.extend(ipc_to_rows(payload)?);
                Ok(())
            })
            .await?;
            Ok(rows)
        })
    }

    fn scan_series(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> BoxFuture<'_, Result<Vec<SeriesRows>, RegionError>> {
        Box::pin(async move {
            let mut series = Vec::new();
            self.scan_payloads(region, &request, |payload| {
                ipc_to_series(payload, &mut series)
            })
            .await?;
            Ok(series)
        })
    }

    fn close_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        let body = region_only_request!(CloseRegion, CloseRegionArgs, region);
        Box::pin(self.call_done(body))
    }

    fn open_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        let body = region_only_request!(OpenRegion, OpenRegionArgs, region);
        Box::pin(self.call_done(body))
    }

    fn shard_stats(&self) -> BoxFuture<'_, Result<Vec<ShardStats>, RegionError>> {
        let body = frame::request_body(|builder| {
            let table = fb::GetShardStats::create(builder, &fb::GetShardStatsArgs {});
            (fb::Request::GetShardStats, table.as_union_value())
        });
        Box::pin(async move {
            self.call_reply(body, |reply| {
                let reply = reply.body_as_shard_stats_reply()?;
                Some(Ok(reply.shards().iter().map(read_shard_stats).collect()))
            })
            .await
        })
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

/// The datanode's end: answers region requests from a [`RegionService`].
pub struct RegionServer {
    service: Arc<dyn RegionService>,
}

impl RegionServer {
    pub fn new(service: Arc<dyn RegionService>) -> RegionServer {
        RegionServer { service }
    }
}

fn error_reply(error: &RegionError) -> Vec<Body> {
    vec![frame::error_body(
        convert::error_kind(error.kind),
        &error.message,
    )]
}

fn invalid(error: impl std::fmt::Display) -> Vec<Body> {
    vec![frame::error_body(
        fb::ErrorKind::InvalidRequest,
        &error.to_string(),
    )]
}

fn done_or_error(outcome: Result<(), RegionError>) -> Vec<Body> {
    match outcome {
        Ok(()) => vec![frame::done_body()],
        Err(error) => error_reply(&error),
    }
}

/// A request, decoded into owned values before the service is awaited.
enum RegionRequest {
    Create(RegionId, RegionSchema, u16),
    Drop(RegionId),
    Schema(RegionId),
    AddTags(RegionId, Vec<String>),
    AddField(RegionId, FieldColumn),
    SetTtl(RegionId, Option<i64>),
    Write(RegionId, Vec<Row>),
    Scan(RegionId, ScanRequest),
    ShardStats,
    Close(RegionId),
    Open(RegionId),
}

fn decode(request: fb::RequestMessage<'_>) -> Result<RegionRequest, String> {
    let convert = |error: ConvertError| error.0;
    let region = convert::read_region_id;
    Ok(match request.body_type() {
        fb::Request::CreateRegion => {
            let table = request.body_as_create_region().expect("verified");
            RegionRequest::Create(
                region(table.region()),
                convert::read_region_schema(table.schema()).map_err(convert)?,
                table.shard(),
            )
        }
        fb::Request::DropRegion => RegionRequest::Drop(region(
            request.body_as_drop_region().expect("verified").region(),
        )),
        fb::Request::GetRegionSchema => RegionRequest::Schema(region(
            request
                .body_as_get_region_schema()
                .expect("verified")
                .region(),
        )),
        fb::Request::AddTags => {
            let table = request.body_as_add_tags().expect("verified");
            RegionRequest::AddTags(
                region(table.region()),
                table.tags().iter().map(str::to_string).collect(),
            )
        }
        fb::Request::AddField => {
            let table = request.body_as_add_field().expect("verified");
            RegionRequest::AddField(
                region(table.region()),
                convert::read_field_column(table.column()).map_err(convert)?,
            )
        }
        fb::Request::SetTtl => {
            let table = request.body_as_set_ttl().expect("verified");
            RegionRequest::SetTtl(region(table.region()), table.ttl_ms())
        }
        fb::Request::Write => {
            let table = request.body_as_write().expect("verified");
            let id = region(table.region());
            let rows = ipc_to_rows(table.rows().bytes())
                .map_err(|error| format!("write to region {id}: {error}"))?;
            RegionRequest::Write(id, rows)
        }
        fb::Request::Scan => {
            let (id, scan) =
                convert::read_scan(request.body_as_scan().expect("verified")).map_err(convert)?;
            RegionRequest::Scan(id, scan)
        }
        fb::Request::GetShardStats => RegionRequest::ShardStats,
        fb::Request::CloseRegion => RegionRequest::Close(region(
            request.body_as_close_region().expect("verified").region(),
        )),
        fb::Request::OpenRegion => RegionRequest::Open(region(
            request.body_as_open_region().expect("verified").region(),
        )),
        other => return Err(format!("a datanode does not serve {other:?} requests")),
    })
}

impl Dispatch for RegionServer {
    fn dispatch<'a>(&'a self, request: fb::RequestMessage<'a>) -> RpcFuture<'a, Vec<Body>> {
        let decoded = decode(request);
        Box::pin(async move {
            let request = match decoded {
                Ok(request) => request,
                Err(error) => return invalid(error),
            };
            let service = &self.service;
            match request {
                RegionRequest::Create(region, schema, shard) => {
                    done_or_error(service.create_region(region, schema, shard).await)
                }
                RegionRequest::Drop(region) => done_or_error(service.drop_region(region).await),
                RegionRequest::Schema(region) => match service.region_schema(region).await {
                    Ok(schema) => vec![frame::reply_body(|builder| {
                        let schema = schema
                            .as_ref()
                            .map(|schema| convert::region_schema(builder, schema));
                        let table = fb::RegionSchemaReply::create(
                            builder,
                            &fb::RegionSchemaReplyArgs { schema },
                        );
                        (fb::Reply::RegionSchemaReply, table.as_union_value())
                    })],
                    Err(error) => error_reply(&error),
                },
                RegionRequest::AddTags(region, tags) => {
                    done_or_error(service.add_tags(region, tags).await)
                }
                RegionRequest::AddField(region, column) => {
                    done_or_error(service.add_field(region, column).await)
                }
                RegionRequest::SetTtl(region, ttl_ms) => {
                    done_or_error(service.set_ttl(region, ttl_ms).await)
                }
                RegionRequest::Write(region, rows) => {
                    done_or_error(service.write(region, rows).await)
                }
                // Grouped by series: the datanode builds no `Row` per sample, and the
                // pages repeat each series' tags from one copy.
                RegionRequest::Scan(region, scan) => {
                    match service.scan_series(region, scan).await {
                        Ok(series) => scan_pages(region, &SeriesRow::all(&series)),
                        Err(error) => error_reply(&error),
                    }
                }
                RegionRequest::Close(region) => done_or_error(service.close_region(region).await),
                RegionRequest::Open(region) => done_or_error(service.open_region(region).await),
                RegionRequest::ShardStats => match service.shard_stats().await {
                    Ok(stats) => vec![frame::reply_body(|builder| {
                        let stats: Vec<fb::ShardStats> = stats.iter().map(shard_stats).collect();
                        let shards = builder.create_vector(&stats);
                        let table = fb::ShardStatsReply::create(
                            builder,
                            &fb::ShardStatsReplyArgs {
                                shards: Some(shards),
                            },
                        );
                        (fb::Reply::ShardStatsReply, table.as_union_value())
                    })],
                    Err(error) => error_reply(&error),
                },
            }
        })
    }
}

/// A scan's rows as reply pages, each within one frame.
fn scan_pages<R: RowView>(region: RegionId, rows: &[R]) -> Vec<Body> {
    let mut pages = Vec::new();
    for chunk in frame_chunks(rows) {
        match rows_to_ipc(chunk) {
            Ok(payload) => pages.push(frame::reply_body(|builder| {
                let rows = builder.create_vector(&payload);
                let table = fb::Rows::create(builder, &fb::RowsArgs { rows: Some(rows) });
                (fb::Reply::Rows, table.as_union_value())
            })),
            Err(error) => {
                // The engine hands out rows of one schema; rows that cannot be encoded
                // are a bug, reported instead of half a result.
                return vec![frame::error_body(
                    fb::ErrorKind::Internal,
                    &format!("region {region}: {error}"),
                )];
            }
        }
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameKind, Header};
    use metronome_core::data::{FieldType, MatchOp, TagMatcher, TimeUnit, Value};
    use rand::{Rng, SeedableRng};

    /// Valid frames of the requests with the most structure.
    fn sample_requests() -> Vec<Vec<u8>> {
        let schema = RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![FieldColumn {
                name: "value".into(),
                field_type: FieldType::Float64,
            }],
        };
        let region = RegionId::new(3, 1);
        let bodies = [
            frame::request_body(|builder| {
                let schema = convert::region_schema(builder, &schema);
                let table = fb::CreateRegion::create(
                    builder,
                    &fb::CreateRegionArgs {
                        region: Some(&convert::region_id(region)),
                        schema: Some(schema),
                        shard: 1,
                    },
                );
                (fb::Request::CreateRegion, table.as_union_value())
            }),
            frame::request_body(|builder| {
                let payload = rows_to_ipc(&[row(5, 3), row(6, 0)]).unwrap();
                let rows = builder.create_vector(&payload);
                let table = fb::Write::create(
                    builder,
                    &fb::WriteArgs {
                        region: Some(&convert::region_id(region)),
                        rows: Some(rows),
                    },
                );
                (fb::Request::Write, table.as_union_value())
            }),
            frame::request_body(|builder| {
                let request = ScanRequest {
                    matchers: vec![TagMatcher {
                        tag: "host".into(),
                        op: MatchOp::Regex,
                        value: "a|b".into(),
                    }],
                    limit: Some(3),
                    ..ScanRequest::all()
                };
                let table = convert::scan(builder, region, &request);
                (fb::Request::Scan, table.as_union_value())
            }),
        ];
        bodies
            .into_iter()
            .map(|body| {
                body.into_frame(Header {
                    kind: FrameKind::Request,
                    request_id: 1,
                    last: true,
                })
                .to_vec()
            })
            .collect()
    }

    #[test]
    fn requests_decode_and_mutated_frames_are_refused_or_decoded_never_a_panic() {
        for frame in sample_requests() {
            let request = frame::verify_request(&frame).unwrap();
            assert!(decode(request).is_ok());
        }
        let mut random = rand::rngs::StdRng::seed_from_u64(11);
        let mut refused = 0;
        for round in 0..3000 {
            let mut frame = sample_requests().swap_remove(round % 3);
            for _ in 0..random.gen_range(1..6) {
                let at = random.gen_range(frame::HEADER_LEN..frame.len());
                frame[at] = random.gen();
            }
            match frame::verify_request(&frame) {
                Ok(request) => refused += usize::from(decode(request).is_err()),
                Err(_) => refused += 1,
            }
        }
        assert!(refused > 0, "some mutation must be caught");
    }

    fn row(ts: i64, text_len: usize) -> Row {
        Row {
            tags: vec!["a".into()],
            ts,
            fields: vec![Value::String("x".repeat(text_len))],
        }
    }

    #[test]
    fn frames_are_cut_by_rows_and_by_bytes_and_keep_order() {
        assert_eq!(
            frame_chunks::<Row>(&[]).len(),
            1,
            "an empty write is one empty frame"
        );
        let rows: Vec<Row> = (0..ROWS_PER_FRAME_MAX as i64 * 2 + 1)
            .map(|ts| row(ts, 0))
            .collect();
        let chunks = frame_chunks(&rows);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![ROWS_PER_FRAME_MAX, ROWS_PER_FRAME_MAX, 1]
        );
        let big: Vec<Row> = (0..40).map(|ts| row(ts, 1024 * 1024)).collect();
        let chunks = frame_chunks(&big);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(Row::estimated_bytes).sum();
            assert!(bytes <= ROW_BYTES_PER_FRAME_MAX, "{bytes}");
        }
        let flattened: Vec<i64> = chunks.iter().flat_map(|c| c.iter().map(|r| r.ts)).collect();
        assert_eq!(flattened, (0..40).collect::<Vec<_>>());
        // A row bigger than the budget still goes, alone.
        let huge = vec![row(0, 1), row(1, ROW_BYTES_PER_FRAME_MAX), row(2, 1)];
        assert_eq!(frame_chunks(&huge).len(), 3);
    }
}
