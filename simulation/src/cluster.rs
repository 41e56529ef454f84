//! A whole cluster's roles as madsim nodes: metasrv replicas, datanodes and frontends,
//! each started by the same library code the `metronome` binary's roles run
//! (`MetaService`, `Datanode` behind `LeasedRegions` with its registration and heartbeat,
//! `frontend::start::open`), over TCP between simulated addresses.
//!
//! Addresses: metasrv replica `i` at 10.0.1.i:4100, datanode `i` at 10.0.2.i:4200,
//! frontend `i` at 10.0.3.i; anything else a test runs (checkers, monitors) lives in
//! 10.0.9.x.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metronome_catalog::client::MetaClient;
use metronome_catalog::lease::HEARTBEAT_INTERVAL;
use metronome_catalog::rebalance::Balance;
use metronome_catalog::request::{MetaReply, MetaRequest, RaftStatus};
use metronome_catalog::DatanodeInfo;
use metronome_core::config::{Config, ReadPreference};
use metronome_core::rt::disk::Disk;
use metronome_core::rt::net::{FrameLimits, Listener};
use metronome_core::rt::object::SimObjectStore;
use metronome_core::rt::shard::{IoDriverChoice, ShardsConfig};
use metronome_core::rt::{rand, task, time};
use metronome_datanode::datanode::{Datanode, DatanodeConfig, DatanodeHandle};
use metronome_datanode::engine::{EngineConfig, SstStore};
use metronome_datanode::heartbeat;
use metronome_datanode::lease::{LeasedRegions, Leases};
use metronome_datanode::replication::Replicator;
use metronome_datanode::wal::WalConfig;
use metronome_frontend::http::Frontend;
use metronome_frontend::router::Connect;
use metronome_frontend::start::{self, FrontendConfig, Peers};
use metronome_metasrv::raft::RaftTuning;
use metronome_metasrv::service::{MetaService, ReplicaConfig};
use metronome_wire::region::{RegionClient, RegionServer};
use metronome_wire::rpc::{self, RpcClient};
use metronome_wire::RegionService;

use crate::node::SimNode;

/// A node's main future, rebuilt from its disk at every (re)start.
pub type NodeMain = Box<dyn Fn(Disk) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

pub const METASRV_PORT: u16 = 4100;
pub const DATANODE_PORT: u16 = 4200;
/// Shards per simulated datanode.
pub const DATANODE_SHARDS: u16 = 2;

pub fn metasrv_ip(id: u64) -> IpAddr {
    IpAddr::from([10, 0, 1, id as u8])
}

pub fn metasrv_addr(id: u64) -> SocketAddr {
    SocketAddr::new(metasrv_ip(id), METASRV_PORT)
}

pub fn datanode_ip(id: u64) -> IpAddr {
    IpAddr::from([10, 0, 2, id as u8])
}

pub fn datanode_addr(id: u64) -> SocketAddr {
    SocketAddr::new(datanode_ip(id), DATANODE_PORT)
}

pub fn frontend_ip(id: u64) -> IpAddr {
    IpAddr::from([10, 0, 3, id as u8])
}

/// A protocol client of `addr` whose calls are bounded by `timeout`.
pub fn client_of(addr: SocketAddr, timeout: Duration) -> RpcClient {
    let limits = FrameLimits::default();
    RpcClient::new(addr.to_string(), rpc::tcp_connector(addr, limits), timeout)
}

/// The raft state the replica behind `client` reports, if it answers.
pub async fn raft_status(client: &RpcClient) -> Option<RaftStatus> {
    let status = client
        .call_one(MetaRequest::RaftStatus.encode(), |reply| {
            Ok(MetaReply::decode(reply))
        })
        .await;
    match status {
        Ok(Some(Ok(MetaReply::RaftStatus(status)))) => Some(status),
        _ => None,
    }
}

/// A metasrv client that goes round replicas `1..=replicas`.
pub fn meta_client(replicas: u64) -> MetaClient {
    MetaClient::replicas(
        (1..=replicas)
            .map(|id| client_of(metasrv_addr(id), Duration::from_secs(2)))
            .collect(),
    )
}

/// A heartbeat a metasrv replica answered with region leases: from `datanode`, received
/// at `received` on the simulation's one clock. The leases it granted ran out, in real
/// time, within [`metronome_catalog::lease::LEASE`] of when the heartbeat was sent, so
/// before `received` plus a lease.
#[derive(Debug, Clone)]
pub struct Granted {
    pub datanode: u64,
    pub received: std::time::Instant,
    pub leases: Vec<metronome_catalog::lease::Grant>,
}

/// Hears of every heartbeat a metasrv replica answered with leases.
pub type GrantObserver = Arc<dyn Fn(Granted) + Send + Sync>;

