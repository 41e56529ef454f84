//! The catalog's commands and state to and from their FlatBuffers tables
//! (`wire/schema/metronome.fbs`). The conversion lives here, with the types it converts,
//! because `wire` must not depend on the metadata service.

use std::collections::BTreeMap;

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, UnionWIPOffset, Vector, WIPOffset};
use metronome_core::data::RegionId;
use metronome_wire::convert::{self, ConvertError};
use metronome_wire::fb;

use crate::catalog::{
    Catalog, Command, Database, MetricMetadata, MetricRegions, Route, Table, TableKind,
};

fn route(route: &Route) -> fb::Route {
    fb::Route::new(route.datanode, route.shard)
}

fn read_route(route: &fb::Route) -> Route {
    Route {
        datanode: route.datanode(),
        shard: route.shard(),
    }
}

fn routes<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    values: &[Route],
) -> WIPOffset<Vector<'b, fb::Route>> {
    let values: Vec<fb::Route> = values.iter().map(route).collect();
    builder.create_vector(&values)
}

fn region_routes<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    values: &[(RegionId, Route)],
) -> WIPOffset<Vector<'b, fb::RegionRoute>> {
    let values: Vec<fb::RegionRoute> = values
        .iter()
        .map(|(region, to)| fb::RegionRoute::new(&convert::region_id(*region), &route(to)))
        .collect();
    builder.create_vector(&values)
}

fn read_region_routes(values: Vector<'_, fb::RegionRoute>) -> Vec<(RegionId, Route)> {
    values
        .iter()
        .map(|entry| {
            (
                convert::read_region_id(entry.region()),
                read_route(entry.route()),
            )
        })
        .collect()
}

fn metric_metadata<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    metadata: &MetricMetadata,
) -> WIPOffset<fb::MetricMetadata<'b>> {
    let metric_type = builder.create_string(&metadata.metric_type);
    let help = builder.create_string(&metadata.help);
    let unit = builder.create_string(&metadata.unit);
    fb::MetricMetadata::create(
        builder,
        &fb::MetricMetadataArgs {
            metric_type: Some(metric_type),
            help: Some(help),
            unit: Some(unit),
        },
    )
}

fn read_metric_metadata(metadata: fb::MetricMetadata<'_>) -> MetricMetadata {
    MetricMetadata {
        metric_type: metadata.metric_type().to_string(),
        help: metadata.help().to_string(),
        unit: metadata.unit().to_string(),
    }
}

