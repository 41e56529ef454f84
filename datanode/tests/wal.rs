//! The WAL on a shard: group commit, recovery of exactly what was acknowledged, torn
//! tails, corruption, segment rolling and purging, fail-stop on I/O errors.
#![cfg(not(madsim))]

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use metronome_core::data::RegionId;
use metronome_core::rt::disk::{Disk, OpenOptions, SimDisk, SimFaults};
use metronome_core::rt::shard::{run_on_one_shard, IoDriverChoice, ShardContext};
use metronome_core::rt::task;
use metronome_datanode::wal::{Wal, WalConfig, WalError, WalRecovery};

fn on_shard<T: Send + 'static, Fut: Future<Output = T> + 'static>(
    body: impl FnOnce(ShardContext) -> Fut + Send + 'static,
) -> T {
    run_on_one_shard(IoDriverChoice::Auto, body).unwrap()
}

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 64 * 1024,
        commit_bytes_max: 16 * 1024,
        ..WalConfig::new("shard-0/wal")
    }
}

type Replayed = Vec<(RegionId, u64, Vec<u8>)>;

async fn open(disk: &Disk, config: WalConfig) -> (Wal, WalRecovery, Replayed) {
    let mut replayed = Vec::new();
    let (wal, recovery) = Wal::open(disk.clone(), config, |header, payload| {
        replayed.push((header.region, header.sequence, payload.to_vec()))
    })
    .await
    .unwrap();
    (wal, recovery, replayed)
}

fn region(number: u32) -> RegionId {
    RegionId::new(1, number)
}

#[test]
fn concurrent_appends_share_commits_and_all_replay_in_order() {
    let (stats, replayed) = on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(1));
        let (wal, _, _) = open(&disk, config()).await;
        let mut waiting = Vec::new();
        for i in 0..200u64 {
            let wal = wal.clone();
            waiting.push(task::spawn_local(async move {
                wal.append(region((i % 4) as u32), i / 4 + 1, i.to_le_bytes().to_vec())
                    .await
            }));
        }
        for appended in waiting {
            appended.await.unwrap().unwrap();
        }
        let stats = wal.stats();
        drop(wal);
        let (_, recovery, replayed) = open(&disk, config()).await;
        assert_eq!(recovery.records, 200);
        (stats, replayed)
    });
    assert_eq!(stats.records, 200);
    assert!(
        stats.commits < 50,
        "appends waiting on a sync ride the next commit: {stats:?}"
    );
    let order: Vec<u64> = replayed
        .iter()
        .map(|(_, _, p)| u64::from_le_bytes(p[..8].try_into().unwrap()))
        .collect();
    assert_eq!(
        order,
        (0..200).collect::<Vec<_>>(),
        "replay keeps append order"
    );
}

