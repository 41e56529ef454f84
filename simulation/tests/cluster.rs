//! A whole cluster in one simulation: three metasrv replicas, three datanodes of two shards
//! each (every one behind its region leases), and two frontends, each running the same
//! library code as the `metronome` binary's roles and writing Prometheus samples through
//! its own engines, every sample with an identity of its own (writer, series, timestamp)
//! and now and then a metric never seen (a catalog command through raft). Meanwhile, for
//! `FAULTS_FOR` of simulated time, the seed picks one fault at a time: power loss of a
//! datanode (its disk keeping only what was synced, torn writes included), an outage of
//! one, power loss of a metasrv replica (the leader half the time), a frontend's
//! restart, a datanode cut off from every metasrv replica (past its lease, some of the
//! time), a node cut off from everything, one way or both, several nodes cut off one by
//! one and healed in another order, a node paused (past its lease, some of the time),
//! packet loss, slow links, a clock's rate changed, two datanodes that cannot reach
//! each other, an operator's migration of a region to a datanode (which runs on while
//! the next faults come), and back-to-back failovers (a datanode down past its lease,
//! then, as soon as a region took it back as a follower, that region's leader), and an
//! operator's drain of a datanode, undone after a while, and a datanode's disk replaced
//! (once every region has its copies). One seed in three, the datanodes keep their SSTs
//! and manifests in object stores that fail 0.5–3 % of their calls. The
//! metasrv also moves leadership back and forth on its own to even it out once a failed
//! datanode has its copies back. Every region has two copies (a leader and a follower)
//! or, one seed in three, three (`REPLICAS`): a datanode down past its lease (half of its
//! outages) fails its regions over, and a leader that cannot reach a follower removes it
//! from the configuration. Every node's clock drifts from the start, within what the
//! leases allow for (`CLOCK_DRIFT_PPM_MAX`).
//!
//! Checked on every seed:
//! - every acknowledged sample reads back, with its value, through either frontend once
//!   the faults healed; no sample reads back that no one wrote, nor twice (failed or
//!   timed-out writes are indeterminate: either is fine);
//! - a datanode cut off from every metasrv replica acknowledges no write once a lease
//!   has passed since the cut (it could not have renewed its lease);
//! - at no instant do two datanodes complete writes to one region, one datanode at most
//!   completes writes at a region's epoch, and no write completes at an epoch the
//!   catalog never reached;
//! - once the writes in flight settled, every follower of a region holds every
//!   acknowledged sample its leader holds, and nothing its leader lacks;
//! - at most one metasrv leader per term;
//! - liveness: once the faults heal, a write through each frontend succeeds within a
//!   bound;
//! - read your writes: a metric just begun, read back through the frontend that wrote
//!   it as soon as the write was acknowledged (at a follower for the second frontend,
//!   as of its leader's commit point), holds that write whenever the read answers.
#![cfg(madsim)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use madsim::net::NetSim;
use metronome_catalog::client::MetaError;
use metronome_catalog::lease::{CLOCK_DRIFT_PPM_MAX, HEARTBEAT_INTERVAL, LEASE};
use metronome_catalog::rebalance::Balance;
use metronome_catalog::Command;
use metronome_core::config::ReadPreference;
use metronome_core::data::{MatchOp, RegionId};
use metronome_core::error::ErrorKind;
use metronome_core::rt::disk::SimFaults;
use metronome_core::rt::object::{SimObjectFaults, SimObjectStore};
use metronome_core::rt::{rand, time};
use metronome_datanode::replication::FOLLOWER_REMOVAL_AFTER;
use metronome_frontend::http::Frontend;
use metronome_frontend::prom_store::label_matcher;
use metronome_frontend::remote_write::PromSeries;
use metronome_metasrv::raft::RaftTuning;
use metronome_simulation::cluster::{
    self, client_of, datanode_ip, frontend_ip, metasrv_addr, metasrv_ip, raft_status, FrontendSlot,
    Granted, Observed,
};
use metronome_simulation::node::SimNode;
use std::net::IpAddr;

