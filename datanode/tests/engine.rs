//! The region engine on a shard: writes, scans, schema changes, recovery and quarantine.
#![cfg(not(madsim))]

use std::future::Future;

use metronome_core::data::{
    FieldColumn, FieldType, MatchOp, RegionId, RegionSchema, Row, ScanRequest, SeriesRows,
    TagMatcher, TimeUnit, Value,
};
use metronome_core::rt::disk::{Disk, OpenOptions, SimDisk};
use metronome_core::rt::object::{ObjectStore, SimObjectFaults, SimObjectStore};
use metronome_core::rt::shard::{run_on_one_shard, IoDriverChoice, ShardContext, ShardsConfig};
use metronome_core::write_batch::WriteBatch;
use metronome_datanode::datanode::{Datanode, DatanodeConfig};
use metronome_datanode::engine::{EngineConfig, EngineError, ShardEngine, SstStore};
use metronome_datanode::manifest;

fn on_shard<T: Send + 'static, Fut: Future<Output = T> + 'static>(
    body: impl FnOnce(ShardContext) -> Fut + Send + 'static,
) -> T {
    run_on_one_shard(IoDriverChoice::Auto, body).unwrap()
}

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
    Row {
        tags: vec![host.into(), dc.into()],
        ts,
        fields: vec![Value::Float64(value)],
    }
}

const R1: RegionId = RegionId {
    table: 1,
    number: 1,
};
const R2: RegionId = RegionId {
    table: 1,
    number: 2,
};

async fn open(disk: &Disk) -> std::rc::Rc<ShardEngine> {
    ShardEngine::open(disk.clone(), "shard-0", EngineConfig::default())
        .await
        .unwrap()
        .0
}

fn matcher(tag: &str, op: MatchOp, value: &str) -> TagMatcher {
    TagMatcher {
        tag: tag.into(),
        op,
        value: value.into(),
    }
}

#[test]
fn series_only_scans_list_each_series_once_from_memtables_and_sst_indexes() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(1));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        // Two series end up in an SST covering 1000..=2000; then "a" gets a memtable row
        // much later, and "c" one only in the memtable.
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![
                    row("a", "x", 1000, 1.0),
                    row("a", "x", 2000, 2.0),
                    row("b", "y", 1500, 3.0),
                ]),
                None,
            )
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("a", "x", 9000, 4.0), row("c", "x", 9500, 5.0)]),
                None,
            )
            .await
            .unwrap();
        let series = |start_ms: i64, end_ms: i64, matchers: Vec<TagMatcher>| {
            let engine = engine.clone();
            async move {
                let request = ScanRequest {
                    start: start_ms,
                    end: end_ms,
                    matchers,
                    series_only: true,
                    ..ScanRequest::all()
                };
                let rows = engine.scan(R1, &request).await.unwrap();
                for row in &rows {
                    assert_eq!(row.fields, [Value::Null], "series rows carry no sample");
                    assert!((start_ms..end_ms).contains(&row.ts), "{row:?}");
                }
                rows.into_iter().map(|row| row.tags).collect::<Vec<_>>()
            }
        };
        let tags = |pairs: &[(&str, &str)]| -> Vec<Vec<String>> {
            pairs
                .iter()
                .map(|(host, dc)| vec![host.to_string(), dc.to_string()])
                .collect()
        };
        assert_eq!(
            series(i64::MIN, i64::MAX, vec![]).await,
            tags(&[("a", "x"), ("b", "y"), ("c", "x")]),
            "each series once, in series order"
        );
        assert_eq!(
            series(0, 5000, vec![]).await,
            tags(&[("a", "x"), ("b", "y")]),
            "only the SST overlaps"
        );
        assert_eq!(
            series(5000, 10_000, vec![]).await,
            tags(&[("a", "x"), ("c", "x")]),
            "only memtable rows lie in the range"
        );
        assert_eq!(
            series(0, 10_000, vec![matcher("dc", MatchOp::Equal, "x")]).await,
            tags(&[("a", "x"), ("c", "x")])
        );
        assert!(series(3000, 8000, vec![]).await.is_empty());
    })
}

#[test]
fn series_grouped_scans_group_exactly_the_rows_of_a_scan() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(1));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        let requests = || {
            vec![
                ScanRequest::all(),
                ScanRequest {
                    start: 15,
                    end: 35,
                    ..ScanRequest::all()
                },
                ScanRequest {
                    matchers: vec![matcher("host", MatchOp::Equal, "b")],
                    ..ScanRequest::all()
                },
                ScanRequest {
                    matchers: vec![matcher("dc", MatchOp::Regex, "x|")],
                    ..ScanRequest::all()
                },
            ]
        };
        let check = |engine: std::rc::Rc<ShardEngine>, what: &'static str| async move {
            for request in requests() {
                let grouped = engine.scan_series(R1, &request).await.unwrap();
                let rows = engine.scan(R1, &request).await.unwrap();
                assert!(!rows.is_empty(), "{what}: {request:?}");
                assert_eq!(grouped, SeriesRows::group(rows), "{what}: {request:?}");
            }
        };
        let rows = |offset: i64| {
            vec![
                row("a", "x", 10 + offset, 1.0),
                row("a", "x", 20 + offset, 2.0),
                row("b", "", 10 + offset, 3.0),
                row("b", "y", 30 + offset, 4.0),
            ]
        };
        engine
            .write(R1, WriteBatch::from_rows(rows(0)), None)
            .await
            .unwrap();
        // Only the live memtable: the grouped scan answers straight from it.
        check(engine.clone(), "memtable").await;
        // A field added since: rows written before read it as null.
        engine
            .add_field(
                R1,
                FieldColumn {
                    name: "extra".into(),
                    field_type: FieldType::Int64,
                },
            )
            .await
            .unwrap();
        check(engine.clone(), "memtable after ALTER").await;
        // An SST and a memtable: the merged path.
        engine.flush_region(R1).await.unwrap().unwrap();
        let mut later = rows(5);
        for row in &mut later {
            row.fields.push(Value::Int64(7));
        }
        engine
            .write(R1, WriteBatch::from_rows(later), None)
            .await
            .unwrap();
        check(engine.clone(), "SST and memtable").await;
        // Later writes of points in an SST, a second SST, and a memtable overwriting both:
        // the latest write of each point wins.
        let overwrite = |value: f64| {
            vec![
                Row {
                    fields: vec![Value::Float64(value), Value::Int64(8)],
                    ..row("a", "x", 10, 0.0)
                },
                Row {
                    fields: vec![Value::Float64(value), Value::Null],
                    ..row("b", "y", 35, 0.0)
                },
            ]
        };
        engine
            .write(R1, WriteBatch::from_rows(overwrite(50.0)), None)
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        engine
            .write(R1, WriteBatch::from_rows(overwrite(60.0)), None)
            .await
            .unwrap();
        check(engine.clone(), "two SSTs and a memtable").await;
        let a = engine
            .scan_series(
                R1,
                &ScanRequest {
                    matchers: vec![matcher("host", MatchOp::Equal, "a")],
                    ..ScanRequest::all()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            a[0].rows[0],
            (10, vec![Value::Float64(60.0), Value::Int64(8)])
        );
    })
}

#[test]
fn scans_return_matching_rows_in_series_then_time_order_with_later_writes_winning() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(1));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![
                    row("b", "x", 2, 1.0),
                    row("a", "y", 5, 2.0),
                    row("a", "x", 1, 3.0),
                ]),
                None,
            )
            .await
            .unwrap();
        engine
            .write(R1, WriteBatch::from_rows(vec![row("b", "x", 2, 9.0)]), None)
            .await
            .unwrap();

        let all = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(
            all,
            [
                row("a", "x", 1, 3.0),
                row("a", "y", 5, 2.0),
                row("b", "x", 2, 9.0)
            ]
        );

        let scan = |matchers: Vec<TagMatcher>| ScanRequest {
            matchers,
            ..ScanRequest::all()
        };
        assert_eq!(
            engine
                .scan(R1, &scan(vec![matcher("host", MatchOp::Equal, "a")]))
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            engine
                .scan(R1, &scan(vec![matcher("dc", MatchOp::NotEqual, "x")]))
                .await
                .unwrap(),
            [row("a", "y", 5, 2.0)]
        );
        assert_eq!(
            engine
                .scan(R1, &scan(vec![matcher("host", MatchOp::Regex, "a|c")]))
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            engine
                .scan(R1, &scan(vec![matcher("host", MatchOp::Regex, "")]))
                .await
                .unwrap()
                .len(),
            0,
            "regexes are anchored"
        );
        assert_eq!(
            engine
                .scan(R1, &scan(vec![matcher("host", MatchOp::NotRegex, "a")]))
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            engine
                .scan(R1, &scan(vec![matcher("absent", MatchOp::Equal, "")]))
                .await
                .unwrap()
                .len(),
            3,
            "a missing tag is empty"
        );
        assert_eq!(
            engine
                .scan(R1, &scan(vec![matcher("absent", MatchOp::Equal, "v")]))
                .await
                .unwrap()
                .len(),
            0
        );
        let ranged = ScanRequest {
            start: 2,
            end: 5,
            ..ScanRequest::all()
        };
        assert_eq!(
            engine.scan(R1, &ranged).await.unwrap(),
            [row("b", "x", 2, 9.0)]
        );
        let limited = ScanRequest {
            limit: Some(1),
            ..ScanRequest::all()
        };
        assert_eq!(engine.scan(R1, &limited).await.unwrap().len(), 1);

        let error = engine
            .scan(R1, &scan(vec![matcher("host", MatchOp::Regex, "(")]))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, EngineError::InvalidScan { reason, .. } if reason.contains("\"(\"")),
            "{error}"
        );
    });
}

