//! The metadata service over the protocol: catalog commands, the catalog, heartbeats.
#![cfg(not(madsim))]

use std::sync::Arc;
use std::time::Duration;

use metronome_catalog::client::{MetaClient, MetaError};
use metronome_catalog::{Command, Route, DEFAULT_DATABASE};
use metronome_core::rt::disk::Disk;
use metronome_core::rt::net::{FrameLimits, InProcNetwork, Listener};
use metronome_core::rt::task;
use metronome_metasrv::service::{ExecuteError, MetaService, ReplicaConfig};
use metronome_wire::rpc::{self, RpcClient};
use metronome_wire::ShardStats;

fn serve(network: &InProcNetwork, name: &str, service: Arc<MetaService>) -> MetaClient {
    let limits = FrameLimits::default();
    let listener = network.listen(name, limits).unwrap();
    task::spawn(rpc::serve(Listener::from(listener), service, limits));
    let connector = rpc::inproc_connector(network.clone(), name, limits);
    MetaClient::new(RpcClient::new(name, connector, Duration::from_secs(30)))
}

fn ensure(name: &str, labels: &[&str]) -> Command {
    Command::EnsureMetric {
        database: DEFAULT_DATABASE.into(),
        name: name.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_catalog_and_heartbeats_over_the_protocol_survive_a_restart() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let disk = Disk::real(dir.path());
    let network = InProcNetwork::new();
    let service = Arc::new(
        MetaService::start(disk.clone(), "meta", ReplicaConfig::single())
            .await
            .unwrap(),
    );
    let client = serve(&network, "metasrv", service.clone());

    let version = client
        .execute(&Command::CreateMetricRegions {
            database: DEFAULT_DATABASE.into(),
            routes: vec![Route {
                datanode: 0,
                shard: 0,
            }],
        })
        .await
        .unwrap();
    assert_eq!((version.version, version.applied), (1, true));
    let ensured = client.execute(&ensure("up", &["job"])).await.unwrap();
    assert_eq!((ensured.version, ensured.applied), (2, true));
    let again = client.execute(&ensure("up", &["job"])).await.unwrap();
    assert_eq!(
        (again.version, again.applied),
        (2, false),
        "a command that changes nothing leaves the version, and says so"
    );
    let refused = client.execute(&ensure("9bad", &["job"])).await.unwrap_err();
    assert!(
        matches!(&refused, MetaError::Refused(m) if m.contains("9bad")),
        "{refused:?}"
    );

    let catalog = client.catalog().await.unwrap();
    assert_eq!(&catalog, service.local_catalog().as_ref());
    assert!(catalog.table(DEFAULT_DATABASE, "up").is_ok());

    let stats = [ShardStats {
        shard: 3,
        wal_commits: 9,
        ..ShardStats::default()
    }];
    assert_eq!(client.heartbeat(17, &stats).await.unwrap(), 2);
    let datanodes = service.datanodes();
    assert_eq!(datanodes.len(), 1);
    assert_eq!(datanodes[&17].shards, stats);

    drop(client);
    service.stop().await.unwrap().stop_and_join().unwrap();
    let error = service.execute(ensure("late", &["job"])).await.unwrap_err();
    assert!(
        matches!(&error, ExecuteError::Unavailable(m) if m.contains("could not commit")),
        "{error:?}"
    );

    let reopened = Arc::new(
        MetaService::start(disk, "meta", ReplicaConfig::single())
            .await
            .unwrap(),
    );
    let client = serve(&network, "metasrv-2", reopened.clone());
    assert_eq!(client.catalog().await.unwrap(), catalog);
    reopened.stop().await.unwrap().stop_and_join().unwrap();
}
