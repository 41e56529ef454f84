//! Typed requests over [`RegionService::call`] ([`RegionServiceExt`]), for every region
//! service: each sends one [`RegionRequest`] and expects the reply of its kind.

use std::sync::Arc;

use metronome_core::data::{FieldColumn, RegionId, RegionSchema, Row, ScanRequest, SeriesRows};
use metronome_core::write_batch::WriteBatch;

use crate::{
    BoxFuture, ErrorKind, RegionError, RegionReply, RegionRequest, RegionService, Replication,
    ShardStats,
};

/// A reply of another kind than the request's.
fn unexpected(what: &str, reply: &RegionReply) -> RegionError {
    let kind = match reply {
        RegionReply::Done => "Done",
        RegionReply::Schema(_) => "Schema",
        RegionReply::Series(_) => "Series",
        RegionReply::ShardStats(_) => "ShardStats",
        RegionReply::Replication(_) => "Replication",
        RegionReply::CommitPoint(_) => "CommitPoint",
    };
    RegionError::new(
        ErrorKind::Internal,
        format!("a {what} request was answered with {kind}"),
    )
}

/// Typed requests over [`RegionService::call`], for every service.
pub trait RegionServiceExt: RegionService {
    /// Sends `request`, expecting `Done`.
    fn call_done(&self, request: RegionRequest) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move {
            match self.call(request).await? {
                RegionReply::Done => Ok(()),
                other => Err(unexpected("region", &other)),
            }
        })
    }

    fn create_region(
        &self,
        region: RegionId,
        schema: RegionSchema,
        shard: u16,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        self.call_done(RegionRequest::Create {
            region,
            schema,
            shard,
        })
    }

    fn drop_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        self.call_done(RegionRequest::Drop { region })
    }

    fn region_schema(
        &self,
        region: RegionId,
    ) -> BoxFuture<'_, Result<Option<RegionSchema>, RegionError>> {
        Box::pin(async move {
            match self.call(RegionRequest::Schema { region }).await? {
                RegionReply::Schema(schema) => Ok(schema),
                other => Err(unexpected("schema", &other)),
            }
        })
    }

    fn add_tags(
        &self,
        region: RegionId,
        tags: Vec<String>,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        self.call_done(RegionRequest::AddTags { region, tags })
    }

    fn add_field(
        &self,
        region: RegionId,
        column: FieldColumn,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        self.call_done(RegionRequest::AddField { region, column })
    }

    fn set_ttl(
        &self,
        region: RegionId,
        ttl_ms: Option<i64>,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        self.call_done(RegionRequest::SetTtl { region, ttl_ms })
    }

    fn write(&self, region: RegionId, batch: WriteBatch) -> BoxFuture<'_, Result<(), RegionError>> {
        self.call_done(RegionRequest::Write {
            region,
            batch: Arc::new(batch),
            encoded: None,
            epoch: 0,
        })
    }

    /// The region's rows matching `request`, grouped by series.
    fn scan_series(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> BoxFuture<'_, Result<Vec<SeriesRows>, RegionError>> {
        Box::pin(async move {
            let scan = RegionRequest::Scan {
                region,
                request,
                epoch: 0,
                read: crate::ReadAt::Leader,
            };
            match self.call(scan).await? {
                RegionReply::Series(series) => Ok(series),
                other => Err(unexpected("scan", &other)),
            }
        })
    }

    /// Like [`RegionServiceExt::scan_series`], as rows (trailing empty tags left out).
    fn scan(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> BoxFuture<'_, Result<Vec<Row>, RegionError>> {
        Box::pin(async move {
            let series = self.scan_series(region, request).await?;
            let mut rows = Vec::with_capacity(series.iter().map(|s| s.rows.len()).sum());
            for one in series {
                for (ts, fields) in one.rows {
                    rows.push(Row {
                        tags: one.tags.clone(),
                        ts,
                        fields,
                    });
                }
            }
            Ok(rows)
        })
    }

    fn close_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        self.call_done(RegionRequest::Close { region })
    }

    fn open_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        self.call_done(RegionRequest::Open { region })
    }

    fn flush_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        self.call_done(RegionRequest::Flush { region })
    }

    fn shard_stats(&self) -> BoxFuture<'_, Result<Vec<ShardStats>, RegionError>> {
        Box::pin(async move {
            match self.call(RegionRequest::ShardStats).await? {
                RegionReply::ShardStats(stats) => Ok(stats),
                other => Err(unexpected("shard stats", &other)),
            }
        })
    }

    fn replication(&self) -> BoxFuture<'_, Result<Replication, RegionError>> {
        Box::pin(async move {
            match self.call(RegionRequest::Replication).await? {
                RegionReply::Replication(figures) => Ok(figures),
                other => Err(unexpected("replication", &other)),
            }
        })
    }
}

impl<T: RegionService + ?Sized> RegionServiceExt for T {}
