//! A deposed leader's divergent tail: writes a leader made durable in its own WAL but
//! never shipped, because it was cut off, and never acknowledged. Kafka lost
//! acknowledged messages here twice (truncation by high watermark, KIP-101 and KIP-279);
//! PacificA's answer, and Metronome's, is the epoch. Two defences are exercised, each
//! the only one on its path (`simulation/mutations.sh` removes each in turn):
//! - a follower refuses a shipment of an older epoch than the one it follows at
//!   (`Leases::admit_follower`): the deposed leader's shipments, held in the network while
//!   it was cut off, reach a copy that follows the new leader, at the sequences the new
//!   leader is about to give its own writes;
//! - a copy replaced by an install never replays the replaced copy's WAL records
//!   (`wal_commit_floor`, `engine/recovery.rs`): the deposed leader, back as a follower
//!   through an install, restarts with its old tail still in its WAL.
//!
//! One metasrv (rebalancing off, so that nothing but the story moves), three datanodes,
//! every region with three copies. Datanode 1 is cut off from everyone (the frontend
//! still reaches it) while a frontend writes: the regions it leads log writes it cannot
//! ship. Datanode 3 is cut off from the metasrv meanwhile, so that every region fails
//! over to datanode 2; then it comes back as a follower through an install. Only then
//! does datanode 1's network heal: its shipments reach datanode 3, which follows at a
//! newer epoch, just before the frontend writes to the new leaders. Datanode 1 comes
//! back as a follower through an install and is power-cycled; the frontend writes again.
//! Then every copy of every region must hold exactly its leader's rows: a copy that took
//! the old tail skips the new leader's writes at those sequences as ones it has,
//! acknowledged and missing there.
#![cfg(madsim)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use metronome_catalog::lease::HEARTBEAT_INTERVAL;
use metronome_catalog::rebalance::Balance;
use metronome_catalog::Catalog;
use metronome_core::data::{RegionId, ScanRequest};
use metronome_core::rt::{task, time};
use metronome_frontend::http::Frontend;
use metronome_frontend::remote_write::PromSeries;
use metronome_simulation::cluster::{self, Observed, SmallCluster};

/// How long datanode 1 takes writes it cannot ship: more of them than the new leaders
/// take before datanode 1 is back (`WRITES_FOR`), so that its old tail reaches above
/// the sequences its install brings.
const CUT_WRITES_FOR: Duration = Duration::from_secs(12);
/// How long the frontend writes after each step.
const WRITES_FOR: Duration = Duration::from_secs(2);
/// The most each wait for the cluster to settle may take.
const SETTLE_MAX: Duration = Duration::from_secs(120);

#[madsim::test]
async fn a_deposed_leader_s_unshipped_tail_reaches_no_copy() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    time::drift::clear();
    let observed: Arc<Mutex<Vec<Observed>>> = Arc::default();
    let observer: cluster::Observer = {
        let observed = observed.clone();
        Arc::new(move |seen: &Observed| observed.lock().unwrap().push(seen.clone()))
    };
    let cluster = SmallCluster::start(3, 3, Balance::OFF, observer).await;
    let (metasrv, datanodes) = (&cluster.metasrv, &cluster.datanodes);
    let frontend = cluster.frontend.clone();
    let handles = &cluster.handles;
    let mut writer = Writer::new(frontend.clone());
    while !writer.write().await {
        time::sleep(Duration::from_millis(200)).await;
    }
    let catalog = frontend.meta.refresh().await.expect("the catalog");
    let led: BTreeMap<RegionId, u64> = catalog
        .routes()
        .filter(|(_, route)| route.datanode == 1)
        .map(|(region, route)| {
            assert_eq!(route.replicas().count(), 3, "{region}: {route:?}");
            (region, route.epoch)
        })
        .collect();
    assert!(!led.is_empty(), "datanode 1 leads regions: {catalog:?}");

    // Datanode 1 is cut off: nothing it sends reaches the metasrv or a datanode (the
    // network holds it, as TCP would), nor does the metasrv reach it. Datanode 3 cannot
    // reach the metasrv, so that datanode 2 is the one live follower to promote.
    let net = NetSim::current();
    let [dn1, dn2, dn3] = [0, 1, 2].map(|i| datanodes[i].handle().id());
    let meta = metasrv.handle().id();
    for (from, to) in [
        (dn1, meta),
        (meta, dn1),
        (dn1, dn2),
        (dn1, dn3),
        (dn3, meta),
        (meta, dn3),
    ] {
        net.clog_link(from, to);
    }
    writer.write_for(CUT_WRITES_FOR).await;
    let failed_over = settled(
        &frontend,
        "datanode 2 leads every region of datanode 1",
        |c| {
            led.keys().all(|region| {
                c.route(*region)
                    .is_some_and(|route| route.datanode == 2 && route.epoch > led[region])
            })
        },
    )
    .await;
    net.unclog_link(dn3, meta);
    net.unclog_link(meta, dn3);
    settled(&frontend, "datanode 3 follows them again", |c| {
        led.keys().all(|region| {
            c.route(*region).is_some_and(|route| {
                route.datanode == 2
                    && route.followers.as_slice().iter().any(|f| f.datanode == 3)
                    && route.learner.is_none()
            })
        })
    })
    .await;
    // The followers hear of their configuration from the next heartbeat.
    time::sleep(2 * HEARTBEAT_INTERVAL).await;
    for (from, to) in [(dn1, meta), (meta, dn1), (dn1, dn2), (dn1, dn3)] {
        net.unclog_link(from, to);
    }
    writer.write_for(WRITES_FOR).await;

    // Datanode 1 comes back as a follower of each, through an install, and restarts.
    settled(&frontend, "datanode 1 follows its old regions", |c| {
        led.keys().all(|region| {
            c.route(*region).is_some_and(|route| {
                route.replicas().count() == 3 && route.learner.is_none() && route.holds(1)
            })
        })
    })
    .await;
    time::sleep(2 * HEARTBEAT_INTERVAL).await;
    datanodes[0].power_cycle();
    writer.write_for(WRITES_FOR).await;
    settled(&frontend, "every region has its three copies", |c| {
        c.routes()
            .all(|(_, route)| route.replicas().count() == 3 && route.learner.is_none())
    })
    .await;
    writer.write_for(WRITES_FOR).await;
    let catalog = settled(&frontend, "the writes settled", |_| true).await;
    time::sleep(3 * HEARTBEAT_INTERVAL).await;

    // Writes datanode 1 was asked to take at the old epochs (each answered once its
    // lease ran out, refused).
    let unshipped = observed
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.write && s.datanode == 1 && led.get(&s.region) == Some(&s.epoch))
        .count();
    tracing::info!(unshipped, "datanode 1 took writes it could not ship");

    // Every copy holds exactly its leader's rows.
    let mut compared = 0;
    for (region, route) in catalog.routes() {
        let leader = copy_rows(handles, route.datanode, region).await;
        for follower in route.followers.as_slice() {
            let rows = copy_rows(handles, follower.datanode, region).await;
            let missing: Vec<_> = leader.difference(&rows).take(3).collect();
            let extra: Vec<_> = rows.difference(&leader).take(3).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "region {region}: datanode {}'s copy differs from its leader's on datanode \
                 {}: lacks {missing:?}, holds {extra:?} the leader does not (datanode 1 \
                 led it at epoch {:?}, {unshipped} writes unshipped; after the failover \
                 {:?})",
                follower.datanode,
                route.datanode,
                led.get(&region),
                failed_over.route(region)
            );
            compared += 1;
        }
    }
    assert!(compared >= 2 * led.len(), "{compared} copies compared");
    assert!(unshipped > 0, "datanode 1 took writes while it was cut off");
    assert!(
        writer.acknowledged > 0,
        "the frontend's writes were acknowledged"
    );
}

