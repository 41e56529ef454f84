//! Clock skew within the leases' bound, and beyond it: what the bound buys, shown by
//! what breaks without it.
//!
//! A region leader holds its lease for [`LEASE_HELD`] on its own clock, counted from
//! before its heartbeat left: [`LEASE`] shortened by the drift a clock may have
//! ([`CLOCK_DRIFT_PPM_MAX`]). The metasrv waits [`LEASE_WAIT`] on its clock after the last
//! heartbeat arrived before it fails the leader's regions over. Within the bound the old
//! leader's lease has ended in real time before the new leader can take a write; a clock
//! slower than the bound stretches the old lease past that point.
//!
//! Here: one metasrv, two datanodes, regions of two copies. Datanode 1's clock is set
//! to run slow and it is cut off from the metasrv (a zombie the frontends can still
//! reach); the metasrv fails its regions over to datanode 2, where a frontend keeps
//! writing. Meanwhile a client with the old routes (a frontend that has not heard)
//! keeps asking datanode 1 for the regions' rows at the old epoch. A scan it answers
//! after datanode 2 acknowledged a write to that region is a stale read: it misses an
//! acknowledged write.
//! - Slow by the bound (1 %): datanode 1 refuses every such scan (its lease ran out).
//! - Slow by 40 %, far beyond it: datanode 1 answers such scans for seconds, each missing
//!   writes datanode 2 acknowledged. This is what breaks. Writes do not: datanode 1's
//!   writes need its follower, which refuses a shipment of the old epoch
//!   (`LeasedRegions`); the cluster harness checks that one datanode at most completes
//!   writes at an epoch.
#![cfg(madsim)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use madsim::net::NetSim;
use metronome_catalog::lease::{CLOCK_DRIFT_PPM_MAX, HEARTBEAT_INTERVAL, LEASE, LEASE_HELD};
use metronome_catalog::rebalance::Balance;
use metronome_core::data::{RegionId, ScanRequest};
use metronome_core::rt::time;
use metronome_frontend::remote_write::PromSeries;
use metronome_metasrv::failover::LEASE_WAIT;
use metronome_simulation::cluster::{self, client_of, datanode_addr, Observed, SmallCluster};
use metronome_wire::region::RegionClient;
use metronome_wire::{RegionRequest, RegionService};

/// How long after the cut the probes and writes go on: past the old lease even at the
/// slowest clock tried here.
const WATCH_FOR: Duration = Duration::from_secs(40);
/// How often the frontend writes.
const EVERY: Duration = Duration::from_millis(250);
/// How often the stale client asks: often enough to land in the 160 ms by which a
/// lease held for all of `LEASE` on a clock 1 % slow outlives the metasrv's.
const PROBE_EVERY: Duration = Duration::from_millis(40);
/// 40 % slow: datanode 1's lease lasts `LEASE_HELD / 0.6` (26.4 s) in real time.
const FAR_BEYOND_PPM: i64 = -400_000;

#[madsim::test]
async fn within_the_bound_a_deposed_leader_serves_nothing() {
    let seen = deposed_leader_with_a_clock_at(-(CLOCK_DRIFT_PPM_MAX as i64)).await;
    assert!(
        seen.failed_over,
        "the metasrv failed datanode 1's regions over"
    );
    assert!(
        seen.new_leader_writes > 0,
        "datanode 2 acknowledged writes to the regions it took"
    );
    assert!(
        seen.stale_reads.is_empty(),
        "within the bound, datanode 1 served {} scans after datanode 2 acknowledged a \
         write to their region, first {:?}",
        seen.stale_reads.len(),
        seen.stale_reads.first()
    );
    assert!(
        seen.refused_after_failover > 0,
        "the stale client was refused after the failover"
    );
    // Nor any scan past the lease the metasrv last granted, counted from when the
    // heartbeat arrived (the datanode counts from before it left, on its slow clock, and
    // holds it for less, the drift bound).
    assert!(
        seen.past_the_lease.is_empty(),
        "datanode 1 answered {} scans past {LEASE:?} after its last heartbeat arrived, \
         first {:?}",
        seen.past_the_lease.len(),
        seen.past_the_lease.first()
    );
}