#[test]
fn bad_writes_are_refused_with_the_row_and_column_named() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(2));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        let mut bad = row("a", "x", 1, 1.0);
        bad.fields = vec![Value::String("oops".into())];
        let error = engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("a", "x", 0, 0.0), bad]),
                None,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&error, EngineError::InvalidWrite { fault, .. } if fault.row == Some(1) && fault.reason.contains("value")),
            "{error}"
        );
        assert!(
            engine
                .scan(R1, &ScanRequest::all())
                .await
                .unwrap()
                .is_empty(),
            "a refused write applies nothing"
        );
        assert!(matches!(
            engine.write(R2, WriteBatch::from_rows(vec![]), None).await,
            Err(EngineError::RegionNotFound(R2))
        ));
        let error = engine
            .create_region(
                R1,
                RegionSchema {
                    tags: vec![],
                    ..schema()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(error, EngineError::RegionExists(R1));
        engine
            .create_region(R1, schema())
            .await
            .expect("creating it again with its schema is harmless");
    });
}

#[test]
fn a_closed_region_keeps_every_acknowledged_row_serves_nothing_and_stays_closed_across_a_crash() {
    let sim = SimDisk::new(4);
    let disk = Disk::sim(sim.clone());
    let acknowledged = on_shard({
        let disk = disk.clone();
        move |_| async move {
            let engine = open(&disk).await;
            engine.create_region(R1, schema()).await.unwrap();
            engine.create_region(R2, schema()).await.unwrap();
            // Writes race the close: every one acknowledged must survive it. The first
            // ten are in the WAL's queue when the close starts (it waits for them), the
            // other ten arrive while it drains (they are refused).
            let write = |ts: i64| {
                let engine = engine.clone();
                metronome_core::rt::task::spawn_local(async move {
                    engine
                        .write(
                            R1,
                            WriteBatch::from_rows(vec![row("a", "x", ts, ts as f64)]),
                            None,
                        )
                        .await
                })
            };
            let mut writers: Vec<_> = (0..10).map(write).collect();
            metronome_core::rt::task::yield_now().await;
            let close = {
                let engine = engine.clone();
                metronome_core::rt::task::spawn_local(async move { engine.close_region(R1).await })
            };
            metronome_core::rt::task::yield_now().await;
            writers.extend((10..20).map(write));
            close.await.unwrap().unwrap();
            let mut acknowledged = Vec::new();
            for (ts, writer) in writers.into_iter().enumerate() {
                match writer.await.unwrap() {
                    Ok(_) => acknowledged.push(ts as i64),
                    Err(error) => assert!(matches!(error, EngineError::RegionClosed(_)), "{error}"),
                }
            }
            assert!(
                !acknowledged.is_empty(),
                "some writes land before the close"
            );
            assert!(
                acknowledged.len() < 20,
                "writes during the close are refused"
            );
            engine.close_region(R1).await.unwrap();
            let refused = engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "x", 99, 0.0)]),
                    None,
                )
                .await;
            assert!(
                matches!(refused, Err(EngineError::RegionClosed(_))),
                "{refused:?}"
            );
            assert!(matches!(
                engine.scan(R1, &ScanRequest::all()).await,
                Err(EngineError::RegionClosed(_))
            ));
            assert!(matches!(
                engine.create_region(R1, schema()).await,
                Err(EngineError::RegionClosed(_))
            ));
            engine
                .write(R2, WriteBatch::from_rows(vec![row("b", "y", 1, 1.0)]), None)
                .await
                .unwrap();
            sim.crash();
            acknowledged
        }
    });
    on_shard(move |_| async move {
        let (engine, recovery) = ShardEngine::open(disk, "shard-0", EngineConfig::default())
            .await
            .unwrap();
        assert!(
            recovery.quarantined.is_empty(),
            "{:?}",
            recovery.quarantined
        );
        assert_eq!(
            recovery.rows_replayed, 1,
            "only the open region replays its WAL"
        );
        assert!(matches!(
            engine.scan(R1, &ScanRequest::all()).await,
            Err(EngineError::RegionClosed(_))
        ));
        engine.open_region(R1).await.unwrap();
        engine.open_region(R1).await.unwrap();
        let rows = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.ts).collect::<Vec<_>>(),
            acknowledged,
            "exactly the acknowledged writes"
        );
        for row in &rows {
            assert_eq!(row.fields, [Value::Float64(row.ts as f64)]);
        }
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("a", "x", 99, 9.0)]),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            engine.scan(R1, &ScanRequest::all()).await.unwrap().len(),
            rows.len() + 1
        );
    });
}

#[test]
fn regions_recover_their_schema_and_acknowledged_rows_after_a_crash() {
    let sim = SimDisk::new(3);
    let disk = Disk::sim(sim.clone());
    on_shard({
        let disk = disk.clone();
        move |_| async move {
            let engine = open(&disk).await;
            engine.create_region(R1, schema()).await.unwrap();
            engine.create_region(R2, schema()).await.unwrap();
            for ts in 0..100 {
                engine
                    .write(
                        R1,
                        WriteBatch::from_rows(vec![row("a", "x", ts, ts as f64)]),
                        None,
                    )
                    .await
                    .unwrap();
            }
            engine
                .write(R2, WriteBatch::from_rows(vec![row("z", "y", 7, 7.0)]), None)
                .await
                .unwrap();
            engine
                .add_field(
                    R2,
                    FieldColumn {
                        name: "extra".into(),
                        field_type: FieldType::Int64,
                    },
                )
                .await
                .unwrap();
            engine
                .write(
                    R2,
                    WriteBatch::from_rows(vec![Row {
                        fields: vec![Value::Float64(8.0), Value::Int64(8)],
                        ..row("z", "y", 8, 0.0)
                    }]),
                    None,
                )
                .await
                .unwrap();
            sim.crash();
        }
    });
    on_shard(move |_| async move {
        let (engine, recovery) = ShardEngine::open(disk, "shard-0", EngineConfig::default())
            .await
            .unwrap();
        assert_eq!(recovery.regions, 2);
        assert_eq!(recovery.rows_replayed, 102);
        assert_eq!(
            engine.scan(R1, &ScanRequest::all()).await.unwrap().len(),
            100
        );
        let r2 = engine.scan(R2, &ScanRequest::all()).await.unwrap();
        assert_eq!(
            r2[0].fields,
            [Value::Float64(7.0), Value::Null],
            "rows from before the ALTER read the new column as null"
        );
        assert_eq!(r2[1].fields, [Value::Float64(8.0), Value::Int64(8)]);
        assert_eq!(engine.schema(R2).unwrap().fields.len(), 2);
        // Sequences continue after recovery: a new write still replaces an old one.
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("a", "x", 5, -1.0)]),
                None,
            )
            .await
            .unwrap();
        let five = ScanRequest {
            start: 5,
            end: 6,
            ..ScanRequest::all()
        };
        assert_eq!(
            engine.scan(R1, &five).await.unwrap()[0].fields,
            [Value::Float64(-1.0)]
        );
    });
}

#[test]
fn repeated_scans_and_a_recreated_region_read_their_own_ssts() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(41));
        let engine = open(&disk).await;
        for (incarnation, host) in [(1.0, "old"), (2.0, "new")] {
            engine.create_region(R1, schema()).await.unwrap();
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row(host, "x", 1, incarnation)]),
                    None,
                )
                .await
                .unwrap();
            engine.flush_region(R1).await.unwrap().unwrap();
            // Read twice: the second answer comes from the cache.
            for _ in 0..2 {
                assert_eq!(
                    engine.scan(R1, &ScanRequest::all()).await.unwrap(),
                    [row(host, "x", 1, incarnation)]
                );
            }
            engine.drop_region(R1).await.unwrap();
        }
    });
}