#[test]
fn after_a_crash_every_acknowledged_record_replays_and_the_wal_continues() {
    let mut crashes_with_appends_in_flight = 0;
    for seed in 0..20 {
        let faults = SimFaults {
            torn_write_probability: 0.5,
            ..SimFaults::default()
        };
        let sim = SimDisk::with_faults(seed, faults);
        let disk = Disk::sim(sim.clone());
        // The first "process": writers that keep going until the power fails. Returning
        // ends the shard's runtime, and with it every task, as a real crash would.
        let acknowledged = on_shard({
            let disk = disk.clone();
            move |_| async move {
                let (wal, _, _) = open(&disk, config()).await;
                let acknowledged = Rc::new(RefCell::new(Vec::new()));
                for writer in 0..4u32 {
                    let wal = wal.clone();
                    let acknowledged = acknowledged.clone();
                    task::spawn_local(async move {
                        for sequence in 1..=1000u64 {
                            let payload = vec![writer as u8; 100 + (sequence % 300) as usize];
                            if wal.append(region(writer), sequence, payload).await.is_err() {
                                return;
                            }
                            acknowledged.borrow_mut().push((writer, sequence));
                        }
                    });
                }
                for _ in 0..(20 + seed * 37 % 400) {
                    task::yield_now().await;
                }
                sim.crash();
                let acknowledged = acknowledged.borrow().clone();
                acknowledged
            }
        });
        // The second process recovers, writes, and a third checks the log is whole.
        let (replayed, replayed_again) = on_shard(move |_| async move {
            let (wal, recovery, replayed) = open(&disk, config()).await;
            assert!(recovery.corruptions.is_empty(), "seed {seed}: {recovery:?}");
            wal.append(region(9), 1, b"after".to_vec()).await.unwrap();
            drop(wal);
            let (_, recovery, replayed_again) = open(&disk, config()).await;
            assert!(
                recovery.truncated.is_none(),
                "seed {seed}: a truncated tail stays clean"
            );
            (replayed, replayed_again)
        });
        let replayed: Vec<(u32, u64)> = replayed.iter().map(|(r, s, _)| (r.number, *s)).collect();
        assert!(
            !acknowledged.is_empty(),
            "seed {seed}: writes were acknowledged before the crash"
        );
        if acknowledged.len() < 4000 {
            crashes_with_appends_in_flight += 1;
        }
        for record in &acknowledged {
            assert!(
                replayed.contains(record),
                "seed {seed}: acknowledged {record:?} lost"
            );
        }
        for writer in 0..4 {
            let sequences: Vec<u64> = replayed
                .iter()
                .filter(|(r, _)| *r == writer)
                .map(|(_, s)| *s)
                .collect();
            assert!(
                sequences
                    .iter()
                    .enumerate()
                    .all(|(i, s)| *s == i as u64 + 1),
                "seed {seed}: region {writer} replays a gapless prefix: {sequences:?}"
            );
        }
        assert_eq!(replayed_again.len(), replayed.len() + 1, "seed {seed}");
    }
    assert_eq!(
        crashes_with_appends_in_flight, 20,
        "every crash interrupts the writers"
    );
}

#[test]
fn a_torn_tail_is_truncated_and_reported() {
    let recovery = on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(3));
        let (wal, _, _) = open(&disk, config()).await;
        wal.append(region(1), 1, b"one".to_vec()).await.unwrap();
        wal.append(region(1), 2, b"two".to_vec()).await.unwrap();
        drop(wal);
        // Half of a third commit's header, as a crash mid-write leaves it.
        let segment = disk.list_dir("shard-0/wal").await.unwrap()[0].clone();
        let file = disk
            .open(format!("shard-0/wal/{segment}"), OpenOptions::write())
            .await
            .unwrap();
        file.write_at(vec![0xab; 20], 2 * 4096).await.unwrap();
        file.sync_data().await.unwrap();
        let (_, recovery, replayed) = open(&disk, config()).await;
        assert_eq!(replayed.len(), 2);
        recovery
    });
    let (_, offset) = recovery.truncated.expect("the torn tail was truncated");
    assert_eq!(offset, 2 * 4096);
    assert!(recovery.corruptions.is_empty());
}

#[test]
fn corruption_before_the_tail_names_the_segment_offset_and_region() {
    let recovery = on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(4));
        let (wal, _, _) = open(&disk, config()).await;
        for sequence in 1..=3 {
            wal.append(region(sequence as u32), sequence, vec![7u8; 50])
                .await
                .unwrap();
        }
        drop(wal);
        let segment = disk.list_dir("shard-0/wal").await.unwrap()[0].clone();
        let file = disk
            .open(format!("shard-0/wal/{segment}"), OpenOptions::write())
            .await
            .unwrap();
        // Flip a payload byte of the first commit (region 1).
        file.write_at(vec![8u8], 40 + 10).await.unwrap();
        file.sync_data().await.unwrap();
        let (_, recovery, replayed) = open(&disk, config()).await;
        assert_eq!(replayed.len(), 2, "the other regions' records replay");
        recovery
    });
    assert_eq!(recovery.corruptions.len(), 1);
    let (segment, corruption) = &recovery.corruptions[0];
    assert!(
        segment
            .to_string_lossy()
            .ends_with("00000000000000000001.wal"),
        "{segment:?}"
    );
    assert_eq!(corruption.offset, 0);
    assert_eq!(corruption.region, Some(region(1)));
}

