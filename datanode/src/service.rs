//! The datanode's side of [`RegionService`]: a [`RegionRequest`] travels unchanged from
//! the wire decoder (or an in-process caller) to the shard that owns its region, where
//! [`handle`] answers it from the engine; engine errors leave as protocol errors.
//!
//! A new region RPC is one arm here, besides its variant in `wire::region_request` and
//! its table in the schema.

use metronome_wire::{BoxFuture, ReadAt, RegionError, RegionReply, RegionRequest, RegionService};

use crate::datanode::DatanodeHandle;
use crate::engine::{EngineError, ShardEngine};

impl From<EngineError> for RegionError {
    fn from(error: EngineError) -> RegionError {
        RegionError::new(error.kind(), error.to_string())
    }
}

impl RegionService for DatanodeHandle {
    fn call(&self, request: RegionRequest) -> BoxFuture<'_, Result<RegionReply, RegionError>> {
        Box::pin(async move { Ok(self.region_call(request).await?) })
    }
}

/// Answers a region request on shard `shard`, whose engine is `engine`.
pub(crate) async fn handle(
    engine: &ShardEngine,
    shard: u16,
    request: RegionRequest,
) -> Result<RegionReply, EngineError> {
    Ok(match request {
        RegionRequest::Create { region, schema, .. } => {
            engine.create_region(region, schema).await?;
            RegionReply::Done
        }
        RegionRequest::Drop { region } => {
            engine.drop_region(region).await?;
            RegionReply::Done
        }
        RegionRequest::Schema { region } => match engine.schema(region) {
            Ok(schema) => RegionReply::Schema(Some(schema)),
            Err(EngineError::RegionNotFound(_)) => RegionReply::Schema(None),
            Err(error) => return Err(error),
        },
        RegionRequest::AddTags { region, tags } => {
            engine.add_tags(region, tags).await?;
            RegionReply::Done
        }
        RegionRequest::AddField { region, column } => {
            engine.add_field(region, column).await?;
            RegionReply::Done
        }
        RegionRequest::SetTtl { region, ttl_ms } => {
            engine.set_ttl(region, ttl_ms).await?;
            RegionReply::Done
        }
        RegionRequest::Write {
            region,
            batch,
            encoded,
            epoch,
        } => {
            engine
                .write_under(
                    region,
                    std::sync::Arc::unwrap_or_clone(batch),
                    encoded,
                    epoch,
                )
                .await?;
            RegionReply::Done
        }
        RegionRequest::Install {
            leader,
            region,
            epoch,
            sequence,
            schema,
            chunk,
            chunks,
            batch,
            ..
        } => {
            let piece = crate::engine::Piece {
                leader,
                epoch,
                sequence,
                chunk,
                chunks,
            };
            engine.install_piece(region, schema, piece, &batch).await?;
            RegionReply::Done
        }
        RegionRequest::Replicate { regions, .. } => {
            // Every region's writes are queued for the WAL before any is awaited: one
            // shipment rides one group commit.
            let applied = futures::future::join_all(
                regions
                    .into_iter()
                    .map(|one| engine.apply_replicated(one.region, one.writes)),
            )
            .await;
            applied.into_iter().collect::<Result<Vec<()>, _>>()?;
            RegionReply::Done
        }
        RegionRequest::Scan {
            region,
            request,
            read,
            ..
        } => RegionReply::Series(match read {
            ReadAt::Leader => engine.scan_series(region, &request).await?,
            _ => {
                engine
                    .scan_series_at_follower(region, &request, read)
                    .await?
            }
        }),
        RegionRequest::CommitPoint { region, .. } => {
            RegionReply::CommitPoint(engine.commit_point(region)?)
        }
        RegionRequest::Close { region } => {
            engine.close_region(region).await?;
            RegionReply::Done
        }
        RegionRequest::Open { region } => {
            engine.open_region(region).await?;
            RegionReply::Done
        }
        RegionRequest::Flush { region } => {
            engine.flush_region(region).await?;
            RegionReply::Done
        }
        RegionRequest::ShardStats => RegionReply::ShardStats(vec![engine.stats(shard)]),
        // The datanode's handle answers it: replication is no shard's.
        RegionRequest::Replication => {
            return Err(EngineError::Internal(format!(
                "shard {shard} was asked for the datanode's replication figures"
            )))
        }
    })
}
