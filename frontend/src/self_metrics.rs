//! Metronome's own metrics, served at `GET /metrics` in Prometheus' text format.

use metronome_wire::ShardStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub handler: &'static str,
    pub code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandlerLabels {
    pub handler: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: u16,
}

pub struct SelfMetrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_seconds: Family<HandlerLabels, Histogram>,
    pub samples_ingested: Counter,
    pub series_ingested: Counter,
    memtable_bytes: Family<ShardLabels, Gauge>,
    wal_syncs: Family<ShardLabels, Gauge>,
    wal_sync_seconds: Family<ShardLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    flushes: Family<ShardLabels, Gauge>,
    compactions: Family<ShardLabels, Gauge>,
    regions: Family<ShardLabels, Gauge>,
}

impl Default for SelfMetrics {
    fn default() -> SelfMetrics {
        let mut registry = Registry::with_prefix("metronome");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by handler and status code",
            http_requests.clone(),
        );
        let http_request_seconds = Family::<HandlerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "http_request_seconds",
            "HTTP request latency by handler",
            http_request_seconds.clone(),
        );
        let samples_ingested = Counter::default();
        registry.register(
            "ingested_samples",
            "Samples acknowledged to remote-write clients",
            samples_ingested.clone(),
        );
        let series_ingested = Counter::default();
        registry.register(
            "ingested_series",
            "Series entries in acknowledged remote-write requests",
            series_ingested.clone(),
        );
        let memtable_bytes = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "memtable_bytes",
            "Bytes held in memtables per shard",
            memtable_bytes.clone(),
        );
        let wal_syncs = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "wal_syncs",
            "WAL commits (one fdatasync each) per shard since start",
            wal_syncs.clone(),
        );
        let wal_sync_seconds = Family::<ShardLabels, Gauge<f64, _>>::default();
        registry.register(
            "wal_sync_seconds_total",
            "Time spent in WAL commits per shard since start; divide by wal_syncs for the mean",
            wal_sync_seconds.clone(),
        );
        let flushes = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "flushes",
            "Memtable flushes per shard since start",
            flushes.clone(),
        );
        let compactions = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "compactions",
            "Compactions per shard since start",
            compactions.clone(),
        );
        let regions = Family::<ShardLabels, Gauge>::default();
        registry.register("regions", "Open regions per shard", regions.clone());
        SelfMetrics {
            registry,
            http_requests,
            http_request_seconds,
            samples_ingested,
            series_ingested,
            memtable_bytes,
            wal_syncs,
            wal_sync_seconds,
            flushes,
            compactions,
            regions,
        }
    }
}

impl SelfMetrics {
    /// Records the latest datanode figures.
    pub fn set_shards(&self, shards: &[ShardStats]) {
        for figures in shards {
            let labels = ShardLabels {
                shard: figures.shard,
            };
            let set = |family: &Family<ShardLabels, Gauge>, value: u64| {
                family
                    .get_or_create(&labels)
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            };
            set(&self.memtable_bytes, figures.memtable_bytes);
            set(&self.wal_syncs, figures.wal_commits);
            set(&self.flushes, figures.flushes);
            set(&self.compactions, figures.compactions);
            set(&self.regions, figures.regions);
            self.wal_sync_seconds
                .get_or_create(&labels)
                .set(figures.wal_commit_micros_total as f64 / 1e6);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
