//! SimDisk: what survives a simulated crash, and how injected faults reach the caller.
//! Plain tests: SimDisk never waits unless latency is injected, so a trivial executor runs it.

use std::io;

use futures::executor::block_on;
use metronome_core::rt::disk::{os_error_code, AlignedBuf, Disk, OpenOptions, SimDisk, SimFaults};
use metronome_core::rt::rand::{seeded, Rng};

fn disk(seed: u64) -> (SimDisk, Disk) {
    let sim = SimDisk::new(seed);
    (sim.clone(), Disk::sim(sim))
}

async fn read_all(disk: &Disk, path: &str) -> io::Result<Vec<u8>> {
    let file = disk.open(path, OpenOptions::read()).await?;
    file.read_at(file.len() as usize, 0).await
}

/// Creates `dir/name` durably (data and directory entry) with `content`.
async fn durable_file(disk: &Disk, dir: &str, name: &str, content: &[u8]) {
    disk.create_dir_all(dir).await.unwrap();
    disk.sync_dir("").await.unwrap();
    let path = format!("{dir}/{name}");
    let file = disk.open(&path, OpenOptions::create()).await.unwrap();
    file.write_at(content.to_vec(), 0).await.unwrap();
    file.sync_data().await.unwrap();
    disk.sync_dir(dir).await.unwrap();
}

#[test]
fn synced_data_survives_a_crash_and_unsynced_data_does_not() {
    block_on(async {
        let (sim, disk) = disk(1);
        durable_file(&disk, "wal", "0001", b"synced-").await;
        let file = disk.open("wal/0001", OpenOptions::write()).await.unwrap();
        file.append(b"unsynced".to_vec()).await.unwrap();
        assert_eq!(
            read_all(&disk, "wal/0001").await.unwrap(),
            b"synced-unsynced",
            "reads see the page cache"
        );

        sim.crash();
        assert_eq!(read_all(&disk, "wal/0001").await.unwrap(), b"synced-");
        assert_eq!(sim.stats().crashes, 1);
    });
}

#[test]
fn damage_flips_a_stored_byte_that_survives_restarts_and_only_that_one() {
    block_on(async {
        let (sim, disk) = disk(3);
        durable_file(&disk, "wal", "0001.wal", b"abcd").await;
        durable_file(&disk, "wal", "0002.log", b"efgh").await;
        sim.crash();
        let found: Vec<String> = sim
            .durable_files(".wal")
            .into_iter()
            .map(|(path, bytes)| format!("{}={}", path.display(), String::from_utf8_lossy(&bytes)))
            .collect();
        assert_eq!(found, ["wal/0001.wal=abcd"]);
        assert!(sim.damage(std::path::Path::new("wal/0001.wal"), 2));
        assert!(
            !sim.damage(std::path::Path::new("wal/0001.wal"), 4),
            "past the end"
        );
        assert!(!sim.damage(std::path::Path::new("wal/none"), 0));
        let expected = [b'a', b'b', b'c' ^ 0xff, b'd'];
        assert_eq!(read_all(&disk, "wal/0001.wal").await.unwrap(), expected);
        sim.crash();
        assert_eq!(read_all(&disk, "wal/0001.wal").await.unwrap(), expected);
        assert_eq!(read_all(&disk, "wal/0002.log").await.unwrap(), b"efgh");
    });
}

#[test]
fn a_handle_opened_before_a_crash_is_dead_after_it() {
    block_on(async {
        let (sim, disk) = disk(2);
        durable_file(&disk, "d", "f", b"x").await;
        let file = disk.open("d/f", OpenOptions::write()).await.unwrap();
        sim.crash();
        let error = file.append(b"late".to_vec()).await.unwrap_err();
        assert!(error.to_string().contains("before a crash"), "{error}");
        assert_eq!(read_all(&disk, "d/f").await.unwrap(), b"x");
    });
}

