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
    /// of the region's followers at that epoch (copying `payload` only if it has any).
    /// Called in the step that takes the sequence, before the WAL queues it, so a region's
    /// writes queue in order. An error: the write cannot be shipped (the region is not
    /// led here at that epoch any more, or a follower is too far behind), and the engine
    /// refuses it.
    fn ship(
        &self,
        region: RegionId,
        epoch: u64,
        sequence: u64,
        payload: &[u8],
    ) -> Result<Ticket, String>;

    /// How far behind each copy of the regions led here is (for monitoring).
    fn lag(&self) -> Vec<metronome_wire::CopyLag>;
}

/// Why write `sequence` of `region` is not on every copy.
pub(super) fn not_replicated(region: RegionId, sequence: u64, reason: String) -> EngineError {
    EngineError::Unavailable(format!(
        "write {sequence} of region {region} is not on every replica: {reason}"
    ))
}

/// Lets write `sequence` of `region` go to its followers once the leader's WAL told its
/// outcome (`durable`), and waits until every follower has it durable.
pub(super) async fn await_shipped(
    region: RegionId,
    sequence: u64,
    durable: bool,
    mut ticket: Ticket,
) -> Result<(), EngineError> {
    let unavailable = |reason: String| not_replicated(region, sequence, reason);
    ticket.release(durable);
    if !durable {
        // The WAL's error is the write's; nothing was shipped.
        return Ok(());
    }
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
    /// in sequence order; returns once every one is durable and applied. A write already
    /// taken (a shipment sent again) is not taken twice, but waited for if its sync is
    /// still under way: the answer says every write in the shipment is durable here. A
    /// gap (a write it never had) is an error, since the copy would no longer be a prefix
    /// of the leader's. Writes to a region dropped here are taken as done: it holds
    /// nothing anyone reads.
    pub async fn apply_replicated(
        &self,
        id: RegionId,
        writes: Vec<(u64, bytes::Bytes)>,
    ) -> Result<(), EngineError> {
        let mut pending = Vec::with_capacity(writes.len());
        let mut refused = None;
        let mut queued_before = None;
        {
            let mut regions = self.regions.borrow_mut();
            if regions
                .get(&id)
                .is_some_and(|region| region.state() == &RegionState::Dropped)
            {
                return Ok(());
            }
            let region = region_mut(&mut regions, id, Need::Writable)?;
            for (sequence, payload) in writes {
                let last = region.manifest.last_sequence;
                if sequence <= last {
                    // Taken already; durable unless still in flight.
                    if region.in_flight.range(..=sequence).next().is_some() {
                        let (told, durable) = oneshot::channel();
                        region.durable_waiters.push((sequence, told));
                        queued_before = Some(durable);
                    }
                    continue;
                }
                if sequence != last + 1 {
                    refused = Some(EngineError::Unavailable(format!(
                        "region {id}: the leader sent write {sequence}, the copy here ends \
                         at {last}; it must catch up before it takes more"
                    )));
                    break;
                }
                let batch = match write_batch::decode(&payload) {
                    Ok(batch) => batch,
                    Err(error) => {
                        refused = Some(EngineError::Internal(format!(
                            "region {id}: the leader's write {sequence} does not decode: {error}"
                        )));
                        break;
                    }
                };
                if let Err(fault) = batch.check(&region.manifest.schema) {
                    refused = Some(EngineError::InvalidWrite { region: id, fault });
                    break;
                }
                let durable = match self.wal.enqueue(id, sequence, payload.to_vec()) {
                    Ok(durable) => durable,
                    Err(error) => {
                        refused = Some(error.into());
                        break;
                    }
                };
                region.manifest.last_sequence = sequence;
                region.in_flight.insert(sequence);
                pending.push((sequence, batch, durable));
            }
        }
        // Whatever was queued is awaited and applied, even when a later write was refused.
        let mut failed = None;
        for (sequence, batch, durable) in pending {
            let outcome = durable
                .await
                .unwrap_or_else(|_| Err(WalError::Failed("the WAL writer stopped".to_string())));
            if let Err(error) = self.apply_durable(id, sequence, batch, outcome) {
                failed.get_or_insert(error);
            }
        }
        if let Some(durable) = queued_before {
            // Told once nothing at or below it is in flight: durable, unless the WAL failed
            // (a failed WAL takes nothing more, so its failure covers them).
            if durable.await.is_err() {
                failed.get_or_insert(EngineError::Unavailable(format!(
                    "region {id}: the shard stopped before a write sent again was durable"
                )));
            }
            if let Some(reason) = self.wal.failure() {
                failed.get_or_insert(EngineError::Wal(WalError::Failed(reason)));
            }
        }
        match failed.or(refused) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
