//! A real datanode answering region requests through the protocol, over the in-process
//! transport (as in standalone) and over TCP: every answer matches what the datanode
//! says when called directly, and its errors keep their kind.
#![cfg(not(madsim))]

use std::sync::Arc;
use std::time::Duration;

use metronome_core::data::{
    FieldColumn, FieldType, MatchOp, RegionId, RegionSchema, Row, ScanRequest, SeriesRows,
    TagMatcher, TimeUnit, Value,
};
use metronome_core::rt::disk::Disk;
use metronome_core::rt::net::{Address, FrameLimits, InProcNetwork, Listener};
use metronome_core::rt::shard::ShardsConfig;
use metronome_core::rt::task;
use metronome_core::write_batch::WriteBatch;
use metronome_datanode::datanode::{Datanode, DatanodeConfig, DatanodeHandle};
use metronome_datanode::engine::EngineConfig;
use metronome_wire::region::{RegionClient, RegionServer, ROWS_PER_FRAME_MAX};
use metronome_wire::rpc::{self, RpcClient};
use metronome_wire::{ErrorKind, RegionServiceExt};

fn schema() -> RegionSchema {
    RegionSchema {
        tags: vec!["host".into(), "dc".into()],
        time_index: "ts".into(),
        time_unit: TimeUnit::Millisecond,
        fields: vec![FieldColumn {
            name: "value".into(),
            field_type: FieldType::Float64,
        }],
    }
}

fn row(host: &str, dc: &str, ts: i64, value: f64) -> Row {
    let mut row = Row {
        tags: vec![host.into(), dc.into()],
        ts,
        fields: vec![Value::Float64(value)],
    };
    row.canonical_tags();
    row
}

