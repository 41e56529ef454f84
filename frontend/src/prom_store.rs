//! Prometheus data in Metronome's regions: the metric layout.
//!
//! Each metric name is a logical table (for SQL, its columns are its labels, `ts` and
//! `value`), but the rows of every metric of a database live in a few *physical* regions
//! spread over all shards. A series goes to region `xxh3(labels) % regions`, so one
//! series always lands in the same region and no metric becomes a hot spot. The physical
//! regions' tags are `__name__` followed by every label name ever seen, in arrival order;
//! a series leaves out the labels it does not have, which read as empty (as in Prometheus).
//!
//! New label names go through the catalog first, then are added to every physical region,
//! under the catalog lock, before any row uses them. [`PromStore::open`] repairs the one
//! gap a crash can leave: a label in the catalog that some region never received.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::join_all;
use metronome_catalog::{
    metric_column, metric_label, Catalog, Command, MetricMetadata, MetricRegions, Route, Table,
    TableKind, METRIC_NAME_LABEL,
};
use metronome_core::config::IngestSection;
use metronome_core::data::{MatchOp, RegionId, ScanRequest, TagMatcher, Value};
use metronome_core::error::Error;
use metronome_core::write_batch::{SeriesWrite, WriteBatch};
use metronome_wire::{RegionService, RegionServiceExt};

use crate::meta::Meta;
use crate::remote_write::PromSeries;
use crate::router::partition;

/// Rows sent to a region in one write; a request with more is split.
const WRITE_ROWS_MAX: usize = 8192;

/// A series' labels, sorted by name.
pub type Labels = Vec<(String, String)>;

/// One series read back: its labels sorted by name, and its samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

/// Adds to every region of `layout` the catalog's tags it lacks, in order.
async fn add_missing_tags(
    regions: &dyn RegionService,
    layout: &MetricRegions,
) -> Result<(), Error> {
    for (region, _) in &layout.regions {
        let Some(schema) = regions.region_schema(*region).await? else {
            return Err(Error::internal(format!(
                "metric region {region} does not exist"
            )));
        };
        if !layout.tags.starts_with(&schema.tags) {
            return Err(Error::internal(format!(
                "metric region {region} has tags {:?}, which do not follow the catalog's {:?}",
                schema.tags, layout.tags
            )));
        }
        // The whole list, not only what the leader lacks: a copy that missed an earlier
        // change gets it too, in its place (the datanode adds what follows its tags).
        if schema.tags.len() < layout.tags.len() {
            regions.add_tags(*region, layout.tags.clone()).await?;
        }
    }
    Ok(())
}

/// What a write stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub series: usize,
    pub samples: usize,
}

pub struct PromStore {
    database: String,
    limits: IngestSection,
    meta: Arc<Meta>,
    regions: Arc<dyn RegionService>,
    /// How many of the layout's tags every region has. The catalog learns new tags
    /// before the regions do (under the catalog lock); a write whose layout has more
    /// tags than this waits for that lock, or its rows would be longer than the regions'
    /// schemas and be refused.
    applied_tags: AtomicUsize,
}

impl PromStore {
    /// Opens the metric layout of `database`, creating its physical regions (one per
    /// route) if it has none, and bringing every region's tags up to the catalog's.
    pub async fn open(
        database: &str,
        meta: Arc<Meta>,
        regions: Arc<dyn RegionService>,
        routes: Vec<Route>,
        replicas: u8,
        limits: IngestSection,
    ) -> Result<PromStore, Error> {
        let mut guard = meta.lock().await;
        guard
            .execute(Command::CreateMetricRegions {
                database: database.to_string(),
                routes,
                replicas,
            })
            .await?;
        let layout = metric_regions(&guard.catalog(), database)?;
        for (region, route) in &layout.regions {
            if regions.region_schema(*region).await?.is_none() {
                // Created with the first tag only, so the repair below adds the rest the
                // same way an ingest would have.
                let schema = Catalog::metric_region_schema(&layout.tags[..1]);
                regions
                    .create_region(*region, schema.clone(), route.shard)
                    .await?;
            }
        }
        add_missing_tags(regions.as_ref(), &layout).await?;
        drop(guard);
        Ok(PromStore {
            database: database.to_string(),
            limits,
            meta,
            regions,
            applied_tags: AtomicUsize::new(layout.tags.len()),
        })
    }

