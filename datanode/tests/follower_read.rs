//! Follower reads in the engine: a follower's copy read as of its leader's commit point
//! holds exactly the rows of the writes up to it, from its memtable and its SSTs alike,
//! waits for writes it has not applied yet, and refuses once it waited too long.
#![cfg(not(madsim))]

use std::time::Duration;

use metronome_core::data::{
    FieldColumn, FieldType, RegionId, RegionSchema, Row, ScanRequest, TimeUnit, Value,
};
use metronome_core::error::ErrorKind;
use metronome_core::rt::disk::{Disk, SimDisk};
use metronome_core::rt::shard::{run_on_one_shard, IoDriverChoice};
use metronome_core::rt::{task, time};
use metronome_core::write_batch::WriteBatch;
use metronome_datanode::engine::{EngineConfig, ShardEngine};
use metronome_wire::write_batch;

const R1: RegionId = RegionId {
    table: 1,
    number: 1,
};

fn schema() -> RegionSchema {
    RegionSchema {
        tags: vec!["host".into()],
        time_index: "ts".into(),
        time_unit: TimeUnit::Millisecond,
        fields: vec![FieldColumn {
            name: "value".into(),
            field_type: FieldType::Float64,
        }],
    }
}

async fn open(disk: &Disk, root: &str) -> std::rc::Rc<ShardEngine> {
    ShardEngine::open(disk.clone(), root, EngineConfig::default())
        .await
        .unwrap()
        .0
}

/// (ts, value) of every row read as of `committed`.
async fn rows_as_of(engine: &ShardEngine, committed: u64) -> Vec<(i64, f64)> {
    engine
        .scan_series_committed(R1, &ScanRequest::all(), committed)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|series| series.rows)
        .map(|(ts, fields)| {
            let Value::Float64(value) = fields[0] else {
                panic!("a float: {fields:?}")
            };
            (ts, value)
        })
        .collect()
}

#[test]
fn a_follower_reads_as_of_its_leader_s_commit_point() {
    let disk = Disk::sim(SimDisk::new(3));
    run_on_one_shard(IoDriverChoice::Auto, move |_| async move {
        let leader = open(&disk, "leader").await;
        let follower = open(&disk, "follower").await;
        for engine in [&leader, &follower] {
            engine.create_region(R1, schema()).await.unwrap();
        }
        // Write n (1..=8) stores ts n with value n, except write 5, which rewrites ts 2.
        let mut shipped = Vec::new();
        for n in 1..=8_i64 {
            let ts = if n == 5 { 2 } else { n };
            let batch = WriteBatch::from_rows(vec![Row {
                tags: vec!["a".into()],
                ts,
                fields: vec![Value::Float64(n as f64)],
            }]);
            let sequence = leader.write(R1, batch.clone(), None).await.unwrap();
            assert_eq!(sequence, n as u64);
            shipped.push((sequence, write_batch::encode(&batch).unwrap().into()));
        }
        assert_eq!(leader.commit_point(R1).unwrap(), 8);
        // The follower takes writes 1..=3 and flushes them to an SST, then 4..=6.
        let later = shipped.split_off(6);
        let first = shipped.split_off(3);
        follower.apply_replicated(R1, shipped).await.unwrap();
        follower.flush_region(R1).await.unwrap();
        follower.apply_replicated(R1, first).await.unwrap();
        assert_eq!(follower.commit_point(R1).unwrap(), 6);

        // As of 2: the SST's rows of writes 1 and 2, not of write 3.
        assert_eq!(rows_as_of(&follower, 2).await, vec![(1, 1.0), (2, 2.0)]);
        // As of 4: write 4 from the memtable too.
        assert_eq!(
            rows_as_of(&follower, 4).await,
            vec![(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
        );
        // As of 6: write 5 replaced ts 2 (in the memtable, over the SST's row).
        let as_of_six = vec![(1, 1.0), (2, 5.0), (3, 3.0), (4, 4.0), (6, 6.0)];
        assert_eq!(rows_as_of(&follower, 6).await, as_of_six);

        // As of 8: the follower waits for writes 7 and 8, which arrive meanwhile.
        let applying = task::spawn_local({
            let follower = follower.clone();
            async move {
                time::sleep_local(Duration::from_millis(50)).await;
                follower.apply_replicated(R1, later).await.unwrap();
            }
        });
        let mut all = as_of_six.clone();
        all.extend([(7, 7.0), (8, 8.0)]);
        assert_eq!(rows_as_of(&follower, 8).await, all);
        applying.await.unwrap();
        assert_eq!(rows_as_of(&leader, 8).await, all, "the leader's answer");

        // A commit point it never reaches: refused once it waited, naming both points.
        let refused = follower
            .scan_series_committed(R1, &ScanRequest::all(), 9)
            .await
            .unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains("up to 8") && message.contains("up to 9"),
            "{message}"
        );
        assert_eq!(
            metronome_core::error::Error::from(refused).kind,
            ErrorKind::Unavailable
        );
    })
    .unwrap();
}
