//! The datanode's side of [`RegionService`]: requests arrive, go to the owning shard,
//! and engine errors leave as protocol errors.

use metronome_core::data::{FieldColumn, RegionId, RegionSchema, Row, ScanRequest, SeriesRows};
use metronome_wire::{BoxFuture, RegionError, RegionService, ShardStats};

use crate::datanode::DatanodeHandle;
use crate::engine::EngineError;

impl From<EngineError> for RegionError {
    fn from(error: EngineError) -> RegionError {
        RegionError::new(error.kind(), error.to_string())
    }
}

impl RegionService for DatanodeHandle {
    fn create_region(
        &self,
        region: RegionId,
        schema: RegionSchema,
        shard: u16,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move {
            let shard = shard % self.shard_count();
            Ok(DatanodeHandle::create_region_on(self, region, schema, shard).await?)
        })
    }

    fn drop_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move { Ok(DatanodeHandle::drop_region(self, region).await?) })
    }

    fn region_schema(
        &self,
        region: RegionId,
    ) -> BoxFuture<'_, Result<Option<RegionSchema>, RegionError>> {
        Box::pin(async move {
            match DatanodeHandle::schema(self, region).await {
                Ok(schema) => Ok(Some(schema)),
                Err(EngineError::RegionNotFound(_)) => Ok(None),
                Err(error) => Err(error.into()),
            }
        })
    }

    fn add_tags(
        &self,
        region: RegionId,
        tags: Vec<String>,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move { Ok(DatanodeHandle::add_tags(self, region, tags).await?) })
    }

    fn add_field(
        &self,
        region: RegionId,
        column: FieldColumn,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move { Ok(DatanodeHandle::add_field(self, region, column).await?) })
    }

    fn set_ttl(
        &self,
        region: RegionId,
        ttl_ms: Option<i64>,
    ) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move { Ok(DatanodeHandle::set_ttl(self, region, ttl_ms).await?) })
    }

    fn write(&self, region: RegionId, rows: Vec<Row>) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move {
            DatanodeHandle::write(self, region, rows).await?;
            Ok(())
        })
    }

    fn scan(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> BoxFuture<'_, Result<Vec<Row>, RegionError>> {
        Box::pin(async move { Ok(DatanodeHandle::scan(self, region, request).await?) })
    }

    fn scan_series(
        &self,
        region: RegionId,
        request: ScanRequest,
    ) -> BoxFuture<'_, Result<Vec<SeriesRows>, RegionError>> {
        Box::pin(async move { Ok(DatanodeHandle::scan_series(self, region, request).await?) })
    }

    fn close_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move { Ok(DatanodeHandle::close_region(self, region).await?) })
    }

    fn open_region(&self, region: RegionId) -> BoxFuture<'_, Result<(), RegionError>> {
        Box::pin(async move { Ok(DatanodeHandle::open_region(self, region).await?) })
    }

    fn shard_stats(&self) -> BoxFuture<'_, Result<Vec<ShardStats>, RegionError>> {
        Box::pin(async move { Ok(DatanodeHandle::stats(self).await) })
    }
}