#[test]
fn a_crash_keeps_an_ordered_prefix_of_the_unsynced_writes_the_last_one_torn() {
    let writes: [&[u8]; 3] = [b"AAAA", b"BBBBBBBB", b"CCCCCCCCCCCC"];
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..200 {
        block_on(async {
            let faults = SimFaults {
                torn_write_probability: 1.0,
                ..SimFaults::default()
            };
            let sim = SimDisk::with_faults(seed, faults);
            let disk = Disk::sim(sim.clone());
            durable_file(&disk, "wal", "0001", b"head").await;
            let file = disk.open("wal/0001", OpenOptions::write()).await.unwrap();
            for write in writes {
                file.append(write.to_vec()).await.unwrap();
            }

            sim.crash();
            let after = read_all(&disk, "wal/0001").await.unwrap();
            assert_eq!(sim.stats().torn_writes, 1);
            // What survives is "head", then whole unsynced writes in order, then a prefix
            // of the next one: never a later write without the earlier ones.
            let mut expected_full: Vec<u8> = b"head".to_vec();
            assert!(after.starts_with(b"head"), "seed {seed}");
            let mut rest = &after[4..];
            let mut whole = 0;
            for write in writes {
                if rest.len() >= write.len() {
                    assert_eq!(&rest[..write.len()], write, "seed {seed}");
                    expected_full.extend_from_slice(write);
                    rest = &rest[write.len()..];
                    whole += 1;
                } else {
                    assert_eq!(
                        rest,
                        &write[..rest.len()],
                        "seed {seed}: a torn write is a prefix"
                    );
                    rest = &[];
                    break;
                }
            }
            assert!(rest.is_empty(), "seed {seed}: nothing beyond the writes");
            outcomes.insert((whole, after.len()));
        });
    }
    assert!(
        outcomes.len() > 8,
        "the outcome varies with the seed: {outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|(whole, _)| *whole == 0),
        "sometimes nothing unsynced survives"
    );
    assert!(
        outcomes.iter().any(|(whole, _)| *whole == 3),
        "sometimes everything does"
    );
}

#[test]
fn a_new_file_without_sync_dir_vanishes_and_with_it_survives() {
    block_on(async {
        let (sim, disk) = disk(3);
        disk.create_dir_all("sst").await.unwrap();
        disk.sync_dir("").await.unwrap();
        for name in ["kept", "lost"] {
            let file = disk
                .open(format!("sst/{name}"), OpenOptions::create())
                .await
                .unwrap();
            file.write_at(name.as_bytes().to_vec(), 0).await.unwrap();
            file.sync_data().await.unwrap();
            if name == "kept" {
                disk.sync_dir("sst").await.unwrap();
            }
        }
        assert_eq!(disk.list_dir("sst").await.unwrap(), ["kept", "lost"]);
        sim.crash();
        assert_eq!(disk.list_dir("sst").await.unwrap(), ["kept"]);
        assert_eq!(read_all(&disk, "sst/kept").await.unwrap(), b"kept");
        let error = disk
            .open("sst/lost", OpenOptions::read())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    });
}

#[test]
fn a_directory_that_was_never_synced_takes_its_files_with_it() {
    block_on(async {
        let (sim, disk) = disk(4);
        disk.create_dir_all("region/7").await.unwrap();
        let file = disk
            .open("region/7/manifest", OpenOptions::create())
            .await
            .unwrap();
        file.write_at(b"m".to_vec(), 0).await.unwrap();
        file.sync_data().await.unwrap();
        disk.sync_dir("region/7").await.unwrap();
        // Neither "region" in the root nor "7" in "region" was synced.
        sim.crash();
        assert!(disk.list_dir("").await.unwrap().is_empty());
    });
}

#[test]
fn rename_and_remove_are_durable_only_after_sync_dir() {
    block_on(async {
        let (sim, disk) = disk(5);
        durable_file(&disk, "m", "CURRENT", b"old").await;
        // The atomic-replace recipe: write temp, sync, rename over, sync dir.
        let temp = disk
            .open("m/CURRENT.tmp", OpenOptions::create())
            .await
            .unwrap();
        temp.write_at(b"new".to_vec(), 0).await.unwrap();
        temp.sync_data().await.unwrap();
        disk.rename("m/CURRENT.tmp", "m/CURRENT").await.unwrap();
        assert_eq!(read_all(&disk, "m/CURRENT").await.unwrap(), b"new");
        sim.crash();
        assert_eq!(
            read_all(&disk, "m/CURRENT").await.unwrap(),
            b"old",
            "rename without sync_dir is undone"
        );

        let temp = disk
            .open("m/CURRENT.tmp", OpenOptions::create())
            .await
            .unwrap();
        temp.write_at(b"new".to_vec(), 0).await.unwrap();
        temp.sync_data().await.unwrap();
        disk.rename("m/CURRENT.tmp", "m/CURRENT").await.unwrap();
        disk.sync_dir("m").await.unwrap();
        sim.crash();
        assert_eq!(read_all(&disk, "m/CURRENT").await.unwrap(), b"new");
        assert_eq!(disk.list_dir("m").await.unwrap(), ["CURRENT"]);

        disk.remove("m/CURRENT").await.unwrap();
        sim.crash();
        assert_eq!(
            disk.list_dir("m").await.unwrap(),
            ["CURRENT"],
            "remove without sync_dir is undone"
        );
        disk.remove("m/CURRENT").await.unwrap();
        disk.sync_dir("m").await.unwrap();
        sim.crash();
        assert!(disk.list_dir("m").await.unwrap().is_empty());
    });
}