    /// Stores every sample of `series`; returns once all of them are durable.
    /// A series with more labels than `ingest.labels_per_series_max` is refused: the
    /// others are stored, then the error names the first refused one (Prometheus' own
    /// receiver does the same with samples it cannot take, so a sender that drops the
    /// request on a 400 loses only what was refused).
    pub async fn write(&self, series: &[PromSeries]) -> Result<WriteSummary, Error> {
        let limit = self.limits.labels_per_series_max;
        // `__name__` is one of a valid series' labels.
        let too_wide = |one: &PromSeries| one.labels.len() > limit.saturating_add(1);
        let Some((index, wide)) = series.iter().enumerate().find(|(_, one)| too_wide(one)) else {
            return self.write_accepted(series).await;
        };
        let refused = series.iter().filter(|one| too_wide(one)).count();
        let accepted: Vec<PromSeries> = series
            .iter()
            .filter(|one| !too_wide(one))
            .cloned()
            .collect();
        let stored = self.write_accepted(&accepted).await?;
        Err(Error::invalid(format!(
            "{refused} series refused: timeseries[{index}] of metric {:?} has {} labels \
             besides __name__, the limit is {limit} (ingest.labels_per_series_max); the \
             other {} series were stored",
            wide.metric_name(),
            wide.labels.len() - 1,
            stored.series
        )))
    }

