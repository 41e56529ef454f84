//! The data model (`metronome_core::data`) to and from its FlatBuffers tables.
//!
//! Readers take verified tables, so every required field is present; what verification
//! cannot know (an enum value this build does not have) is checked here and named in
//! the error.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};
use metronome_core::data::{
    FieldColumn, FieldType, MatchOp, RegionId, RegionSchema, ScanRequest, TagMatcher, TimeUnit,
};

use crate::fb;
use crate::{ErrorKind, RegionError};

/// A value read from a message that this build cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

pub fn region_id(id: RegionId) -> fb::RegionId {
    fb::RegionId::new(id.table, id.number)
}

pub fn read_region_id(id: &fb::RegionId) -> RegionId {
    RegionId::new(id.table(), id.number())
}

pub fn strings<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    values: &[String],
) -> WIPOffset<Vector<'b, ForwardsUOffset<&'b str>>> {
    let offsets: Vec<_> = values.iter().map(|v| builder.create_string(v)).collect();
    builder.create_vector(&offsets)
}

pub fn read_strings(values: Vector<'_, ForwardsUOffset<&str>>) -> Vec<String> {
    values.iter().map(str::to_string).collect()
}

fn field_type(field_type: FieldType) -> fb::FieldType {
    match field_type {
        FieldType::Float64 => fb::FieldType::Float64,
        FieldType::Int64 => fb::FieldType::Int64,
        FieldType::String => fb::FieldType::String,
        FieldType::Boolean => fb::FieldType::Boolean,
    }
}

fn read_field_type(field_type: fb::FieldType) -> Result<FieldType, ConvertError> {
    Ok(match field_type {
        fb::FieldType::Float64 => FieldType::Float64,
        fb::FieldType::Int64 => FieldType::Int64,
        fb::FieldType::String => FieldType::String,
        fb::FieldType::Boolean => FieldType::Boolean,
        other => return Err(ConvertError(format!("unknown field type {}", other.0))),
    })
}

pub fn field_column<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    column: &FieldColumn,
) -> WIPOffset<fb::FieldColumn<'b>> {
    let name = builder.create_string(&column.name);
    fb::FieldColumn::create(
        builder,
        &fb::FieldColumnArgs {
            name: Some(name),
            field_type: field_type(column.field_type),
        },
    )
}

pub fn read_field_column(column: fb::FieldColumn<'_>) -> Result<FieldColumn, ConvertError> {
    Ok(FieldColumn {
        name: column.name().to_string(),
        field_type: read_field_type(column.field_type())
            .map_err(|error| ConvertError(format!("field column {:?}: {error}", column.name())))?,
    })
}

pub fn field_columns<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    columns: &[FieldColumn],
) -> WIPOffset<Vector<'b, ForwardsUOffset<fb::FieldColumn<'b>>>> {
    let offsets: Vec<_> = columns.iter().map(|c| field_column(builder, c)).collect();
    builder.create_vector(&offsets)
}

pub fn read_field_columns(
    columns: Vector<'_, ForwardsUOffset<fb::FieldColumn<'_>>>,
) -> Result<Vec<FieldColumn>, ConvertError> {
    columns.iter().map(read_field_column).collect()
}

pub fn region_schema<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    schema: &RegionSchema,
) -> WIPOffset<fb::RegionSchema<'b>> {
    let tags = strings(builder, &schema.tags);
    let time_index = builder.create_string(&schema.time_index);
    let fields = field_columns(builder, &schema.fields);
    fb::RegionSchema::create(
        builder,
        &fb::RegionSchemaArgs {
            tags: Some(tags),
            time_index: Some(time_index),
            time_unit: time_unit(schema.time_unit),
            fields: Some(fields),
        },
    )
}

pub fn read_region_schema(schema: fb::RegionSchema<'_>) -> Result<RegionSchema, ConvertError> {
    Ok(RegionSchema {
        tags: read_strings(schema.tags()),
        time_index: schema.time_index().to_string(),
        time_unit: read_time_unit(schema.time_unit())?,
        fields: read_field_columns(schema.fields())?,
    })
}

fn time_unit(unit: TimeUnit) -> fb::TimeUnit {
    match unit {
        TimeUnit::Second => fb::TimeUnit::Second,
        TimeUnit::Millisecond => fb::TimeUnit::Millisecond,
        TimeUnit::Microsecond => fb::TimeUnit::Microsecond,
        TimeUnit::Nanosecond => fb::TimeUnit::Nanosecond,
    }
}

