//! A datanode with several shards takes concurrent writes while it loses power at random
//! moments (flushing memtables to SSTs and compacting them all the while), its disk
//! tearing unsynced writes and now and then failing a write or a sync.
//! Meanwhile regions are closed and opened again at random (the datanode's half of moving
//! a region). After every recovery, every acknowledged row must scan back exactly, and no
//! row that was never written may appear. Half the seeds keep SSTs and manifests on the
//! datanode's disk, with its faults; the other half in a simulated object store (a remote
//! service: power loss leaves it alone) that is slow and now and then fails a request,
//! sometimes after doing it.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metronome_core::data::{
    FieldColumn, FieldType, RegionId, RegionSchema, Row, ScanRequest, TimeUnit, Value,
};
use metronome_core::rt::disk::SimFaults;
use metronome_core::rt::object::{SimObjectFaults, SimObjectStore};
use metronome_core::rt::shard::{IoDriverChoice, ShardsConfig};
use metronome_core::rt::{rand, task, time};
use metronome_core::write_batch::WriteBatch;
use metronome_datanode::datanode::{Datanode, DatanodeConfig, DatanodeHandle};
use metronome_datanode::engine::{EngineConfig, EngineError, SstStore};
use metronome_datanode::wal::WalConfig;
use metronome_simulation::node::SimNode;

const SHARDS: u16 = 3;
const REGIONS: u32 = 6;
const WRITERS: u64 = 4;
const ROWS_PER_WRITER: u64 = 120;
const POWER_CYCLES: usize = 4;
/// Attempts per row before the test declares the cluster stuck.
const ATTEMPTS_MAX: u32 = 2_000;
/// A request to a datanode that lost power is never answered (its tasks are gone, as
/// behind a partition), so every request is bounded, as a remote client's would be.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

type Slot = Arc<Mutex<Option<DatanodeHandle>>>;
/// (region, host, ts) → value.
type Model = Arc<Mutex<BTreeMap<(u32, String, i64), f64>>>;

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

/// `objects`: the remote store for SSTs and manifests, if not the local disk.
fn config(objects: Option<&SimObjectStore>) -> DatanodeConfig {
    DatanodeConfig {
        shards: ShardsConfig {
            count: SHARDS,
            pin_to_cores: false,
            io_driver: IoDriverChoice::Auto,
            uring_entries: 64,
        },
        engine: EngineConfig {
            // Flush constantly, so power also fails during flushes, manifest writes and
            // WAL purges.
            memory_bytes_flush: 8 * 1024,
            // ...and compact as soon as a window has two files.
            files_per_window_max: 2,
            wal: WalConfig {
                segment_bytes: 64 * 1024,
                commit_bytes_max: 16 * 1024,
                ..WalConfig::new("wal")
            },
            sst_store: objects.map_or(SstStore::Local, |objects| SstStore::Sim(objects.clone())),
            ..EngineConfig::default()
        },
    }
}

fn object_faults() -> SimObjectFaults {
    SimObjectFaults {
        error_probability: 0.02,
        latency_max: Duration::from_millis(2),
        only: None,
    }
}

fn faults() -> SimFaults {
    SimFaults {
        torn_write_probability: 0.5,
        unsynced_dir_survives_probability: 0.2,
        write_error_probability: 0.002,
        sync_error_probability: 0.002,
        latency_max: Duration::from_micros(500),
        ..SimFaults::default()
    }
}