#[test]
fn a_dropped_region_stays_dropped_and_a_new_one_with_its_id_starts_empty() {
    let sim = SimDisk::new(4);
    let disk = Disk::sim(sim.clone());
    on_shard({
        let disk = disk.clone();
        move |_| async move {
            let engine = open(&disk).await;
            engine.create_region(R1, schema()).await.unwrap();
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("old", "x", 1, 1.0)]),
                    None,
                )
                .await
                .unwrap();
            engine.drop_region(R1).await.unwrap();
            assert!(matches!(
                engine.scan(R1, &ScanRequest::all()).await,
                Err(EngineError::RegionNotFound(_))
            ));
            sim.crash();
        }
    });
    on_shard(move |_| async move {
        let (engine, recovery) =
            ShardEngine::open(disk.clone(), "shard-0", EngineConfig::default())
                .await
                .unwrap();
        assert_eq!(recovery.regions, 0);
        engine.create_region(R1, schema()).await.unwrap();
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("new", "x", 2, 2.0)]),
                None,
            )
            .await
            .unwrap();
        drop(engine);
        let (engine, _) = ShardEngine::open(disk, "shard-0", EngineConfig::default())
            .await
            .unwrap();
        assert_eq!(
            engine.scan(R1, &ScanRequest::all()).await.unwrap(),
            [row("new", "x", 2, 2.0)],
            "the old incarnation's WAL records stay dead"
        );
    });
}

#[test]
fn wal_corruption_quarantines_only_the_damaged_region() {
    let disk = Disk::sim(SimDisk::new(5));
    on_shard({
        let disk = disk.clone();
        move |_| async move {
            let engine = open(&disk).await;
            engine.create_region(R1, schema()).await.unwrap();
            engine.create_region(R2, schema()).await.unwrap();
            engine
                .write(R1, WriteBatch::from_rows(vec![row("a", "x", 1, 1.0)]), None)
                .await
                .unwrap();
            engine
                .write(R2, WriteBatch::from_rows(vec![row("b", "x", 1, 1.0)]), None)
                .await
                .unwrap();
            // Rot one payload byte of R1's record (the first commit of the only segment).
            let segment = disk.list_dir("shard-0/wal").await.unwrap()[0].clone();
            let file = disk
                .open(format!("shard-0/wal/{segment}"), OpenOptions::write())
                .await
                .unwrap();
            let byte = file.read_exact_at(1, 45).await.unwrap()[0];
            file.write_at(vec![byte ^ 0x40], 45).await.unwrap();
            file.sync_data().await.unwrap();
        }
    });
    on_shard(move |_| async move {
        let (engine, recovery) =
            ShardEngine::open(disk.clone(), "shard-0", EngineConfig::default())
                .await
                .unwrap();
        assert_eq!(recovery.quarantined.len(), 1, "{recovery:?}");
        let error = engine.scan(R1, &ScanRequest::all()).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("quarantined")
                && message.contains(".wal")
                && message.contains("offset 0"),
            "{message}"
        );
        assert!(engine
            .write(R1, WriteBatch::from_rows(vec![row("a", "x", 2, 2.0)]), None)
            .await
            .is_err());
        assert_eq!(
            engine.scan(R2, &ScanRequest::all()).await.unwrap().len(),
            1,
            "the other region serves on"
        );
        // R2 flushed: the segment holding the damage is then no longer needed by any
        // region that serves, and may be purged. R1 must stay quarantined all the same:
        // its copy lacks the damaged write.
        engine.flush_region(R2).await.unwrap();
        drop(engine);
        for segment in disk.list_dir("shard-0/wal").await.unwrap() {
            disk.remove(format!("shard-0/wal/{segment}")).await.unwrap();
        }
        let (engine, recovery) = ShardEngine::open(disk, "shard-0", EngineConfig::default())
            .await
            .unwrap();
        assert_eq!(recovery.quarantined.len(), 1, "{recovery:?}");
        let message = engine
            .scan(R1, &ScanRequest::all())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("quarantined") && message.contains("offset 0"),
            "{message}"
        );
        assert_eq!(engine.scan(R2, &ScanRequest::all()).await.unwrap().len(), 1);
    });
}

#[test]
fn a_full_memory_budget_refuses_writes_as_retryable() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(6));
        let config = EngineConfig {
            memory_bytes_max: 10_000,
            ..EngineConfig::default()
        };
        let (engine, _) = ShardEngine::open(disk, "shard-0", config).await.unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        let mut refused = None;
        for ts in 0..1000 {
            if let Err(error) = engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "x", ts, 0.0)]),
                    None,
                )
                .await
            {
                refused = Some(error);
                break;
            }
        }
        let error = refused.expect("the budget is reached");
        assert!(
            matches!(error, EngineError::Overloaded { .. }) && error.is_retryable(),
            "{error}"
        );
        assert!(engine.memory_bytes() >= 10_000);
    });
}

#[test]
fn a_datanode_spreads_regions_over_its_shards_and_refuses_fewer_shards_later() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = |count| DatanodeConfig {
        shards: ShardsConfig {
            count,
            pin_to_cores: false,
            ..ShardsConfig::per_core()
        },
        engine: EngineConfig::default(),
    };
    let disk = Disk::real(dir.path());
    let datanode = futures::executor::block_on(Datanode::start(disk.clone(), config(3))).unwrap();
    let handle = datanode.handle();
    let regions: Vec<RegionId> = (0..12).map(|n| RegionId::new(9, n)).collect();
    futures::executor::block_on(async {
        for &region in &regions {
            handle.create_region(region, schema()).await.unwrap();
            handle
                .write(
                    region,
                    WriteBatch::from_rows(vec![row("h", "d", i64::from(region.number), 1.0)]),
                )
                .await
                .unwrap();
        }
    });
    let shards_used: std::collections::BTreeSet<u16> =
        regions.iter().map(|r| handle.shard_of(*r)).collect();
    assert_eq!(
        shards_used.len(),
        3,
        "twelve regions land on all three shards"
    );
    datanode.into_shards().stop_and_join().unwrap();

    let error = futures::executor::block_on(Datanode::start(disk.clone(), config(2)))
        .err()
        .unwrap();
    assert!(
        error.contains("shard-2") && error.contains("at least 3"),
        "{error}"
    );

    let datanode = futures::executor::block_on(Datanode::start(disk, config(3))).unwrap();
    let handle = datanode.handle();
    for &region in &regions {
        let rows = futures::executor::block_on(handle.scan(region, ScanRequest::all())).unwrap();
        assert_eq!(
            rows,
            [row("h", "d", i64::from(region.number), 1.0)],
            "{region} after restart"
        );
    }
    datanode.into_shards().stop_and_join().unwrap();
}

/// A datanode of one shard on a real directory.
fn one_shard_datanode(dir: &std::path::Path) -> Datanode {
    let config = DatanodeConfig {
        shards: ShardsConfig {
            count: 1,
            pin_to_cores: false,
            ..ShardsConfig::per_core()
        },
        engine: EngineConfig::default(),
    };
    futures::executor::block_on(Datanode::start(Disk::real(dir), config)).unwrap()
}

#[test]
fn a_datanode_streams_scan_batches_and_stops_when_the_reader_goes_away() {
    use arrow_array::cast::AsArray;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let datanode = one_shard_datanode(dir.path());
    let handle = datanode.handle();
    futures::executor::block_on(async {
        handle.create_region(R1, schema()).await.unwrap();
        // Half the rows in an SST, half (and newer writes of some) in the memtable.
        for ts in 0..500 {
            let rows: Vec<Row> = (0..4)
                .map(|h| row(&format!("h{h}"), "x", ts, 1.0))
                .collect();
            handle.write(R1, WriteBatch::from_rows(rows)).await.unwrap();
            if ts == 250 {
                handle.flush(R1).await.unwrap();
            }
        }
        handle
            .write(R1, WriteBatch::from_rows(vec![row("h0", "x", 10, -1.0)]))
            .await
            .unwrap();
        let rows = handle.scan(R1, ScanRequest::all()).await.unwrap();
        assert_eq!(rows.len(), 2000);

        let mut stream = handle
            .scan_batches(R1, ScanRequest::all(), 300)
            .await
            .unwrap();
        let mut streamed = 0;
        let mut batches = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            assert!(batch.num_rows() <= 300);
            let values = batch
                .column(3)
                .as_primitive::<arrow_array::types::Float64Type>();
            for i in 0..batch.num_rows() {
                assert_eq!(
                    Value::Float64(values.value(i)),
                    rows[streamed + i].fields[0]
                );
            }
            streamed += batch.num_rows();
            batches += 1;
        }
        assert_eq!((streamed, batches), (2000, 7));
        assert!(stream.next().await.is_none(), "the end stays the end");

        // A reader that stops early: the shard notices and serves the next request.
        let mut stream = handle
            .scan_batches(R1, ScanRequest::all(), 10)
            .await
            .unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().num_rows(), 10);
        drop(stream);
        let limited = ScanRequest {
            limit: Some(25),
            ..ScanRequest::all()
        };
        let mut stream = handle.scan_batches(R1, limited, 10).await.unwrap();
        let mut sizes = Vec::new();
        while let Some(batch) = stream.next().await {
            sizes.push(batch.unwrap().num_rows());
        }
        assert_eq!(sizes, [10, 10, 5]);
        let missing = handle
            .scan_batches(RegionId::new(7, 7), ScanRequest::all(), 10)
            .await;
        let error = match missing {
            Ok(mut stream) => stream.next().await.unwrap().unwrap_err(),
            Err(error) => error,
        };
        assert!(matches!(error, EngineError::RegionNotFound(_)), "{error}");
    });
    datanode.into_shards().stop_and_join().unwrap();
}

