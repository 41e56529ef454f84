//! The datanode's heartbeat: every interval it tells the metasrv it is alive, with its
//! shards' figures. A heartbeat that fails is logged and the next one tries again; the
//! metasrv, not the datanode, decides what a silence means.

use std::time::Duration;

use metronome_catalog::client::MetaClient;

use crate::datanode::DatanodeHandle;

/// How often a datanode reports.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Reports datanode `datanode`'s figures to `metasrv` every `interval`, forever (the
/// caller stops it by dropping or aborting its task). Runs on the frontend's runtime,
/// outside the shards, which it reaches through `handle`.
pub async fn run(metasrv: MetaClient, handle: DatanodeHandle, datanode: u64, interval: Duration) {
    let mut ticks = metronome_core::rt::time::interval(interval);
    loop {
        ticks.tick().await;
        if let Err(error) = metasrv.heartbeat(datanode, &handle.stats().await).await {
            tracing::warn!(%error, datanode, "heartbeat to the metasrv failed");
        }
    }
}