/// A replica's protocol as the simulation sees it: the service's own handling, and the
/// heartbeats it answered told to the observer.
struct ObservedMeta {
    service: Arc<MetaService>,
    observe: GrantObserver,
}

impl rpc::Dispatch for ObservedMeta {
    fn dispatch<'a>(
        &'a self,
        request: metronome_wire::fb::RequestMessage<'a>,
    ) -> metronome_wire::BoxFuture<'a, Vec<metronome_wire::frame::Body>> {
        let decoded = MetaRequest::decode(request);
        Box::pin(async move {
            let received = time::drift::true_now();
            let request = match decoded {
                Ok(request) => request,
                Err(error) => {
                    return vec![metronome_wire::frame::error_body(
                        metronome_wire::fb::ErrorKind::InvalidRequest,
                        &error,
                    )]
                }
            };
            let datanode = match &request {
                MetaRequest::Heartbeat { datanode, .. } => Some(*datanode),
                _ => None,
            };
            let reply = self.service.handle(request).await;
            if let (Some(datanode), Ok(MetaReply::Heartbeat { leases, .. })) = (datanode, &reply) {
                (self.observe)(Granted {
                    datanode,
                    received,
                    leases: leases.clone(),
                });
            }
            vec![match reply {
                Ok(reply) => reply.encode(),
                Err(error) => error,
            }]
        })
    }
}

/// Metasrv replica `id` of `replicas`, its raft tuned by `tuning`.
pub fn metasrv_main(id: u64, replicas: u64, tuning: RaftTuning) -> NodeMain {
    metasrv_main_observed(id, replicas, tuning, None, Balance::default())
}

/// [`metasrv_main`], telling `granted` of every heartbeat it answered with leases, and
/// rebalancing to `balance`.
pub fn metasrv_main_observed(
    id: u64,
    replicas: u64,
    tuning: RaftTuning,
    granted: Option<GrantObserver>,
    balance: Balance,
) -> NodeMain {
    Box::new(move |disk| {
        let tuning = tuning.clone();
        let granted = granted.clone();
        Box::pin(async move {
            // Real replicas never start in the same microsecond. Simulated ones would, all
            // standing for election at once as they initialize; a random start spreads
            // them as processes started by hand or by a supervisor are.
            time::sleep(Duration::from_micros(rand::gen_range(0..375_000))).await;
            let peers = (1..=replicas)
                .map(|peer| (peer, metasrv_addr(peer).to_string()))
                .collect();
            let replica = ReplicaConfig {
                node_id: id,
                peers,
                dial: Arc::new(|addr: &str| {
                    client_of(
                        addr.parse().expect("peer addresses parse"),
                        Duration::from_secs(2),
                    )
                }),
                tuning,
                initialize: true,
            };
            let service = Arc::new(
                MetaService::start(disk, "meta", replica)
                    .await
                    .expect("a replica opens what it wrote"),
            );
            let listener = Listener::bind_tcp(
                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), METASRV_PORT),
                FrameLimits::default(),
            )
            .await
            .expect("the port is free");
            let _failover = DropAbort(task::spawn(metronome_metasrv::failover::run(
                Arc::downgrade(&service),
                balance,
            )));
            let dispatch: Arc<dyn rpc::Dispatch> = match granted {
                Some(observe) => Arc::new(ObservedMeta { service, observe }),
                None => service,
            };
            rpc::serve(listener, dispatch, FrameLimits::default()).await;
        })
    })
}

/// Wraps a datanode's region service as the simulation sees it: `observe` hears of every
/// request it answered, with its outcome.
pub type Observer = Arc<dyn Fn(&Observed) + Send + Sync>;

/// A region request a datanode answered.
#[derive(Debug, Clone)]
pub struct Observed {
    pub datanode: u64,
    pub region: metronome_core::data::RegionId,
    pub epoch: u64,
    pub write: bool,
    /// A scan at a follower (`metronome_wire::ReadAt`).
    pub follower: bool,
    pub started: std::time::Instant,
    pub finished: std::time::Instant,
    pub succeeded: bool,
}

struct Observing {
    datanode: u64,
    inner: Arc<dyn RegionService>,
    observe: Observer,
}

impl RegionService for Observing {
    fn call(
        &self,
        request: metronome_wire::RegionRequest,
    ) -> metronome_wire::BoxFuture<
        '_,
        Result<metronome_wire::RegionReply, metronome_wire::RegionError>,
    > {
        Box::pin(async move {
            let region = request.region();
            let epoch = request.epoch();
            let write = matches!(request, metronome_wire::RegionRequest::Write { .. });
            let follower = matches!(
                request,
                metronome_wire::RegionRequest::Scan { read, .. }
                    if read != metronome_wire::ReadAt::Leader
            );
            // The simulation's one clock: the checker compares instants across nodes,
            // whose own clocks drift.
            let started = time::drift::true_now();
            let outcome = self.inner.call(request).await;
            if let (Some(region), Some(epoch)) = (region, epoch) {
                (self.observe)(&Observed {
                    datanode: self.datanode,
                    region,
                    epoch,
                    write,
                    follower,
                    started,
                    finished: time::drift::true_now(),
                    succeeded: outcome.is_ok(),
                });
            }
            outcome
        })
    }
}

