//! The catalog's commands and state on the wire, in their one serialized form: the JSON
//! the catalog's journal stores (`metronome_core::journal`). Nothing here mirrors a
//! catalog type, so a new command or field is a change to `catalog.rs` alone.
//!
//! Decoding is of untrusted bytes: a malformed or unknown command is an error naming
//! what is wrong (serde_json bounds nesting), never a panic.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use metronome_wire::fb;

use crate::catalog::{Catalog, Command};

/// A command the peer sent that this build cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

pub fn command<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    command: &Command,
) -> WIPOffset<fb::ExecuteCatalogCommand<'b>> {
    let json = serde_json::to_vec(command).expect("a catalog command serializes");
    let command_json = Some(builder.create_vector(&json));
    fb::ExecuteCatalogCommand::create(builder, &fb::ExecuteCatalogCommandArgs { command_json })
}

pub fn read_command(table: fb::ExecuteCatalogCommand<'_>) -> Result<Command, CodecError> {
    serde_json::from_slice(table.command_json().bytes())
        .map_err(|error| CodecError(format!("invalid catalog command: {error}")))
}

pub fn catalog<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    catalog: &Catalog,
) -> WIPOffset<fb::Catalog<'b>> {
    let json = serde_json::to_vec(catalog).expect("the catalog serializes");
    let catalog_json = Some(builder.create_vector(&json));
    fb::Catalog::create(builder, &fb::CatalogArgs { catalog_json })
}

pub fn read_catalog(table: fb::Catalog<'_>) -> Result<Catalog, CodecError> {
    serde_json::from_slice(table.catalog_json().bytes())
        .map_err(|error| CodecError(format!("invalid catalog: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{MetricMetadata, Route, DEFAULT_DATABASE};
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
            let request = command(&mut builder, &original);
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

    #[test]
    fn bytes_that_are_no_command_are_an_error_naming_it() {
        let mut builder = FlatBufferBuilder::new();
        let command_json = Some(builder.create_vector(b"{\"DropEverything\": {}}"));
        let request = fb::ExecuteCatalogCommand::create(
            &mut builder,
            &fb::ExecuteCatalogCommandArgs { command_json },
        );
        builder.finish_minimal(request);
        let table =
            flatbuffers::root::<fb::ExecuteCatalogCommand>(builder.finished_data()).unwrap();
        let error = read_command(table).unwrap_err();
        assert!(error.0.contains("invalid catalog command"), "{error}");
        assert!(error.0.contains("DropEverything"), "{error}");
    }
}