#[test]
fn a_scan_stream_whose_shard_stops_ends_in_an_error_not_a_hang() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let datanode = one_shard_datanode(dir.path());
    let handle = datanode.handle();
    let mut stream = futures::executor::block_on(async {
        handle.create_region(R1, schema()).await.unwrap();
        let rows: Vec<Row> = (0..1000).map(|ts| row("h", "x", ts, 1.0)).collect();
        handle.write(R1, WriteBatch::from_rows(rows)).await.unwrap();
        handle
            .scan_batches(R1, ScanRequest::all(), 10)
            .await
            .unwrap()
    });
    // The shard streams two batches ahead and waits; then it stops.
    datanode.into_shards().stop_and_join().unwrap();
    let outcome = futures::executor::block_on(async {
        let mut batches = 0;
        loop {
            match stream.next().await {
                Some(Ok(_)) => batches += 1,
                Some(Err(error)) => return (batches, Some(error)),
                None => return (batches, None),
            }
        }
    });
    assert!(outcome.0 < 100, "the scan did not finish: {outcome:?}");
    assert!(
        matches!(outcome.1, Some(EngineError::Unavailable(_))),
        "{outcome:?}"
    );
}

fn small_wal() -> EngineConfig {
    EngineConfig {
        wal: metronome_datanode::wal::WalConfig {
            segment_bytes: 32 * 1024,
            commit_bytes_max: 8 * 1024,
            ..metronome_datanode::wal::WalConfig::new("wal")
        },
        ..EngineConfig::default()
    }
}

#[test]
fn flushed_rows_merge_with_the_memtable_survive_restart_and_free_the_wal() {
    let sim = SimDisk::new(20);
    let disk = Disk::sim(sim.clone());
    on_shard({
        let disk = disk.clone();
        move |_| async move {
            let (engine, _) = ShardEngine::open(disk.clone(), "shard-0", small_wal())
                .await
                .unwrap();
            engine.create_region(R1, schema()).await.unwrap();
            for ts in 0..300 {
                engine
                    .write(
                        R1,
                        WriteBatch::from_rows(vec![row(&format!("h{}", ts % 7), "x", ts, 1.0)]),
                        None,
                    )
                    .await
                    .unwrap();
            }
            let meta = engine
                .flush_region(R1)
                .await
                .unwrap()
                .expect("there was something to flush");
            assert_eq!(meta.rows, 300);
            assert_eq!(engine.memory_bytes(), 0, "the flushed memtable is freed");
            // Newer writes replace flushed rows; a second flush stacks another file.
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("h0", "x", 0, 2.0)]),
                    None,
                )
                .await
                .unwrap();
            engine.flush_region(R1).await.unwrap().unwrap();
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("h0", "x", 0, 3.0)]),
                    None,
                )
                .await
                .unwrap();
            let all = engine.scan(R1, &ScanRequest::all()).await.unwrap();
            assert_eq!(all.len(), 300);
            assert_eq!(
                all[0],
                row("h0", "x", 0, 3.0),
                "the memtable's newer write wins"
            );
            let segments = disk.list_dir("shard-0/wal").await.unwrap().len();
            assert!(
                segments <= 2,
                "flushed WAL segments were purged: {segments} left"
            );
            sim.crash();
        }
    });
    on_shard(move |_| async move {
        let (engine, recovery) = ShardEngine::open(disk, "shard-0", small_wal())
            .await
            .unwrap();
        assert!(
            recovery.rows_replayed <= 2,
            "flushed rows come from SSTs, not the WAL: {}",
            recovery.rows_replayed
        );
        let all = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(all.len(), 300);
        assert_eq!(all[0], row("h0", "x", 0, 3.0));
        let h3 = ScanRequest {
            matchers: vec![matcher("host", MatchOp::Equal, "h3")],
            start: 100,
            end: 200,
            limit: None,
            series_only: false,
            projection: None,
        };
        let rows = engine.scan(R1, &h3).await.unwrap();
        assert!(rows
            .iter()
            .all(|r| r.tags[0] == "h3" && (100..200).contains(&r.ts)));
        assert_eq!(rows.len(), (100..200).filter(|ts| ts % 7 == 3).count());
    });
}

#[test]
fn a_write_in_flight_during_a_flush_is_not_claimed_by_it() {
    let sim = SimDisk::new(21);
    let disk = Disk::sim(sim.clone());
    on_shard({
        let disk = disk.clone();
        move |_| async move {
            let engine = open(&disk).await;
            engine.create_region(R1, schema()).await.unwrap();
            engine
                .write(R1, WriteBatch::from_rows(vec![row("a", "x", 1, 1.0)]), None)
                .await
                .unwrap();
            // A write whose WAL commit has not completed when the flush freezes: polled
            // once, it takes its sequence and queues its record, then waits for the commit,
            // which the WAL writer cannot make before this task yields.
            let write = engine.write(R1, WriteBatch::from_rows(vec![row("b", "x", 2, 2.0)]), None);
            let mut write = std::pin::pin!(write);
            let waker = futures::task::noop_waker();
            let polled = write
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&waker));
            assert!(polled.is_pending(), "the write waits for its commit");
            let flush = engine.flush_region(R1);
            let (flushed, written) = futures::future::join(flush, write).await;
            assert_eq!(
                flushed.unwrap().unwrap().rows,
                1,
                "the flush took only the applied row"
            );
            written.unwrap();
            sim.crash();
        }
    });
    on_shard(move |_| async move {
        let engine = open(&disk).await;
        let all = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(all, [row("a", "x", 1, 1.0), row("b", "x", 2, 2.0)]);
    });
}

/// Runs `work` with a write of R1 issued after it started (`work` is polled first) and
/// asserts that the write completed first: `work` yields to the shard as it goes.
async fn before_a_later_write<T>(engine: &ShardEngine, work: impl Future<Output = T>) -> T {
    let order = std::cell::RefCell::new(Vec::new());
    let work = async {
        let outcome = work.await;
        order.borrow_mut().push("work");
        outcome
    };
    let write = async {
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("late", "x", 1, 2.0)]),
                None,
            )
            .await
            .unwrap();
        order.borrow_mut().push("write");
    };
    let (outcome, ()) = futures::future::join(work, write).await;
    assert_eq!(*order.borrow(), ["write", "work"]);
    outcome
}

#[test]
fn a_large_flush_yields_so_a_later_write_completes_before_it() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(5));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        // 200 k rows: a dozen encoding chunks.
        for batch in 0..40 {
            let rows: Vec<Row> = (0..5000)
                .map(|i| row(&format!("h{:04}", i % 1000), "x", batch * 5 + i / 1000, 1.0))
                .collect();
            engine
                .write(R1, WriteBatch::from_rows(rows), None)
                .await
                .unwrap();
        }
        let meta = before_a_later_write(&engine, engine.flush_region(R1)).await;
        assert_eq!(meta.unwrap().unwrap().rows, 200_000);
        let all = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(all.len(), 200_001);
    });
}

#[test]
fn a_large_compaction_yields_so_a_later_write_completes_before_it() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(6));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        // Four files of 50 k rows in one compaction window, the last rewriting the
        // first's points with later writes.
        for file in 0..4 {
            let rows: Vec<Row> = (0..50_000)
                .map(|i| {
                    let ts = if file == 3 {
                        i / 1000
                    } else {
                        file * 50 + i / 1000
                    };
                    row(&format!("h{:04}", i % 1000), "x", ts, file as f64)
                })
                .collect();
            engine
                .write(R1, WriteBatch::from_rows(rows), None)
                .await
                .unwrap();
            engine.flush_region(R1).await.unwrap().unwrap();
        }
        let removed = before_a_later_write(&engine, engine.compact_region(R1)).await;
        assert_eq!(removed.unwrap(), 4);
        assert_eq!(engine.file_count(R1).unwrap(), 1);
        let all = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(all.len(), 150_001);
        // The later writes won where the files overlapped.
        let first = all
            .iter()
            .find(|r| r.tags[0] == "h0000" && r.ts == 0)
            .unwrap();
        assert_eq!(first.fields, [Value::Float64(3.0)]);
    });
}

