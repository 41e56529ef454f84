//! The frontend as a role: what it needs (its configuration sections, a client of the
//! metasrv, a region service per datanode) and what it runs (the metric and table stores,
//! SQL, the HTTP and PostgreSQL servers). The binary only wires roles together; in a
//! cluster the same starter runs in a frontend process with TCP clients.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metronome_catalog::client::MetaClient;
use metronome_catalog::{DEFAULT_DATABASE, REGIONS_PER_TABLE_MAX};
use metronome_core::config::{
    Config, HttpSection, IngestSection, PostgresSection, QuerySection, ReadPreference,
};
use metronome_core::rt::net;
use metronome_core::rt::{task, time};
use metronome_wire::RegionService;
use tokio::net::TcpListener;

use crate::http::Frontend;
use crate::meta::Meta;
use crate::pg::PgServer;
use crate::prom_store::PromStore;
use crate::promql::QueryLimits;
use crate::router::{Connect, RegionRouter};
use crate::self_metrics::{BuildInfo, SelfMetrics};
use crate::sql::{SqlEngine, SqlLimits};
use crate::table_store::TableStore;

/// The frontend's sections of the configuration.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    pub http: HttpSection,
    pub postgres: PostgresSection,
    pub query: QuerySection,
    pub ingest: IngestSection,
    /// Copies of each new region unless a table says otherwise (`[frontend] replicas`);
    /// `None`: the catalog's default (two once two datanodes registered, else one).
    pub replicas: Option<u8>,
    /// Where queries read a replicated region (`[frontend] read_preference`).
    pub read_preference: ReadPreference,
}

impl FrontendConfig {
    /// The frontend's sections of the process's configuration.
    pub fn of(config: &Config) -> FrontendConfig {
        FrontendConfig {
            http: config.http.clone(),
            postgres: config.postgres.clone(),
            query: config.query.clone(),
            ingest: config.ingest,
            replicas: config
                .frontend
                .as_ref()
                .and_then(|frontend| frontend.replicas),
            read_preference: config
                .frontend
                .as_ref()
                .map_or(ReadPreference::Leader, |frontend| frontend.read_preference),
        }
    }
}

/// What the frontend reaches: the metasrv, the datanodes it is given (standalone's own),
/// and how it reaches those that registered with the metasrv (a cluster's).
pub struct Peers {
    pub metasrv: MetaClient,
    pub datanodes: BTreeMap<u64, Arc<dyn RegionService>>,
    pub connect: Option<Connect>,
    /// Whether to follow what other frontends change in the catalog, and if so how long
    /// to wait before trying again when the metasrv does not answer (`None`: this
    /// frontend is the only one, as in standalone).
    pub catalog_refresh: Option<Duration>,
}

/// Physical regions for Prometheus metrics per datanode shard: a few, so that series hash
/// evenly over the shards and each region's memtable stays small.
pub const METRIC_REGIONS_PER_SHARD: u32 = 2;

/// How often a frontend that cannot read the catalog, or finds no datanode registered,
/// asks again; and every how many tries it says so.
const WAIT_RETRY: Duration = Duration::from_millis(200);
const WAIT_LOG_EVERY: u32 = 25;

/// How long a cluster's frontend waits before it watches the catalog again after the
/// metasrv did not answer.
pub const CATALOG_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// A started frontend: its stores are open and its listeners bound; [`Running::serve`]
/// answers requests.
pub struct Running {
    pub http_addr: SocketAddr,
    pub postgres_addr: SocketAddr,
    frontend: Arc<Frontend>,
    sql: Arc<SqlEngine>,
    http: TcpListener,
    postgres: TcpListener,
}

/// Opens the catalog copy, the stores and the listeners.
pub async fn start(
    config: &FrontendConfig,
    peers: Peers,
    build: BuildInfo,
) -> Result<Running, String> {
    let frontend = open(config, peers, build).await?;
    let bind = |addr: SocketAddr| async move {
        let listener = net::bind_stream_listener(addr)
            .await
            .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
        let bound = listener
            .local_addr()
            .map_err(|error| format!("cannot read the address bound for {addr}: {error}"))?;
        Ok::<_, String>((listener, bound))
    };
    let (http, http_addr) = bind(config.http.addr).await?;
    let (postgres, postgres_addr) = bind(config.postgres.addr).await?;
    Ok(Running {
        http_addr,
        postgres_addr,
        sql: frontend.sql.clone(),
        frontend,
        http,
        postgres,
    })
}