    async fn write_accepted(&self, series: &[PromSeries]) -> Result<WriteSummary, Error> {
        let layout = self.layout_for(series).await?;
        let position: BTreeMap<&str, u32> = layout
            .tags
            .iter()
            .enumerate()
            .map(|(index, tag)| {
                (
                    tag.as_str(),
                    u32::try_from(index).expect("fewer than 2^32 tags"),
                )
            })
            .collect();
        let mut per_region: Vec<WriteBatch> = vec![WriteBatch::default(); layout.regions.len()];
        let mut summary = WriteSummary::default();
        for one in series {
            if one.samples.is_empty() {
                continue;
            }
            // The series' own labels once, by their positions among the layout's tags:
            // what a series costs never depends on how many label names other metrics
            // have. (`layout_for` added every label to the catalog.)
            let mut tags: Vec<(u32, String)> = one
                .labels
                .iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (position[metric_column(name).as_ref()], value.clone()))
                .collect();
            tags.sort_unstable_by_key(|(index, _)| *index);
            let rows = one
                .samples
                .iter()
                .map(|&(ts, value)| (ts, vec![Value::Float64(value)]))
                .collect();
            let region = series_region(&one.labels, layout.regions.len());
            per_region[region].series.push(SeriesWrite { tags, rows });
            summary.series += 1;
            summary.samples += one.samples.len();
        }
        let batches = per_region
            .into_iter()
            .enumerate()
            .map(|(index, rows)| (layout.regions[index].0, rows));
        write_all(self.regions.as_ref(), batches).await?;
        Ok(summary)
    }

    /// The physical layout, after making sure it knows every metric and label in `series`.
    async fn layout_for(&self, series: &[PromSeries]) -> Result<MetricRegions, Error> {
        let missing = |catalog: &Catalog| -> Result<Vec<Command>, Error> {
            let mut commands: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for one in series {
                let name = one.metric_name();
                let known = match catalog.table(&self.database, name) {
                    Ok(Table {
                        kind: TableKind::Metric { labels, .. },
                        ..
                    }) => Some(labels),
                    _ => None,
                };
                let labels = one
                    .labels
                    .iter()
                    .map(|(label, _)| label)
                    .filter(|label| *label != METRIC_NAME_LABEL);
                let new: Vec<String> = labels
                    .filter(|label| known.is_none_or(|known| !known.contains(label)))
                    .cloned()
                    .collect();
                if known.is_none() || !new.is_empty() {
                    let entry = commands.entry(name).or_default();
                    for label in new {
                        if !entry.contains(&label) {
                            entry.push(label);
                        }
                    }
                }
            }
            Ok(commands
                .into_iter()
                .map(|(name, mut labels)| {
                    labels.sort();
                    Command::EnsureMetric {
                        database: self.database.clone(),
                        name: name.to_string(),
                        labels,
                    }
                })
                .collect())
        };
        let catalog = self.meta.catalog();
        let layout = metric_regions(&catalog, &self.database)?;
        if missing(&catalog)?.is_empty()
            && layout.tags.len() <= self.applied_tags.load(Ordering::Acquire)
        {
            return Ok(layout);
        }
        let mut guard = self.meta.lock().await;
        let commands = missing(&guard.catalog())?;
        // One batch: one catalog write however many metrics a request introduces.
        if !commands.is_empty() {
            guard.execute(Command::Batch(commands)).await?;
        }
        let after = metric_regions(&guard.catalog(), &self.database)?;
        // New physical tags reach every region before any row uses them. Checking each
        // region's schema (rather than adding the new tags blindly) also finishes what
        // an earlier, failed attempt started.
        if after.tags.len() > self.applied_tags.load(Ordering::Acquire) {
            add_missing_tags(self.regions.as_ref(), &after).await?;
            self.applied_tags.store(after.tags.len(), Ordering::Release);
        }
        drop(guard);
        Ok(after)
    }

    /// The series matching every matcher, with their samples in `start_ms..end_ms`.
    /// Matchers name labels (`__name__` for the metric name).
    pub async fn select(
        &self,
        matchers: &[TagMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesSamples>, Error> {
        self.scan(matchers, start_ms, end_ms, false).await
    }

    /// The label sets of the series matching every matcher with data in
    /// `start_ms..end_ms`, answered from the regions' series indexes without reading
    /// samples (a series counts when a stored file holding it overlaps the range, as a
    /// Prometheus block does).
    pub async fn series(
        &self,
        matchers: &[TagMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, Error> {
        Ok(self
            .scan(matchers, start_ms, end_ms, true)
            .await?
            .into_iter()
            .map(|series| series.labels)
            .collect())
    }

    async fn scan(
        &self,
        matchers: &[TagMatcher],
        start_ms: i64,
        end_ms: i64,
        series_only: bool,
    ) -> Result<Vec<SeriesSamples>, Error> {
        let catalog = self.meta.catalog();
        let mut layout = metric_regions(&catalog, &self.database)?;
        // Matchers name labels; the regions know their columns.
        let matchers = matchers
            .iter()
            .map(|matcher| TagMatcher {
                tag: metric_column(&matcher.tag).into_owned(),
                ..matcher.clone()
            })
            .collect();
        let request = ScanRequest {
            start: start_ms,
            end: end_ms,
            matchers,
            limit: None,
            series_only,
            // A metric region's one field, the sample value.
            projection: None,
        };
        let scans = layout
            .regions
            .iter()
            .map(|(region, _)| self.regions.scan_series(*region, request.clone()));
        let mut found = Vec::new();
        for outcome in join_all(scans).await {
            found.extend(outcome?);
        }
        // A series with more tags than this frontend's layout names has a label another
        // frontend added since this one last read the catalog: read it again, or the
        // label would be dropped and distinct series merged.
        let width = found.iter().map(|one| one.tags.len()).max().unwrap_or(0);
        if width > layout.tags.len() {
            let catalog = self.meta.refresh().await.map_err(|error| {
                Error::unavailable(format!("cannot read the catalog again: {error}"))
            })?;
            layout = metric_regions(&catalog, &self.database)?;
            if width > layout.tags.len() {
                return Err(Error::internal(format!(
                    "a metric region holds {width} tags, the catalog names {}",
                    layout.tags.len()
                )));
            }
        }
        let mut series: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for one in found {
            let samples: Vec<(i64, f64)> = one
                .rows
                .iter()
                .filter_map(|(ts, fields)| match fields.first() {
                    Some(Value::Float64(value)) => Some((*ts, *value)),
                    _ => None,
                })
                .collect();
            // A series-only row carries no value; otherwise a series without float
            // samples is not a Prometheus series.
            if samples.is_empty() && !series_only {
                continue;
            }
            let mut labels: Labels = one
                .tags
                .into_iter()
                .zip(&layout.tags)
                .filter(|(value, _)| !value.is_empty())
                .map(|(value, column)| (metric_label(column).to_string(), value))
                .collect();
            labels.sort();
            series.entry(labels).or_default().extend(samples);
        }
        Ok(series
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|(ts, _)| *ts);
                SeriesSamples { labels, samples }
            })
            .collect())
    }

    /// Metric names known to the catalog (whatever their time range).
    pub fn metric_names(&self) -> Vec<String> {
        let catalog = self.meta.catalog();
        let Ok(database) = catalog.database(&self.database) else {
            return Vec::new();
        };
        database
            .tables
            .values()
            .filter(|table| matches!(table.kind, metronome_catalog::TableKind::Metric { .. }))
            .map(|table| table.name.clone())
            .collect()
    }

    /// Records metric metadata that differs from what the catalog holds, creating the
    /// metric's table if remote write reports metadata before samples.
    pub async fn set_metadata(&self, metadata: &[(String, MetricMetadata)]) -> Result<(), Error> {
        let changed = |catalog: &Catalog, name: &str, metadata: &MetricMetadata| {
            !matches!(
                catalog.table(&self.database, name),
                Ok(Table {
                    kind: TableKind::Metric { metadata: Some(known), .. },
                    ..
                }) if known == metadata
            )
        };
        let catalog = self.meta.catalog();
        if !metadata
            .iter()
            .any(|(name, metadata)| changed(&catalog, name, metadata))
        {
            return Ok(());
        }
        let mut guard = self.meta.lock().await;
        let catalog = guard.catalog();
        let mut commands = Vec::new();
        for (name, metadata) in metadata {
            if !changed(&catalog, name, metadata) {
                continue;
            }
            if catalog.table(&self.database, name).is_err() {
                commands.push(Command::EnsureMetric {
                    database: self.database.clone(),
                    name: name.clone(),
                    labels: Vec::new(),
                });
            }
            commands.push(Command::SetMetricMetadata {
                database: self.database.clone(),
                name: name.clone(),
                metadata: metadata.clone(),
            });
        }
        // One batch: Prometheus reports every metric's metadata at once.
        if !commands.is_empty() {
            guard.execute(Command::Batch(commands)).await?;
        }
        Ok(())
    }

    /// Each metric's metadata, by name, for metrics that have it.
    pub fn metadata(&self) -> BTreeMap<String, MetricMetadata> {
        let catalog = self.meta.catalog();
        let Ok(database) = catalog.database(&self.database) else {
            return BTreeMap::new();
        };
        database
            .tables
            .values()
            .filter_map(|table| match &table.kind {
                TableKind::Metric {
                    metadata: Some(metadata),
                    ..
                } => Some((table.name.clone(), metadata.clone())),
                _ => None,
            })
            .collect()
    }

    /// Label names known to the catalog, `__name__` included, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let catalog = self.meta.catalog();
        let mut names: Vec<String> = metric_regions(&catalog, &self.database)
            .map(|layout| layout.tags)
            .unwrap_or_default()
            .iter()
            .map(|column| metric_label(column).to_string())
            .collect();
        names.sort();
        names
    }
}