#[madsim::test]
async fn beyond_the_bound_a_deposed_leader_serves_stale_reads() {
    let seen = deposed_leader_with_a_clock_at(FAR_BEYOND_PPM).await;
    assert!(
        seen.failed_over,
        "the metasrv failed datanode 1's regions over"
    );
    assert!(
        !seen.stale_reads.is_empty(),
        "a clock 40 % slow keeps datanode 1's lease past the failover: it should have \
         served scans that miss datanode 2's acknowledged writes ({} writes there, {} \
         refusals)",
        seen.new_leader_writes,
        seen.refused_after_failover
    );
    let first = seen.stale_reads.iter().map(|s| s.started).min().unwrap();
    let last = seen.stale_reads.iter().map(|s| s.finished).max().unwrap();
    eprintln!(
        "stale_reads={} stale_read_window_ms={}",
        seen.stale_reads.len(),
        last.duration_since(first).as_millis()
    );
}

/// What the scenario saw.
struct Seen {
    failed_over: bool,
    /// Writes datanode 2 completed to the regions it took, at their new epoch.
    new_leader_writes: usize,
    /// Scans datanode 1 answered at a region's old epoch after datanode 2 completed a
    /// write to that region.
    stale_reads: Vec<Observed>,
    /// Scans datanode 1 refused after the failover.
    refused_after_failover: usize,
    /// Scans datanode 1 answered that ended a lease or more after its last heartbeat
    /// reached the metasrv.
    past_the_lease: Vec<Observed>,
}