/// Opens the catalog copy and the stores: the frontend's engines, serving no protocol
/// yet ([`start`] adds the listeners; the simulation drives the engines directly).
pub async fn open(
    config: &FrontendConfig,
    peers: Peers,
    build: BuildInfo,
) -> Result<Arc<Frontend>, String> {
    // The metasrv may not be up yet, and regions need as many datanodes to live on as
    // they have copies: wait for both, saying so now and then, rather than exit.
    let metasrv = peers.metasrv.peer();
    let needed = usize::from(config.replicas.unwrap_or(1).max(1));
    let mut waited = 0u32;
    let catalog = loop {
        let say = waited.is_multiple_of(WAIT_LOG_EVERY);
        match peers.metasrv.catalog().await {
            Ok(catalog) if catalog.datanodes.len() >= needed => break catalog,
            Ok(catalog) if say => tracing::info!(
                %metasrv,
                registered = catalog.datanodes.len(),
                needed,
                "waiting for datanodes to register with the metasrv (regions have {needed} \
                 copies on as many datanodes)"
            ),
            Err(error) if say => {
                tracing::warn!(%metasrv, %error, "cannot read the catalog; retrying")
            }
            _ => {}
        }
        waited += 1;
        time::sleep(WAIT_RETRY).await;
    };
    let meta = Arc::new(Meta::new(peers.metasrv, catalog.clone()));
    // Other frontends change the catalog too (a new metric, a table); a scan that meets
    // a label this copy does not name reads it at once (`PromStore::scan`).
    if let Some(retry) = peers.catalog_refresh {
        Meta::follow(&meta, retry);
    }
    // The metric regions are placed once, by the metasrv when the first frontend starts,
    // over the datanodes alive then; later frontends find them.
    let has_metric_regions = catalog
        .database(DEFAULT_DATABASE)
        .is_ok_and(|database| database.metrics.is_some());
    let metric_routes = if has_metric_regions {
        Vec::new()
    } else {
        let shards: u32 = catalog
            .datanodes
            .values()
            .map(|d| u32::from(d.shards))
            .sum();
        let count = (shards * METRIC_REGIONS_PER_SHARD).min(REGIONS_PER_TABLE_MAX);
        meta.lock()
            .await
            .place(count)
            .await
            .map_err(|error| format!("cannot place the metric regions: {error}"))?
    };
    let router = Arc::new(
        RegionRouter::new(meta.clone(), peers.datanodes, peers.connect)
            .reading_at(config.read_preference),
    );
    let regions: Arc<dyn RegionService> = router.clone();
    let store = Arc::new(
        PromStore::open(
            DEFAULT_DATABASE,
            meta.clone(),
            regions.clone(),
            metric_routes,
            config
                .replicas
                .unwrap_or_else(|| meta.catalog().default_replicas()),
            config.ingest,
        )
        .await
        .map_err(|error| format!("cannot open the metric regions: {error}"))?,
    );
    let tables = Arc::new(
        TableStore::open(meta.clone(), regions.clone(), config.replicas)
            .await
            .map_err(|error| format!("cannot open the tables: {error}"))?,
    );
    let query = &config.query;
    let sql = Arc::new(SqlEngine::new(
        DEFAULT_DATABASE,
        meta.clone(),
        router.clone(),
        tables.clone(),
        store.clone(),
        SqlLimits {
            timeout: Duration::from_millis(query.timeout_ms),
            memory_bytes_max: usize::try_from(query.sql_memory_bytes_max).unwrap_or(usize::MAX),
            result_bytes_max: usize::try_from(query.sql_result_bytes_max).unwrap_or(usize::MAX),
        },
    ));
    Ok(Arc::new(Frontend {
        meta: meta.clone(),
        store,
        sql,
        tables,
        metrics: SelfMetrics::new(build),
        datanodes: router.clone(),
        query_limits: QueryLimits {
            samples_max: usize::try_from(query.samples_max).unwrap_or(usize::MAX),
            timeout: Duration::from_millis(query.timeout_ms),
            ..QueryLimits::default()
        },
    }))
}

impl Running {
    /// Serves HTTP and PostgreSQL until `stop` completes, then lets the requests in
    /// flight finish.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let stopping = tokio_util::sync::CancellationToken::new();
        let stopped = || stopping.clone().cancelled_owned();
        let postgres = task::spawn(crate::pg::serve(
            self.postgres,
            PgServer::new(self.sql),
            stopped(),
        ));
        let stop_sender = stopping.clone();
        task::spawn(async move {
            stop.await;
            tracing::info!("shutting down");
            stop_sender.cancel();
        });
        let served = crate::http::serve(self.http, crate::http::router(self.frontend), stopped())
            .await
            .map_err(|error| format!("the HTTP server failed: {error}"));
        let _ = postgres.await;
        served
    }
}
