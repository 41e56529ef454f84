//! The datanode's part in a cluster's control plane: it registers with the metasrv
//! ([`register`]), then heartbeats ([`run`]) every interval with its shards' figures, and
//! each reply renews the region leases it serves under ([`crate::lease`]). A heartbeat
//! that fails is logged and the next one tries again; the metasrv, not the datanode,
//! decides what a silence means, and the datanode's leases lapse on their own.

use std::sync::Arc;
use std::time::Duration;

use metronome_catalog::client::{MetaClient, MetaError};
use metronome_catalog::Command;
use metronome_core::data::RegionId;
use metronome_core::rt::{rand, time};

use crate::datanode::DatanodeHandle;
use crate::lease::Leases;

pub use metronome_catalog::lease::HEARTBEAT_INTERVAL;

/// How long a heartbeat waits for the shards' figures: a stuck shard must not hold up the
/// renewal of every region's lease (the heartbeat then goes without figures).
const STATS_WAIT_MAX: Duration = Duration::from_secs(1);
/// The least time between heartbeats that requests asked for: refusals in a stream (a
/// frontend with a stale route) must not turn the heartbeat into a busy loop.
const WOKEN_GAP_MIN: Duration = Duration::from_millis(100);

/// The first pause between registration attempts, doubled after each failure...
const REGISTER_RETRY_FIRST: Duration = Duration::from_millis(100);
/// ...up to this.
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(5);

/// Registers datanode `id`, serving at `addr` with `shards` shards, with the metasrv
/// (`metasrv_text` names its addresses in the log). The metasrv may not be up yet: this
/// retries with backoff, logging each failure, until the metasrv answers; it gives up only
/// when the metasrv refuses the registration, which trying again would not change.
pub async fn register(
    metasrv: &MetaClient,
    metasrv_text: &str,
    id: u64,
    addr: String,
    shards: u16,
    incarnation: u64,
) -> Result<(), String> {
    let registration = Command::RegisterDatanode {
        id,
        addr,
        shards,
        incarnation,
    };
    let mut retry = REGISTER_RETRY_FIRST;
    loop {
        match metasrv.execute(&registration).await {
            Ok(_) => return Ok(()),
            Err(MetaError::Refused(reason)) => {
                return Err(format!(
                    "the metasrv at {metasrv_text} refused datanode {id}: {reason}"
                ))
            }
            Err(error) => tracing::warn!(
                metasrv = %metasrv_text,
                %error,
                retry_ms = retry.as_millis() as u64,
                "cannot register with the metasrv; retrying"
            ),
        }
        time::sleep(retry).await;
        retry = (retry * 2).min(REGISTER_RETRY_MAX);
    }
}

/// Reports datanode `datanode`'s figures to `metasrv` every `interval`, and whenever a
/// request asks for its leases to be renewed, forever (the caller stops it by dropping or
/// aborting its task), with the regions its shards hold quarantined
/// ([`DatanodeHandle::quarantined`]), whose copies the metasrv replaces. Runs on the
/// frontend's runtime, outside the shards, which it reaches through `handle`.
pub async fn run(
    metasrv: MetaClient,
    handle: DatanodeHandle,
    datanode: u64,
    interval: Duration,
    leases: Arc<Leases>,
) {
    let mut ticks = time::interval(interval);
    let mut last_sent: Option<std::time::Instant> = None;
    loop {
        let woken = {
            let tick = std::pin::pin!(ticks.tick());
            let woken = std::pin::pin!(leases.woken());
            matches!(
                futures::future::select(tick, woken).await,
                futures::future::Either::Right(_)
            )
        };
        if let Some(gap) = last_sent
            .filter(|_| woken)
            .and_then(|sent| WOKEN_GAP_MIN.checked_sub(time::now().duration_since(sent)))
        {
            time::sleep(gap).await;
        }
        let waiting = leases.starting();
        let stats = time::timeout(STATS_WAIT_MAX, handle.stats())
            .await
            .unwrap_or_default();
        // None named this time (a shard too slow to say) is no news: the metasrv undoes
        // nothing for it.
        let quarantined: Vec<RegionId> = time::timeout(STATS_WAIT_MAX, handle.quarantined())
            .await
            .unwrap_or_default();
        // The lease runs from before the heartbeat leaves, so it ends before the
        // metasrv, which counts from when the heartbeat arrived, thinks it does.
        let sent_at = time::now();
        last_sent = Some(sent_at);
        // Rare but legal: the heartbeat leaves late, or its reply is taken late (a
        // stalled runtime): the lease still counts from `sent_at`.
        if metronome_core::buggify!(0.02) {
            time::sleep(Duration::from_millis(rand::gen_range(10..2000))).await;
        }
        let renewed = match metasrv.heartbeat(datanode, &stats, &quarantined).await {
            Ok((_, grants, replication)) => {
                if metronome_core::buggify!(0.02) {
                    time::sleep(Duration::from_millis(rand::gen_range(10..2000))).await;
                }
                leases.renew(sent_at, &grants, replication)
            }
            Err(error) => {
                tracing::warn!(%error, datanode, "heartbeat to the metasrv failed");
                false
            }
        };
        for request in waiting {
            // A request that stopped waiting dropped its end: nothing to tell it.
            let _ = request.try_send(renewed);
        }
    }
}