/// The `CatalogCommand` union member for `command`.
pub fn command(
    builder: &mut FlatBufferBuilder<'_>,
    command: &Command,
) -> (fb::CatalogCommand, WIPOffset<UnionWIPOffset>) {
    match command {
        Command::CreateDatabase { name } => {
            let name = builder.create_string(name);
            let table =
                fb::CreateDatabase::create(builder, &fb::CreateDatabaseArgs { name: Some(name) });
            (fb::CatalogCommand::CreateDatabase, table.as_union_value())
        }
        Command::CreateTable {
            database,
            name,
            schema,
            ttl_ms,
            routes: to,
            if_not_exists,
            partition_columns,
            column_order,
        } => {
            let database = builder.create_string(database);
            let name = builder.create_string(name);
            let schema = convert::region_schema(builder, schema);
            let to = routes(builder, to);
            let partition_columns = convert::strings(builder, partition_columns);
            let column_order = convert::strings(builder, column_order);
            let table = fb::CreateTable::create(
                builder,
                &fb::CreateTableArgs {
                    database: Some(database),
                    name: Some(name),
                    schema: Some(schema),
                    ttl_ms: *ttl_ms,
                    routes: Some(to),
                    if_not_exists: *if_not_exists,
                    partition_columns: Some(partition_columns),
                    column_order: Some(column_order),
                },
            );
            (fb::CatalogCommand::CreateTable, table.as_union_value())
        }
        Command::DropTable {
            database,
            name,
            if_exists,
        } => {
            let database = builder.create_string(database);
            let name = builder.create_string(name);
            let table = fb::DropTable::create(
                builder,
                &fb::DropTableArgs {
                    database: Some(database),
                    name: Some(name),
                    if_exists: *if_exists,
                },
            );
            (fb::CatalogCommand::DropTable, table.as_union_value())
        }
        Command::AddColumns {
            database,
            name,
            tags,
            fields,
        } => {
            let database = builder.create_string(database);
            let name = builder.create_string(name);
            let tags = convert::strings(builder, tags);
            let fields = convert::field_columns(builder, fields);
            let table = fb::AddColumns::create(
                builder,
                &fb::AddColumnsArgs {
                    database: Some(database),
                    name: Some(name),
                    tags: Some(tags),
                    fields: Some(fields),
                },
            );
            (fb::CatalogCommand::AddColumns, table.as_union_value())
        }
        Command::CreateMetricRegions {
            database,
            routes: to,
        } => {
            let database = builder.create_string(database);
            let to = routes(builder, to);
            let table = fb::CreateMetricRegions::create(
                builder,
                &fb::CreateMetricRegionsArgs {
                    database: Some(database),
                    routes: Some(to),
                },
            );
            (
                fb::CatalogCommand::CreateMetricRegions,
                table.as_union_value(),
            )
        }
        Command::EnsureMetric {
            database,
            name,
            labels,
        } => {
            let database = builder.create_string(database);
            let name = builder.create_string(name);
            let labels = convert::strings(builder, labels);
            let table = fb::EnsureMetric::create(
                builder,
                &fb::EnsureMetricArgs {
                    database: Some(database),
                    name: Some(name),
                    labels: Some(labels),
                },
            );
            (fb::CatalogCommand::EnsureMetric, table.as_union_value())
        }
        Command::SetMetricMetadata {
            database,
            name,
            metadata,
        } => {
            let database = builder.create_string(database);
            let name = builder.create_string(name);
            let metadata = metric_metadata(builder, metadata);
            let table = fb::SetMetricMetadata::create(
                builder,
                &fb::SetMetricMetadataArgs {
                    database: Some(database),
                    name: Some(name),
                    metadata: Some(metadata),
                },
            );
            (
                fb::CatalogCommand::SetMetricMetadata,
                table.as_union_value(),
            )
        }
        Command::Batch(commands) => {
            let entries: Vec<_> = commands
                .iter()
                .map(|one| {
                    let (command_type, offset) = self::command(builder, one);
                    fb::CatalogCommandEntry::create(
                        builder,
                        &fb::CatalogCommandEntryArgs {
                            command_type,
                            command: Some(offset),
                        },
                    )
                })
                .collect();
            let entries = builder.create_vector(&entries);
            let table = fb::CommandBatch::create(
                builder,
                &fb::CommandBatchArgs {
                    commands: Some(entries),
                },
            );
            (fb::CatalogCommand::CommandBatch, table.as_union_value())
        }
    }
}

/// The command in a verified table holding a `CatalogCommand` union (the generated
/// accessors have the same names on `ExecuteCatalogCommand` and `CatalogCommandEntry`).
/// `$batch` reads a nested `CommandBatch`.
macro_rules! read_command_union {
    ($request:expr, $batch:expr) => {{
        let request = $request;
        let strings = convert::read_strings;
        Ok(match request.command_type() {
            fb::CatalogCommand::CreateDatabase => {
                let table = request.command_as_create_database().expect("verified");
                Command::CreateDatabase {
                    name: table.name().to_string(),
                }
            }
            fb::CatalogCommand::CreateTable => {
                let table = request.command_as_create_table().expect("verified");
                Command::CreateTable {
                    database: table.database().to_string(),
                    name: table.name().to_string(),
                    schema: convert::read_region_schema(table.schema())?,
                    ttl_ms: table.ttl_ms(),
                    routes: table.routes().iter().map(read_route).collect(),
                    if_not_exists: table.if_not_exists(),
                    partition_columns: table.partition_columns().map(strings).unwrap_or_default(),
                    column_order: table.column_order().map(strings).unwrap_or_default(),
                }
            }
            fb::CatalogCommand::DropTable => {
                let table = request.command_as_drop_table().expect("verified");
                Command::DropTable {
                    database: table.database().to_string(),
                    name: table.name().to_string(),
                    if_exists: table.if_exists(),
                }
            }
            fb::CatalogCommand::AddColumns => {
                let table = request.command_as_add_columns().expect("verified");
                Command::AddColumns {
                    database: table.database().to_string(),
                    name: table.name().to_string(),
                    tags: strings(table.tags()),
                    fields: convert::read_field_columns(table.fields())?,
                }
            }
            fb::CatalogCommand::CreateMetricRegions => {
                let table = request
                    .command_as_create_metric_regions()
                    .expect("verified");
                Command::CreateMetricRegions {
                    database: table.database().to_string(),
                    routes: table.routes().iter().map(read_route).collect(),
                }
            }
            fb::CatalogCommand::EnsureMetric => {
                let table = request.command_as_ensure_metric().expect("verified");
                Command::EnsureMetric {
                    database: table.database().to_string(),
                    name: table.name().to_string(),
                    labels: strings(table.labels()),
                }
            }
            fb::CatalogCommand::SetMetricMetadata => {
                let table = request.command_as_set_metric_metadata().expect("verified");
                Command::SetMetricMetadata {
                    database: table.database().to_string(),
                    name: table.name().to_string(),
                    metadata: read_metric_metadata(table.metadata()),
                }
            }
            fb::CatalogCommand::CommandBatch => {
                let table = request.command_as_command_batch().expect("verified");
                $batch(table)?
            }
            other => {
                return Err(ConvertError(format!(
                    "unknown catalog command type {}",
                    other.0
                )))
            }
        })
    }};
}

