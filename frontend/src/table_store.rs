//! Regular tables (SQL `CREATE TABLE`, InfluxDB line protocol) on their own regions.
//!
//! A table is split into regions by a hash of its tag values, so one series always lands
//! in the same region. The catalog records a table before its regions exist and
//! [`TableStore::open`] creates any region a crash left uncreated; a dropped table's
//! regions are dropped after the catalog forgets it (a crash in between leaves orphan
//! regions that no table names, which waste space but are never read).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use metronome_catalog::{Command, Route, Table, TableKind};
use metronome_core::data::{FieldColumn, RegionId, RegionSchema, Row, ScanRequest};
use metronome_core::error::Error;
use metronome_wire::{RegionService, RegionServiceExt};

use crate::meta::Meta;
use crate::precision::series;
use crate::prom_store::write_all;
use crate::router::partition;
use metronome_core::write_batch::WriteBatch;

pub struct TableStore {
    meta: Arc<Meta>,
    regions: Arc<dyn RegionService>,
    /// Copies of each region of a table that sets no `replicas` option (`None`: the
    /// catalog's default when the table is created).
    replicas: Option<u8>,
}

/// The regions of a regular table with their routes.
fn table_regions(table: &Table) -> &[(RegionId, Route)] {
    match &table.kind {
        TableKind::Regular { regions, .. } => regions,
        TableKind::Metric { .. } => &[],
    }
}

impl TableStore {
    /// Makes sure every regular table's regions exist with the catalog's schema.
    pub async fn open(
        meta: Arc<Meta>,
        regions: Arc<dyn RegionService>,
        replicas: Option<u8>,
    ) -> Result<TableStore, Error> {
        let store = TableStore {
            meta,
            regions,
            replicas,
        };
        let catalog = store.meta.catalog();
        for database in catalog.databases.values() {
            for table in database.tables.values() {
                store.reconcile(table).await?;
            }
        }
        Ok(store)
    }

    /// A table as the catalog has it now.
    pub fn table(&self, database: &str, name: &str) -> Option<Table> {
        self.meta.catalog().table(database, name).ok().cloned()
    }

    /// Creates missing regions and adds columns a crash kept from reaching them.
    async fn reconcile(&self, table: &Table) -> Result<(), Error> {
        for (region, route) in table_regions(table) {
            let schema = match self.regions.region_schema(*region).await? {
                Some(schema) => schema,
                None => {
                    self.regions
                        .create_region(*region, table.schema.clone(), route.shard)
                        .await?;
                    if table.ttl_ms.is_some() {
                        self.regions.set_ttl(*region, table.ttl_ms).await?;
                    }
                    continue;
                }
            };
            if !table.schema.tags.starts_with(&schema.tags)
                || !table.schema.fields.starts_with(&schema.fields)
            {
                return Err(Error::internal(format!(
                    "region {region} of table {}.{} has columns {schema:?}, which do not \
                     follow the catalog's {:?}",
                    table.database, table.name, table.schema
                )));
            }
            // The whole list: a copy that missed an earlier change gets it in its place.
            if schema.tags.len() < table.schema.tags.len() {
                self.regions
                    .add_tags(*region, table.schema.tags.clone())
                    .await?;
            }
            for field in &table.schema.fields[schema.fields.len()..] {
                self.regions.add_field(*region, field.clone()).await?;
            }
        }
        Ok(())
    }

    /// Creates a table with `table.partitions` regions spread over the shards. Returns
    /// whether it was created (false: it existed and `if_not_exists` was set).
    pub async fn create_table(&self, database: &str, table: NewTable) -> Result<bool, Error> {
        let NewTable {
            name,
            schema,
            ttl_ms,
            partitions,
            partition_columns,
            column_order,
            if_not_exists,
            replicas,
        } = table;
        let name = name.as_str();
        let mut guard = self.meta.lock().await;
        let existed = guard.catalog().table(database, name).is_ok();
        // Placement is the metasrv's: the live datanodes' shards, least loaded first.
        let routes = guard.place(partitions).await?;
        guard
            .execute(Command::CreateTable {
                database: database.to_string(),
                name: name.to_string(),
                schema,
                ttl_ms,
                routes,
                if_not_exists,
                partition_columns,
                column_order,
                replicas: replicas
                    .or(self.replicas)
                    .unwrap_or_else(|| guard.catalog().default_replicas()),
            })
            .await?;
        let catalog = guard.catalog();
        let table = catalog
            .table(database, name)
            .map_err(|error| Error::internal(error.to_string()))?;
        self.reconcile(table).await?;
        Ok(!existed)
    }

    /// Drops a table; returns whether it existed.
    pub async fn drop_table(
        &self,
        database: &str,
        name: &str,
        if_exists: bool,
    ) -> Result<bool, Error> {
        let mut guard = self.meta.lock().await;
        let table = match guard.catalog().table(database, name) {
            Ok(table) => table.clone(),
            Err(_) if if_exists => return Ok(false),
            Err(error) => return Err(Error::invalid(error.to_string())),
        };
        if matches!(table.kind, TableKind::Metric { .. }) {
            return Err(Error::invalid(format!(
                "{database}.{name} is a Prometheus metric; its series live in shared regions \
                 and cannot be dropped one metric at a time yet"
            )));
        }
        guard
            .execute(Command::DropTable {
                database: database.to_string(),
                name: name.to_string(),
                if_exists,
            })
            .await?;
        for (region, _) in table_regions(&table) {
            self.regions.drop_region(*region).await?;
        }
        Ok(true)
    }