#[test]
fn segments_roll_and_flushed_ones_are_purged() {
    let (created, deleted, replayed) = on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(5));
        let (wal, _, _) = open(&disk, config()).await;
        for sequence in 1..=100 {
            wal.append(region(1), sequence, vec![1u8; 3000])
                .await
                .unwrap();
        }
        let created = wal.stats().segments_created;
        // Region 1 flushed through sequence 60: segments holding only older records go.
        let deleted = wal
            .purge(|r| if r == region(1) { 60 } else { 0 })
            .await
            .unwrap();
        wal.append(region(1), 101, vec![1u8; 10]).await.unwrap();
        drop(wal);
        let (_, recovery, replayed) = open(&disk, config()).await;
        assert!(recovery.corruptions.is_empty(), "{recovery:?}");
        (created, deleted, replayed)
    });
    assert!(
        created >= 5,
        "100 × 3 KiB commits fill several 64 KiB segments: {created}"
    );
    assert!(deleted >= 3, "{deleted}");
    let sequences: Vec<u64> = replayed.iter().map(|(_, s, _)| *s).collect();
    assert!(
        sequences.first().copied().unwrap() <= 61,
        "nothing unflushed was purged: {sequences:?}"
    );
    assert_eq!(sequences.last(), Some(&101));
    assert!(sequences.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn a_failed_sync_stops_the_wal() {
    let outcomes = on_shard(|_| async {
        let sim = SimDisk::new(6);
        let disk = Disk::sim(sim.clone());
        let (wal, _, _) = open(&disk, config()).await;
        wal.append(region(1), 1, b"fine".to_vec()).await.unwrap();
        sim.set_faults(SimFaults {
            sync_error_probability: 1.0,
            ..SimFaults::default()
        });
        let failed = wal.append(region(1), 2, b"lost".to_vec()).await;
        sim.set_faults(SimFaults::default());
        let after = wal.append(region(1), 3, b"refused".to_vec()).await;
        (failed, after)
    });
    assert!(
        matches!(outcomes.0, Err(WalError::Io(_))),
        "{:?}",
        outcomes.0
    );
    assert!(
        matches!(outcomes.1, Err(WalError::Failed(_))),
        "{:?}",
        outcomes.1
    );
}

#[test]
fn appends_beyond_the_queue_bound_are_refused_as_overloaded() {
    let outcome = on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(7));
        let config = WalConfig {
            queue_bytes_max: 8 * 1024,
            commit_bytes_max: 4 * 1024,
            ..config()
        };
        let (wal, _, _) = open(&disk, config).await;
        // Queue without yielding: the writer cannot drain in between.
        let mut results = Vec::new();
        for sequence in 1..=10 {
            results.push(
                wal.enqueue(region(1), sequence, vec![0u8; 1000])
                    .map(|_| ()),
            );
        }
        results
    });
    assert!(outcome[0].is_ok());
    assert!(
        matches!(outcome.last().unwrap(), Err(WalError::Overloaded { .. })),
        "{outcome:?}"
    );
    assert!(matches!(
        on_shard(|_| async {
            let disk = Disk::sim(SimDisk::new(8));
            let (wal, _, _) = open(&disk, config()).await;
            wal.append(region(1), 1, vec![0u8; 1 << 20]).await
        }),
        Err(WalError::TooLarge { .. })
    ));
}

#[test]
fn a_commit_bound_that_does_not_fit_a_segment_is_refused() {
    let error = on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(9));
        let config = WalConfig {
            commit_bytes_max: 64 * 1024,
            ..config()
        };
        Wal::open(disk, config, |_, _| {}).await.err()
    });
    let error = error.expect("a commit of 64 KiB plus padding cannot fit a 64 KiB segment");
    assert!(error.to_string().contains("commit_bytes_max"), "{error}");
}

#[test]
fn the_wal_works_on_the_real_disk_with_o_direct() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = dir.path().to_path_buf();
    let replayed = run_on_one_shard(IoDriverChoice::IoUring, move |_| async move {
        let disk = Disk::real(root);
        let (wal, _, _) = open(&disk, config()).await;
        for sequence in 1..=50 {
            wal.append(region(2), sequence, vec![sequence as u8; 777])
                .await
                .unwrap();
        }
        drop(wal);
        open(&disk, config()).await.2
    })
    .unwrap();
    assert_eq!(replayed.len(), 50);
    assert!(replayed
        .iter()
        .enumerate()
        .all(|(i, (r, s, p))| *r == region(2) && *s == i as u64 + 1 && p.len() == 777));
}

