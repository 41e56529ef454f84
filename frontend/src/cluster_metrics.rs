//! The cluster's replication figures in `/metrics`, read from the catalog this frontend
//! holds (the last one it saw; every frontend and metasrv replica holds the same at the
//! same version): the configuration changes applied since the catalog was created, and
//! where each region's copies are now.
//!
//! [`ClusterCollector`] must not ask anything of the datanodes or the metasrv: it reads
//! what the frontend already has. [`ReplicationCollector`] encodes what datanodes alone
//! know (how far behind each copy is, what each fenced off), which the scrape's handler
//! read of them (`crate::datanode_figures`) just before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use metronome_catalog::replicas::RouteChanges;
use metronome_catalog::Catalog;
use metronome_wire::Replication;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CopyLabels {
    datanode: u64,
    role: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DatanodeLabels {
    datanode: u64,
}

/// A leader's datanode and the datanode of copies of regions it leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LagLabels {
    leader: u64,
    copy: u64,
}

/// What a scrape reports of the cluster, taken from one catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFigures {
    changes: RouteChanges,
    /// Copies per (datanode, role): `leader`, `follower` or `learner`.
    copies: BTreeMap<(u64, &'static str), u64>,
    /// Regions with fewer copies than they want (on datanodes not draining).
    regions_missing_copies: u64,
    migrations_running: u64,
    /// Every registered datanode, and whether it is draining.
    draining: BTreeMap<u64, bool>,
}

impl ClusterFigures {
    pub fn of(catalog: &Catalog) -> ClusterFigures {
        let mut figures = ClusterFigures {
            changes: catalog.changes,
            migrations_running: catalog.migrations().count() as u64,
            draining: catalog
                .datanodes
                .iter()
                .map(|(id, info)| (*id, info.draining))
                .collect(),
            ..ClusterFigures::default()
        };
        for (region, route) in catalog.routes() {
            *figures
                .copies
                .entry((route.datanode, "leader"))
                .or_default() += 1;
            for follower in route.followers.as_slice() {
                *figures
                    .copies
                    .entry((follower.datanode, "follower"))
                    .or_default() += 1;
            }
            if let Some(learner) = route.learner {
                *figures
                    .copies
                    .entry((learner.datanode, "learner"))
                    .or_default() += 1;
            }
            if catalog.copies_missing(region, |_| true) > 0 {
                figures.regions_missing_copies += 1;
            }
        }
        figures
    }
}