#[test]
fn every_injected_error_reaches_the_caller_as_an_io_error() {
    block_on(async {
        let always = |f: fn(&mut SimFaults)| {
            let mut faults = SimFaults::default();
            f(&mut faults);
            faults
        };
        let (sim, disk) = disk(6);
        durable_file(&disk, "d", "f", b"0123456789").await;
        let file = disk.open("d/f", OpenOptions::write()).await.unwrap();

        sim.set_faults(always(|f| f.read_error_probability = 1.0));
        let error = file.read_at(4, 0).await.unwrap_err();
        assert_eq!(os_error_code(&error), Some(libc::EIO), "{error}");
        assert!(
            error.to_string().contains("d/f") && error.to_string().contains("offset 0"),
            "{error}"
        );

        sim.set_faults(always(|f| f.write_error_probability = 1.0));
        let error = file.write_at(b"x".to_vec(), 0).await.unwrap_err();
        assert_eq!(os_error_code(&error), Some(libc::EIO), "{error}");

        sim.set_faults(always(|f| f.sync_error_probability = 1.0));
        let error = file.sync_data().await.unwrap_err();
        assert_eq!(os_error_code(&error), Some(libc::EIO), "{error}");
        let error = disk.sync_dir("d").await.unwrap_err();
        assert_eq!(os_error_code(&error), Some(libc::EIO), "{error}");

        sim.set_faults(SimFaults {
            capacity_bytes: Some(16),
            ..SimFaults::default()
        });
        file.write_at(b"ab".to_vec(), 10)
            .await
            .expect("12 of 16 bytes fit");
        let error = file.write_at(vec![0u8; 8], 12).await.unwrap_err();
        assert_eq!(os_error_code(&error), Some(libc::ENOSPC), "{error}");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);

        let stats = sim.stats();
        assert_eq!(
            (
                stats.read_errors,
                stats.write_errors,
                stats.sync_errors,
                stats.disk_full_errors
            ),
            (1, 1, 2, 1)
        );
    });
}

#[test]
fn a_failed_sync_loses_the_pending_writes_even_if_a_later_sync_succeeds() {
    block_on(async {
        let (sim, disk) = disk(7);
        durable_file(&disk, "d", "f", b"A").await;
        let file = disk.open("d/f", OpenOptions::write()).await.unwrap();
        file.append(b"B".to_vec()).await.unwrap();
        sim.set_faults(SimFaults {
            sync_error_probability: 1.0,
            ..SimFaults::default()
        });
        assert!(file.sync_data().await.is_err());
        sim.set_faults(SimFaults::default());
        file.sync_data().await.expect("the retry reports success");
        assert_eq!(
            read_all(&disk, "d/f").await.unwrap(),
            b"AB",
            "still in the page cache"
        );
        sim.crash();
        assert_eq!(
            read_all(&disk, "d/f").await.unwrap(),
            b"A",
            "but never made durable"
        );
    });
}

#[test]
fn a_corrupted_read_flips_one_stored_bit_for_good() {
    block_on(async {
        let (sim, disk) = disk(8);
        let original = vec![0u8; 64];
        durable_file(&disk, "d", "f", &original).await;
        let file = disk.open("d/f", OpenOptions::read()).await.unwrap();
        sim.set_faults(SimFaults {
            corrupt_read_probability: 1.0,
            ..SimFaults::default()
        });
        let corrupted = file.read_at(64, 0).await.unwrap();
        let flipped: u32 = corrupted.iter().map(|b| b.count_ones()).sum();
        assert_eq!(flipped, 1, "exactly one bit differs");
        sim.set_faults(SimFaults::default());
        sim.crash();
        assert_eq!(
            read_all(&disk, "d/f").await.unwrap(),
            corrupted,
            "the corruption is latent, not transient"
        );
        assert_eq!(sim.stats().corrupt_reads, 1);
    });
}