/// A frontend writing 16 series at a time, each time one timestamp on.
struct Writer {
    frontend: Arc<Frontend>,
    sequence: i64,
    acknowledged: usize,
}

impl Writer {
    fn new(frontend: Arc<Frontend>) -> Writer {
        Writer {
            frontend,
            sequence: 0,
            acknowledged: 0,
        }
    }

    /// One write; whether it was acknowledged.
    async fn write(&mut self) -> bool {
        self.sequence += 1;
        let written = write(self.frontend.clone(), self.sequence).await;
        self.acknowledged += usize::from(written);
        written
    }

    /// A write every 250 ms for `span`, each started without waiting for the ones
    /// before (a write to a leader that cannot ship waits for its timeout).
    async fn write_for(&mut self, span: Duration) {
        let from = time::drift::true_now();
        let mut writing = Vec::new();
        while time::drift::true_now().duration_since(from) < span {
            self.sequence += 1;
            writing.push(task::spawn(write(self.frontend.clone(), self.sequence)));
            time::sleep(Duration::from_millis(250)).await;
        }
        for written in writing {
            self.acknowledged += usize::from(written.await.unwrap_or(false));
        }
    }
}

/// Writes 16 series at timestamp `sequence` on; whether the write was acknowledged.
async fn write(frontend: Arc<Frontend>, sequence: i64) -> bool {
    let batch: Vec<PromSeries> = (0..16)
        .map(|k| PromSeries {
            labels: vec![
                ("__name__".to_string(), "tail".to_string()),
                ("k".to_string(), format!("k{k}")),
            ],
            samples: vec![(1_700_000_000_000 + sequence, sequence as f64)],
        })
        .collect();
    time::timeout(Duration::from_secs(3), frontend.store.write(&batch))
        .await
        .is_ok_and(|outcome| outcome.is_ok())
}

/// Waits until the catalog satisfies `done`, at most [`SETTLE_MAX`]; returns it.
async fn settled(frontend: &Frontend, what: &str, done: impl Fn(&Catalog) -> bool) -> Arc<Catalog> {
    let from = time::drift::true_now();
    loop {
        if let Ok(catalog) = frontend.meta.refresh().await {
            if done(&catalog) {
                tracing::info!(
                    after_ms = time::drift::true_now().duration_since(from).as_millis(),
                    "{what}"
                );
                return catalog;
            }
        }
        assert!(
            time::drift::true_now().duration_since(from) < SETTLE_MAX,
            "not within {SETTLE_MAX:?}: {what}"
        );
        time::sleep(Duration::from_millis(500)).await;
    }
}

/// The rows of datanode `datanode`'s copy of `region`, read from its engine directly.
async fn copy_rows(
    handles: &cluster::DatanodeHandles,
    datanode: u64,
    region: RegionId,
) -> BTreeSet<(Vec<String>, i64, String)> {
    let handle = handles.lock().unwrap().get(&datanode).cloned();
    let handle = handle.expect("every datanode started");
    let series = handle
        .scan_series(region, ScanRequest::all())
        .await
        .unwrap_or_else(|error| panic!("region {region} on datanode {datanode}: {error}"));
    let mut rows = BTreeSet::new();
    for mut one in series {
        while one.tags.last().is_some_and(String::is_empty) {
            one.tags.pop();
        }
        for (ts, values) in one.rows {
            rows.insert((one.tags.clone(), ts, format!("{values:?}")));
        }
    }
    rows
}