#[test]
fn a_second_compaction_of_a_region_waits_its_turn() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(7));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        for file in 0..4 {
            let rows: Vec<Row> = (0..40_000)
                .map(|i| row(&format!("h{:04}", i % 1000), "x", file * 40 + i / 1000, 1.0))
                .collect();
            engine
                .write(R1, WriteBatch::from_rows(rows), None)
                .await
                .unwrap();
            engine.flush_region(R1).await.unwrap().unwrap();
        }
        let before = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        // The first yields between chunks; the second, started meanwhile, finds it
        // running instead of merging the same four files again.
        let (first, second) =
            futures::future::join(engine.compact_region(R1), engine.compact_region(R1)).await;
        assert_eq!((first.unwrap(), second.unwrap()), (4, 0));
        assert_eq!(engine.file_count(R1).unwrap(), 1);
        assert_eq!(engine.scan(R1, &ScanRequest::all()).await.unwrap(), before);
        // Once it is done, the region compacts again (nothing left to merge).
        assert_eq!(engine.compact_region(R1).await.unwrap(), 0);
    });
}

#[test]
fn a_failed_flush_keeps_the_rows_and_a_later_one_succeeds() {
    on_shard(|_| async {
        let sim = SimDisk::new(22);
        let disk = Disk::sim(sim.clone());
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        for ts in 0..50 {
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "x", ts, ts as f64)]),
                    None,
                )
                .await
                .unwrap();
        }
        let memory = engine.memory_bytes();
        sim.set_faults(metronome_core::rt::disk::SimFaults {
            sync_error_probability: 1.0,
            ..Default::default()
        });
        assert!(engine.flush_region(R1).await.is_err());
        sim.set_faults(Default::default());
        assert_eq!(
            engine.scan(R1, &ScanRequest::all()).await.unwrap().len(),
            50
        );
        assert_eq!(
            engine.memory_bytes(),
            memory,
            "the rows went back to the memtable"
        );
        assert!(engine.flush_region(R1).await.unwrap().is_some());
        assert_eq!(
            engine.scan(R1, &ScanRequest::all()).await.unwrap().len(),
            50
        );
    });
}

#[test]
fn an_sst_no_manifest_refers_to_is_deleted_at_recovery() {
    let disk = Disk::sim(SimDisk::new(23));
    on_shard(move |_| async move {
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        engine
            .write(R1, WriteBatch::from_rows(vec![row("a", "x", 1, 1.0)]), None)
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        drop(engine);
        let store = metronome_core::rt::object::ObjectStore::local(disk.clone(), "");
        store
            .put(
                "shard-0/regions/1_1/sst/0000000000000099.parquet",
                b"orphan".to_vec(),
            )
            .await
            .unwrap();
        let engine = open(&disk).await;
        let listed = store.list("shard-0/regions/1_1/sst").await.unwrap();
        assert_eq!(listed, ["shard-0/regions/1_1/sst/0000000000000000.parquet"]);
        assert_eq!(engine.scan(R1, &ScanRequest::all()).await.unwrap().len(), 1);
    });
}

#[test]
fn compaction_merges_files_of_one_size_tier_and_leaves_a_bigger_one() {
    let disk = Disk::sim(SimDisk::new(31));
    let config = EngineConfig {
        files_per_window_max: 3,
        tier_base_bytes: 1024,
        ..EngineConfig::default()
    };
    on_shard(move |_| async move {
        let (engine, _) = ShardEngine::open(disk.clone(), "shard-0", config.clone())
            .await
            .unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        // One big file, then three small ones, all in one window.
        let big: Vec<Row> = (0..3000)
            .map(|i| row(&format!("h{:03}", i % 300), "x", i, i as f64 * 1.37))
            .collect();
        engine
            .write(R1, WriteBatch::from_rows(big), None)
            .await
            .unwrap();
        let big = engine.flush_region(R1).await.unwrap().unwrap();
        let mut small = Vec::new();
        for round in 0..3 {
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("s", "x", 10_000 + round, 1.0)]),
                    None,
                )
                .await
                .unwrap();
            small.push(engine.flush_region(R1).await.unwrap().unwrap());
        }
        let small_tier = config.size_tier(small[0].bytes);
        assert!(small
            .iter()
            .all(|f| config.size_tier(f.bytes) == small_tier));
        assert!(
            config.size_tier(big.bytes) > small_tier,
            "{big:?} {small:?}"
        );
        let before = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(engine.compact_region(R1).await.unwrap(), 3);
        assert_eq!(
            engine.file_count(R1).unwrap(),
            2,
            "the big file stays as it is"
        );
        assert_eq!(engine.scan(R1, &ScanRequest::all()).await.unwrap(), before);
        // Nothing more to merge: one file per tier.
        assert_eq!(engine.compact_region(R1).await.unwrap(), 0);
    });
}

#[test]
fn compaction_merges_a_windows_files_keeping_the_latest_writes() {
    let disk = Disk::sim(SimDisk::new(30));
    let config = EngineConfig {
        files_per_window_max: 3,
        ..EngineConfig::default()
    };
    let (before, after_restart, files) = on_shard(move |_| async move {
        let (engine, _) = ShardEngine::open(disk.clone(), "shard-0", config.clone())
            .await
            .unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        for round in 0..3 {
            for ts in 0..40 {
                // Each round rewrites half of the previous round's points.
                if round == 0 || ts % 2 == 0 {
                    engine
                        .write(
                            R1,
                            WriteBatch::from_rows(vec![row("a", "x", ts, f64::from(round))]),
                            None,
                        )
                        .await
                        .unwrap();
                }
            }
            engine.flush_region(R1).await.unwrap().unwrap();
        }
        assert_eq!(engine.file_count(R1).unwrap(), 3);
        let before = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(engine.compact_region(R1).await.unwrap(), 3);
        let files = engine.file_count(R1).unwrap();
        drop(engine);
        let (engine, _) = ShardEngine::open(disk, "shard-0", config).await.unwrap();
        (
            before,
            engine.scan(R1, &ScanRequest::all()).await.unwrap(),
            files,
        )
    });
    assert_eq!(files, 1, "the window's three files became one");
    assert_eq!(before.len(), 40);
    assert_eq!(
        before[0].fields,
        [Value::Float64(2.0)],
        "even points carry the last round"
    );
    assert_eq!(
        before[1].fields,
        [Value::Float64(0.0)],
        "odd points keep the first"
    );
    assert_eq!(after_restart, before, "compaction changed no answer");
}

#[test]
fn retention_hides_expired_rows_at_once_and_compaction_deletes_their_files() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(31));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        let now = metronome_core::rt::time::unix_time_ms();
        let hour = 3_600_000;
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("old", "x", now - 3 * hour, 1.0)]),
                None,
            )
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("new", "x", now, 2.0)]),
                None,
            )
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        assert_eq!(engine.scan(R1, &ScanRequest::all()).await.unwrap().len(), 2);

        assert!(
            engine.set_ttl(R1, Some(0)).await.is_err(),
            "a TTL must be positive"
        );
        engine.set_ttl(R1, Some(2 * hour)).await.unwrap();
        let rows = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(
            rows,
            [row("new", "x", now, 2.0)],
            "expired rows are gone for readers at once"
        );
        assert_eq!(
            engine.compact_region(R1).await.unwrap(),
            1,
            "the wholly expired file is deleted"
        );
        assert_eq!(engine.file_count(R1).unwrap(), 1);
        assert_eq!(engine.scan(R1, &ScanRequest::all()).await.unwrap().len(), 1);
    });
}

#[test]
fn a_nanosecond_region_keeps_its_unit_through_retention_and_restart() {
    let disk = Disk::sim(SimDisk::new(32));
    let nanos = RegionSchema {
        time_unit: TimeUnit::Nanosecond,
        ..schema()
    };
    let first = disk.clone();
    let now_ns = on_shard(move |_| async move {
        let engine = open(&first).await;
        engine.create_region(R1, nanos).await.unwrap();
        let now_ns = metronome_core::rt::time::unix_time_ms() * 1_000_000;
        let hour_ns = 3_600_000_000_000;
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("old", "x", now_ns - 3 * hour_ns, 1.0)]),
                None,
            )
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        // Two rows half a microsecond apart are two rows.
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![
                    row("new", "x", now_ns, 2.0),
                    row("new", "x", now_ns + 500, 3.0),
                ]),
                None,
            )
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        // The TTL is in milliseconds, the region's rows in nanoseconds: the cutoff is
        // compared in the region's unit.
        engine.set_ttl(R1, Some(2 * 3_600_000)).await.unwrap();
        let rows = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(
            rows,
            [
                row("new", "x", now_ns, 2.0),
                row("new", "x", now_ns + 500, 3.0)
            ],
            "the expired row is hidden, the recent ones kept apart"
        );
        assert_eq!(
            engine.compact_region(R1).await.unwrap(),
            1,
            "the wholly expired file is deleted"
        );
        now_ns
    });
    let rows = on_shard(move |_| async move {
        let engine = open(&disk).await;
        assert_eq!(engine.schema(R1).unwrap().time_unit, TimeUnit::Nanosecond);
        engine.scan(R1, &ScanRequest::all()).await.unwrap()
    });
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].ts - rows[0].ts, 500, "the unit survives a restart");
    assert_eq!(rows[0].ts, now_ns);
}

