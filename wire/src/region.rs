//! [`RegionService`] over the protocol: [`RegionClient`] sends a frontend's region
//! requests to a datanode, [`RegionServer`] answers them there from the datanode's own
//! implementation.

use std::sync::Arc;

use metronome_core::data::{RegionId, SeriesRows, Value};
use metronome_core::write_batch::WriteBatch;

use crate::convert;
use crate::fb;
use crate::frame::{self, Body};
use crate::region_request::encode_write;
use crate::rows::{ipc_to_series, rows_to_ipc, RowView, SeriesRow, IPC_ROWS_MAX};
use crate::rpc::{BoxFuture as RpcFuture, Dispatch, RpcClient, RpcError};
use crate::write_batch::SeriesPiece;
use crate::{BoxFuture, ErrorKind, RegionError, RegionReply, RegionRequest, RegionService};

/// Rows per Write frame, and per page of a scan's reply.
pub const ROWS_PER_FRAME_MAX: usize = 65_536;
/// Estimated in-memory bytes of the rows per frame; with Arrow's denser encoding this
/// keeps every frame well under the transport's 64 MiB limit.
pub const ROW_BYTES_PER_FRAME_MAX: usize = 16 * 1024 * 1024;

const _: () = assert!(ROWS_PER_FRAME_MAX <= IPC_ROWS_MAX);

/// A write's series cut into frames' worth of pieces, in order: a frame holds at most
/// [`ROWS_PER_FRAME_MAX`] rows and about [`ROW_BYTES_PER_FRAME_MAX`] bytes, so a long
/// series is split across frames (each piece repeats its tags). An empty write is one
/// empty frame.
fn write_frames(batch: &WriteBatch) -> Vec<Vec<SeriesPiece<'_>>> {
    let mut frames = vec![Vec::new()];
    let (mut rows, mut bytes) = (0usize, 0usize);
    for series in &batch.series {
        let tag_bytes: usize = series.tags.iter().map(|(_, value)| value.len() + 8).sum();
        let mut start = 0;
        for (index, (_, fields)) in series.rows.iter().enumerate() {
            let mut row_bytes = 16 + fields.iter().map(Value::estimated_bytes).sum::<usize>();
            if index == start {
                row_bytes += tag_bytes;
            }
            if rows > 0
                && (rows == ROWS_PER_FRAME_MAX || bytes + row_bytes > ROW_BYTES_PER_FRAME_MAX)
            {
                let frame = frames.last_mut().expect("one frame at least");
                if index > start {
                    frame.push(SeriesPiece {
                        tags: &series.tags,
                        rows: &series.rows[start..index],
                    });
                    row_bytes += tag_bytes;
                }
                frames.push(Vec::new());
                (rows, bytes, start) = (0, 0, index);
            }
            rows += 1;
            bytes += row_bytes;
        }
        if start < series.rows.len() {
            frames
                .last_mut()
                .expect("one frame at least")
                .push(SeriesPiece {
                    tags: &series.tags,
                    rows: &series.rows[start..],
                });
        }
    }
    frames
}

/// A scan's `rows` cut into runs that each fit one frame, in order.
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

/// The frontend's end: region requests to one datanode.
pub struct RegionClient {
    rpc: RpcClient,
}

impl RegionClient {
    pub fn new(rpc: RpcClient) -> RegionClient {
        RegionClient { rpc }
    }

    /// Sends one frame's request and reads its reply: an `Error` becomes its error, a
    /// scan's pages become one `Series`.
    async fn send(&self, request: Body) -> Result<RegionReply, RegionError> {
        let peer = self.rpc.peer();
        let frames = self.rpc.call(request).await?;
        let mut series: Option<Vec<SeriesRows>> = None;
        let mut single = None;
        for frame in &frames {
            let reply = frame::verify_reply(frame).map_err(|error| protocol(peer, error))?;
            match reply.body_type() {
                fb::Reply::Error => {
                    return Err(convert::read_error(
                        reply.body_as_error().expect("verified"),
                    ))
                }
                fb::Reply::Rows => {
                    let page = reply.body_as_rows().expect("verified");
                    ipc_to_series(page.rows().bytes(), series.get_or_insert_with(Vec::new))
                        .map_err(|error| protocol(peer, error))?;
                }
                other => match RegionReply::decode(reply) {
                    Some(decoded) => single = Some(decoded.map_err(|error| protocol(peer, error))?),
                    None => return Err(protocol(peer, format!("unexpected reply {other:?}"))),
                },
            }
        }
        match (single, series) {
            (Some(reply), None) if frames.len() == 1 => Ok(reply),
            (None, Some(series)) => Ok(RegionReply::Series(series)),
            _ => Err(protocol(
                peer,
                format!("{} reply frames of no one kind", frames.len()),
            )),
        }
    }
}

