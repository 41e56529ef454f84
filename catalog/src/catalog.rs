//! The catalog as a state machine: databases, tables, their regions and routes.
//!
//! [`Catalog::apply`] is plain code over plain data: it checks a [`Command`] against the
//! current state and either changes the state or refuses with a [`CatalogError`], so the
//! same function drives every metasrv replica's state machine under openraft
//! (`metronome-metasrv`'s `raft::state_machine`). A command that was refused changes
//! nothing.
//!
//! Two kinds of table exist:
//! - a **regular** table (SQL `CREATE TABLE`, line protocol) has its own regions;
//! - a **metric** table (one per Prometheus metric name) is *logical*: its rows live in
//!   the database's shared physical metric regions, whose tags are the union of every
//!   metric's labels. A metric table records only which labels it has, for SQL.

use std::collections::BTreeMap;

use metronome_core::data::{FieldColumn, RegionId, RegionSchema, TimeUnit};

pub use crate::placement::{DatanodeInfo, Route};
use crate::replicas::{Replica, RouteChanges};

mod names;
use names::check_layout;
pub use names::{
    check_metric_name, check_name, metric_column, metric_label, METRIC_NAME_LABEL,
    METRIC_TIME_INDEX, METRIC_VALUE, PHYSICAL_TIME_INDEX, PHYSICAL_VALUE,
};

fn one_replica() -> u8 {
    1
}
use serde::{Deserialize, Serialize};

/// The database every client writes to unless it names another.
pub const DEFAULT_DATABASE: &str = "public";

/// Tables created by users, counted per database.
const TABLES_PER_DATABASE_MAX: usize = 100_000;
/// Regions per table.
pub const REGIONS_PER_TABLE_MAX: u32 = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TableKind {
    /// Rows in the table's own regions.
    Regular {
        regions: Vec<(RegionId, Route)>,
        /// The tags whose values choose a row's region (by hash); empty: every tag.
        #[serde(default)]
        partition_columns: Vec<String>,
        /// The columns in the order SQL shows them (as declared); empty: tags, time
        /// index, fields. Columns added later go at the end.
        #[serde(default)]
        column_order: Vec<String>,
    },
    /// A Prometheus metric: rows in its database's physical metric regions.
    Metric {
        /// Label names as Prometheus knows them, in the order they arrived.
        labels: Vec<String>,
        /// Type, help and unit, as remote write last reported them.
        #[serde(default)]
        metadata: Option<MetricMetadata>,
    },
}