/// The command of a verified `ExecuteCatalogCommand`.
pub fn read_command(request: fb::ExecuteCatalogCommand<'_>) -> Result<Command, ConvertError> {
    read_command_union!(request, read_batch)
}

fn read_batch(batch: fb::CommandBatch<'_>) -> Result<Command, ConvertError> {
    let nested = |_: fb::CommandBatch<'_>| -> Result<Command, ConvertError> {
        Err(ConvertError("command batches do not nest".to_string()))
    };
    let commands = batch
        .commands()
        .iter()
        .map(|entry| -> Result<Command, ConvertError> { read_command_union!(entry, nested) })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Command::Batch(commands))
}

/// The whole catalog as a table, for a client that has none or fell behind.
pub fn catalog<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    catalog: &Catalog,
) -> WIPOffset<fb::Catalog<'b>> {
    let databases: Vec<_> = catalog
        .databases
        .iter()
        .map(|(name, database)| {
            let tables: Vec<_> = database
                .tables
                .values()
                .map(|table| table_offset(builder, table))
                .collect();
            let tables = builder.create_vector(&tables);
            let metrics = database.metrics.as_ref().map(|metrics| {
                let tags = convert::strings(builder, &metrics.tags);
                let regions = region_routes(builder, &metrics.regions);
                fb::MetricRegions::create(
                    builder,
                    &fb::MetricRegionsArgs {
                        table_id: metrics.table_id,
                        tags: Some(tags),
                        regions: Some(regions),
                    },
                )
            });
            let name = builder.create_string(name);
            fb::Database::create(
                builder,
                &fb::DatabaseArgs {
                    name: Some(name),
                    tables: Some(tables),
                    metrics,
                },
            )
        })
        .collect();
    let databases = builder.create_vector(&databases);
    fb::Catalog::create(
        builder,
        &fb::CatalogArgs {
            databases: Some(databases),
            next_table_id: catalog.next_table_id,
            version: catalog.version,
        },
    )
}

fn table_offset<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    table: &Table,
) -> WIPOffset<fb::Table<'b>> {
    let name = builder.create_string(&table.name);
    let schema = convert::region_schema(builder, &table.schema);
    let (kind, regions, labels, partition_columns, column_order, metadata) = match &table.kind {
        TableKind::Regular {
            regions,
            partition_columns,
            column_order,
        } => (
            fb::TableKind::Regular,
            Some(region_routes(builder, regions)),
            None,
            Some(convert::strings(builder, partition_columns)),
            Some(convert::strings(builder, column_order)),
            None,
        ),
        TableKind::Metric { labels, metadata } => (
            fb::TableKind::Metric,
            None,
            Some(convert::strings(builder, labels)),
            None,
            None,
            metadata
                .as_ref()
                .map(|metadata| metric_metadata(builder, metadata)),
        ),
    };
    fb::Table::create(
        builder,
        &fb::TableArgs {
            id: table.id,
            name: Some(name),
            schema: Some(schema),
            ttl_ms: table.ttl_ms,
            kind,
            regions,
            labels,
            partition_columns,
            column_order,
            metadata,
        },
    )
}

fn read_table(database: &str, table: fb::Table<'_>) -> Result<Table, ConvertError> {
    let kind = match table.kind() {
        fb::TableKind::Regular => TableKind::Regular {
            regions: table.regions().map(read_region_routes).unwrap_or_default(),
            partition_columns: table
                .partition_columns()
                .map(convert::read_strings)
                .unwrap_or_default(),
            column_order: table
                .column_order()
                .map(convert::read_strings)
                .unwrap_or_default(),
        },
        fb::TableKind::Metric => TableKind::Metric {
            labels: table
                .labels()
                .map(convert::read_strings)
                .unwrap_or_default(),
            metadata: table.metadata().map(read_metric_metadata),
        },
        other => {
            return Err(ConvertError(format!(
                "table {database}.{}: unknown kind {}",
                table.name(),
                other.0
            )))
        }
    };
    Ok(Table {
        id: table.id(),
        database: database.to_string(),
        name: table.name().to_string(),
        schema: convert::read_region_schema(table.schema())?,
        ttl_ms: table.ttl_ms(),
        kind,
    })
}

