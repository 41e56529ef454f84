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
            routes: vec![Route::new(0, 0)],
            replicas: 1,
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
    let (version, leases, _) = client.heartbeat(17, &stats).await.unwrap();
    assert_eq!(version, 2);
    // Datanode 17 serves no region of the catalog, so it holds none.
    assert_eq!(leases, vec![]);
    let datanodes = service.datanodes();
    assert_eq!(datanodes.len(), 1);
    assert_eq!(datanodes[&17].shards, stats);
    // Datanode 0 serves the metric region, at its first epoch.
    let metrics = catalog
        .database(DEFAULT_DATABASE)
        .unwrap()
        .metrics
        .clone()
        .unwrap();
    let (_, leases, _) = client.heartbeat(0, &stats).await.unwrap();
    assert_eq!(leases, vec![(metrics.regions[0].0, 1)]);

    // A watch is answered as soon as the catalog moves past the version it names, whether
    // the change comes before or after the watch reaches the metasrv.
    let version = client.catalog().await.unwrap().version;
    assert_eq!(client.watch_catalog(version - 1).await.unwrap(), version);
    let change = ensure("watched", &["job"]);
    let (watched, executed) = tokio::join!(client.watch_catalog(version), client.execute(&change));
    assert_eq!(executed.unwrap().version, version + 1);
    assert_eq!(watched.unwrap(), version + 1);
    let catalog = client.catalog().await.unwrap();

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

/// A data directory of an earlier version holds the single-replica catalog (`meta/catalog`
/// and its edit log): a single replica starts from it; a replica of several refuses to,
/// since each replica would start from its own catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_replica_carries_an_earlier_catalog_over_and_a_cluster_refuses_it() {
    use metronome_core::journal;
    use std::path::Path;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let disk = Disk::real(dir.path());
    // What the single-replica store of the previous version wrote: a checkpoint at
    // version 1 and one edit after it.
    let mut catalog = metronome_catalog::Catalog::default();
    catalog.apply(&ensure("old_metric", &["job"])).unwrap_err();
    let regions = Command::CreateMetricRegions {
        database: DEFAULT_DATABASE.into(),
        routes: vec![Route::new(0, 0)],
        replicas: 1,
    };
    catalog.apply(&regions).unwrap();
    let legacy = Path::new("meta");
    let (store_disk, checkpoint) = (disk.clone(), catalog.clone());
    let edit = ensure("old_metric", &["job"]);
    let shards = metronome_core::rt::shard::start(
        &metronome_core::rt::shard::ShardsConfig {
            count: 1,
            pin_to_cores: false,
            io_driver: metronome_core::rt::shard::IoDriverChoice::Auto,
            uring_entries: 8,
        },
        move |_| {
            let (disk, checkpoint, edit) = (store_disk.clone(), checkpoint.clone(), edit.clone());
            async move {
                journal::store_checkpoint(&disk, legacy, "catalog", &checkpoint, 1)
                    .await
                    .unwrap();
                journal::append_edit(&disk, legacy, 1, &edit).await.unwrap();
            }
        },
    )
    .unwrap();
    shards.stop_and_join().unwrap();

    let peers = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", 4100 + id)))
        .collect();
    let cluster = ReplicaConfig {
        node_id: 1,
        peers,
        ..ReplicaConfig::single()
    };
    let refused = MetaService::start(disk.clone(), "meta", cluster)
        .await
        .err()
        .expect("a replica of three refuses an earlier single-replica catalog");
    assert!(refused.contains("earlier version"), "{refused}");

    let service = MetaService::start(disk, "meta", ReplicaConfig::single())
        .await
        .unwrap();
    let carried = service.local_catalog();
    assert!(carried.table(DEFAULT_DATABASE, "old_metric").is_ok());
    assert_eq!(
        carried.version, 2,
        "the checkpoint's version and its one edit"
    );
    // Commands go on from there.
    let (version, applied) = service
        .execute(ensure("new_metric", &["job"]))
        .await
        .unwrap();
    assert_eq!((version, applied), (3, true));
    service.stop().await.unwrap().stop_and_join().unwrap();
}
