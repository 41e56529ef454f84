//! The S3 object store against a real S3-compatible server (moto) on loopback, used from
//! a monoio shard as the datanode uses it. `.ci/run` installs moto (`pip install
//! 'moto[server]'`).
#![cfg(not(madsim))]
// The test starts and probes a real server process.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io;

use metronome_core::rt::disk::Disk;
use metronome_core::rt::object::testing::MotoServer;
use metronome_core::rt::object::ObjectStore;
use metronome_core::rt::shard::{run_on_one_shard, IoDriverChoice};

#[test]
fn objects_round_trip_through_a_real_s3_server_from_a_shard() {
    let server = MotoServer::start();
    let (node_1, node_2) = (
        server.config("metronome-test", "node-1"),
        server.config("metronome-test", "node-2"),
    );
    let outcome = run_on_one_shard(IoDriverChoice::Auto, move |_| async move {
        let store = ObjectStore::s3(node_1).unwrap();
        let other = ObjectStore::s3(node_2).unwrap();
        store.ensure_bucket().await.unwrap();
        store
            .ensure_bucket()
            .await
            .expect("ensuring an existing bucket succeeds");

        let big: Vec<u8> = (0..6 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        store
            .put("regions/1_1/sst/0001.parquet", b"first".to_vec())
            .await
            .unwrap();
        store
            .put("regions/1_1/sst/0002.parquet", big.clone())
            .await
            .unwrap();
        other
            .put("regions/1_1/sst/0009.parquet", b"elsewhere".to_vec())
            .await
            .unwrap();

        assert_eq!(
            store.get("regions/1_1/sst/0001.parquet").await.unwrap(),
            b"first"
        );
        assert_eq!(
            store.get("regions/1_1/sst/0002.parquet").await.unwrap(),
            big
        );
        assert_eq!(
            store.list("regions/1_1/sst").await.unwrap(),
            [
                "regions/1_1/sst/0001.parquet",
                "regions/1_1/sst/0002.parquet"
            ],
            "a prefix sees only its own objects"
        );
        store
            .put("regions/1_1/sst/0001.parquet", b"replaced".to_vec())
            .await
            .unwrap();
        assert_eq!(
            store.get("regions/1_1/sst/0001.parquet").await.unwrap(),
            b"replaced"
        );

        store.delete("regions/1_1/sst/0001.parquet").await.unwrap();
        store
            .delete("regions/1_1/sst/0001.parquet")
            .await
            .expect("deleting a missing object succeeds");
        let missing = store.get("regions/1_1/sst/0001.parquet").await.unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{missing}");
        store.list("regions/1_1/sst").await.unwrap()
    })
    .unwrap();
    assert_eq!(outcome, ["regions/1_1/sst/0002.parquet"]);
}

#[test]
fn an_unreachable_s3_endpoint_is_an_error_naming_the_object() {
    // The configuration of a server that has stopped: nothing listens there any more.
    let config = MotoServer::start().config("metronome-test", "");
    let error = run_on_one_shard(IoDriverChoice::Auto, move |_| async move {
        let store = ObjectStore::s3(config).unwrap();
        store.put("a/b", b"x".to_vec()).await.unwrap_err()
    })
    .unwrap();
    let message = error.to_string();
    assert!(message.contains("put metronome-test/a/b"), "{message}");
}

#[test]
fn a_read_cache_serves_objects_from_local_files_within_its_budget() {
    let server = MotoServer::start();
    let config = server.config("metronome-cache", "node-1");
    let local = tempfile::tempdir().unwrap();
    let root = local.path().to_path_buf();
    let cache_files = move || -> usize { std::fs::read_dir(root.join("cache")).unwrap().count() };
    let disk = Disk::real(local.path());
    let outcome = run_on_one_shard(IoDriverChoice::Auto, move |_| async move {
        // `remote` changes the bucket behind the cache's back, to show where reads go.
        let remote = ObjectStore::s3(config.clone()).unwrap();
        remote.ensure_bucket().await.unwrap();
        remote.put("stale", b"left over".to_vec()).await.unwrap();
        let object = |byte: u8| vec![byte; 1000];
        let store = ObjectStore::s3(config.clone())
            .unwrap()
            .with_read_cache(disk.clone(), "cache", 2500)
            .await
            .unwrap();
        store.put("sst/a", object(b'a')).await.unwrap();
        store.put("sst/b", object(b'b')).await.unwrap();
        remote.delete("sst/a").await.unwrap();
        assert_eq!(
            store.get("sst/a").await.unwrap(),
            object(b'a'),
            "written through, then served locally"
        );
        assert_eq!(store.read_cache_hits_misses(), Some((1, 0)));

        // A third object exceeds the budget: the oldest goes, and reads of it go remote.
        store.put("sst/c", object(b'c')).await.unwrap();
        assert_eq!(
            store.get("sst/a").await.unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // A fetched object is cached: the next read of it stays local.
        remote.put("sst/d", object(b'd')).await.unwrap();
        assert_eq!(store.get("sst/d").await.unwrap(), object(b'd'));
        remote.delete("sst/d").await.unwrap();
        assert_eq!(store.get("sst/d").await.unwrap(), object(b'd'));

        // Deleting through the store drops the cached copy: a later object under the
        // same key is read fresh.
        store.delete("sst/c").await.unwrap();
        remote.put("sst/c", b"new".to_vec()).await.unwrap();
        assert_eq!(store.get("sst/c").await.unwrap(), b"new");

        // Larger than the whole budget: never cached.
        store.put("sst/huge", vec![7; 4000]).await.unwrap();
        remote.delete("sst/huge").await.unwrap();
        assert!(store.get("sst/huge").await.is_err());

        // Reopening empties the cache: nothing from a previous run is served.
        let reopened = ObjectStore::s3(config)
            .unwrap()
            .with_read_cache(disk, "cache", 2500)
            .await
            .unwrap();
        assert_eq!(reopened.get("stale").await.unwrap(), b"left over");
        reopened.read_cache_hits_misses()
    })
    .unwrap();
    assert_eq!(outcome, Some((0, 1)));
    assert_eq!(cache_files(), 1, "only `stale`, fetched after the reopen");
}