/// Encodes the latest [`ClusterFigures`]; nothing before the first is set.
#[derive(Debug, Default)]
pub(crate) struct ClusterCollector {
    pub(crate) latest: Arc<Mutex<Option<ClusterFigures>>>,
}

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(figures) = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let changes = figures.changes;
        let counters: [(&str, &str, u64); 6] = [
            (
                "region_failovers",
                "Regions whose follower was made leader because their leader was gone.",
                changes.failovers,
            ),
            (
                "region_hand_overs",
                "Region leaderships handed over by a migration.",
                changes.hand_overs,
            ),
            (
                "region_followers_added",
                "Copies caught up as learners and made followers.",
                changes.followers_added,
            ),
            (
                "region_followers_removed",
                "Followers left out of their region's configuration by a leader that \
                 could not reach them, or because their datanode was draining.",
                changes.followers_removed,
            ),
            (
                "region_migrations_started",
                "Region migrations started (by an operator, rebalancing or a drain).",
                changes.migrations_started,
            ),
            (
                "region_migrations_cancelled",
                "Region migrations cancelled by their leader (others that did not move \
                 end with a failover or with their learner's removal).",
                changes.migrations_cancelled,
            ),
        ];
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let gauges: [(&str, &str, u64); 2] = [
            (
                "regions_missing_copies",
                "Regions with fewer copies than they want on datanodes not draining.",
                figures.regions_missing_copies,
            ),
            (
                "region_migrations_running",
                "Region migrations running now.",
                figures.migrations_running,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value as i64).encode(metric)?;
        }
        let mut metric = encoder.encode_descriptor(
            "region_copies",
            "Copies of regions each datanode holds, by role (leader, follower, learner).",
            None,
            MetricType::Gauge,
        )?;
        for ((datanode, role), count) in &figures.copies {
            let labels = CopyLabels {
                datanode: *datanode,
                role,
            };
            ConstGauge::new(*count as i64).encode(metric.encode_family(&labels)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "datanode_draining",
            "1 for a datanode an operator is draining (ADMIN drain_datanode), else 0.",
            None,
            MetricType::Gauge,
        )?;
        for (datanode, draining) in &figures.draining {
            let labels = DatanodeLabels {
                datanode: *datanode,
            };
            ConstGauge::new(i64::from(*draining)).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Encodes every datanode's latest replication figures, as the scrape read them.
#[derive(Debug, Default)]
pub(crate) struct ReplicationCollector {
    pub(crate) latest: Arc<Mutex<Vec<(u64, Replication)>>>,
}

/// (writes, bytes, oldest wait in ms) queued at a leader's datanode for another's copies.
type Lag = (u64, u64, u64);
/// A family's name, help and value.
type Family<T, V> = (&'static str, &'static str, fn(&T) -> V);

impl Collector for ReplicationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Summed over the regions, per (leader, copy) datanode pair: a label per region
        // would make a series per region and copy.
        let mut lags: BTreeMap<(u64, u64), Lag> = BTreeMap::new();
        for (leader, figures) in &latest {
            for copy in &figures.copies {
                let lag = lags.entry((*leader, copy.datanode)).or_default();
                lag.0 += copy.writes;
                lag.1 += copy.bytes;
                lag.2 = lag.2.max(copy.oldest_ms);
            }
        }
        let gauges: [Family<Lag, f64>; 3] = [
            (
                "replication_lag_writes",
                "Writes a leader's datanode queued for the copies on another datanode \
                 (followers and learners) that those have not made durable yet.",
                |lag| lag.0 as f64,
            ),
            ("replication_lag_bytes", "Bytes of those writes.", |lag| {
                lag.1 as f64
            }),
            (
                "replication_lag_seconds",
                "How long the oldest of those writes has waited.",
                |lag| lag.2 as f64 / 1000.0,
            ),
        ];
        for (name, help, value) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for ((leader, copy), lag) in &lags {
                let labels = LagLabels {
                    leader: *leader,
                    copy: *copy,
                };
                ConstGauge::new(value(lag)).encode(metric.encode_family(&labels)?)?;
            }
        }
        let counters: [Family<Replication, u64>; 2] = [
            (
                "fenced_writes",
                "Writes a datanode refused for want of a lease at their route's epoch (a \
                 stale route, or a leader cut off from the metasrv), since it started.",
                |figures| figures.fenced_writes,
            ),
            (
                "fenced_shipments",
                "Leaders' shipments (each try) a datanode refused because they came under \
                 an older epoch than the one it follows the region at, since it started.",
                |figures| figures.fenced_shipments,
            ),
        ];
        for (name, help, value) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (datanode, figures) in &latest {
                let labels = DatanodeLabels {
                    datanode: *datanode,
                };
                ConstCounter::new(value(figures)).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::self_metrics::{Format, SelfMetrics};
    use metronome_catalog::Command;

    #[test]
    fn a_failover_and_a_drain_show_in_the_metrics() {
        let mut catalog = crate::cluster_view::test_catalog(3, 3, 2);
        let (region, route) = catalog.routes().next().unwrap();
        let follower = route.followers.as_slice()[0];
        catalog
            .apply(&Command::ReconfigureRegion {
                region,
                epoch: route.epoch,
                leader: follower,
                followers: vec![],
            })
            .unwrap();
        catalog
            .apply(&Command::DrainDatanode { id: 3, drain: true })
            .unwrap();
        let metrics = SelfMetrics::default();
        metrics.set_cluster(ClusterFigures::of(&catalog));
        let text = metrics.render(Format::Text004);
        for line in [
            "metronome_region_failovers_total 1",
            "metronome_region_hand_overs_total 0",
            "metronome_datanode_draining{datanode=\"3\"} 1",
            "metronome_datanode_draining{datanode=\"1\"} 0",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        // The failed-over region leads alone; the drained datanode's copies no longer
        // count: both show as regions missing copies.
        let missing = catalog
            .routes()
            .filter(|(r, _)| catalog.copies_missing(*r, |_| true) > 0)
            .count();
        assert!(missing >= 2, "{missing}");
        assert!(
            text.contains(&format!("metronome_regions_missing_copies {missing}")),
            "{text}"
        );
        let leaders: u64 = (1..=3)
            .filter_map(|d| {
                figure(
                    &text,
                    &format!("metronome_region_copies{{datanode=\"{d}\",role=\"leader\"}}"),
                )
            })
            .sum();
        assert_eq!(leaders, 3, "{text}");
    }

    #[test]
    fn lags_sum_per_datanode_pair_and_fences_count_per_datanode() {
        use metronome_core::data::RegionId;
        use metronome_wire::CopyLag;
        let lag = |number, datanode, writes, oldest_ms| CopyLag {
            region: RegionId::new(9, number),
            epoch: 1,
            datanode,
            shard: 0,
            learner: false,
            writes,
            bytes: writes * 10,
            oldest_ms,
        };
        let metrics = SelfMetrics::default();
        metrics.set_replication(&[
            (
                1,
                Replication {
                    copies: vec![lag(0, 2, 3, 40), lag(1, 2, 4, 1500), lag(2, 3, 0, 0)],
                    fenced_writes: 5,
                    fenced_shipments: 0,
                },
            ),
            (
                2,
                Replication {
                    copies: vec![],
                    fenced_writes: 0,
                    fenced_shipments: 2,
                },
            ),
        ]);
        let text = metrics.render(Format::Text004);
        for line in [
            "metronome_replication_lag_writes{leader=\"1\",copy=\"2\"} 7",
            "metronome_replication_lag_writes{leader=\"1\",copy=\"3\"} 0",
            "metronome_replication_lag_bytes{leader=\"1\",copy=\"2\"} 70",
            "metronome_replication_lag_seconds{leader=\"1\",copy=\"2\"} 1.5",
            "metronome_fenced_writes_total{datanode=\"1\"} 5",
            "metronome_fenced_shipments_total{datanode=\"2\"} 2",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        // A scrape that reached no datanode reports no lag, not a stale one.
        metrics.set_replication(&[]);
        let text = metrics.render(Format::Text004);
        assert!(!text.contains("replication_lag_writes{"), "{text}");
    }

    fn figure(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|rest| rest.trim().parse().ok())
    }
}