/// Writes every batch to its region, in pieces of at most [`WRITE_ROWS_MAX`] rows, all
/// at once; returns when every region acknowledged, or with the first failure (in region
/// order). Pieces that succeeded stay written: a retry rewrites the same (series, ts)
/// rows, which replace themselves.
pub async fn write_all(
    regions: &dyn RegionService,
    batches: impl IntoIterator<Item = (RegionId, WriteBatch)>,
) -> Result<(), Error> {
    let mut writes = Vec::new();
    for (region, batch) in batches {
        for part in batch.split(WRITE_ROWS_MAX) {
            writes.push(regions.write(region, part));
        }
    }
    for outcome in join_all(writes).await {
        outcome?;
    }
    Ok(())
}

/// The region a series goes to: the partition of its sorted labels, name and value each.
fn series_region(labels: &[(String, String)], regions: usize) -> usize {
    partition(
        labels
            .iter()
            .flat_map(|(name, value)| [name.as_bytes(), value.as_bytes()]),
        regions,
    )
}

fn metric_regions(catalog: &Catalog, database: &str) -> Result<MetricRegions, Error> {
    catalog
        .database(database)
        .map_err(|error| Error::invalid(error.to_string()))?
        .metrics
        .clone()
        .ok_or_else(|| Error::internal(format!("database {database} has no metric regions")))
}

/// A matcher for a label; an equality on `__name__` for a metric.
pub fn label_matcher(label: &str, op: MatchOp, value: &str) -> TagMatcher {
    TagMatcher {
        tag: label.to_string(),
        op,
        value: value.to_string(),
    }
}