/// The engine settings of a simulated datanode: small memtables and WAL segments, so
/// that flushes, compactions and WAL purges happen within a seed's few seconds; SSTs and
/// manifests in `objects` when given.
fn datanode_config(objects: Option<SimObjectStore>) -> DatanodeConfig {
    DatanodeConfig {
        shards: ShardsConfig {
            count: DATANODE_SHARDS,
            pin_to_cores: false,
            io_driver: IoDriverChoice::Auto,
            uring_entries: 64,
        },
        engine: EngineConfig {
            memory_bytes_flush: 32 * 1024,
            files_per_window_max: 2,
            wal: WalConfig {
                segment_bytes: 64 * 1024,
                commit_bytes_max: 16 * 1024,
                ..WalConfig::new("wal")
            },
            sst_store: objects.map_or(SstStore::Local, SstStore::Sim),
            ..EngineConfig::default()
        },
    }
}

/// How many times a datanode whose object store failed its start is started again.
const START_ATTEMPTS_MAX: u32 = 60;

/// Each datanode's engines as it last started, by id: the checker reads a region's
/// copies there directly, follower copies included, which no lease lets a client read.
pub type DatanodeHandles = Arc<Mutex<BTreeMap<u64, DatanodeHandle>>>;

/// Datanode `id`: its engine on the node's disk (its SSTs and manifests in `objects`
/// when given, a store outside the node that its power cycles leave alone), its region
/// service behind its leases, registered with metasrv replicas `1..=replicas` and
/// heartbeating every `heartbeat`, its handle published in `handles`.
pub fn datanode_main(
    id: u64,
    replicas: u64,
    heartbeat_every: Duration,
    observe: Observer,
    handles: DatanodeHandles,
    objects: Option<SimObjectStore>,
) -> NodeMain {
    Box::new(move |disk| {
        let observe = observe.clone();
        let handles = handles.clone();
        let objects = objects.clone();
        Box::pin(async move {
            // With an object store that fails some of its calls, a start may fail as a
            // process's would: it is started again, as a supervisor would. With the
            // local disk alone, a failed start is a bug.
            let mut attempts = 0;
            let datanode = loop {
                match Datanode::start(disk.clone(), datanode_config(objects.clone())).await {
                    Ok(datanode) => break datanode,
                    Err(error) if objects.is_some() && attempts < START_ATTEMPTS_MAX => {
                        attempts += 1;
                        tracing::warn!(%error, attempts, "the datanode did not start; again");
                        time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(error) => panic!("a datanode opens what it wrote: {error}"),
                }
            };
            let handle = datanode.handle();
            handles.lock().unwrap().insert(id, handle.clone());
            let leases = Leases::new(id);
            let regions: Arc<dyn RegionService> = Arc::new(Observing {
                datanode: id,
                inner: Arc::new(LeasedRegions::new(Arc::new(handle.clone()), leases.clone())),
                observe,
            });
            let listener = Listener::bind_tcp(
                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), DATANODE_PORT),
                FrameLimits::default(),
            )
            .await
            .expect("the port is free");
            let server = task::spawn(rpc::serve(
                listener,
                Arc::new(RegionServer::new(regions)),
                FrameLimits::default(),
            ));
            handle.set_shipping(Replicator::start(
                leases.clone(),
                handle.clone(),
                meta_client(replicas),
                Arc::new(|_id: u64, addr: &str| {
                    let addr: SocketAddr = addr.parse().expect("simulated datanodes register TCP");
                    Arc::new(RegionClient::new(client_of(addr, Duration::from_secs(2))))
                        as Arc<dyn RegionService>
                }),
            ));
            let metasrv = meta_client(replicas);
            heartbeat::register(
                &metasrv,
                "the simulated metasrv",
                id,
                datanode_addr(id).to_string(),
                DATANODE_SHARDS,
                datanode.incarnation,
            )
            .await
            .expect("the metasrv accepts the registration");
            heartbeat::run(metasrv, handle, id, heartbeat_every, leases).await;
            drop((server, datanode));
        })
    })
}

/// How a simulated frontend reaches a datanode: TCP to its registered address.
fn connect() -> Connect {
    Arc::new(|_id: u64, info: &DatanodeInfo| {
        let addr: SocketAddr = info.addr.parse().expect("simulated datanodes register TCP");
        Arc::new(RegionClient::new(client_of(addr, Duration::from_secs(2))))
            as Arc<dyn RegionService>
    })
}