#[test]
fn o_direct_alignment_is_enforced_like_the_kernel_does() {
    block_on(async {
        let (_sim, disk) = disk(9);
        let file = disk
            .open("wal", OpenOptions::create().with_direct(true))
            .await
            .unwrap();
        let error = file.write_at(AlignedBuf::zeroed(100), 0).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("not aligned"), "{error}");
        // A Vec's address is not aligned, whatever its length: the kernel would refuse it.
        let mut unaligned = vec![1u8; 4096 + 1];
        let error = file.write_at(unaligned.split_off(1), 0).await;
        if let Err(error) = error {
            assert!(error.to_string().contains("AlignedBuf"), "{error}");
        }
        file.write_at(AlignedBuf::zeroed(4096), 4096).await.unwrap();
        assert_eq!(file.len(), 8192);
    });
}

#[test]
fn the_same_seed_injects_the_same_faults() {
    let run = |seed: u64| {
        block_on(async {
            let faults = SimFaults {
                read_error_probability: 0.2,
                write_error_probability: 0.2,
                sync_error_probability: 0.2,
                torn_write_probability: 0.5,
                ..SimFaults::default()
            };
            let sim = SimDisk::with_faults(seed, faults);
            let disk = Disk::sim(sim.clone());
            disk.create_dir_all("d").await.unwrap();
            let file = disk.open("d/f", OpenOptions::create()).await.unwrap();
            let mut outcomes = Vec::new();
            for i in 0..200u64 {
                outcomes.push(file.write_at(vec![i as u8; 8], i * 8).await.is_ok());
                outcomes.push(file.read_at(8, 0).await.is_ok());
                if i % 10 == 9 {
                    outcomes.push(file.sync_data().await.is_ok());
                }
            }
            (outcomes, sim.stats())
        })
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42).0, run(43).0);
}

/// Model check: random writes, truncations, syncs and crashes on several files; after each
/// crash every file holds exactly its content as of its last successful sync.
#[test]
fn random_histories_match_a_model_of_durability() {
    for seed in 0..200u64 {
        block_on(async {
            let mut rng = seeded(seed);
            let (sim, disk) = disk(seed);
            disk.create_dir_all("d").await.unwrap();
            disk.sync_dir("").await.unwrap();
            const FILES: usize = 3;
            let mut live: Vec<Vec<u8>> = vec![Vec::new(); FILES];
            let mut durable: Vec<Vec<u8>> = vec![Vec::new(); FILES];
            for name in 0..FILES {
                disk.open(format!("d/{name}"), OpenOptions::create())
                    .await
                    .unwrap();
            }
            disk.sync_dir("d").await.unwrap();
            let mut files = Vec::new();
            for name in 0..FILES {
                files.push(
                    disk.open(format!("d/{name}"), OpenOptions::write())
                        .await
                        .unwrap(),
                );
            }
            for step in 0..300 {
                let which = rng.gen_range(0..FILES);
                match rng.gen_range(0..100) {
                    0..=54 => {
                        let offset = rng.gen_range(0..256u64);
                        let data: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
                        files[which].write_at(data.clone(), offset).await.unwrap();
                        let end = offset as usize + data.len();
                        if live[which].len() < end {
                            live[which].resize(end, 0);
                        }
                        live[which][offset as usize..end].copy_from_slice(&data);
                    }
                    55..=64 => {
                        let len = rng.gen_range(0..300u64);
                        files[which].set_len(len).await.unwrap();
                        live[which].resize(len as usize, 0);
                    }
                    65..=94 => {
                        files[which].sync_data().await.unwrap();
                        durable[which] = live[which].clone();
                    }
                    _ => {
                        sim.crash();
                        live = durable.clone();
                        files.clear();
                        for (name, expected) in durable.iter().enumerate() {
                            let file = disk
                                .open(format!("d/{name}"), OpenOptions::write())
                                .await
                                .unwrap();
                            let content = file.read_at(4096, 0).await.unwrap();
                            assert_eq!(&content, expected, "seed {seed} step {step} file {name}");
                            files.push(file);
                        }
                    }
                }
                let content = files[which].read_at(4096, 0).await.unwrap();
                assert_eq!(
                    content, live[which],
                    "seed {seed} step {step}: reads see live data"
                );
            }
        });
    }
}