#[test]
fn a_damaged_sst_is_reported_as_corrupt_not_as_an_io_failure() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(33));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        engine
            .write(R1, WriteBatch::from_rows(vec![row("a", "x", 1, 1.0)]), None)
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        drop(engine);
        // Every SST of the region overwritten with bytes that are no Parquet file.
        let dir = manifest::sst_dir(std::path::Path::new("shard-0"), R1);
        let ssts: Vec<String> = disk
            .list_dir(&dir)
            .await
            .unwrap()
            .into_iter()
            .filter(|name| name.ends_with(".parquet"))
            .collect();
        assert_eq!(ssts.len(), 1, "{ssts:?}");
        disk.write_atomic(dir.join(&ssts[0]), b"not parquet at all".to_vec())
            .await
            .unwrap();

        let engine = open(&disk).await;
        let error = engine.scan(R1, &ScanRequest::all()).await.unwrap_err();
        assert!(matches!(error, EngineError::Corrupt { .. }), "{error:?}");
        assert_eq!(error.kind(), metronome_core::error::ErrorKind::Corrupt);
        assert!(!error.is_retryable());
        assert!(error.to_string().contains(&ssts[0]), "{error}");
    });
}

#[test]
fn ssts_and_manifests_can_live_in_s3() {
    let server = metronome_core::rt::object::testing::MotoServer::start();
    let config = EngineConfig {
        sst_store: metronome_datanode::engine::SstStore::S3(
            server.config("metronome-ssts", "node-a"),
        ),
        ..EngineConfig::default()
    };
    let disk = Disk::sim(SimDisk::new(40));
    let rows = on_shard(move |_| async move {
        let (engine, _) = ShardEngine::open(disk.clone(), "shard-0", config.clone())
            .await
            .unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        for ts in 0..100 {
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "x", ts, ts as f64)]),
                    None,
                )
                .await
                .unwrap();
        }
        engine.flush_region(R1).await.unwrap().unwrap();
        drop(engine);
        // A node with an empty disk: the region and its data come from the bucket alone.
        let (engine, recovery) = ShardEngine::open(Disk::sim(SimDisk::new(41)), "shard-0", config)
            .await
            .unwrap();
        assert_eq!(
            (recovery.regions, recovery.rows_replayed),
            (1, 0),
            "the manifest and the rows come from S3"
        );
        engine.scan(R1, &ScanRequest::all()).await.unwrap()
    });
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[99], row("a", "x", 99, 99.0));
}

/// SSTs and manifests in `objects`; small WAL segments, which a `SimDisk` keeps in memory.
fn sim_store_config(objects: &SimObjectStore) -> EngineConfig {
    EngineConfig {
        sst_store: SstStore::Sim(objects.clone()),
        ..small_wal()
    }
}

#[test]
fn manifests_in_an_object_store_checkpoint_and_recover_without_the_disk() {
    let objects = SimObjectStore::new(7, SimObjectFaults::default());
    let config = sim_store_config(&objects);
    on_shard(move |_| async move {
        let (engine, _) = ShardEngine::open(Disk::sim(SimDisk::new(60)), "shard-0", config.clone())
            .await
            .unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        engine.create_region(R2, schema()).await.unwrap();
        // More edits than a checkpoint covers: 20 flushes, then a compaction.
        for ts in 0..20 {
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "x", ts, ts as f64)]),
                    None,
                )
                .await
                .unwrap();
            engine.flush_region(R1).await.unwrap().unwrap();
        }
        while engine.compact_region(R1).await.unwrap() > 0 {}
        engine.drop_region(R2).await.unwrap();
        let files = engine.file_count(R1).unwrap();
        let manifest_keys = |prefix: &str| -> Vec<String> {
            objects
                .keys()
                .into_iter()
                .filter(|key| key.starts_with(prefix))
                .collect()
        };
        let r1 = manifest_keys("shard-0/regions/1_1/manifest/");
        let checkpoints: Vec<&String> = r1.iter().filter(|k| k.ends_with(".checkpoint")).collect();
        assert_eq!(
            checkpoints.len(),
            1,
            "older checkpoints are deleted: {r1:?}"
        );
        assert!(
            r1.len() <= manifest::EDITS_PER_CHECKPOINT as usize + 1,
            "edits the checkpoint covers are deleted: {r1:?}"
        );
        drop(engine);

        // Nothing on the new disk: regions, files and the tombstone come from the store.
        let (engine, recovery) =
            ShardEngine::open(Disk::sim(SimDisk::new(61)), "shard-0", config.clone())
                .await
                .unwrap();
        assert_eq!((recovery.regions, recovery.rows_replayed), (1, 0));
        assert_eq!(engine.file_count(R1).unwrap(), files);
        let rows = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(
            rows,
            (0..20)
                .map(|ts| row("a", "x", ts, ts as f64))
                .collect::<Vec<_>>()
        );
        assert!(matches!(
            engine.scan(R2, &ScanRequest::all()).await,
            Err(EngineError::RegionNotFound(_))
        ));
        // Recovery folded the edits into a checkpoint; a flush puts the next edit.
        engine
            .write(R1, WriteBatch::from_rows(vec![row("b", "x", 0, 0.0)]), None)
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        drop(engine);
        let edits: Vec<String> = manifest_keys("shard-0/regions/1_1/manifest/")
            .into_iter()
            .filter(|key| key.ends_with(".edit"))
            .collect();
        assert_eq!(edits.len(), 1, "{edits:?}");
        let edit = &edits[0];

        // A damaged edit quarantines its region, naming the object.
        let store = ObjectStore::sim(objects.clone());
        let mut bytes = store.get(edit).await.unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        store.put(edit, bytes).await.unwrap();
        let (engine, recovery) = ShardEngine::open(Disk::sim(SimDisk::new(63)), "shard-0", config)
            .await
            .unwrap();
        assert_eq!(recovery.quarantined.len(), 1);
        assert!(
            recovery.quarantined[0].1.contains(edit.as_str()),
            "{:?}",
            recovery.quarantined
        );
        assert!(matches!(
            engine.scan(R1, &ScanRequest::all()).await,
            Err(EngineError::Quarantined { .. })
        ));
    });
}

#[test]
fn a_close_whose_manifest_edit_failed_keeps_refusing_writes_until_opened() {
    let objects = SimObjectStore::new(8, SimObjectFaults::default());
    let config = sim_store_config(&objects);
    on_shard(move |_| async move {
        let (engine, _) = ShardEngine::open(Disk::sim(SimDisk::new(65)), "shard-0", config)
            .await
            .unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        engine
            .write(R1, WriteBatch::from_rows(vec![row("a", "x", 1, 1.0)]), None)
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        // The Close edit fails; it may have been stored all the same.
        objects.set_faults(SimObjectFaults {
            error_probability: 1.0,
            ..SimObjectFaults::default()
        });
        assert!(engine.close_region(R1).await.is_err());
        assert!(matches!(
            engine
                .write(R1, WriteBatch::from_rows(vec![row("a", "x", 2, 2.0)]), None)
                .await,
            Err(EngineError::RegionClosed(_))
        ));
        objects.set_faults(SimObjectFaults::default());
        engine.open_region(R1).await.unwrap();
        engine
            .write(R1, WriteBatch::from_rows(vec![row("a", "x", 2, 2.0)]), None)
            .await
            .unwrap();
        assert_eq!(engine.scan(R1, &ScanRequest::all()).await.unwrap().len(), 2);
    });
}