fn read_time_unit(unit: fb::TimeUnit) -> Result<TimeUnit, ConvertError> {
    Ok(match unit {
        fb::TimeUnit::Second => TimeUnit::Second,
        fb::TimeUnit::Millisecond => TimeUnit::Millisecond,
        fb::TimeUnit::Microsecond => TimeUnit::Microsecond,
        fb::TimeUnit::Nanosecond => TimeUnit::Nanosecond,
        other => return Err(ConvertError(format!("unknown time unit {}", other.0))),
    })
}

fn match_op(op: MatchOp) -> fb::MatchOp {
    match op {
        MatchOp::Equal => fb::MatchOp::Equal,
        MatchOp::NotEqual => fb::MatchOp::NotEqual,
        MatchOp::Regex => fb::MatchOp::Regex,
        MatchOp::NotRegex => fb::MatchOp::NotRegex,
    }
}

fn read_match_op(op: fb::MatchOp) -> Result<MatchOp, ConvertError> {
    Ok(match op {
        fb::MatchOp::Equal => MatchOp::Equal,
        fb::MatchOp::NotEqual => MatchOp::NotEqual,
        fb::MatchOp::Regex => MatchOp::Regex,
        fb::MatchOp::NotRegex => MatchOp::NotRegex,
        other => return Err(ConvertError(format!("unknown match operator {}", other.0))),
    })
}

/// A scan request's table, for `region`.
pub fn scan<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    region: RegionId,
    request: &ScanRequest,
    epoch: u64,
    read: crate::ReadAt,
) -> WIPOffset<fb::Scan<'b>> {
    let matchers: Vec<_> = request
        .matchers
        .iter()
        .map(|matcher| {
            let tag = builder.create_string(&matcher.tag);
            let value = builder.create_string(&matcher.value);
            fb::TagMatcher::create(
                builder,
                &fb::TagMatcherArgs {
                    tag: Some(tag),
                    op: match_op(matcher.op),
                    value: Some(value),
                },
            )
        })
        .collect();
    let matchers = builder.create_vector(&matchers);
    let projection = request
        .projection
        .as_ref()
        .map(|columns| field_columns(builder, columns));
    fb::Scan::create(
        builder,
        &fb::ScanArgs {
            region: Some(&region_id(region)),
            start: request.start,
            end: request.end,
            matchers: Some(matchers),
            limit: request.limit.map(|limit| limit as u64),
            series_only: request.series_only,
            projection,
            epoch,
            committed: match read {
                crate::ReadAt::Follower { committed } => Some(committed),
                crate::ReadAt::Leader | crate::ReadAt::OnlyFollower => None,
            },
            at_follower: read != crate::ReadAt::Leader,
        },
    )
}

