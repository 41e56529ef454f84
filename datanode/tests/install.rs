//! Catch-up in the engine: a leader's snapshot of a region, installed by a learner in
//! place of a stale copy whose WAL holds other writes at the same sequences.
#![cfg(not(madsim))]

use metronome_core::data::{
    FieldColumn, FieldType, RegionId, RegionSchema, Row, ScanRequest, TimeUnit, Value,
};
use metronome_core::rt::disk::{Disk, SimDisk};
use metronome_core::rt::shard::{run_on_one_shard, IoDriverChoice};
use metronome_core::write_batch::WriteBatch;
use metronome_datanode::engine::{install_batches, EngineConfig, Piece, ShardEngine};
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

fn write(host: &str, ts: i64, value: f64) -> WriteBatch {
    WriteBatch::from_rows(vec![Row {
        tags: vec![host.into()],
        ts,
        fields: vec![Value::Float64(value)],
    }])
}

async fn open(disk: &Disk, root: &str) -> std::rc::Rc<ShardEngine> {
    ShardEngine::open(disk.clone(), root, EngineConfig::default())
        .await
        .unwrap()
        .0
}

/// (host, ts, value) of every row.
async fn rows(engine: &ShardEngine) -> Vec<(String, i64, f64)> {
    engine
        .scan(R1, &ScanRequest::all())
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let Value::Float64(value) = row.fields[0] else {
                panic!("a float: {row:?}")
            };
            (row.tags[0].clone(), row.ts, value)
        })
        .collect()
}

#[test]
fn an_install_replaces_a_stale_copy_and_its_wal_records_never_replay() {
    let sim = SimDisk::new(5);
    let disk = Disk::sim(sim.clone());
    let expected = run_on_one_shard(IoDriverChoice::Auto, {
        let disk = disk.clone();
        move |_| async move {
            // The leader's copy: writes 1..=10, two hosts.
            let leader = open(&disk, "leader").await;
            leader.create_region(R1, schema()).await.unwrap();
            for ts in 0..10 {
                let host = if ts % 2 == 0 { "a" } else { "b" };
                leader
                    .write(R1, write(host, ts, ts as f64), None)
                    .await
                    .unwrap();
            }
            // The learner's stale copy: 25 writes of its own (a leader it followed, since
            // replaced), some flushed to an SST, the rest only in its WAL — at sequences
            // the leader gives to other writes.
            let learner = open(&disk, "learner").await;
            learner.create_region(R1, schema()).await.unwrap();
            for ts in 0..25 {
                learner
                    .write(R1, write("stale", 1000 + ts, -1.0), None)
                    .await
                    .unwrap();
                if ts == 7 {
                    learner.flush_region(R1).await.unwrap();
                }
            }
            let (schema, sequence, series) = leader.snapshot(R1).await.unwrap();
            assert_eq!(
                sequence, 10,
                "the snapshot is as of the leader's last write"
            );
            let pieces = install_batches(series, 3);
            assert_eq!(pieces.len(), 4, "10 rows in pieces of 3");
            let piece = |chunk: usize| Piece {
                leader: 1,
                epoch: 2,
                sequence,
                chunk: chunk as u32,
                chunks: pieces.len() as u32,
            };
            let encoded: Vec<Vec<u8>> = pieces
                .iter()
                .map(|p| write_batch::encode(p).unwrap())
                .collect();
            // A piece out of order is refused, and the install starts again from the first.
            learner
                .install_piece(R1, schema.clone(), piece(0), &encoded[0])
                .await
                .unwrap();
            assert!(learner
                .install_piece(R1, schema.clone(), piece(2), &encoded[2])
                .await
                .is_err());
            for (chunk, bytes) in encoded.iter().enumerate() {
                if chunk < pieces.len() - 1 {
                    learner
                        .install_piece(R1, schema.clone(), piece(chunk), bytes)
                        .await
                        .unwrap();
                    assert_eq!(
                        rows(&learner).await.len(),
                        25,
                        "the stale copy serves until the last piece"
                    );
                } else {
                    learner
                        .install_piece(R1, schema.clone(), piece(chunk), bytes)
                        .await
                        .unwrap();
                }
            }
            assert_eq!(rows(&learner).await, rows(&leader).await);
            // The leader's next writes follow at its sequences, as shipped.
            let mut shipped = Vec::new();
            for ts in 10..13 {
                let batch = write("a", ts, ts as f64);
                let sequence = leader.write(R1, batch.clone(), None).await.unwrap();
                shipped.push((sequence, write_batch::encode(&batch).unwrap().into()));
            }
            assert_eq!(shipped[0].0, 11);
            learner.apply_replicated(R1, shipped).await.unwrap();
            let expected = rows(&leader).await;
            assert_eq!(rows(&learner).await, expected);
            sim.crash();
            expected
        }
    })
    .unwrap();
    // After a crash, the learner's copy is the installed one and the writes after it:
    // the stale copy's WAL records at sequences 11..=25 are not replayed over them.
    run_on_one_shard(IoDriverChoice::Auto, move |_| async move {
        let learner = open(&disk, "learner").await;
        assert_eq!(rows(&learner).await, expected);
        // Its sequences continue from the leader's.
        let next = learner.write(R1, write("a", 20, 20.0), None).await.unwrap();
        assert_eq!(next, 14);
    })
    .unwrap();
}
