//! What the frontend's tests over real components share: a one-shard datanode on a
//! directory, and a metasrv reached over the in-process network as the frontend reaches it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use metronome_catalog::client::MetaClient;
use metronome_core::rt::disk::Disk;
use metronome_core::rt::net::{FrameLimits, InProcNetwork, Listener};
use metronome_core::rt::shard::ShardsConfig;
use metronome_core::rt::task::{self, JoinHandle};
use metronome_datanode::datanode::{Datanode, DatanodeConfig};
use metronome_datanode::engine::EngineConfig;
use metronome_frontend::meta::Meta;
use metronome_metasrv::service::{MetaService, ReplicaConfig};
use metronome_wire::rpc::{self, RpcClient};

/// A datanode of one shard on `dir`.
pub async fn datanode(dir: &Path) -> Datanode {
    Datanode::start(
        Disk::real(dir),
        DatanodeConfig {
            shards: ShardsConfig {
                count: 1,
                pin_to_cores: false,
                ..ShardsConfig::per_core()
            },
            engine: EngineConfig::default(),
        },
    )
    .await
    .unwrap()
}

/// A metasrv keeping its catalog on `dir`, and the frontend's view of it; the task
/// serving it ends when the handle is aborted or dropped with the runtime.
pub async fn meta(dir: &Path) -> (Arc<Meta>, JoinHandle<()>) {
    let (mut metas, server) = metas(dir, 1).await;
    (metas.pop().unwrap(), server)
}

/// `count` frontends' views of one metasrv on `dir`, as several frontends of a cluster
/// hold them.
pub async fn metas(dir: &Path, count: usize) -> (Vec<Arc<Meta>>, JoinHandle<()>) {
    let service = Arc::new(
        MetaService::start(Disk::real(dir), "meta", ReplicaConfig::single())
            .await
            .unwrap(),
    );
    let network = InProcNetwork::new();
    let limits = FrameLimits::default();
    let listener = Listener::from(network.listen("metasrv", limits).unwrap());
    let server = task::spawn(rpc::serve(listener, service, limits));
    let mut metas = Vec::new();
    for _ in 0..count {
        let client = RpcClient::new(
            "inproc://metasrv",
            rpc::inproc_connector(network.clone(), "metasrv", limits),
            Duration::from_secs(60),
        );
        metas.push(Arc::new(
            Meta::connect(MetaClient::new(client)).await.unwrap(),
        ));
    }
    (metas, server)
}
