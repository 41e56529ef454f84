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
    let (version, leases, _) = client.heartbeat(17, &stats, &[]).await.unwrap();
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
    let (_, leases, _) = client.heartbeat(0, &stats, &[]).await.unwrap();
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

/// A datanode that names a region's copy quarantined in its heartbeat (damage found as it
/// started) loses the copy: as the leader, to a live follower at once, with no lease to
/// wait out; as a follower, by leaving the configuration. Repair then gives the region a
/// learner anywhere but there, and a datanode that stops naming the region keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_copies_are_replaced_and_never_chosen_again() {
    use metronome_catalog::replicas::Replica;
    use metronome_core::data::RegionId;
    use metronome_metasrv::quarantine::replace_quarantined;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let service = Arc::new(
        MetaService::start(Disk::real(dir.path()), "meta", ReplicaConfig::single())
            .await
            .unwrap(),
    );
    for id in 1..=3 {
        let register = Command::RegisterDatanode {
            id,
            addr: format!("10.0.0.{id}:4100"),
            shards: 1,
            incarnation: id,
        };
        service.execute(register).await.unwrap();
    }
    let routes = service.local_catalog().place_among(4, None).unwrap();
    let create = Command::CreateMetricRegions {
        database: DEFAULT_DATABASE.into(),
        routes,
        replicas: 2,
    };
    service.execute(create).await.unwrap();
    let catalog = service.local_catalog();
    let routes: Vec<(RegionId, Route)> = catalog.routes().collect();
    // Region a: its leader names it. Region b: its follower names it. Region c: named by
    // nobody.
    let (a, a_route) = routes[0];
    let (b, b_route) = routes[1];
    let (c, c_route) = routes[2];
    // Region d: its leader and its follower both name it: no one to promote, but the
    // damaged follower goes all the same.
    let (d, d_route) = routes[3];
    let d_follower = d_route.followers.as_slice()[0];
    let b_follower = b_route.followers.as_slice()[0];
    let heartbeat = |datanode: u64, named: Vec<RegionId>| {
        let service = service.clone();
        async move {
            service
                .heartbeat(datanode, Vec::new(), named.into_iter().collect())
                .await
                .unwrap()
        }
    };
    for id in 1..=3 {
        let mut named = Vec::new();
        if id == a_route.datanode {
            named.push(a);
        }
        if id == b_follower.datanode {
            named.push(b);
        }
        if id == d_route.datanode || id == d_follower.datanode {
            named.push(d);
        }
        heartbeat(id, named).await;
    }
    replace_quarantined(&service).await.unwrap();
    let catalog = service.local_catalog();
    let a_now = catalog.route(a).unwrap();
    assert_eq!(a_now.epoch, a_route.epoch + 1);
    assert_eq!(a_now.leader(), a_route.followers.as_slice()[0]);
    assert!(a_now.followers.is_empty(), "{a_now:?}");
    let b_now = catalog.route(b).unwrap();
    assert_eq!(b_now.leader(), b_route.leader());
    assert!(b_now.followers.is_empty(), "{b_now:?}");
    assert_eq!(b_now.epoch, b_route.epoch + 1);
    assert_eq!(catalog.route(c), Some(c_route));
    let d_now = catalog.route(d).unwrap();
    assert_eq!(d_now.leader(), d_route.leader());
    assert!(d_now.followers.is_empty(), "{d_now:?}");
    // Nothing more to replace: the damaged copies are out of every configuration.
    let version = catalog.version;
    replace_quarantined(&service).await.unwrap();
    assert_eq!(service.local_catalog().version, version);

    // Repair gives a and b learners, never on the datanode that named them.
    metronome_metasrv::repair::repair(
        &service,
        metronome_core::rt::time::now(),
        metronome_catalog::rebalance::Balance::default(),
        &mut metronome_metasrv::moves::Moves::default(),
    )
    .await
    .unwrap();
    let catalog = service.local_catalog();
    for (region, named_by) in [(a, a_route.datanode), (b, b_follower.datanode)] {
        let learner: Option<Replica> = catalog.route(region).unwrap().learner;
        let learner = learner.expect("a region short of a copy gets a learner");
        assert_ne!(learner.datanode, named_by, "region {region}");
    }

    // A datanode that no longer names a region (restarted, its copy whole) keeps it.
    heartbeat(c_route.datanode, vec![c]).await;
    heartbeat(c_route.datanode, vec![]).await;
    replace_quarantined(&service).await.unwrap();
    assert_eq!(service.local_catalog().route(c), Some(c_route));
    service.stop().await.unwrap().stop_and_join().unwrap();
}