pub fn read_catalog(catalog: fb::Catalog<'_>) -> Result<Catalog, ConvertError> {
    let mut databases = BTreeMap::new();
    for database in catalog.databases() {
        let name = database.name().to_string();
        let tables = read_tables(&name, database.tables())?;
        let metrics = database.metrics().map(|metrics| MetricRegions {
            table_id: metrics.table_id(),
            tags: convert::read_strings(metrics.tags()),
            regions: read_region_routes(metrics.regions()),
        });
        databases.insert(name, Database { tables, metrics });
    }
    Ok(Catalog {
        databases,
        next_table_id: catalog.next_table_id(),
        version: catalog.version(),
    })
}

fn read_tables(
    database: &str,
    tables: Vector<'_, ForwardsUOffset<fb::Table<'_>>>,
) -> Result<BTreeMap<String, Table>, ConvertError> {
    tables
        .iter()
        .map(|table| read_table(database, table).map(|table| (table.name.clone(), table)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::DEFAULT_DATABASE;
    use metronome_core::data::{FieldColumn, FieldType, RegionSchema, TimeUnit};

    fn commands() -> Vec<Command> {
        let to = vec![
            Route {
                datanode: 0,
                shard: 1,
            },
            Route {
                datanode: 7,
                shard: 0,
            },
        ];
        vec![
            Command::CreateDatabase { name: "ops".into() },
            Command::CreateMetricRegions {
                database: DEFAULT_DATABASE.into(),
                routes: to.clone(),
            },
            Command::EnsureMetric {
                database: DEFAULT_DATABASE.into(),
                name: "up".into(),
                labels: vec!["instance".into(), "job".into()],
            },
            Command::CreateTable {
                database: "ops".into(),
                name: "cpu".into(),
                schema: RegionSchema {
                    tags: vec!["host".into()],
                    time_index: "ts".into(),
                    time_unit: TimeUnit::Millisecond,
                    fields: vec![FieldColumn {
                        name: "usage".into(),
                        field_type: FieldType::Float64,
                    }],
                },
                ttl_ms: Some(86_400_000),
                routes: to,
                if_not_exists: true,
                partition_columns: vec!["host".into()],
                column_order: vec!["ts".into(), "host".into(), "usage".into()],
            },
            Command::AddColumns {
                database: "ops".into(),
                name: "cpu".into(),
                tags: vec!["dc".into()],
                fields: vec![FieldColumn {
                    name: "note".into(),
                    field_type: FieldType::String,
                }],
            },
            Command::DropTable {
                database: "ops".into(),
                name: "gone".into(),
                if_exists: true,
            },
            Command::SetMetricMetadata {
                database: DEFAULT_DATABASE.into(),
                name: "up".into(),
                metadata: MetricMetadata {
                    metric_type: "gauge".into(),
                    help: "Whether the target is up.".into(),
                    unit: String::new(),
                },
            },
            Command::Batch(vec![
                Command::EnsureMetric {
                    database: DEFAULT_DATABASE.into(),
                    name: "http_requests_total".into(),
                    labels: vec!["code".into()],
                },
                Command::CreateDatabase {
                    name: "ops2".into(),
                },
            ]),
        ]
    }

    #[test]
    fn commands_and_the_catalog_they_build_round_trip() {
        let mut state = Catalog::default();
        for original in commands() {
            let mut builder = FlatBufferBuilder::new();
            let (command_type, offset) = command(&mut builder, &original);
            let request = fb::ExecuteCatalogCommand::create(
                &mut builder,
                &fb::ExecuteCatalogCommandArgs {
                    command_type,
                    command: Some(offset),
                },
            );
            builder.finish_minimal(request);
            let table =
                flatbuffers::root::<fb::ExecuteCatalogCommand>(builder.finished_data()).unwrap();
            let decoded = read_command(table).unwrap();
            assert_eq!(decoded, original);
            state.apply(&decoded).unwrap();
        }
        assert!(state.table("ops", "cpu").is_ok() && state.table("public", "up").is_ok());

        let mut builder = FlatBufferBuilder::new();
        let offset = catalog(&mut builder, &state);
        builder.finish_minimal(offset);
        let table = flatbuffers::root::<fb::Catalog>(builder.finished_data()).unwrap();
        assert_eq!(read_catalog(table).unwrap(), state);
    }
}