/// Where a frontend node publishes its engines once open (again after each restart).
pub type FrontendSlot = Arc<Mutex<Option<Arc<Frontend>>>>;

/// A frontend of metasrv replicas `1..=replicas` that gives new regions
/// `region_replicas` copies and reads where `read_preference` says: opens its engines,
/// publishes them in `slot`, then runs `work` on them (on this node, so that the node's
/// faults are its).
pub fn frontend_main<W, F>(
    replicas: u64,
    region_replicas: u8,
    read_preference: ReadPreference,
    slot: FrontendSlot,
    work: W,
) -> NodeMain
where
    W: Fn(Arc<Frontend>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + 'static,
{
    let work = Arc::new(work);
    Box::new(move |_disk| {
        let slot = slot.clone();
        let work = work.clone();
        Box::pin(async move {
            let peers = || Peers {
                metasrv: meta_client(replicas),
                datanodes: BTreeMap::new(),
                connect: Some(connect()),
                catalog_refresh: Some(start::CATALOG_REFRESH_INTERVAL),
            };
            let mut config = FrontendConfig::of(&Config::default());
            config.replicas = Some(region_replicas);
            config.read_preference = read_preference;
            let frontend = loop {
                match start::open(&config, peers(), Default::default()).await {
                    Ok(frontend) => break frontend,
                    Err(error) => {
                        tracing::warn!(%error, "the frontend cannot open yet; retrying");
                        time::sleep(Duration::from_millis(500)).await;
                    }
                }
            };
            *slot.lock().unwrap() = Some(frontend.clone());
            work(frontend).await;
        })
    })
}

/// A task aborted when dropped: one that must not outlive the node's main future.
struct DropAbort(task::JoinHandle<()>);

impl Drop for DropAbort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A cluster for a story test: one metasrv replica (rebalancing to `balance`), datanodes
/// `1..=datanodes` (their requests told to `observe`), a frontend giving new regions
/// `replicas` copies and reading at the leaders, started once every datanode registered,
/// and an idle node for the test's own tasks.
pub struct SmallCluster {
    pub metasrv: SimNode,
    /// Every heartbeat the metasrv answered with leases.
    pub granted: Arc<Mutex<Vec<Granted>>>,
    pub datanodes: Vec<SimNode>,
    pub handles: DatanodeHandles,
    pub frontend: Arc<Frontend>,
    pub frontend_node: SimNode,
    /// A node the test runs its tasks on (a client of its own, at 10.0.9.2).
    pub client: SimNode,
}

impl SmallCluster {
    pub async fn start(
        datanodes: u64,
        replicas: u8,
        balance: Balance,
        observe: Observer,
    ) -> SmallCluster {
        let granted: Arc<Mutex<Vec<Granted>>> = Arc::default();
        let observer: GrantObserver = {
            let granted = granted.clone();
            Arc::new(move |one: Granted| granted.lock().unwrap().push(one))
        };
        let metasrv = SimNode::start(
            "metasrv-1",
            metasrv_ip(1),
            Default::default(),
            metasrv_main_observed(1, 1, RaftTuning::default(), Some(observer), balance),
        );
        let handles = DatanodeHandles::default();
        let nodes: Vec<SimNode> = (1..=datanodes)
            .map(|id| {
                SimNode::start(
                    &format!("datanode-{id}"),
                    datanode_ip(id),
                    Default::default(),
                    datanode_main(
                        id,
                        1,
                        HEARTBEAT_INTERVAL,
                        observe.clone(),
                        handles.clone(),
                        None,
                    ),
                )
            })
            .collect();
        let client = SimNode::idle("client", IpAddr::from([10, 0, 9, 2]));
        client
            .handle()
            .spawn(async move {
                let metasrv = meta_client(1);
                while metasrv
                    .catalog()
                    .await
                    .map_or(true, |catalog| (catalog.datanodes.len() as u64) < datanodes)
                {
                    time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
            .expect("the datanodes register");
        let slot = FrontendSlot::default();
        let frontend_node = SimNode::start(
            "frontend-1",
            frontend_ip(1),
            Default::default(),
            frontend_main(1, replicas, ReadPreference::Leader, slot.clone(), |_| {
                std::future::pending::<()>()
            }),
        );
        let frontend = loop {
            if let Some(frontend) = slot.lock().unwrap().clone() {
                break frontend;
            }
            time::sleep(Duration::from_millis(100)).await;
        };
        SmallCluster {
            metasrv,
            granted,
            datanodes: nodes,
            handles,
            frontend,
            frontend_node,
            client,
        }
    }
}