impl RegionService for RegionClient {
    fn call(&self, request: RegionRequest) -> BoxFuture<'_, Result<RegionReply, RegionError>> {
        Box::pin(async move {
            match request {
                // Frames go one after another, so a later row of the same (series, ts)
                // still wins, as it does in one write.
                RegionRequest::Write {
                    region,
                    batch,
                    epoch,
                    ..
                } => {
                    for pieces in write_frames(&batch) {
                        match self.send(encode_write(region, epoch, &pieces)?).await? {
                            RegionReply::Done => {}
                            other => {
                                return Err(protocol(
                                    self.rpc.peer(),
                                    format!("a write was answered with {other:?}"),
                                ))
                            }
                        }
                    }
                    Ok(RegionReply::Done)
                }
                request => self.send(request.encode()?).await,
            }
        })
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

impl Dispatch for RegionServer {
    fn dispatch<'a>(&'a self, request: fb::RequestMessage<'a>) -> RpcFuture<'a, Vec<Body>> {
        let decoded = RegionRequest::decode(request);
        Box::pin(async move {
            let request = match decoded {
                Ok(request) => request,
                Err(error) => {
                    return vec![frame::error_body(fb::ErrorKind::InvalidRequest, &error)]
                }
            };
            let region = request.region();
            match self.service.call(request).await {
                // Grouped by series: the datanode builds no `Row` per sample, and the
                // pages repeat each series' tags from one copy.
                Ok(RegionReply::Series(series)) => scan_pages(
                    region.expect("a scan names its region"),
                    &SeriesRow::all(&series),
                ),
                Ok(reply) => vec![reply.encode()],
                Err(error) => error_reply(&error),
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
pub(crate) mod tests {
    use super::*;
    use crate::frame::{FrameKind, Header};
    use metronome_core::data::{Row, Value};
    use rand::{Rng, SeedableRng};

    pub(crate) fn frame_of(request: &RegionRequest) -> Vec<u8> {
        request
            .encode()
            .unwrap()
            .into_frame(Header {
                kind: FrameKind::Request,
                request_id: 1,
                last: true,
            })
            .to_vec()
    }

    #[test]
    fn requests_decode_and_mutated_frames_are_refused_or_decoded_never_a_panic() {
        let requests = crate::region_request::tests::sample_requests();
        let frames: Vec<Vec<u8>> = requests.iter().take(3).map(frame_of).collect();
        let mut random = rand::rngs::StdRng::seed_from_u64(11);
        let mut refused = 0;
        for round in 0..3000 {
            let mut frame = frames[round % 3].clone();
            for _ in 0..random.gen_range(1..6) {
                let at = random.gen_range(frame::HEADER_LEN..frame.len());
                frame[at] = random.gen();
            }
            match frame::verify_request(&frame) {
                Ok(request) => refused += usize::from(RegionRequest::decode(request).is_err()),
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

    /// The rows of `frames`, in order, with each piece's first tag value.
    fn frame_rows(frames: &[Vec<SeriesPiece<'_>>]) -> Vec<(String, i64)> {
        frames
            .iter()
            .flatten()
            .flat_map(|piece| {
                piece
                    .rows
                    .iter()
                    .map(|(ts, _)| (piece.tags[0].1.clone(), *ts))
            })
            .collect()
    }

    #[test]
    fn writes_are_cut_into_frames_by_rows_and_bytes_and_keep_order() {
        assert_eq!(write_frames(&WriteBatch::default()).len(), 1);
        // Two series: a long one, split across frames, then a short one.
        let mut rows: Vec<Row> = (0..ROWS_PER_FRAME_MAX as i64 * 2 + 1)
            .map(|ts| row(ts, 0))
            .collect();
        rows.extend((0..3).map(|ts| Row {
            tags: vec!["b".into()],
            ..row(ts, 0)
        }));
        let batch = WriteBatch::from_rows(rows.clone());
        let frames = write_frames(&batch);
        let counts: Vec<usize> = frames
            .iter()
            .map(|frame| frame.iter().map(|piece| piece.rows.len()).sum())
            .collect();
        assert_eq!(counts, vec![ROWS_PER_FRAME_MAX, ROWS_PER_FRAME_MAX, 4]);
        assert_eq!(
            frames[2].len(),
            2,
            "the last frame ends one series, holds the other"
        );
        let expected: Vec<(String, i64)> = rows.iter().map(|r| (r.tags[0].clone(), r.ts)).collect();
        assert_eq!(frame_rows(&frames), expected);

        let big = WriteBatch::from_rows((0..40).map(|ts| row(ts, 1024 * 1024)).collect());
        let frames = write_frames(&big);
        assert!(frames.len() >= 3, "{}", frames.len());
        for frame in &frames {
            let bytes: usize = frame
                .iter()
                .flat_map(|piece| piece.rows.iter())
                .map(|(_, fields)| fields.iter().map(Value::estimated_bytes).sum::<usize>())
                .sum();
            assert!(bytes <= ROW_BYTES_PER_FRAME_MAX, "{bytes}");
        }
        assert_eq!(frame_rows(&frames).len(), 40);
        // A row bigger than the budget still goes, alone.
        let huge =
            WriteBatch::from_rows(vec![row(0, 1), row(1, ROW_BYTES_PER_FRAME_MAX), row(2, 1)]);
        assert_eq!(write_frames(&huge).len(), 3);
    }
}