pub fn read_scan(scan: fb::Scan<'_>) -> Result<(RegionId, ScanRequest), ConvertError> {
    let matchers = scan
        .matchers()
        .iter()
        .map(|matcher| {
            Ok(TagMatcher {
                tag: matcher.tag().to_string(),
                op: read_match_op(matcher.op())?,
                value: matcher.value().to_string(),
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    Ok((
        read_region_id(scan.region()),
        ScanRequest {
            start: scan.start(),
            end: scan.end(),
            matchers,
            // A limit past what this machine can address is no limit at all.
            limit: scan
                .limit()
                .map(|limit| usize::try_from(limit).unwrap_or(usize::MAX)),
            series_only: scan.series_only(),
            projection: scan.projection().map(read_field_columns).transpose()?,
        },
    ))
}

/// An error's kind on the wire.
pub fn error_kind(kind: ErrorKind) -> fb::ErrorKind {
    match kind {
        ErrorKind::Invalid => fb::ErrorKind::InvalidRequest,
        ErrorKind::NotFound => fb::ErrorKind::NotFound,
        ErrorKind::WrongRoute => fb::ErrorKind::WrongRoute,
        ErrorKind::Quarantined => fb::ErrorKind::Quarantined,
        ErrorKind::Overloaded => fb::ErrorKind::Overloaded,
        ErrorKind::Unavailable => fb::ErrorKind::Unavailable,
        ErrorKind::Timeout => fb::ErrorKind::Timeout,
        ErrorKind::Corrupt => fb::ErrorKind::Corrupt,
        ErrorKind::Internal => fb::ErrorKind::Internal,
    }
}

/// An error reply as an error. A kind this build does not know becomes `Internal`,
/// keeping the peer's message.
pub fn read_error(error: fb::Error<'_>) -> RegionError {
    let kind = match error.kind() {
        fb::ErrorKind::InvalidRequest | fb::ErrorKind::Refused => ErrorKind::Invalid,
        fb::ErrorKind::NotFound => ErrorKind::NotFound,
        fb::ErrorKind::WrongRoute => ErrorKind::WrongRoute,
        fb::ErrorKind::Quarantined => ErrorKind::Quarantined,
        fb::ErrorKind::Overloaded => ErrorKind::Overloaded,
        fb::ErrorKind::Unavailable => ErrorKind::Unavailable,
        fb::ErrorKind::Timeout => ErrorKind::Timeout,
        fb::ErrorKind::Corrupt => ErrorKind::Corrupt,
        _ => ErrorKind::Internal,
    };
    RegionError::new(kind, error.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_crosses_the_wire_unchanged() {
        for kind in ErrorKind::ALL {
            let mut builder = FlatBufferBuilder::new();
            let message = builder.create_string("what and where");
            let table = fb::Error::create(
                &mut builder,
                &fb::ErrorArgs {
                    kind: error_kind(kind),
                    message: Some(message),
                },
            );
            builder.finish_minimal(table);
            let read = flatbuffers::root::<fb::Error>(builder.finished_data()).unwrap();
            assert_eq!(read_error(read), RegionError::new(kind, "what and where"));
        }
    }

    fn schema() -> RegionSchema {
        RegionSchema {
            tags: vec!["host".into(), "dc".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Microsecond,
            fields: vec![
                FieldColumn {
                    name: "value".into(),
                    field_type: FieldType::Float64,
                },
                FieldColumn {
                    name: "up".into(),
                    field_type: FieldType::Boolean,
                },
            ],
        }
    }

    #[test]
    fn schemas_and_scans_round_trip() {
        let mut builder = FlatBufferBuilder::new();
        let offset = region_schema(&mut builder, &schema());
        builder.finish_minimal(offset);
        let table = flatbuffers::root::<fb::RegionSchema>(builder.finished_data()).unwrap();
        assert_eq!(read_region_schema(table).unwrap(), schema());

        let request = ScanRequest {
            start: -3,
            end: 99,
            matchers: vec![TagMatcher {
                tag: "host".into(),
                op: MatchOp::NotRegex,
                value: "a.*".into(),
            }],
            limit: Some(5),
            series_only: true,
            projection: Some(vec![
                FieldColumn {
                    name: "value".into(),
                    field_type: FieldType::Float64,
                },
                FieldColumn {
                    name: "count".into(),
                    field_type: FieldType::Int64,
                },
            ]),
        };
        let empty_projection = ScanRequest {
            projection: Some(Vec::new()),
            ..ScanRequest::all()
        };
        for request in [request, empty_projection, ScanRequest::all()] {
            let mut builder = FlatBufferBuilder::new();
            let offset = scan(
                &mut builder,
                RegionId::new(4, 2),
                &request,
                3,
                crate::ReadAt::Follower { committed: 8 },
            );
            builder.finish_minimal(offset);
            let table = flatbuffers::root::<fb::Scan>(builder.finished_data()).unwrap();
            assert_eq!(
                (table.epoch(), table.committed(), table.at_follower()),
                (3, Some(8), true)
            );
            assert_eq!(
                read_scan(table).unwrap(),
                (RegionId::new(4, 2), request.clone())
            );
        }
    }

    #[test]
    fn unknown_enum_values_are_named() {
        let mut builder = FlatBufferBuilder::new();
        let name = builder.create_string("x");
        let offset = fb::FieldColumn::create(
            &mut builder,
            &fb::FieldColumnArgs {
                name: Some(name),
                field_type: fb::FieldType(42),
            },
        );
        builder.finish_minimal(offset);
        let table = flatbuffers::root::<fb::FieldColumn>(builder.finished_data()).unwrap();
        let error = read_field_column(table).unwrap_err();
        assert!(
            error.0.contains("\"x\"") && error.0.contains("42"),
            "{error}"
        );
    }
}