#[test]
fn a_quarantined_region_in_an_object_store_can_be_dropped_for_good_and_created_again() {
    let objects = SimObjectStore::new(9, SimObjectFaults::default());
    let config = sim_store_config(&objects);
    on_shard(move |_| async move {
        let store = ObjectStore::sim(objects.clone());
        let open = |seed| {
            let config = config.clone();
            async move {
                ShardEngine::open(Disk::sim(SimDisk::new(seed)), "shard-0", config)
                    .await
                    .unwrap()
            }
        };
        let (engine, _) = open(70).await;
        engine.create_region(R1, schema()).await.unwrap();
        for ts in 0..3 {
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("old", "x", ts, 0.0)]),
                    None,
                )
                .await
                .unwrap();
            engine.flush_region(R1).await.unwrap().unwrap();
        }
        drop(engine);
        let (engine, _) = open(71).await;
        drop(engine);
        let checkpoint = objects
            .keys()
            .into_iter()
            .find(|key| key.ends_with(".checkpoint"))
            .unwrap();
        let mut bytes = store.get(&checkpoint).await.unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        store.put(&checkpoint, bytes).await.unwrap();

        let (engine, recovery) = open(72).await;
        assert_eq!(recovery.quarantined.len(), 1);
        engine.drop_region(R1).await.unwrap();
        drop(engine);
        let (engine, recovery) = open(73).await;
        assert!(
            recovery.quarantined.is_empty(),
            "the drop stuck: {recovery:?}"
        );
        assert!(matches!(
            engine.scan(R1, &ScanRequest::all()).await,
            Err(EngineError::RegionNotFound(_))
        ));
        engine.create_region(R1, schema()).await.unwrap();
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("new", "x", 0, 1.0)]),
                None,
            )
            .await
            .unwrap();
        engine.flush_region(R1).await.unwrap().unwrap();
        drop(engine);
        let (engine, _) = open(74).await;
        assert_eq!(
            engine.scan(R1, &ScanRequest::all()).await.unwrap(),
            [row("new", "x", 0, 1.0)]
        );
    });
}

#[test]
fn a_drop_whose_tombstone_failed_refuses_service_until_dropped_again() {
    let objects = SimObjectStore::new(10, SimObjectFaults::default());
    let config = sim_store_config(&objects);
    on_shard(move |_| async move {
        let (engine, _) = ShardEngine::open(Disk::sim(SimDisk::new(75)), "shard-0", config)
            .await
            .unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        engine
            .write(R1, WriteBatch::from_rows(vec![row("a", "x", 1, 1.0)]), None)
            .await
            .unwrap();
        // The tombstone's put fails (and may have stored it).
        objects.set_faults(SimObjectFaults {
            error_probability: 1.0,
            only: Some("put"),
            ..SimObjectFaults::default()
        });
        assert!(engine.drop_region(R1).await.is_err());
        assert!(matches!(
            engine
                .write(R1, WriteBatch::from_rows(vec![row("a", "x", 2, 2.0)]), None)
                .await,
            Err(EngineError::Quarantined { .. })
        ));
        objects.set_faults(SimObjectFaults::default());
        engine.drop_region(R1).await.unwrap();
        assert!(matches!(
            engine.scan(R1, &ScanRequest::all()).await,
            Err(EngineError::RegionNotFound(_))
        ));
    });
}

#[test]
fn a_flush_of_a_dropped_region_never_lands_in_its_next_incarnation() {
    let objects = SimObjectStore::new(11, SimObjectFaults::default());
    let config = sim_store_config(&objects);
    on_shard(move |_| async move {
        let (engine, _) = ShardEngine::open(Disk::sim(SimDisk::new(76)), "shard-0", config.clone())
            .await
            .unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("old", "x", 1, 1.0)]),
                None,
            )
            .await
            .unwrap();
        // The flush freezes the memtable and yields after encoding; the region is dropped
        // and created again before it stores the file.
        let mut flush = Box::pin(engine.flush_region(R1));
        futures::future::poll_fn(|cx| {
            assert!(flush.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        engine.drop_region(R1).await.unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        assert_eq!(flush.await.unwrap(), None, "the flush lost its region");
        assert!(engine
            .scan(R1, &ScanRequest::all())
            .await
            .unwrap()
            .is_empty());
        drop(engine);
        let (engine, _) = ShardEngine::open(Disk::sim(SimDisk::new(76)), "shard-0", config)
            .await
            .unwrap();
        assert!(engine
            .scan(R1, &ScanRequest::all())
            .await
            .unwrap()
            .is_empty());
    });
}

#[test]
fn a_rarely_written_region_cannot_make_the_wal_grow_without_bound() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(41));
        let config = EngineConfig {
            wal_segments_max: 3,
            ..small_wal()
        };
        let (engine, _) = ShardEngine::open(disk.clone(), "shard-0", config)
            .await
            .unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        engine.create_region(R2, schema()).await.unwrap();
        // R1 writes once and never again; R2 writes a lot.
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("quiet", "x", 0, 0.0)]),
                None,
            )
            .await
            .unwrap();
        let mut segments_max = 0;
        for ts in 0..400 {
            let rows: Vec<Row> = (0..20)
                .map(|i| row(&format!("busy-{i}"), "x", ts, 1.0))
                .collect();
            engine
                .write(R2, WriteBatch::from_rows(rows), None)
                .await
                .unwrap();
            if engine.wants_flush() {
                engine.flush_for_pressure().await.unwrap();
            }
            segments_max = segments_max.max(disk.list_dir("shard-0/wal").await.unwrap().len());
        }
        assert!(
            segments_max <= 5,
            "the WAL stayed near its budget of 3 segments: {segments_max}"
        );
        assert_eq!(
            engine.scan(R1, &ScanRequest::all()).await.unwrap(),
            [row("quiet", "x", 0, 0.0)]
        );
        assert_eq!(
            engine.scan(R2, &ScanRequest::all()).await.unwrap().len(),
            400 * 20
        );
    });
}

#[test]
fn manifest_edits_are_logged_replayed_after_a_crash_and_checkpointed() {
    let sim = SimDisk::new(50);
    let disk = Disk::sim(sim.clone());
    on_shard(move |_| async move {
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        for ts in 0..5 {
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "x", ts, 0.0)]),
                    None,
                )
                .await
                .unwrap();
            engine.flush_region(R1).await.unwrap().unwrap();
        }
        // Five edits since the checkpoint: they are only in the edit log.
        let files = disk.list_dir("shard-0/regions/1_1").await.unwrap();
        assert!(files.contains(&"edits-0.log".to_string()), "{files:?}");
        drop(engine);
        sim.crash();
        // A torn append at the end of the log, as a crash mid-append leaves it.
        let log = disk
            .open("shard-0/regions/1_1/edits-0.log", OpenOptions::write())
            .await
            .unwrap();
        log.append(vec![0x40, 0, 0, 0, 1, 2]).await.unwrap();
        log.sync_data().await.unwrap();

        let engine = open(&disk).await;
        assert_eq!(
            engine.file_count(R1).unwrap(),
            5,
            "the logged edits were replayed"
        );
        assert_eq!(engine.scan(R1, &ScanRequest::all()).await.unwrap().len(), 5);
        // Recovery folded the log into a checkpoint; edits continue from there.
        for ts in 5..30 {
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "x", ts, 0.0)]),
                    None,
                )
                .await
                .unwrap();
            engine.flush_region(R1).await.unwrap().unwrap();
        }
        let logs: Vec<String> = disk
            .list_dir("shard-0/regions/1_1")
            .await
            .unwrap()
            .into_iter()
            .filter(|name| name.starts_with("edits-"))
            .collect();
        assert!(
            logs.len() <= 1 && !logs.contains(&"edits-0.log".to_string()),
            "old logs are gone after checkpoints: {logs:?}"
        );
        drop(engine);
        sim.crash();
        let engine = open(&disk).await;
        assert_eq!(engine.file_count(R1).unwrap(), 30);
        assert_eq!(
            engine.scan(R1, &ScanRequest::all()).await.unwrap().len(),
            30
        );
    });
}

#[test]
fn sequences_continue_above_flushed_data_after_a_restart() {
    let sim = SimDisk::new(51);
    let disk = Disk::sim(sim.clone());
    on_shard(move |_| async move {
        let (engine, _) = ShardEngine::open(disk.clone(), "shard-0", small_wal())
            .await
            .unwrap();
        engine.create_region(R1, schema()).await.unwrap();
        engine.create_region(R2, schema()).await.unwrap();
        let mut last = 0;
        for ts in 0..10 {
            last = engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "x", ts, 0.0)]),
                    None,
                )
                .await
                .unwrap();
        }
        engine.flush_region(R1).await.unwrap().unwrap();
        // Another region rolls the WAL past R1's records, and its flush purges them: the
        // WAL no longer knows R1's sequences.
        for ts in 0..200 {
            let rows: Vec<Row> = (0..10)
                .map(|i| row(&format!("b{i}"), "x", ts, 0.0))
                .collect();
            engine
                .write(R2, WriteBatch::from_rows(rows), None)
                .await
                .unwrap();
        }
        engine.flush_region(R2).await.unwrap().unwrap();
        drop(engine);
        sim.crash();
        let (engine, recovery) = ShardEngine::open(disk.clone(), "shard-0", small_wal())
            .await
            .unwrap();
        assert!(
            recovery.wal.records < 200,
            "R1's records were purged: {} replayed",
            recovery.wal.records
        );
        let next = engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("a", "x", 100, 1.0)]),
                None,
            )
            .await
            .unwrap();
        assert!(next > last, "sequence {next} must continue above {last}");
        drop(engine);
        sim.crash();
        let (engine, _) = ShardEngine::open(disk, "shard-0", small_wal())
            .await
            .unwrap();
        let rows = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(
            rows.len(),
            11,
            "the write after the restart survived the next one"
        );
    });
}