#[test]
fn a_failed_append_poisons_the_handle_so_nothing_after_the_hole_is_reported_durable() {
    block_on(async {
        let (sim, disk) = disk(10);
        durable_file(&disk, "d", "f", b"").await;
        let file = disk.open("d/f", OpenOptions::write()).await.unwrap();
        file.append(b"ok".to_vec()).await.unwrap();
        sim.set_faults(SimFaults {
            write_error_probability: 1.0,
            ..SimFaults::default()
        });
        assert!(file.append(b"lost".to_vec()).await.is_err());
        sim.set_faults(SimFaults::default());
        let error = file.append(b"after".to_vec()).await.unwrap_err();
        assert!(error.to_string().contains("offset 2"), "{error}");
        assert!(
            file.sync_data().await.is_err(),
            "a poisoned handle cannot claim durability"
        );
        let reopened = disk.open("d/f", OpenOptions::write()).await.unwrap();
        reopened.sync_data().await.unwrap();
    });
}

#[cfg(not(madsim))]
#[test]
fn a_cancelled_append_poisons_the_handle() {
    use metronome_core::rt::shard::{run_on_one_shard, IoDriverChoice};
    // Injected latency sleeps on the shard's timer, so this runs on a shard.
    let outcome = run_on_one_shard(IoDriverChoice::Auto, |_| async {
        let (sim, disk) = disk(11);
        durable_file(&disk, "d", "f", b"").await;
        let file = disk.open("d/f", OpenOptions::write()).await.unwrap();
        sim.set_faults(SimFaults {
            latency_max: std::time::Duration::from_millis(50),
            ..SimFaults::default()
        });
        // The append parks on the injected latency; the timeout abandons it.
        let abandoned = metronome_core::rt::time::timeout_local(
            std::time::Duration::from_micros(1),
            file.append(b"never".to_vec()),
        )
        .await;
        sim.set_faults(SimFaults::default());
        (
            abandoned.is_err(),
            file.append(b"next".to_vec()).await.is_err(),
        )
    })
    .unwrap();
    assert_eq!(
        outcome,
        (true, true),
        "the append was abandoned, and the handle is poisoned"
    );
}

#[test]
fn disk_capacity_counts_only_files_that_still_have_a_name() {
    block_on(async {
        let faults = SimFaults {
            capacity_bytes: Some(100),
            ..SimFaults::default()
        };
        let sim = SimDisk::with_faults(12, faults);
        let disk = Disk::sim(sim.clone());
        for round in 0..5 {
            let file = disk.open("big", OpenOptions::create()).await.unwrap();
            file.write_at(vec![round as u8; 80], 0).await.unwrap();
            drop(file);
            disk.remove("big").await.unwrap();
        }
        assert_eq!(sim.stats().disk_full_errors, 0);
    });
}

#[test]
fn a_removed_directory_does_not_come_back_with_its_old_files() {
    block_on(async {
        let (sim, disk) = disk(13);
        durable_file(&disk, "a/b", "c", b"old").await;
        disk.sync_dir("a").await.unwrap();
        disk.remove("a/b/c").await.unwrap();
        disk.remove("a/b").await.unwrap();
        disk.sync_dir("a").await.unwrap();
        disk.create_dir_all("a/b").await.unwrap();
        disk.sync_dir("a").await.unwrap();
        sim.crash();
        assert_eq!(disk.list_dir("a").await.unwrap(), ["b"]);
        assert!(disk.list_dir("a/b").await.unwrap().is_empty());
    });
}

#[test]
fn truncating_on_open_also_truncates_what_only_the_durable_copy_still_has() {
    block_on(async {
        let (sim, disk) = disk(14);
        durable_file(&disk, "d", "f", b"durable").await;
        let file = disk.open("d/f", OpenOptions::write()).await.unwrap();
        file.set_len(0).await.unwrap(); // live is empty, durable still holds "durable"
        drop(file);
        let file = disk
            .open("d/f", OpenOptions::write().with_truncate(true))
            .await
            .unwrap();
        file.write_at(b"new".to_vec(), 0).await.unwrap();
        file.sync_data().await.unwrap();
        sim.crash();
        assert_eq!(read_all(&disk, "d/f").await.unwrap(), b"new");
    });
}