    /// Adds columns to a table and to all its regions.
    pub async fn add_columns(
        &self,
        database: &str,
        name: &str,
        tags: Vec<String>,
        fields: Vec<FieldColumn>,
    ) -> Result<(), Error> {
        let mut guard = self.meta.lock().await;
        guard
            .execute(Command::AddColumns {
                database: database.to_string(),
                name: name.to_string(),
                tags,
                fields,
            })
            .await?;
        let catalog = guard.catalog();
        let table = catalog
            .table(database, name)
            .map_err(|error| Error::internal(error.to_string()))?;
        self.reconcile(table).await
    }

    /// Writes rows (in the table's column order) to the table's regions; returns once
    /// every region acknowledged.
    pub async fn write(&self, table: &Table, rows: Vec<Row>) -> Result<usize, Error> {
        let regions = table_regions(table);
        if regions.is_empty() {
            return Err(Error::invalid(format!(
                "{}.{} is a Prometheus metric: write it with remote write",
                table.database, table.name
            )));
        }
        let count = rows.len();
        let partition_tags = partition_tags(table);
        let mut per_region: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
        for row in rows {
            let index = match &partition_tags {
                Some(indices) => partition_region(&row, indices, regions.len()),
                None => series_region(&row.tags, regions.len()),
            };
            per_region.entry(index).or_default().push(row);
        }
        let batches = per_region
            .into_iter()
            .map(|(index, rows)| (regions[index].0, WriteBatch::from_rows(rows)));
        write_all(self.regions.as_ref(), batches).await?;
        Ok(count)
    }

    /// Scans every region of the table.
    pub async fn scan(&self, table: &Table, request: &ScanRequest) -> Result<Vec<Row>, Error> {
        let scans = table_regions(table)
            .iter()
            .map(|(region, _)| self.regions.scan(*region, request.clone()));
        let mut rows = Vec::new();
        for outcome in join_all(scans).await {
            rows.extend(outcome?);
        }
        Ok(rows)
    }
}

/// A table to create, as `CREATE TABLE` or the line protocol define it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTable {
    pub name: String,
    pub schema: RegionSchema,
    pub ttl_ms: Option<i64>,
    pub partitions: u32,
    /// The tags a row's region is chosen by; empty: every tag.
    pub partition_columns: Vec<String>,
    /// SQL's column order; empty: tags, time index, fields.
    pub column_order: Vec<String>,
    pub if_not_exists: bool,
    /// Copies of each region (`WITH (replicas = N)`); `None`: the frontend's default.
    pub replicas: Option<u8>,
}

/// The positions of a table's partition columns among its tags, if it names any.
fn partition_tags(table: &Table) -> Option<Vec<usize>> {
    let TableKind::Regular {
        partition_columns, ..
    } = &table.kind
    else {
        return None;
    };
    if partition_columns.is_empty() {
        return None;
    }
    Some(
        partition_columns
            .iter()
            .map(|column| {
                table
                    .schema
                    .tags
                    .iter()
                    .position(|tag| tag == column)
                    .expect("the catalog checks that partition columns are tags")
            })
            .collect(),
    )
}

/// The region of a row by its partition columns' values (a missing tag is empty).
fn partition_region(row: &Row, tags: &[usize], regions: usize) -> usize {
    partition(tags.iter().map(|&tag| row.tag(tag).as_bytes()), regions)
}

/// The region of a series: a stable hash of its tag values (trailing empty ones left
/// out, so adding a tag column moves no series).
fn series_region(tags: &[String], regions: usize) -> usize {
    partition(series(tags).iter().map(|tag| tag.as_bytes()), regions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::data::TimeUnit;

    fn table(partition_columns: &[&str]) -> Table {
        Table {
            id: 1,
            database: "public".into(),
            name: "t".into(),
            schema: RegionSchema {
                tags: vec!["host".into(), "dc".into()],
                time_index: "ts".into(),
                time_unit: TimeUnit::Millisecond,
                fields: Vec::new(),
            },
            ttl_ms: None,
            kind: TableKind::Regular {
                regions: Vec::new(),
                partition_columns: partition_columns.iter().map(|c| c.to_string()).collect(),
                column_order: Vec::new(),
            },
        }
    }

    fn row(host: &str, dc: &str) -> Row {
        Row {
            tags: vec![host.into(), dc.into()],
            ts: 0,
            fields: Vec::new(),
        }
    }

    #[test]
    fn a_partition_rule_routes_by_its_columns_only() {
        assert_eq!(partition_tags(&table(&[])), None);
        let by_dc = partition_tags(&table(&["dc"])).unwrap();
        assert_eq!(by_dc, [1]);
        let hosts: Vec<String> = (0..50).map(|i| format!("host-{i}")).collect();
        for dc in ["eu", "us", "ap"] {
            let regions: std::collections::BTreeSet<usize> = hosts
                .iter()
                .map(|host| partition_region(&row(host, dc), &by_dc, 8))
                .collect();
            assert_eq!(regions.len(), 1, "every host of {dc} in one region");
        }
        // Without a rule, the same rows spread over the regions.
        let spread: std::collections::BTreeSet<usize> = hosts
            .iter()
            .map(|host| series_region(&row(host, "eu").tags, 8))
            .collect();
        assert!(spread.len() > 4, "{spread:?}");
    }
}
