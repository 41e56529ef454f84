//! Follower reads in the engine: a region's only follower answers with all it applied;
//! one of two answers exactly as of its leader's commit point, waiting for writes it has
//! not applied yet and refusing while it applied more (never a filtered view, which
//! could lose a committed point a later write replaced).
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
use metronome_wire::{write_batch, ReadAt};

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

/// (ts, value) of every row the follower answers when read `at`.
async fn rows_at(engine: &ShardEngine, at: ReadAt) -> Vec<(i64, f64)> {
    engine
        .scan_series_at_follower(R1, &ScanRequest::all(), at)
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
fn a_follower_answers_with_what_it_applied_or_exactly_as_of_the_commit_point() {
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
        let middle = shipped.split_off(3);
        follower.apply_replicated(R1, shipped).await.unwrap();
        follower.flush_region(R1).await.unwrap();
        follower.apply_replicated(R1, middle).await.unwrap();
        assert_eq!(follower.applied(R1).unwrap(), 6);
        let as_of_six = vec![(1, 1.0), (2, 5.0), (3, 3.0), (4, 4.0), (6, 6.0)];

        // The only follower: all it applied, from its SST and its memtable.
        assert_eq!(rows_at(&follower, ReadAt::OnlyFollower).await, as_of_six);
        // One of two, as of 6: the same.
        let at = |committed| ReadAt::Follower { committed };
        assert_eq!(rows_at(&follower, at(6)).await, as_of_six);
        // As of 4: it applied writes past the point (write 5 replaced ts 2's committed
        // value in its memtable): refused, to be asked again with a newer point.
        let refused = follower
            .scan_series_at_follower(R1, &ScanRequest::all(), at(4))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("past its leader's commit point 4"),
            "{refused}"
        );

        // As of 8: it waits for writes 7 and 8, which arrive meanwhile.
        let applying = task::spawn_local({
            let follower = follower.clone();
            async move {
                time::sleep_local(Duration::from_millis(50)).await;
                follower.apply_replicated(R1, later).await.unwrap();
            }
        });
        let mut all = as_of_six.clone();
        all.extend([(7, 7.0), (8, 8.0)]);
        assert_eq!(rows_at(&follower, at(8)).await, all);
        applying.await.unwrap();
        assert_eq!(
            rows_at(&leader, ReadAt::OnlyFollower).await,
            all,
            "the leader's rows"
        );

        // A commit point it never reaches: refused once it waited, naming both points.
        let refused = follower
            .scan_series_at_follower(R1, &ScanRequest::all(), at(9))
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