const METASRVS: u64 = 3;
const DATANODES: u64 = 3;
const FRONTENDS: u64 = 2;
/// Copies of each region, per seed: a leader and a follower on another datanode two
/// times in three, a leader and two followers (one on every datanode) otherwise.
const REPLICAS: [u8; 3] = [2, 2, 3];
/// Where each frontend's reads go: the second reads at the followers (as of the
/// leaders' commit points), at a leader when a follower cannot answer.
const READ_PREFERENCES: [ReadPreference; FRONTENDS as usize] =
    [ReadPreference::Leader, ReadPreference::FollowerPreferred];
/// How long the back-to-back failover fault waits for a region to take its failed
/// datanode back as a follower.
const CAUGHT_UP_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long the disk-replacement fault waits for every region to have all its copies.
const WHOLE_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long the faults go on, in simulated time.
const FAULTS_FOR: Duration = Duration::from_secs(30);
/// After the last fault heals, a write through each frontend succeeds within this.
const RECOVERY_MAX: Duration = Duration::from_secs(40);
/// How long after the writes settled every region may take to get its copies back: a
/// metasrv leader's wait of a lease, then a catch-up per learner, a few at a time.
const REPAIR_MAX: Duration = Duration::from_secs(90);
/// Samples the writers must have had acknowledged by the end (within `RECOVERY_MAX` of
/// healing), for the checks to be worth something.
const PROGRESS_MIN: usize = 300;
/// A write that takes longer is abandoned (indeterminate).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Samples' timestamps start here (milliseconds), one apart per write of a writer.
const TS_BASE_MS: i64 = 1_700_000_000_000;
/// Series per write, each its own label value.
const SERIES_PER_WRITE: u64 = 3;
/// Every this many writes a writer uses a metric never seen before.
const NEW_METRIC_EVERY: u64 = 16;
/// Every this long, the label writers add now and then is one no series had.
const NEW_LABEL_EVERY: Duration = Duration::from_secs(3);

/// A sample's identity: (metric, writer, series, timestamp).
type SampleKey = (String, String, String, i64);

#[derive(Default)]
struct History {
    attempted: BTreeMap<SampleKey, f64>,
    acknowledged: BTreeSet<SampleKey>,
    metrics: BTreeSet<String>,
    /// Writes and scans the datanodes answered.
    observed: Vec<Observed>,
    /// Valid writes refused as the client's mistake (a 400, which Prometheus drops).
    refused_as_invalid: Vec<String>,
    /// Reads that answered without a sample their frontend had just had acknowledged.
    stale_reads: Vec<String>,
    /// Heartbeats the metasrv answered with leases.
    granted: Vec<Granted>,
    /// (datanode, from, to): the datanode could reach no metasrv replica in between.
    cut_off: Vec<(u64, Instant, Instant)>,
    /// By term, the metasrv replicas that reported themselves leader.
    leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// (datanode, when): a datanode powered off for longer than its lease.
    killed: Vec<(u64, Instant)>,
    /// Set when the checks begin: the writers start no more writes.
    stopped: bool,
}

type Shared = Arc<Mutex<History>>;

/// The next sequence number of each writer, shared across the frontend's restarts so that
/// no sample identity is ever written twice.
type Sequences = Arc<[AtomicU64; FRONTENDS as usize]>;

#[path = "cluster/checks.rs"]
mod checks;
#[path = "cluster/damage.rs"]
mod damage;
#[path = "cluster/migration.rs"]
mod migration;
#[path = "cluster/watch.rs"]
mod watch;
#[path = "cluster/workload.rs"]
mod workload;
use checks::check_after_healing;
use watch::{every_region_whole, held_without, leader_after_catch_up, metasrv_leader};
use workload::{frontend, monitor, read_back, series, workload};