async fn deposed_leader_with_a_clock_at(rate_ppm: i64) -> Seen {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    time::drift::clear();
    let observed: Arc<Mutex<Vec<Observed>>> = Arc::default();
    let observer: cluster::Observer = {
        let observed = observed.clone();
        Arc::new(move |seen: &Observed| observed.lock().unwrap().push(seen.clone()))
    };
    let cluster = SmallCluster::start(2, 2, Balance::default(), observer).await;
    let (metasrv, datanodes, frontend) = (&cluster.metasrv, &cluster.datanodes, &cluster.frontend);
    let client = cluster.client.handle();
    let mut sequence = 0;
    let mut write = {
        let frontend = frontend.clone();
        move || {
            sequence += 1;
            let batch: Vec<PromSeries> = (0..16)
                .map(|k| PromSeries {
                    labels: vec![
                        ("__name__".to_string(), "skew".to_string()),
                        ("k".to_string(), format!("k{k}")),
                    ],
                    samples: vec![(1_700_000_000_000 + sequence, sequence as f64)],
                })
                .collect();
            let frontend = frontend.clone();
            async move { frontend.store.write(&batch).await.is_ok() }
        }
    };
    while !write().await {
        time::sleep(Duration::from_millis(200)).await;
    }
    // The regions datanode 1 leads, each with its follower on datanode 2.
    let catalog = frontend.meta.refresh().await.expect("the catalog");
    let led: BTreeMap<RegionId, u64> = catalog
        .routes()
        .filter(|(_, route)| route.datanode == 1)
        .map(|(region, route)| {
            assert!(route.holds(2), "{region}: {route:?}");
            (region, route.epoch)
        })
        .collect();
    assert!(!led.is_empty(), "datanode 1 leads regions: {catalog:?}");

    // Datanode 1's clock slows down; two heartbeats later, it is cut off from the
    // metasrv as soon as the metasrv answered its next heartbeat (so that its lease, on
    // the slow clock, runs from just before the cut).
    time::drift::set(datanodes[0].handle().id(), rate_ppm);
    time::sleep(2 * HEARTBEAT_INTERVAL).await;
    let grants_to_1 = || {
        cluster
            .granted
            .lock()
            .unwrap()
            .iter()
            .filter(|granted| granted.datanode == 1)
            .map(|granted| granted.received)
            .collect::<Vec<_>>()
    };
    let before = grants_to_1().len();
    while grants_to_1().len() == before {
        time::sleep(Duration::from_millis(1)).await;
    }
    let net = NetSim::current();
    let (zombie, meta) = (datanodes[0].handle().id(), metasrv.handle().id());
    net.clog_link(zombie, meta);
    net.clog_link(meta, zombie);
    let cut = time::drift::true_now();
    let last_grant = *grants_to_1().last().expect("a grant");
    tracing::info!(rate_ppm, ?led, "datanode 1 cut off from the metasrv");

    // The stale client asks datanode 1 for each region at its old epoch, while the
    // frontend writes (to datanode 2 once it failed over).
    let probing = {
        let led = led.clone();
        client.spawn(async move {
            let stale = RegionClient::new(client_of(datanode_addr(1), Duration::from_secs(2)));
            while time::drift::true_now().duration_since(cut) < WATCH_FOR {
                for (region, epoch) in &led {
                    let scan = RegionRequest::Scan {
                        region: *region,
                        request: ScanRequest::all(),
                        epoch: *epoch,
                        read: metronome_wire::ReadAt::Leader,
                    };
                    let _ = time::timeout(Duration::from_secs(3), stale.call(scan)).await;
                }
                time::sleep(PROBE_EVERY).await;
            }
        })
    };
    let mut failed_over = false;
    while time::drift::true_now().duration_since(cut) < WATCH_FOR {
        let _ = time::timeout(Duration::from_secs(3), write()).await;
        if !failed_over {
            if let Ok(catalog) = frontend.meta.refresh().await {
                failed_over = led
                    .keys()
                    .all(|region| catalog.route(*region).is_some_and(|r| r.datanode == 2));
                if failed_over {
                    tracing::info!(
                        after_ms = time::drift::true_now().duration_since(cut).as_millis(),
                        "the regions failed over"
                    );
                }
            }
        }
        time::sleep(EVERY).await;
    }
    probing.await.expect("the stale client ran");
    net.unclog_link(zombie, meta);
    net.unclog_link(meta, zombie);

    let observed = observed.lock().unwrap().clone();
    // The first write datanode 2 completed to each region it took over.
    let mut taken: BTreeMap<RegionId, Instant> = BTreeMap::new();
    for seen in &observed {
        if seen.write && seen.succeeded && seen.datanode == 2 && led.contains_key(&seen.region) {
            let first = taken.entry(seen.region).or_insert(seen.finished);
            *first = (*first).min(seen.finished);
        }
    }
    let new_leader_writes = observed
        .iter()
        .filter(|s| s.write && s.succeeded && s.datanode == 2 && led.contains_key(&s.region))
        .count();
    let stale_reads: Vec<Observed> = observed
        .iter()
        .filter(|s| {
            !s.write
                && s.succeeded
                && s.datanode == 1
                && led.get(&s.region) == Some(&s.epoch)
                && taken.get(&s.region).is_some_and(|first| s.started > *first)
        })
        .cloned()
        .collect();
    let failover_at = taken.values().min().copied();
    let refused_after_failover = observed
        .iter()
        .filter(|s| {
            !s.write
                && !s.succeeded
                && s.datanode == 1
                && failover_at.is_some_and(|at| s.started > at)
        })
        .count();
    let past_the_lease: Vec<Observed> = observed
        .iter()
        .filter(|s| !s.write && s.succeeded && s.datanode == 1 && s.finished >= last_grant + LEASE)
        .cloned()
        .collect();
    let regions: BTreeSet<RegionId> = stale_reads.iter().map(|s| s.region).collect();
    tracing::info!(
        lease_held_ms = LEASE_HELD.as_millis(),
        lease_ms = LEASE.as_millis(),
        lease_wait_ms = LEASE_WAIT.as_millis(),
        stale = stale_reads.len(),
        ?regions,
        "what the stale client saw"
    );
    Seen {
        failed_over,
        new_leader_writes,
        stale_reads,
        refused_after_failover,
        past_the_lease,
    }
}