async fn exercise(client: &RegionClient, direct: &DatanodeHandle, table: u32) {
    let region = RegionId::new(table, 0);
    assert_eq!(client.region_schema(region).await.unwrap(), None);
    client.create_region(region, schema(), 1).await.unwrap();
    assert_eq!(client.region_schema(region).await.unwrap(), Some(schema()));

    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let rows = vec![
        row("a", "x", 10, 1.0),
        row("b", "", 10, stale),
        row("a", "x", 20, 2.0),
        row("a", "x", 10, 3.0),
    ];
    client
        .write(region, WriteBatch::from_rows(rows))
        .await
        .unwrap();
    let through_wire = client.scan(region, ScanRequest::all()).await.unwrap();
    let directly = direct.scan(region, ScanRequest::all()).await.unwrap();
    assert_eq!(through_wire.len(), 3, "{through_wire:?}");
    assert_eq!(format!("{through_wire:?}"), format!("{directly:?}"));
    // The series-grouped scan groups the same rows.
    let grouped = client
        .scan_series(region, ScanRequest::all())
        .await
        .unwrap();
    assert_eq!(grouped.len(), 2, "{grouped:?}");
    assert_eq!(
        format!("{grouped:?}"),
        format!("{:?}", SeriesRows::group(directly.clone()))
    );
    match &through_wire[2].fields[0] {
        Value::Float64(value) => assert_eq!(value.to_bits(), stale.to_bits()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        through_wire[0].fields,
        [Value::Float64(3.0)],
        "the later write wins"
    );

    let only_b = ScanRequest {
        matchers: vec![TagMatcher {
            tag: "host".into(),
            op: MatchOp::Equal,
            value: "b".into(),
        }],
        ..ScanRequest::all()
    };
    assert_eq!(client.scan(region, only_b).await.unwrap().len(), 1);

    client.add_tags(region, vec!["rack".into()]).await.unwrap();
    client
        .add_field(
            region,
            FieldColumn {
                name: "note".into(),
                field_type: FieldType::String,
            },
        )
        .await
        .unwrap();
    client.set_ttl(region, Some(i64::MAX / 2)).await.unwrap();
    let widened = client.region_schema(region).await.unwrap().unwrap();
    assert_eq!(widened.tags, ["host", "dc", "rack"]);
    let rows = client.scan(region, ScanRequest::all()).await.unwrap();
    assert_eq!(rows[0].fields, [Value::Float64(3.0), Value::Null]);

    let missing = RegionId::new(table, 77);
    let error = client
        .write(missing, WriteBatch::from_rows(vec![row("a", "x", 1, 1.0)]))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
    assert!(error.message.contains(&missing.to_string()), "{error}");
    let wrong_type = Row {
        tags: vec!["a".into()],
        ts: 1,
        fields: vec![Value::Int64(1), Value::Null],
    };
    let error = client
        .write(region, WriteBatch::from_rows(vec![wrong_type]))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Invalid, "{error}");
    assert!(error.message.contains("value"), "{error}");

    // More rows than one frame carries, both ways.
    let many: Vec<Row> = (0..ROWS_PER_FRAME_MAX as i64 * 2 + 10)
        .map(|ts| Row {
            tags: vec![format!("h{}", ts % 7)],
            ts,
            fields: vec![Value::Float64(ts as f64), Value::Null],
        })
        .collect();
    let big = RegionId::new(table, 1);
    client.create_region(big, widened, 0).await.unwrap();
    client
        .write(big, WriteBatch::from_rows(many.clone()))
        .await
        .unwrap();
    let scanned = client.scan(big, ScanRequest::all()).await.unwrap();
    assert_eq!(scanned.len(), many.len());
    assert_eq!(scanned, direct.scan(big, ScanRequest::all()).await.unwrap());

    let stats = client.shard_stats().await.unwrap();
    assert_eq!(stats.len(), 2);
    assert!(
        stats.iter().map(|s| s.regions).sum::<u64>() >= 2,
        "{stats:?}"
    );

    // A flush over the protocol writes the region's memtable to an SST.
    let flushes =
        |stats: &[metronome_wire::ShardStats]| stats.iter().map(|s| s.flushes).sum::<u64>();
    client.flush_region(big).await.unwrap();
    let after = client.shard_stats().await.unwrap();
    assert_eq!(flushes(&after), flushes(&stats) + 1, "{after:?}");
    assert_eq!(client.scan(big, ScanRequest::all()).await.unwrap(), scanned);

    // A closed region keeps its rows and serves them again once opened.
    client.close_region(big).await.unwrap();
    let error = client.scan(big, ScanRequest::all()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::WrongRoute, "{error}");
    assert!(error.message.contains("closed"), "{error}");
    client.open_region(big).await.unwrap();
    assert_eq!(
        client.scan(big, ScanRequest::all()).await.unwrap().len(),
        many.len()
    );

    client.drop_region(region).await.unwrap();
    assert_eq!(client.region_schema(region).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_requests_through_the_protocol_match_direct_calls() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let datanode = Datanode::start(
        Disk::real(dir.path()),
        DatanodeConfig {
            shards: ShardsConfig {
                count: 2,
                pin_to_cores: false,
                ..ShardsConfig::per_core()
            },
            engine: EngineConfig::default(),
        },
    )
    .await
    .unwrap();
    let handle = datanode.handle();
    let server = Arc::new(RegionServer::new(Arc::new(handle.clone())));
    let limits = FrameLimits::default();

    let network = InProcNetwork::new();
    let inproc = network.listen("datanode-0", limits).unwrap();
    task::spawn(rpc::serve(Listener::from(inproc), server.clone(), limits));
    let connector = rpc::inproc_connector(network, "datanode-0", limits);
    let client = RegionClient::new(RpcClient::new(
        "inproc://datanode-0",
        connector,
        Duration::from_secs(60),
    ));
    exercise(&client, &handle, 1).await;

    let tcp = Listener::bind_tcp("127.0.0.1:0".parse().unwrap(), limits)
        .await
        .unwrap();
    let Address::Tcp(address) = tcp.local_address().unwrap() else {
        unreachable!("a TCP listener has a TCP address")
    };
    task::spawn(rpc::serve(tcp, server, limits));
    let connector = rpc::tcp_connector(address, limits);
    let client = RegionClient::new(RpcClient::new(
        address.to_string(),
        connector,
        Duration::from_secs(60),
    ));
    exercise(&client, &handle, 2).await;

    // A graceful stop flushes every region. The dropped ones (their tombstones keep their
    // routes) and a closed one hold nothing to flush and must not make it fail.
    let closed = RegionId::new(3, 0);
    handle.create_region(closed, schema()).await.unwrap();
    handle
        .write(closed, WriteBatch::from_rows(vec![row("c", "y", 30, 1.0)]))
        .await
        .unwrap();
    handle.close_region(closed).await.unwrap();
    let live = RegionId::new(3, 1);
    handle.create_region(live, schema()).await.unwrap();
    handle
        .write(live, WriteBatch::from_rows(vec![row("d", "y", 30, 1.0)]))
        .await
        .unwrap();
    assert_eq!(
        handle.flush_all().await,
        Ok(1),
        "only the live region had rows"
    );

    drop(client);
    datanode.into_shards().stop_and_join().unwrap();
}

/// A data directory names itself: the same incarnation after a restart, another for an
/// empty directory (a replaced disk), and a damaged name refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_keeps_its_incarnation_and_a_new_one_gets_another() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let replaced = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = || DatanodeConfig {
        shards: ShardsConfig {
            count: 1,
            pin_to_cores: false,
            ..ShardsConfig::per_core()
        },
        engine: EngineConfig::default(),
    };
    let start = |path: &std::path::Path| Datanode::start(Disk::real(path), config());
    let first = start(dir.path()).await.unwrap();
    let incarnation = first.incarnation;
    assert_ne!(incarnation, 0);
    first.into_shards().stop_and_join().unwrap();
    let again = start(dir.path()).await.unwrap();
    assert_eq!(again.incarnation, incarnation, "a restart keeps it");
    again.into_shards().stop_and_join().unwrap();
    let other = start(replaced.path()).await.unwrap();
    assert_ne!(
        other.incarnation, incarnation,
        "an empty directory gets another"
    );
    other.into_shards().stop_and_join().unwrap();
    Disk::real(dir.path())
        .write_atomic(
            metronome_datanode::incarnation::INCARNATION_FILE,
            b"not a number\n".to_vec(),
        )
        .await
        .unwrap();
    let refused = start(dir.path())
        .await
        .err()
        .expect("a damaged name refuses to start");
    assert!(refused.contains("incarnation"), "{refused}");
}