#[madsim::test]
async fn acknowledged_samples_survive_a_cluster_under_faults() {
    // RUST_LOG=info shows every role's logs, for a seed that fails.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    time::drift::clear();
    // Every role's clock runs at a rate of its own, within what the leases allow for, set
    // as each node is created, before it first runs (a wait keeps the rate it began with).
    let drift = || rand::gen_range(-(CLOCK_DRIFT_PPM_MAX as i64)..=CLOCK_DRIFT_PPM_MAX as i64);
    let drifting = |nodes: &[SimNode]| {
        for node in nodes {
            time::drift::set(node.handle().id(), drift());
        }
    };
    // The rare paths the roles mark with `buggify!` (a slow shard past its lease, a late
    // heartbeat or reply, an early answer to a catalog watch) are taken often here.
    metronome_core::rt::rand::enable_buggify(true);
    let history: Shared = Arc::default();
    let replicas = REPLICAS[rand::gen_range(0..REPLICAS.len())];
    tracing::info!(replicas, "copies of each region");
    // One seed in three, each datanode keeps its SSTs and manifests in an object store of
    // its own (outside the node, as S3 would be) that fails some of its calls: flushes,
    // compactions, installs and the migrations of rebalancing meet its errors.
    let object_faults = (rand::gen_range(0..3) == 0).then(|| SimObjectFaults {
        error_probability: rand::gen_range(5..=30) as f64 / 1000.0,
        latency_max: Duration::from_millis(rand::gen_range(1..=5)),
        only: None,
    });
    tracing::info!(?object_faults, "an object store for SSTs and manifests");
    let stores: Vec<Option<SimObjectStore>> = (1..=DATANODES)
        .map(|_| {
            object_faults
                .clone()
                .map(|faults| SimObjectStore::new(rand::seed(), faults))
        })
        .collect();
    let disk_faults = SimFaults {
        latency_max: Duration::from_millis(1),
        torn_write_probability: 0.5,
        ..SimFaults::default()
    };
    let granted: cluster::GrantObserver = {
        let history = history.clone();
        Arc::new(move |granted: Granted| history.lock().unwrap().granted.push(granted))
    };
    let metasrvs: Vec<SimNode> = (1..=METASRVS)
        .map(|id| {
            SimNode::start(
                &format!("metasrv-{id}"),
                metasrv_ip(id),
                disk_faults.clone(),
                cluster::metasrv_main_observed(
                    id,
                    METASRVS,
                    RaftTuning::default(),
                    Some(granted.clone()),
                    Balance::default(),
                ),
            )
        })
        .collect();
    drifting(&metasrvs);
    let observer: cluster::Observer = {
        let history = history.clone();
        Arc::new(move |seen: &Observed| history.lock().unwrap().observed.push(seen.clone()))
    };
    let handles = cluster::DatanodeHandles::default();
    let datanodes: Vec<SimNode> = (1..=DATANODES)
        .map(|id| {
            SimNode::start(
                &format!("datanode-{id}"),
                datanode_ip(id),
                disk_faults.clone(),
                cluster::datanode_main(
                    id,
                    METASRVS,
                    HEARTBEAT_INTERVAL,
                    observer.clone(),
                    handles.clone(),
                    stores[id as usize - 1].clone(),
                ),
            )
        })
        .collect();
    drifting(&datanodes);
    let watcher = SimNode::idle("monitor", IpAddr::from([10, 0, 9, 1]));
    let monitoring = watcher.handle().spawn(monitor(history.clone()));
    // Frontends start once every datanode registered, so that the metric regions spread
    // over all three (the first frontend places them over those registered).
    let checker = SimNode::idle("checker", IpAddr::from([10, 0, 9, 2]));
    checker
        .handle()
        .spawn(async {
            let metasrv = cluster::meta_client(METASRVS);
            loop {
                if let Ok(catalog) = metasrv.catalog().await {
                    if catalog.datanodes.len() == DATANODES as usize {
                        return;
                    }
                }
                time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("the datanodes register");
    let sequences: Sequences = Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let started = time::drift::true_now();
    let slots: Vec<FrontendSlot> = (1..=FRONTENDS).map(|_| Arc::default()).collect();
    let frontends: Vec<SimNode> = (1..=FRONTENDS)
        .map(|id| {
            let history = history.clone();
            let sequences = sequences.clone();
            SimNode::start(
                &format!("frontend-{id}"),
                frontend_ip(id),
                SimFaults::default(),
                cluster::frontend_main(
                    METASRVS,
                    replicas,
                    READ_PREFERENCES[id as usize - 1],
                    slots[id as usize - 1].clone(),
                    move |fe| workload(fe, id, history.clone(), sequences.clone(), started),
                ),
            )
        })
        .collect();
    drifting(&frontends);

    // Faults, one at a time, each healed before the next.
    let net = NetSim::current();
    let started = time::now();
    let mut faults = Vec::new();
    while time::now().duration_since(started) < FAULTS_FOR {
        time::sleep(Duration::from_millis(rand::gen_range(200..2000))).await;
        let hold = Duration::from_millis(rand::gen_range(500..5000));
        let datanode_index = rand::gen_range(0..DATANODES as usize);
        let datanode = &datanodes[datanode_index];
        // The operator's faults and the longest ones (15, 16) one draw in eight, so that
        // the others (a lease's edge above all) come as often as they did before those.
        let kind = if rand::gen_range(0..8) == 0 {
            rand::gen_range(15..17)
        } else {
            rand::gen_range(0..15)
        };
        match kind {
            0 => {
                faults.push(format!("power loss of {}", datanode.name));
                datanode.power_cycle();
            }
            1 => {
                // Past its lease half of the time: its regions fail over.
                let hold = if rand::gen_range(0..2) == 0 {
                    LEASE + Duration::from_millis(rand::gen_range(1000..10_000))
                } else {
                    hold
                };
                faults.push(format!("{} down for {hold:?}", datanode.name));
                if hold > LEASE {
                    history
                        .lock()
                        .unwrap()
                        .killed
                        .push((datanode_index as u64 + 1, time::drift::true_now()));
                }
                datanode.power_off();
                time::sleep(hold).await;
                madsim::runtime::Handle::current().restart(datanode.handle().id());
            }
            2 => {
                let leader = checker.handle().spawn(metasrv_leader()).await.unwrap();
                let index = match leader {
                    Some(id) if rand::gen_range(0..2) == 0 => id as usize - 1,
                    _ => rand::gen_range(0..METASRVS as usize),
                };
                let replica = &metasrvs[index];
                faults.push(format!(
                    "power loss of {} (leader {leader:?})",
                    replica.name
                ));
                replica.power_cycle();
            }
            3 => {
                let index = rand::gen_range(0..FRONTENDS as usize);
                faults.push(format!("restart of {}", frontends[index].name));
                *slots[index].lock().unwrap() = None;
                frontends[index].power_cycle();
            }
            4 => {
                // Past its lease half of the time.
                let hold = if rand::gen_range(0..2) == 0 {
                    LEASE + Duration::from_millis(rand::gen_range(1000..6000))
                } else {
                    hold
                };
                faults.push(format!(
                    "{} cut off from every metasrv for {hold:?}",
                    datanode.name
                ));
                let from = time::drift::true_now();
                for replica in &metasrvs {
                    net.clog_link(datanode.handle().id(), replica.handle().id());
                    net.clog_link(replica.handle().id(), datanode.handle().id());
                }
                time::sleep(hold).await;
                for replica in &metasrvs {
                    net.unclog_link(datanode.handle().id(), replica.handle().id());
                    net.unclog_link(replica.handle().id(), datanode.handle().id());
                }
                let to = time::drift::true_now();
                history
                    .lock()
                    .unwrap()
                    .cut_off
                    .push((datanode_index as u64 + 1, from, to));
            }
            5 => {
                let node = match rand::gen_range(0..3) {
                    0 => datanode,
                    1 => &metasrvs[rand::gen_range(0..METASRVS as usize)],
                    _ => &frontends[rand::gen_range(0..FRONTENDS as usize)],
                };
                let id = node.handle().id();
                let cut_off_datanode = datanodes
                    .iter()
                    .position(|one| one.handle().id() == id)
                    .map(|index| index as u64 + 1);
                let from = time::drift::true_now();
                let both_ways = match rand::gen_range(0..3) {
                    0 => {
                        faults.push(format!("{} cut off both ways for {hold:?}", node.name));
                        net.clog_node(id);
                        true
                    }
                    1 => {
                        faults.push(format!("{} cut off inbound for {hold:?}", node.name));
                        net.clog_node_in(id);
                        false
                    }
                    _ => {
                        faults.push(format!("{} cut off outbound for {hold:?}", node.name));
                        net.clog_node_out(id);
                        false
                    }
                };
                time::sleep(hold).await;
                net.unclog_node(id);
                // A datanode cut off both ways is cut off from the metasrv too.
                if let (true, Some(datanode)) = (both_ways, cut_off_datanode) {
                    let to = time::drift::true_now();
                    history.lock().unwrap().cut_off.push((datanode, from, to));
                }
            }
            6 => {
                let frontend = &frontends[rand::gen_range(0..FRONTENDS as usize)];
                faults.push(format!(
                    "link {} -> {} cut for {hold:?}",
                    frontend.name, datanode.name
                ));
                net.clog_link(frontend.handle().id(), datanode.handle().id());
                time::sleep(hold).await;
                net.unclog_link(frontend.handle().id(), datanode.handle().id());
            }
            7 => {
                faults.push(format!("packet loss for {hold:?}"));
                net.update_config(|config| config.packet_loss_rate = 0.05);
                time::sleep(hold).await;
                net.update_config(|config| config.packet_loss_rate = 0.0);
            }
            8 => {
                // Swizzled: a few nodes cut off one by one, healed in another order.
                let mut nodes: Vec<&SimNode> = metasrvs
                    .iter()
                    .chain(&datanodes)
                    .chain(&frontends)
                    .collect();
                let mut cut = Vec::new();
                for _ in 0..rand::gen_range(2..5) {
                    let node = nodes.remove(rand::gen_range(0..nodes.len()));
                    net.clog_node(node.handle().id());
                    cut.push((node, time::drift::true_now()));
                    time::sleep(Duration::from_millis(rand::gen_range(0..1000))).await;
                }
                time::sleep(hold).await;
                let mut order = Vec::new();
                while !cut.is_empty() {
                    let (node, from) = cut.remove(rand::gen_range(0..cut.len()));
                    net.unclog_node(node.handle().id());
                    order.push(node.name.clone());
                    if let Some(index) = datanodes.iter().position(|one| one.name == node.name) {
                        let to = time::drift::true_now();
                        history
                            .lock()
                            .unwrap()
                            .cut_off
                            .push((index as u64 + 1, from, to));
                    }
                    time::sleep(Duration::from_millis(rand::gen_range(0..1000))).await;
                }
                faults.push(format!(
                    "swizzled cut of {order:?} (healed in this order) for {hold:?}"
                ));
            }
            9 => {
                // Paused: its tasks stand still while time goes on, past its lease a third
                // of the time; then it resumes with whatever it had in flight.
                let node = match rand::gen_range(0..3) {
                    0 => &metasrvs[rand::gen_range(0..METASRVS as usize)],
                    _ => datanode,
                };
                let hold = if rand::gen_range(0..3) == 0 {
                    LEASE + Duration::from_millis(rand::gen_range(1000..4000))
                } else {
                    hold
                };
                faults.push(format!("{} paused for {hold:?}", node.name));
                madsim::runtime::Handle::current().pause(node.handle().id());
                time::sleep(hold).await;
                madsim::runtime::Handle::current().resume(node.handle().id());
            }
            10 => {
                let (low, high) = (rand::gen_range(20..100), rand::gen_range(100..800));
                faults.push(format!("links slowed to {low}..{high} ms for {hold:?}"));
                net.update_config(|config| {
                    config.send_latency = Duration::from_millis(low)..Duration::from_millis(high)
                });
                time::sleep(hold).await;
                net.update_config(|config| {
                    config.send_latency = Duration::from_millis(1)..Duration::from_millis(10)
                });
            }
            12 => {
                // Two datanodes that cannot reach each other (one way, or both) while
                // both reach the metasrv: a leader must drop its follower from the
                // configuration before it acknowledges more.
                let other = &datanodes[(datanode_index + rand::gen_range(1..DATANODES as usize))
                    % DATANODES as usize];
                let both = rand::gen_range(0..2) == 0;
                faults.push(format!(
                    "link {} -> {} cut{} for {hold:?}",
                    datanode.name,
                    other.name,
                    if both { " both ways" } else { "" }
                ));
                net.clog_link(datanode.handle().id(), other.handle().id());
                if both {
                    net.clog_link(other.handle().id(), datanode.handle().id());
                }
                time::sleep(hold).await;
                net.unclog_link(datanode.handle().id(), other.handle().id());
                net.unclog_link(other.handle().id(), datanode.handle().id());
            }
            11 => {
                let node = if rand::gen_range(0..2) == 0 {
                    datanode
                } else {
                    &metasrvs[rand::gen_range(0..METASRVS as usize)]
                };
                let rate_ppm = drift();
                faults.push(format!("{}'s clock now runs at {rate_ppm} ppm", node.name));
                time::drift::set(node.handle().id(), rate_ppm);
            }
            14 if rand::gen_range(0..2) == 0 => {
                let to = datanode_index as u64 + 1;
                let pick = rand::gen_range(0..usize::MAX);
                let slot = slots[0].clone();
                faults.push(
                    migration::migrate_killing_metasrv_leaders(&metasrvs, &checker, slot, to, pick)
                        .await,
                );
            }
            14 => {
                // An operator's migration, running on while the next faults come.
                let slot = slots[0].clone();
                let to = datanode_index as u64 + 1;
                let pick = rand::gen_range(0..usize::MAX);
                faults.push(format!("a migration of some region to {}", datanode.name));
                checker.handle().spawn(async move {
                    let frontend = frontend(&slot, RECOVERY_MAX).await;
                    let catalog = frontend.meta.catalog();
                    let regions: Vec<RegionId> = catalog.routes().map(|(r, _)| r).collect();
                    let region = regions[pick % regions.len()];
                    let outcome = time::timeout(
                        Duration::from_secs(60),
                        metronome_frontend::admin::migrate_region(&frontend.meta, region, to),
                    )
                    .await;
                    tracing::info!(%region, to, ?outcome, "a migration ended");
                });
            }
            // The two longest faults share a draw.
            15 if rand::gen_range(0..2) == 0 => {
                // Back-to-back failovers: a datanode down past its lease, so its regions
                // fail over; back, it catches up as their learner; and as soon as one
                // region makes it a follower again, that region's leader goes down past
                // its lease too, so the copy just caught up may be the one promoted.
                let down = LEASE + Duration::from_millis(rand::gen_range(1000..4000));
                let first = datanode_index as u64 + 1;
                history
                    .lock()
                    .unwrap()
                    .killed
                    .push((first, time::drift::true_now()));
                datanode.power_off();
                time::sleep(down).await;
                madsim::runtime::Handle::current().restart(datanode.handle().id());
                let leader = checker
                    .handle()
                    .spawn(leader_after_catch_up(first, CAUGHT_UP_WAIT_MAX))
                    .await
                    .unwrap();
                match leader {
                    Some(second) => {
                        faults.push(format!(
                            "datanode-{first} down for {down:?}, then datanode-{second}, the \
                             leader it caught up from, down for {down:?}"
                        ));
                        let node = &datanodes[second as usize - 1];
                        history
                            .lock()
                            .unwrap()
                            .killed
                            .push((second, time::drift::true_now()));
                        node.power_off();
                        time::sleep(down).await;
                        madsim::runtime::Handle::current().restart(node.handle().id());
                    }
                    None => faults.push(format!(
                        "datanode-{first} down for {down:?}, and no region took it back as a \
                         follower within {CAUGHT_UP_WAIT_MAX:?}"
                    )),
                }
            }
            16 => {
                // An operator drains a datanode for a while, then takes the mark away:
                // its copies move while the next faults come.
                let id = datanode_index as u64 + 1;
                let hold = Duration::from_millis(rand::gen_range(3000..20_000));
                let set = |drain: bool| {
                    checker.handle().spawn(async move {
                        let metasrv = cluster::meta_client(METASRVS);
                        let command = Command::DrainDatanode { id, drain };
                        // Taking the mark away must happen: the checks want every copy back.
                        let tries = if drain { 20 } else { 1000 };
                        for _ in 0..tries {
                            match metasrv.execute(&command).await {
                                Ok(_) => return Ok(()),
                                Err(MetaError::Refused(reason)) => return Err(reason),
                                Err(_) => time::sleep(Duration::from_millis(500)).await,
                            }
                        }
                        Err("no metasrv answered".to_string())
                    })
                };
                let drained = set(true).await.unwrap();
                faults.push(format!(
                    "{} drained for {hold:?} ({drained:?})",
                    datanode.name
                ));
                time::sleep(hold).await;
                let undrained = set(false).await.unwrap();
                assert!(
                    undrained.is_ok() || drained.is_err(),
                    "a drain mark set could not be taken away: {undrained:?}"
                );
            }
            15 => {
                // A datanode's disk replaced: it comes back empty under the same id, past
                // its lease half of the time. Only once every region has all its copies:
                // a second disk lost before the first one's copies were made again loses
                // what only those two held, which no number of copies prevents.
                let hold = if rand::gen_range(0..2) == 0 {
                    LEASE + Duration::from_millis(rand::gen_range(1000..5000))
                } else {
                    hold
                };
                let whole = checker
                    .handle()
                    .spawn(every_region_whole(WHOLE_WAIT_MAX))
                    .await
                    .unwrap();
                if !whole {
                    faults.push(format!(
                        "no disk replaced: some region lacked copies for {WHOLE_WAIT_MAX:?}"
                    ));
                    continue;
                }
                // Half the time the disk went bad first: the datanode restarted on a
                // damaged WAL for a while, its copy of a region quarantined. Its copies
                // may have moved meanwhile: it goes down, and its disk is replaced once
                // every region has a copy elsewhere (a hand-over may have left one
                // there alone, which fails over once the lease lapsed).
                let damaged = rand::gen_range(0..2) == 0;
                if damaged {
                    faults.push(damage::damage_wal_and_restart(datanode));
                    time::sleep(Duration::from_millis(rand::gen_range(2000..10000))).await;
                }
                faults.push(format!(
                    "{}'s disk replaced, down for {hold:?}",
                    datanode.name
                ));
                if hold > LEASE || damaged {
                    history
                        .lock()
                        .unwrap()
                        .killed
                        .push((datanode_index as u64 + 1, time::drift::true_now()));
                }
                datanode.power_off();
                let id = datanode_index as u64 + 1;
                if damaged
                    && !checker
                        .handle()
                        .spawn(held_without(id, WHOLE_WAIT_MAX))
                        .await
                        .unwrap()
                {
                    faults.push(format!("disk kept: a region was only on {id}"));
                    madsim::runtime::Handle::current().restart(datanode.handle().id());
                    continue;
                }
                datanode.disk.wipe();
                if let Some(store) = &stores[datanode_index] {
                    store.wipe();
                }
                time::sleep(hold).await;
                madsim::runtime::Handle::current().restart(datanode.handle().id());
            }
            _ => {
                faults.push(format!("a quiet {hold:?}"));
                time::sleep(hold).await;
            }
        }
    }
    tracing::info!(?faults, "faults healed");
    // The object stores' faults heal with the others.
    if object_faults.is_some() {
        let errors: u64 = stores
            .iter()
            .flatten()
            .map(|store| store.stats().errors)
            .sum();
        eprintln!("cluster_object_store_errors={errors}");
        for store in stores.iter().flatten() {
            store.set_faults(SimObjectFaults::default());
        }
    }
    // A seed may have kept writes failing most of the time (a datanode cut off past its
    // lease fails every write that touches it): the writers go on after the faults heal
    // until they made enough progress for the checks to mean something.
    let healed = time::now();
    while history.lock().unwrap().acknowledged.len() < PROGRESS_MIN
        && time::now().duration_since(healed) < RECOVERY_MAX
    {
        time::sleep(Duration::from_millis(100)).await;
    }
    checker
        .handle()
        .spawn(check_after_healing(history.clone(), slots, handles, faults))
        .await
        .expect("the checks run");
    monitoring.abort();
    drop((frontends, datanodes, metasrvs, watcher));
}