#[test]
fn a_commit_replayed_after_a_failed_sync_is_made_durable_before_anything_follows_it() {
    let sim = SimDisk::new(9);
    let disk = Disk::sim(sim.clone());
    let (first_replay, recovery, second_replay) = on_shard(move |_| async move {
        let (wal, _, _) = open(&disk, config()).await;
        wal.append(region(1), 1, b"durable".to_vec()).await.unwrap();
        sim.set_faults(SimFaults {
            sync_error_probability: 1.0,
            ..SimFaults::default()
        });
        // The write reaches the page cache, its sync fails: readable, never durable.
        assert!(wal
            .append(region(1), 2, b"in the page cache only".to_vec())
            .await
            .is_err());
        sim.set_faults(SimFaults::default());
        drop(wal);

        let (wal, _, first_replay) = open(&disk, config()).await;
        wal.append(region(1), 3, b"after the restart".to_vec())
            .await
            .unwrap();
        drop(wal);
        sim.crash();
        let (_, recovery, second_replay) = open(&disk, config()).await;
        (first_replay, recovery, second_replay)
    });
    assert_eq!(
        first_replay.len(),
        2,
        "the restart replays what the page cache holds"
    );
    assert!(
        recovery.corruptions.is_empty(),
        "what was replayed was made durable: {recovery:?}"
    );
    let sequences: Vec<u64> = second_replay.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(sequences, [1, 2, 3]);
}

#[test]
fn a_torn_record_inside_the_last_commit_is_not_written_back_by_recovery() {
    let disk = Disk::sim(SimDisk::new(10));
    let (first, second) = on_shard(move |_| async move {
        let (wal, _, _) = open(&disk, config()).await;
        // One commit of two records: queue both before the writer runs.
        let a = wal.enqueue(region(1), 1, vec![1u8; 100]).unwrap();
        let b = wal.enqueue(region(2), 1, vec![2u8; 100]).unwrap();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        drop(wal);
        // Damage the second record's payload: a torn tail inside the last commit.
        let segment = disk.list_dir("shard-0/wal").await.unwrap()[0].clone();
        let file = disk
            .open(format!("shard-0/wal/{segment}"), OpenOptions::write())
            .await
            .unwrap();
        file.write_at(vec![0xee; 10], 140 + 40 + 5).await.unwrap();
        file.sync_data().await.unwrap();
        let (wal, first, _) = open(&disk, config()).await;
        wal.append(region(3), 1, b"next".to_vec()).await.unwrap();
        drop(wal);
        let (_, second, _) = open(&disk, config()).await;
        (first, second)
    });
    assert_eq!(
        first.truncated.as_ref().map(|(_, offset)| *offset),
        Some(140)
    );
    assert!(
        second.corruptions.is_empty() && second.truncated.is_none(),
        "{second:?}"
    );
    assert_eq!(
        second.records, 2,
        "record 1 of the first commit and the new one"
    );
}

#[test]
fn purging_deletes_only_a_prefix_so_the_log_stays_contiguous() {
    let (deleted, recovery) = on_shard(|_| async {
        let disk = Disk::sim(SimDisk::new(11));
        let (wal, _, _) = open(&disk, config()).await;
        // Region 1 writes once, early; region 2 fills several segments after it.
        wal.append(region(1), 1, vec![1u8; 100]).await.unwrap();
        for sequence in 1..=60 {
            wal.append(region(2), sequence, vec![2u8; 3000])
                .await
                .unwrap();
        }
        // Region 2 is flushed, region 1 is not: its record pins the oldest segment, and
        // the fully flushed segments after it must stay too.
        let deleted = wal
            .purge(|r| if r == region(2) { 60 } else { 0 })
            .await
            .unwrap();
        drop(wal);
        let (_, recovery, _) = open(&disk, config()).await;
        (deleted, recovery)
    });
    assert_eq!(deleted, 0);
    assert!(recovery.corruptions.is_empty(), "{recovery:?}");
}