#[test]
fn projections_return_and_decode_only_the_fields_asked_for() {
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(64));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        let count = FieldColumn {
            name: "count".into(),
            field_type: FieldType::Int64,
        };
        let value = schema().fields[0].clone();
        // Rows before the ALTER (in an SST), after it (in an SST and in the memtable).
        for ts in 0..10 {
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "x", ts, ts as f64)]),
                    None,
                )
                .await
                .unwrap();
        }
        engine.flush_region(R1).await.unwrap().unwrap();
        engine.add_field(R1, count.clone()).await.unwrap();
        // A second frontend adds the same field: nothing changes (the memtable gains no
        // second null column), and it succeeds; the same name as another type does not.
        engine.add_field(R1, count.clone()).await.unwrap();
        assert_eq!(engine.schema(R1).unwrap().fields.len(), 2);
        let other_type = FieldColumn {
            field_type: FieldType::String,
            ..count.clone()
        };
        let refused = engine.add_field(R1, other_type).await.unwrap_err();
        assert!(
            matches!(refused, EngineError::InvalidSchema(_)),
            "{refused}"
        );
        for ts in 10..20 {
            let mut counted = row("b", "x", ts, ts as f64);
            counted.fields.push(Value::Int64(ts * 2));
            engine
                .write(R1, WriteBatch::from_rows(vec![counted]), None)
                .await
                .unwrap();
            if ts == 14 {
                engine.flush_region(R1).await.unwrap().unwrap();
            }
        }
        let all = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(all.len(), 20);
        let projected = |columns: Vec<FieldColumn>| ScanRequest {
            projection: Some(columns),
            ..ScanRequest::all()
        };

        let reversed = projected(vec![count.clone(), value.clone()]);
        let rows = engine.scan(R1, &reversed).await.unwrap();
        let expected: Vec<Row> = all
            .iter()
            .map(|r| Row {
                fields: vec![r.fields[1].clone(), r.fields[0].clone()],
                ..r.clone()
            })
            .collect();
        assert_eq!(rows, expected);
        assert_eq!(rows[0].fields, [Value::Null, Value::Float64(0.0)]);
        assert_eq!(rows[19].fields, [Value::Int64(38), Value::Float64(19.0)]);
        let grouped = engine.scan_series(R1, &reversed).await.unwrap();
        assert_eq!(grouped, SeriesRows::group(expected));

        // A field the region does not have (yet) reads as null; no field at all leaves
        // the series and timestamps.
        let missing = FieldColumn {
            name: "later".into(),
            field_type: FieldType::String,
        };
        let rows = engine.scan(R1, &projected(vec![missing])).await.unwrap();
        assert!(rows.iter().all(|r| r.fields == [Value::Null]));
        let rows = engine.scan(R1, &projected(Vec::new())).await.unwrap();
        assert_eq!(rows.len(), 20);
        assert!(rows.iter().all(|r| r.fields.is_empty()));

        // The same name with another type is an error naming the field.
        let retyped = FieldColumn {
            name: "value".into(),
            field_type: FieldType::Int64,
        };
        match engine.scan(R1, &projected(vec![retyped])).await {
            Err(EngineError::InvalidScan { reason, .. }) => assert!(reason.contains("value")),
            other => panic!("expected an invalid scan, got {other:?}"),
        }

        let batches = engine
            .scan_batches(R1, &projected(vec![count.clone()]), 100)
            .await
            .unwrap();
        let schema = batches[0].schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["host", "dc", "ts", "count"]);
    });
}

#[test]
fn scans_come_back_as_arrow_batches_matching_the_rows() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, TimestampMillisecondType};
    on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(60));
        let engine = open(&disk).await;
        engine.create_region(R1, schema()).await.unwrap();
        for ts in 0..25 {
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row(&format!("h{}", ts % 3), "x", ts, ts as f64)]),
                    None,
                )
                .await
                .unwrap();
        }
        engine.flush_region(R1).await.unwrap().unwrap();
        engine
            .write(
                R1,
                WriteBatch::from_rows(vec![row("h0", "x", 0, -1.0)]),
                None,
            )
            .await
            .unwrap();
        let rows = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        let batches = engine
            .scan_batches(R1, &ScanRequest::all(), 10)
            .await
            .unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        let schema = batches[0].schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["host", "dc", "ts", "value"]);
        let mut index = 0;
        for batch in &batches {
            let hosts = batch.column(0).as_string::<i32>();
            let ts = batch.column(2).as_primitive::<TimestampMillisecondType>();
            let values = batch.column(3).as_primitive::<Float64Type>();
            for i in 0..batch.num_rows() {
                let expected = &rows[index];
                assert_eq!(hosts.value(i), expected.tags[0]);
                assert_eq!(ts.value(i), expected.ts);
                assert_eq!(Value::Float64(values.value(i)), expected.fields[0]);
                index += 1;
            }
        }
        assert_eq!(index, rows.len());
        assert_eq!(
            rows[0],
            row("h0", "x", 0, -1.0),
            "the batches carry the merged, latest rows"
        );
    });
}

#[test]
fn a_region_gains_tags_without_rewriting_rows_and_missing_tags_read_as_empty() {
    let sim = SimDisk::new(61);
    let disk = Disk::sim(sim.clone());
    let one_tag = |host: &str, ts: i64, value: f64| Row {
        tags: vec![host.into()],
        ts,
        fields: vec![Value::Float64(value)],
    };
    on_shard({
        let disk = disk.clone();
        move |_| async move {
            let engine = open(&disk).await;
            let mut schema = schema();
            schema.tags.truncate(1);
            engine.create_region(R1, schema).await.unwrap();
            // One row in an SST written before the tag existed, one in the memtable.
            engine
                .write(R1, WriteBatch::from_rows(vec![one_tag("a", 1, 1.0)]), None)
                .await
                .unwrap();
            engine.flush_region(R1).await.unwrap().unwrap();
            engine
                .write(R1, WriteBatch::from_rows(vec![one_tag("b", 2, 2.0)]), None)
                .await
                .unwrap();
            engine.add_tags(R1, vec!["dc".into()]).await.unwrap();
            // A second frontend that also found "dc" missing adds it too: nothing changes,
            // and it succeeds.
            engine.add_tags(R1, vec!["dc".into()]).await.unwrap();
            assert_eq!(engine.schema(R1).unwrap().tags, ["host", "dc"]);
            let duplicate = engine
                .add_tags(R1, vec!["zone".into(), "host".into()])
                .await
                .unwrap_err();
            assert!(
                matches!(duplicate, EngineError::InvalidSchema(_)),
                "{duplicate}"
            );
            // Written with an explicit empty value: the same series as "a" without it.
            engine
                .write(
                    R1,
                    WriteBatch::from_rows(vec![row("a", "", 1, 10.0), row("a", "x", 3, 3.0)]),
                    None,
                )
                .await
                .unwrap();
            sim.crash();
        }
    });
    on_shard(move |_| async move {
        let engine = open(&disk).await;
        assert_eq!(engine.schema(R1).unwrap().tags, ["host", "dc"]);
        let all = engine.scan(R1, &ScanRequest::all()).await.unwrap();
        assert_eq!(
            all,
            [
                one_tag("a", 1, 10.0),
                row("a", "x", 3, 3.0),
                one_tag("b", 2, 2.0)
            ],
            "an omitted tag and an empty one are the same series; the later write won"
        );
        let empty_dc = ScanRequest {
            matchers: vec![matcher("dc", MatchOp::Equal, "")],
            ..ScanRequest::all()
        };
        let hosts: Vec<String> = engine
            .scan(R1, &empty_dc)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.tags[0].clone())
            .collect();
        assert_eq!(hosts, ["a", "b"]);
        engine.flush_region(R1).await.unwrap().unwrap();
        engine.compact_region(R1).await.unwrap();
        let batches = engine
            .scan_batches(R1, &ScanRequest::all(), 10)
            .await
            .unwrap();
        let dc = batches[0].column(1);
        use arrow_array::cast::AsArray;
        let dc: Vec<&str> = dc.as_string::<i32>().iter().map(|v| v.unwrap()).collect();
        assert_eq!(
            dc,
            ["", "x", ""],
            "batches spell the missing tag out as empty"
        );
    });
}