/// Waits until the datanode has published a handle (it restarts after each power loss).
async fn handle(slot: &Slot) -> DatanodeHandle {
    for _ in 0..10_000 {
        if let Some(handle) = slot.lock().unwrap().clone() {
            return handle;
        }
        time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the datanode never came back");
}

async fn writer(id: u64, slot: Slot, acknowledged: Model, attempted: Model) {
    for i in 0..ROWS_PER_WRITER {
        let region = ((id + i) % u64::from(REGIONS)) as u32;
        // Tags of very different lengths make WAL records, and so commits, of every
        // length, so that commits end at every offset of a block (the replay once
        // misread padding shorter than a record header, which short records never
        // produced).
        let padding = "-".repeat(((id * 131 + i * 977) % 3000) as usize);
        let host = format!("host-{}{padding}", i % 5);
        let ts = (id * 1_000_000 + i) as i64;
        let value = (id * 1000 + i) as f64;
        attempted
            .lock()
            .unwrap()
            .insert((region, host.clone(), ts), value);
        let row = Row {
            tags: vec![host.clone()],
            ts,
            fields: vec![Value::Float64(value)],
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < ATTEMPTS_MAX, "writer {id} is stuck on row {i}");
            let datanode = handle(&slot).await;
            let write = datanode.write(
                RegionId::new(1, region),
                WriteBatch::from_rows(vec![row.clone()]),
            );
            let outcome = time::timeout(REQUEST_TIMEOUT, write)
                .await
                .unwrap_or_else(|_| Err(EngineError::Unavailable("timed out".into())));
            match outcome {
                Ok(_) => {
                    acknowledged
                        .lock()
                        .unwrap()
                        .insert((region, host.clone(), ts), value);
                    break;
                }
                // Power loss, a shard whose WAL stopped after an injected I/O error (it
                // recovers at the next restart), or overload: try again.
                Err(_) => time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// Closes a random region and opens it again, over and over, until `stop` is set.
/// Failures (power loss, injected I/O errors) are fine: the next round or the check
/// opens the region again.
async fn closer(slot: Slot, stop: Arc<std::sync::atomic::AtomicBool>) -> u64 {
    let mut closed = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        time::sleep(Duration::from_millis(rand::gen_range(10..100))).await;
        let region = RegionId::new(1, rand::gen_range(0..REGIONS));
        let datanode = handle(&slot).await;
        if let Ok(Ok(())) = time::timeout(REQUEST_TIMEOUT, datanode.close_region(region)).await {
            closed += 1;
        }
        time::sleep(Duration::from_millis(rand::gen_range(5..50))).await;
        let _ = time::timeout(REQUEST_TIMEOUT, datanode.open_region(region)).await;
    }
    closed
}

/// Opens a region (it may have been closed when the power failed) and scans it.
async fn open_and_scan(slot: &Slot, region: u32) -> Vec<Row> {
    for _ in 0..ATTEMPTS_MAX {
        let datanode = handle(slot).await;
        let id = RegionId::new(1, region);
        let _ = time::timeout(REQUEST_TIMEOUT, datanode.open_region(id)).await;
        match time::timeout(REQUEST_TIMEOUT, datanode.scan(id, ScanRequest::all())).await {
            Ok(Ok(rows)) => return rows,
            // Closed again by the closer in the meantime.
            Ok(Err(EngineError::RegionClosed(_))) => {}
            // The object store failed a read; a client would retry. Any other error,
            // a missing SST above all, is a bug.
            Ok(Err(error)) if error.to_string().contains("injected object store error") => {}
            Ok(Err(error)) => panic!("scanning region {region} after recovery: {error}"),
            Err(_) => panic!("scanning region {region} after recovery timed out"),
        }
        time::sleep(Duration::from_millis(5)).await;
    }
    panic!("region {region} never stayed open long enough to scan");
}

/// Checks the datanode against the model: every row acknowledged before the check
/// began, exactly; nothing but rows that were at least attempted. Writers may still be
/// running, so the acknowledged rows are taken before scanning and the attempted ones
/// after.
async fn check(slot: &Slot, acknowledged: &Model, attempted: &Model) {
    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut found = BTreeMap::new();
    for region in 0..REGIONS {
        for row in open_and_scan(slot, region).await {
            let Value::Float64(value) = row.fields[0] else {
                panic!("a value of the wrong type: {row:?}")
            };
            found.insert((region, row.tags[0].clone(), row.ts), value);
        }
    }
    let attempted = attempted.lock().unwrap();
    for (key, value) in &found {
        assert_eq!(
            attempted.get(key),
            Some(value),
            "phantom or altered row {key:?}"
        );
    }
    for (key, value) in &acknowledged {
        assert_eq!(found.get(key), Some(value), "acknowledged row {key:?} lost");
    }
}

#[madsim::test]
async fn acknowledged_rows_survive_power_loss_during_concurrent_writes() {
    let slot: Slot = Arc::default();
    let node_slot = slot.clone();
    let objects = SimObjectStore::new(rand::random(), object_faults());
    let remote = rand::gen_range(0..2) == 1;
    let node_objects = remote.then(|| objects.clone());
    let datanode = SimNode::start(
        "datanode",
        "10.0.2.1".parse().unwrap(),
        faults(),
        move |disk| {
            let slot = node_slot.clone();
            let objects = node_objects.clone();
            async move {
                // A supervisor restarts a datanode whose start failed (an injected I/O error
                // during recovery), as systemd would.
                let running = loop {
                    match Datanode::start(disk.clone(), config(objects.as_ref())).await {
                        Ok(running) => break running,
                        Err(error) => {
                            tracing::warn!(%error, "datanode start failed; retrying");
                            time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                };
                for recovery in &running.recoveries {
                    assert!(
                        recovery.quarantined.is_empty(),
                        "torn writes are not corruption: {recovery:?}"
                    );
                }
                *slot.lock().unwrap() = Some(running.handle());
                std::future::pending::<()>().await;
            }
        },
    );

    let first = handle(&slot).await;
    for region in 0..REGIONS {
        let mut attempts = 0;
        while !matches!(
            time::timeout(
                REQUEST_TIMEOUT,
                first.create_region(RegionId::new(1, region), schema())
            )
            .await,
            Ok(Ok(()))
        ) {
            attempts += 1;
            assert!(attempts < 100, "region {region} could not be created");
            time::sleep(Duration::from_millis(10)).await;
        }
    }

    let acknowledged: Model = Arc::default();
    let attempted: Model = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            task::spawn(writer(
                id,
                slot.clone(),
                acknowledged.clone(),
                attempted.clone(),
            ))
        })
        .collect();

    let stop_closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closer = task::spawn(closer(slot.clone(), stop_closing.clone()));

    let mut crashes_during_writes = 0;
    for _ in 0..POWER_CYCLES {
        time::sleep(Duration::from_millis(rand::gen_range(20..300))).await;
        if attempted.lock().unwrap().len() > acknowledged.lock().unwrap().len() {
            crashes_during_writes += 1;
        }
        *slot.lock().unwrap() = None;
        datanode.power_cycle();
        check(&slot, &acknowledged, &attempted).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    stop_closing.store(true, std::sync::atomic::Ordering::Relaxed);
    let closes = closer.await.unwrap();
    assert!(closes >= 1, "regions were closed while writes ran");

    datanode.disk.set_faults(SimFaults::default());
    objects.set_faults(SimObjectFaults::default());
    *slot.lock().unwrap() = None;
    datanode.power_cycle();
    check(&slot, &acknowledged, &attempted).await;
    assert_eq!(
        acknowledged.lock().unwrap().len() as u64,
        WRITERS * ROWS_PER_WRITER
    );
    if remote {
        assert!(
            objects.stats().errors >= 1,
            "the object store failed requests: {:?}",
            objects.stats()
        );
    } else {
        assert_eq!(objects.stats().puts, 0, "the local store is used");
    }
    let stats = datanode.disk.stats();
    assert_eq!(stats.crashes, POWER_CYCLES as u64 + 1);
    assert!(
        crashes_during_writes >= 1,
        "power failed while writes were in flight"
    );
}