/// What Prometheus knows about a metric besides its samples (`# TYPE`, `# HELP`,
/// `# UNIT`), as its metadata API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricMetadata {
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`, `info`,
    /// `stateset` or `unknown`.
    pub metric_type: String,
    pub help: String,
    pub unit: String,
}

/// Distinct label names the metric regions of one database may hold (`__name__` not
/// counted). Every physical region carries a tag column per name, so this bounds what
/// one careless exporter (a label per request id, say) can make every region carry.
pub const METRIC_LABEL_NAMES_MAX: usize = 4096;

/// The longest help text kept; Prometheus' own limit on a line is far below.
pub const METRIC_HELP_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub id: u32,
    pub database: String,
    pub name: String,
    /// For a regular table, the schema of its regions. For a metric table, the logical
    /// schema SQL sees: its labels' columns ([`metric_column`]) as tags, `ts`, `value`.
    pub schema: RegionSchema,
    pub ttl_ms: Option<i64>,
    pub kind: TableKind,
}

/// The physical regions holding a database's Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRegions {
    pub table_id: u32,
    /// `__name__` first, then a column per label name, in the order each first arrived
    /// ([`metric_column`] names them; [`metric_label`] reads them back).
    pub tags: Vec<String>,
    pub regions: Vec<(RegionId, Route)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Database {
    /// Tables by name.
    pub tables: BTreeMap<String, Table>,
    pub metrics: Option<MetricRegions>,
}

/// A change to the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateDatabase {
        name: String,
    },
    /// Creates a regular table with one region per route.
    CreateTable {
        database: String,
        name: String,
        schema: RegionSchema,
        ttl_ms: Option<i64>,
        routes: Vec<Route>,
        if_not_exists: bool,
        /// See [`TableKind::Regular`].
        #[serde(default)]
        partition_columns: Vec<String>,
        #[serde(default)]
        column_order: Vec<String>,
        /// Copies of each region, the leader's included ([`crate::replicas`]): the
        /// catalog chooses the followers.
        #[serde(default = "one_replica")]
        replicas: u8,
    },
    DropTable {
        database: String,
        name: String,
        if_exists: bool,
    },
    /// Adds columns to a regular table (tags at the end of the key, fields at the end).
    AddColumns {
        database: String,
        name: String,
        tags: Vec<String>,
        fields: Vec<FieldColumn>,
    },
    /// Creates the database's physical metric regions, one per route.
    CreateMetricRegions {
        database: String,
        routes: Vec<Route>,
        /// As a table's.
        #[serde(default = "one_replica")]
        replicas: u8,
    },
    /// Makes sure metric `name` exists with at least `labels` (sorted, without
    /// `__name__`), extending its table and the physical tags as needed.
    EnsureMetric {
        database: String,
        name: String,
        labels: Vec<String>,
    },
    /// Records metric `name`'s metadata; the metric must exist.
    SetMetricMetadata {
        database: String,
        name: String,
        metadata: MetricMetadata,
    },
    /// Records a datanode's region-service address and shard count (it registers at
    /// start; a later registration replaces the earlier one). `incarnation` names its
    /// data directory (0: unknown): a datanode back with another has lost its copies
    /// (`Catalog::register_datanode`).
    RegisterDatanode {
        id: u64,
        addr: String,
        shards: u16,
        #[serde(default)]
        incarnation: u64,
    },
    /// Gives a region a new configuration if it is still at `epoch` (compare-and-set),
    /// at the next epoch: `leader` and `followers` must be members at `epoch`
    /// ([`crate::replicas`]). Failover and the removal of a follower.
    ReconfigureRegion {
        region: RegionId,
        epoch: u64,
        leader: Replica,
        followers: Vec<Replica>,
    },
    /// Gives a region at `epoch` the learner `learner`, which catches up from its leader
    /// ([`crate::replicas`]); the epoch stays.
    AddLearner {
        region: RegionId,
        epoch: u64,
        learner: Replica,
    },
    /// Takes the learner `learner` of a region at `epoch` away (its catch-up failed, or
    /// its datanode is gone); the epoch stays.
    RemoveLearner {
        region: RegionId,
        epoch: u64,
        learner: Replica,
    },
    /// Starts moving the leadership of a region at `epoch` to `to` ([`crate::migration`]):
    /// a follower's copy, or a shard of a datanode holding none, which becomes the
    /// region's learner. The epoch stays; the region's leader completes the move.
    MigrateRegion {
        region: RegionId,
        epoch: u64,
        to: Replica,
    },
    /// The leader of a region at `epoch` hands it to `to`, the copy it is moving to,
    /// which holds every write the leader took: `to` leads alone at the next epoch
    /// ([`crate::migration`]).
    HandOver {
        region: RegionId,
        epoch: u64,
        to: Replica,
    },
    /// Ends a migration of a region at `epoch` to `to` without moving it (the epoch
    /// stays).
    CancelMigration {
        region: RegionId,
        epoch: u64,
        to: Replica,
    },
    /// Marks datanode `id` as being drained (`drain`), or no longer ([`crate::drain`]):
    /// its copies move elsewhere, and it gets no new one.
    DrainDatanode {
        id: u64,
        drain: bool,
    },
    /// Several commands applied in order as one: all of them or none, one log record,
    /// one sync, one version. Batches do not nest.
    Batch(Vec<Command>),
}

/// Commands in one [`Command::Batch`].
pub const BATCH_COMMANDS_MAX: usize = 100_000;

/// Why a command was refused. The message names the object at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("database {0:?} does not exist")]
    DatabaseNotFound(String),
    #[error("table {database}.{name} does not exist")]
    TableNotFound { database: String, name: String },
    #[error("table {database}.{name} already exists")]
    TableExists { database: String, name: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
}

/// The whole catalog state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub databases: BTreeMap<String, Database>,
    /// The id the next table (regular or physical) gets; ids are never reused, so a
    /// dropped table's regions can never be mistaken for a new table's.
    pub next_table_id: u32,
    /// Commands applied since the catalog was created.
    pub version: u64,
    /// The datanodes that registered, by id (see [`crate::placement`]).
    #[serde(default)]
    pub datanodes: BTreeMap<u64, DatanodeInfo>,
    /// How many configuration changes of each kind the catalog applied, for operators'
    /// metrics (`crate::replicas::RouteChanges`).
    #[serde(default)]
    pub changes: RouteChanges,
}

impl Default for Catalog {
    fn default() -> Catalog {
        let mut databases = BTreeMap::new();
        databases.insert(DEFAULT_DATABASE.to_string(), Database::default());
        Catalog {
            databases,
            next_table_id: 1,
            version: 0,
            datanodes: BTreeMap::new(),
            changes: RouteChanges::default(),
        }
    }
}

impl Catalog {
    pub fn database(&self, name: &str) -> Result<&Database, CatalogError> {
        self.databases
            .get(name)
            .ok_or_else(|| CatalogError::DatabaseNotFound(name.to_string()))
    }

    pub fn table(&self, database: &str, name: &str) -> Result<&Table, CatalogError> {
        self.database(database)?
            .tables
            .get(name)
            .ok_or_else(|| CatalogError::TableNotFound {
                database: database.to_string(),
                name: name.to_string(),
            })
    }

    /// The schema of a database's physical metric regions.
    pub fn metric_region_schema(tags: &[String]) -> RegionSchema {
        RegionSchema {
            tags: tags.to_vec(),
            time_index: PHYSICAL_TIME_INDEX.to_string(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![FieldColumn {
                name: PHYSICAL_VALUE.to_string(),
                field_type: metronome_core::data::FieldType::Float64,
            }],
        }
    }

    /// Checks `command` and applies it, or refuses it and changes nothing.
    pub fn apply(&mut self, command: &Command) -> Result<(), CatalogError> {
        let mut next = self.clone();
        next.apply_in_place(command)?;
        next.version += 1;
        assert_eq!(next.version, self.version + 1, "one command, one version");
        assert!(
            next.next_table_id >= self.next_table_id,
            "table ids are never reused"
        );
        #[cfg(debug_assertions)]
        next.check_invariants();
        *self = next;
        Ok(())
    }

    /// Asserts what every command leaves true (whole-catalog, so debug builds only: the
    /// tests and the simulation): table ids are unique and below `next_table_id`; a
    /// regular table's regions are its id's, numbered from 0; the metric regions are
    /// their physical table's, and their tags start with `__name__`.
    #[cfg(debug_assertions)]
    fn check_invariants(&self) {
        let mut ids = std::collections::BTreeSet::new();
        for database in self.databases.values() {
            if let Some(metrics) = &database.metrics {
                assert!(
                    ids.insert(metrics.table_id),
                    "table id {} twice",
                    metrics.table_id
                );
                assert!(metrics.table_id < self.next_table_id);
                assert_eq!(
                    metrics.tags.first().map(String::as_str),
                    Some(METRIC_NAME_LABEL)
                );
                for (number, (region, _)) in metrics.regions.iter().enumerate() {
                    assert_eq!(*region, RegionId::new(metrics.table_id, number as u32));
                }
            }
            for table in database.tables.values() {
                if let TableKind::Regular { regions, .. } = &table.kind {
                    assert!(ids.insert(table.id), "table id {} twice", table.id);
                    assert!(table.id < self.next_table_id, "table {} id", table.name);
                    assert!(!regions.is_empty(), "table {} has regions", table.name);
                    for (number, (region, _)) in regions.iter().enumerate() {
                        assert_eq!(*region, RegionId::new(table.id, number as u32));
                    }
                }
            }
        }
    }

    /// Whether `command` would change nothing (so it need not be logged).
    pub fn is_noop(&self, command: &Command) -> bool {
        match command {
            // Each member is judged against the state before the batch: a member that
            // depends on an earlier one is not a no-op there, so neither is the batch.
            Command::Batch(commands) => commands.iter().all(|command| self.is_noop(command)),
            Command::CreateDatabase { name } => self.databases.contains_key(name),
            Command::CreateMetricRegions { database, .. } => {
                self.database(database).is_ok_and(|db| db.metrics.is_some())
            }
            Command::RegisterDatanode {
                id,
                addr,
                shards,
                incarnation,
            } => self.datanodes.get(id).is_some_and(|known| {
                known.addr == *addr && known.shards == *shards && known.incarnation == *incarnation
            }),
            Command::EnsureMetric {
                database,
                name,
                labels,
            } => match self.table(database, name) {
                Ok(Table {
                    kind: TableKind::Metric { labels: known, .. },
                    ..
                }) => labels.iter().all(|label| known.contains(label)),
                _ => false,
            },
            Command::SetMetricMetadata {
                database,
                name,
                metadata,
            } => matches!(
                self.table(database, name),
                Ok(Table {
                    kind: TableKind::Metric { metadata: Some(known), .. },
                    ..
                }) if known == metadata
            ),
            _ => false,
        }
    }

    fn apply_in_place(&mut self, command: &Command) -> Result<(), CatalogError> {
        match command {
            Command::Batch(commands) => {
                if commands.len() > BATCH_COMMANDS_MAX {
                    return Err(CatalogError::Invalid {
                        what: "command batch".to_string(),
                        reason: format!(
                            "it has {} commands, the limit is {BATCH_COMMANDS_MAX}",
                            commands.len()
                        ),
                    });
                }
                for command in commands {
                    if matches!(command, Command::Batch(_)) {
                        return Err(CatalogError::Invalid {
                            what: "command batch".to_string(),
                            reason: "batches do not nest".to_string(),
                        });
                    }
                    // The caller applies to a copy and drops it on error: all or none.
                    self.apply_in_place(command)?;
                }
                Ok(())
            }
            Command::RegisterDatanode {
                id,
                addr,
                shards,
                incarnation,
            } => self.register_datanode(*id, addr, *shards, *incarnation),
            Command::ReconfigureRegion {
                region,
                epoch,
                leader,
                followers,
            } => self.reconfigure_region(*region, *epoch, *leader, followers),
            Command::AddLearner {
                region,
                epoch,
                learner,
            } => self.add_learner(*region, *epoch, *learner),
            Command::RemoveLearner {
                region,
                epoch,
                learner,
            } => self.remove_learner(*region, *epoch, *learner),
            Command::MigrateRegion { region, epoch, to } => {
                self.migrate_region(*region, *epoch, *to)
            }
            Command::HandOver { region, epoch, to } => self.hand_over(*region, *epoch, *to),
            Command::CancelMigration { region, epoch, to } => {
                self.cancel_migration(*region, *epoch, *to)
            }
            Command::DrainDatanode { id, drain } => self.drain_datanode(*id, *drain),
            Command::CreateDatabase { name } => {
                check_name("database name", name)?;
                self.databases.entry(name.clone()).or_default();
                Ok(())
            }
            Command::CreateTable {
                database,
                name,
                schema,
                ttl_ms,
                routes,
                if_not_exists,
                partition_columns,
                column_order,
                replicas,
            } => {
                check_name("table name", name)?;
                for column in schema
                    .tags
                    .iter()
                    .chain([&schema.time_index])
                    .chain(schema.fields.iter().map(|f| &f.name))
                {
                    check_name("column name", column)?;
                }
                schema.validate().map_err(|reason| CatalogError::Invalid {
                    what: format!("schema of {database}.{name}"),
                    reason,
                })?;
                if routes.is_empty() || routes.len() > REGIONS_PER_TABLE_MAX as usize {
                    return Err(CatalogError::Invalid {
                        what: format!("partitions of {database}.{name}"),
                        reason: format!("between 1 and {REGIONS_PER_TABLE_MAX} are allowed"),
                    });
                }
                check_layout(database, name, schema, partition_columns, column_order)?;
                let routes = self.choose_followers(
                    &format!("regions of {database}.{name}"),
                    routes,
                    *replicas,
                )?;
                let id = self.next_table_id;
                let db = self.database_mut(database)?;
                if db.tables.contains_key(name) {
                    if *if_not_exists {
                        return Ok(());
                    }
                    return Err(CatalogError::TableExists {
                        database: database.clone(),
                        name: name.clone(),
                    });
                }
                if db.tables.len() >= TABLES_PER_DATABASE_MAX {
                    return Err(CatalogError::Invalid {
                        what: format!("database {database}"),
                        reason: format!("it has the maximum of {TABLES_PER_DATABASE_MAX} tables"),
                    });
                }
                let regions = routes
                    .iter()
                    .enumerate()
                    .map(|(number, route)| (RegionId::new(id, number as u32), *route))
                    .collect();
                db.tables.insert(
                    name.clone(),
                    Table {
                        id,
                        database: database.clone(),
                        name: name.clone(),
                        schema: schema.clone(),
                        ttl_ms: *ttl_ms,
                        kind: TableKind::Regular {
                            regions,
                            partition_columns: partition_columns.clone(),
                            column_order: column_order.clone(),
                        },
                    },
                );
                self.next_table_id += 1;
                Ok(())
            }
            Command::DropTable {
                database,
                name,
                if_exists,
            } => {
                let db = self.database_mut(database)?;
                if db.tables.remove(name).is_none() && !if_exists {
                    return Err(CatalogError::TableNotFound {
                        database: database.clone(),
                        name: name.clone(),
                    });
                }
                Ok(())
            }
            Command::AddColumns {
                database,
                name,
                tags,
                fields,
            } => {
                for column in tags.iter().chain(fields.iter().map(|f| &f.name)) {
                    check_name("column name", column)?;
                }
                let table = self.table_mut(database, name)?;
                if !matches!(table.kind, TableKind::Regular { .. }) {
                    return Err(CatalogError::Invalid {
                        what: format!("ALTER of {database}.{name}"),
                        reason: "a metric table gains labels by ingesting them".to_string(),
                    });
                }
                table.schema.tags.extend(tags.iter().cloned());
                table.schema.fields.extend(fields.iter().cloned());
                if let TableKind::Regular { column_order, .. } = &mut table.kind {
                    if !column_order.is_empty() {
                        column_order.extend(tags.iter().cloned());
                        column_order.extend(fields.iter().map(|f| f.name.clone()));
                    }
                }
                table
                    .schema
                    .validate()
                    .map_err(|reason| CatalogError::Invalid {
                        what: format!("new columns of {database}.{name}"),
                        reason,
                    })
            }
            Command::CreateMetricRegions {
                database,
                routes,
                replicas,
            } => {
                // A database has its metric regions once: a later request (each frontend
                // makes one at start) changes nothing, whatever routes it proposes.
                if self.database(database).is_ok_and(|db| db.metrics.is_some()) {
                    return Ok(());
                }
                if routes.is_empty() || routes.len() > REGIONS_PER_TABLE_MAX as usize {
                    return Err(CatalogError::Invalid {
                        what: format!("metric regions of {database}"),
                        reason: format!("between 1 and {REGIONS_PER_TABLE_MAX} are allowed"),
                    });
                }
                let routes = self.choose_followers(
                    &format!("metric regions of {database}"),
                    routes,
                    *replicas,
                )?;
                let id = self.next_table_id;
                let db = self.database_mut(database)?;
                if db.metrics.is_some() {
                    return Ok(());
                }
                db.metrics = Some(MetricRegions {
                    table_id: id,
                    tags: vec![METRIC_NAME_LABEL.to_string()],
                    regions: routes
                        .iter()
                        .enumerate()
                        .map(|(number, route)| (RegionId::new(id, number as u32), *route))
                        .collect(),
                });
                self.next_table_id += 1;
                Ok(())
            }
            Command::EnsureMetric {
                database,
                name,
                labels,
            } => {
                check_metric_name(name)?;
                for label in labels {
                    // Any name Prometheus accepts, `__`-prefixed ones included; only
                    // `__name__` is not a label column (it names the table).
                    check_name("label name", label)?;
                    if label == METRIC_NAME_LABEL {
                        return Err(CatalogError::Invalid {
                            what: format!("label name {label:?} of metric {name}"),
                            reason: "the metric name is not a label column".to_string(),
                        });
                    }
                }
                let id = self.next_table_id;
                let db = self.database_mut(database)?;
                let Some(metrics) = db.metrics.as_mut() else {
                    return Err(CatalogError::Invalid {
                        what: format!("metric {name} in {database}"),
                        reason: "the database has no metric regions yet".to_string(),
                    });
                };
                let new_columns: Vec<String> = {
                    let known: std::collections::HashSet<&str> =
                        metrics.tags.iter().map(String::as_str).collect();
                    let mut new: Vec<String> = Vec::new();
                    for label in labels {
                        let column = metric_column(label);
                        if !known.contains(column.as_ref()) && !new.iter().any(|c| *c == column) {
                            new.push(column.into_owned());
                        }
                    }
                    new
                };
                if metrics.tags.len() + new_columns.len() > METRIC_LABEL_NAMES_MAX + 1 {
                    return Err(CatalogError::Invalid {
                        what: format!("labels of metric {name}"),
                        reason: format!(
                            "they would make {} distinct label names in database {database}, \
                             the limit is {METRIC_LABEL_NAMES_MAX}",
                            metrics.tags.len() - 1 + new_columns.len()
                        ),
                    });
                }
                metrics.tags.extend(new_columns);
                assert!(metrics.tags.len() <= METRIC_LABEL_NAMES_MAX + 1);
                debug_assert!(
                    metrics
                        .tags
                        .iter()
                        .collect::<std::collections::HashSet<_>>()
                        .len()
                        == metrics.tags.len(),
                    "a label's column is added once"
                );
                let mut created = false;
                let table = db.tables.entry(name.clone()).or_insert_with(|| {
                    created = true;
                    Table {
                        id,
                        database: database.clone(),
                        name: name.clone(),
                        schema: RegionSchema {
                            tags: Vec::new(),
                            time_index: METRIC_TIME_INDEX.to_string(),
                            time_unit: TimeUnit::Millisecond,
                            fields: vec![FieldColumn {
                                name: METRIC_VALUE.to_string(),
                                field_type: metronome_core::data::FieldType::Float64,
                            }],
                        },
                        ttl_ms: None,
                        kind: TableKind::Metric {
                            labels: Vec::new(),
                            metadata: None,
                        },
                    }
                });
                let TableKind::Metric { labels: known, .. } = &mut table.kind else {
                    return Err(CatalogError::Invalid {
                        what: format!("metric {name}"),
                        reason: format!("{database}.{name} is a regular table"),
                    });
                };
                for label in labels {
                    if !known.contains(label) {
                        known.push(label.clone());
                        table.schema.tags.push(metric_column(label).into_owned());
                    }
                }
                if created {
                    self.next_table_id += 1;
                }
                Ok(())
            }
            Command::SetMetricMetadata {
                database,
                name,
                metadata,
            } => {
                const TYPES: [&str; 8] = [
                    "counter",
                    "gauge",
                    "histogram",
                    "gaugehistogram",
                    "summary",
                    "info",
                    "stateset",
                    "unknown",
                ];
                let invalid = |reason: String| CatalogError::Invalid {
                    what: format!("metadata of metric {name}"),
                    reason,
                };
                if !TYPES.contains(&metadata.metric_type.as_str()) {
                    return Err(invalid(format!(
                        "type {:?} is not one of {}",
                        metadata.metric_type,
                        TYPES.join(", ")
                    )));
                }
                if metadata.help.len() > METRIC_HELP_BYTES_MAX
                    || metadata.unit.len() > METRIC_HELP_BYTES_MAX
                {
                    return Err(invalid(format!(
                        "help and unit are limited to {METRIC_HELP_BYTES_MAX} bytes"
                    )));
                }
                let table = self.table_mut(database, name)?;
                let TableKind::Metric {
                    metadata: known, ..
                } = &mut table.kind
                else {
                    return Err(invalid(format!("{database}.{name} is a regular table")));
                };
                *known = Some(metadata.clone());
                Ok(())
            }
        }
    }

    fn table_mut(&mut self, database: &str, name: &str) -> Result<&mut Table, CatalogError> {
        self.database_mut(database)?
            .tables
            .get_mut(name)
            .ok_or_else(|| CatalogError::TableNotFound {
                database: database.to_string(),
                name: name.to_string(),
            })
    }

    fn database_mut(&mut self, name: &str) -> Result<&mut Database, CatalogError> {
        self.databases
            .get_mut(name)
            .ok_or_else(|| CatalogError::DatabaseNotFound(name.to_string()))
    }
}

#[cfg(test)]
mod tests;
