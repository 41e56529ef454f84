//! The engine's part in replication (`crate::replication` is the datanode's): a leader's
//! write is handed to its [`Ship`] in the step that takes its sequence, and a follower
//! takes a leader's writes at the leader's sequences ([`ShardEngine::apply_replicated`]).
//!
//! A follower's copy of a region is a region like any other on its shard — its own WAL
//! records, memtable, flushes and SSTs — whose sequences are the leader's: it takes
//! writes only in sequence order, each exactly once, so that it always holds a prefix of
//! the leader's log.

use std::sync::Arc;

use futures::channel::oneshot;
use metronome_core::data::RegionId;
use metronome_wire::write_batch;

use super::*;

/// What tells a leader that a follower made a write durable, or why not.
pub type Shipped = oneshot::Receiver<Result<(), String>>;

/// A write queued for a region's followers: it leaves only once [`Ticket::release`]
/// said it is durable in the leader's own WAL, so that a follower never holds a write
/// the leader's log may lose (a power loss before the leader's sync): a leader that
/// came back without it would give its sequence to another write, which the follower
/// would then skip as one it has.
pub struct Ticket {
    /// One per follower (none for a region of one copy).
    pub acked: Vec<Shipped>,
    release: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl Ticket {
    /// A ticket for followers that `release` lets the write go to.
    pub fn new(acked: Vec<Shipped>, release: Box<dyn FnOnce(bool) + Send>) -> Ticket {
        Ticket {
            acked,
            release: Some(release),
        }
    }

    /// A region of one copy: nothing to ship.
    pub fn none() -> Ticket {
        Ticket {
            acked: Vec::new(),
            release: None,
        }
    }

    /// The leader's WAL made the write durable (`true`), or failed it: it is shipped, or
    /// never is.
    fn release(&mut self, durable: bool) {
        if let Some(release) = self.release.take() {
            release(durable);
        }
    }
}

impl Drop for Ticket {
    /// A write abandoned before its WAL answered is never shipped.
    fn drop(&mut self) {
        self.release(false);
    }
}

/// Where a leader's writes go to its followers.
pub trait Ship: Send + Sync {
    /// Queues write `sequence` of `region`, made under the route epoch `epoch`, for each
    /// of the region's followers at that epoch. Called in the step that takes the
    /// sequence, so a region's writes queue in order. An error: the write cannot be
    /// shipped (the region is not led here at that epoch any more, or the followers are
    /// too far behind).
    fn ship(
        &self,
        region: RegionId,
        epoch: u64,
        sequence: u64,
        payload: bytes::Bytes,
    ) -> Result<Ticket, String>;
}

/// Lets write `sequence` of `region` go to its followers once the leader's WAL told its
/// outcome (`durable`), and waits until every follower has it durable.
pub(super) async fn await_shipped(
    region: RegionId,
    sequence: u64,
    durable: bool,
    shipped: Result<Ticket, String>,
) -> Result<(), EngineError> {
    let unavailable = |reason: String| {
        EngineError::Unavailable(format!(
            "write {sequence} of region {region} is not on every replica: {reason}"
        ))
    };
    let mut ticket = shipped.map_err(unavailable)?;
    ticket.release(durable);
    for follower in std::mem::take(&mut ticket.acked) {
        follower
            .await
            .unwrap_or_else(|_| Err("the replication stopped".to_string()))
            .map_err(unavailable)?;
    }
    Ok(())
}

/// The datanode's [`Ship`], shared by its shards' engines, set once the datanode joins a
/// cluster (after its shards opened).
pub type Shipping = Arc<std::sync::OnceLock<Arc<dyn Ship>>>;

impl ShardEngine {
    /// Ships this shard's leader writes through the datanode's `shipping`, once it is set.
    pub fn share_shipping(&self, shipping: Shipping) {
        *self.shipping.borrow_mut() = shipping;
    }

    /// Takes a leader's writes to its copy of region `id`, `(sequence, batch as logged)`
    /// in sequence order; returns once every one is durable and applied. A write it
    /// already has (a shipment sent again) is skipped; a gap (a write it never had) is an
    /// error, since the copy would no longer be a prefix of the leader's.
    pub async fn apply_replicated(
        &self,
        id: RegionId,
        writes: Vec<(u64, bytes::Bytes)>,
    ) -> Result<(), EngineError> {
        let mut pending = Vec::with_capacity(writes.len());
        let gap = {
            let mut regions = self.regions.borrow_mut();
            let region = region_mut(&mut regions, id, Need::Writable)?;
            let mut gap = None;
            for (sequence, payload) in writes {
                let last = region.manifest.last_sequence;
                if sequence <= last {
                    continue;
                }
                if sequence != last + 1 {
                    gap = Some(EngineError::Unavailable(format!(
                        "region {id}: the leader sent write {sequence}, the copy here ends \
                         at {last}; it must catch up before it takes more"
                    )));
                    break;
                }
                let batch = write_batch::decode(&payload).map_err(|error| {
                    EngineError::Internal(format!(
                        "region {id}: the leader's write {sequence} does not decode: {error}"
                    ))
                })?;
                batch
                    .check(&region.manifest.schema)
                    .map_err(|fault| EngineError::InvalidWrite { region: id, fault })?;
                let durable = self.wal.enqueue(id, sequence, payload.to_vec())?;
                region.manifest.last_sequence = sequence;
                region.in_flight.insert(sequence);
                pending.push((sequence, batch, durable));
            }
            gap
        };
        let mut failed = None;
        for (sequence, batch, durable) in pending {
            let outcome = durable
                .await
                .unwrap_or_else(|_| Err(WalError::Failed("the WAL writer stopped".to_string())));
            if let Err(error) = self.apply_durable(id, sequence, batch, outcome) {
                failed.get_or_insert(error);
            }
        }
        match failed.or(gap) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
