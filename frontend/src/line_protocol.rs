//! InfluxDB line protocol (`POST /api/v2/write`, `POST /write`): each measurement is a
//! regular table (tags → tag columns, fields → field columns, the timestamp → `ts`),
//! created on first write and widened when new tags or fields arrive.
//!
//! Tables created here keep nanoseconds, as InfluxDB does, whatever the `precision=` of
//! the write that creates them: every precision converts to nanoseconds exactly. A table
//! created by SQL keeps its declared unit: timestamps are rounded down to it, and a body
//! in which that makes two points of a series one is refused ([`crate::precision`]).
//!
//! Parsing is `influxdb-line-protocol`'s. A body is all or nothing as far as validation
//! goes: every line is parsed and checked before any row is written, and the first bad
//! line is named by its number.

use std::collections::BTreeMap;

use influxdb_line_protocol::{parse_lines, FieldValue as LineValue, ParsedLine};
use metronome_catalog::{check_name, TableKind};
use metronome_core::data::{FieldColumn, FieldType, RegionSchema, Row, TimeUnit, Value};
use metronome_core::error::Error;

use crate::precision::{first_merged, merged_message, round_to};

use crate::table_store::{NewTable, TableStore};

/// The time index column of tables created by line protocol.
pub const TIME_INDEX: &str = "ts";
/// Bodies larger than this are refused.
pub const BODY_BYTES_MAX: usize = 32 * 1024 * 1024;

/// The unit of the timestamps in a body (`precision=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// Parses the `precision` parameter of v1 (`n u ms s m h`) and v2 (`ns us ms s`).
    pub fn parse(text: Option<&str>) -> Result<Precision, String> {
        Ok(match text.unwrap_or("ns") {
            "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" | "µ" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            other => {
                return Err(format!(
                    "invalid precision {other:?}: use ns, us, ms, s (or n, u, m, h)"
                ))
            }
        })
    }

    /// A timestamp of this precision in nanoseconds, if it fits (years 1677 to 2262).
    fn to_ns(self, value: i64) -> Option<i64> {
        let factor: i64 = match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        };
        value.checked_mul(factor)
    }
}

/// One line: its number, tag values by name, timestamp in nanoseconds, field values by
/// name.
struct Point {
    line: usize,
    tags: BTreeMap<String, String>,
    ts_ns: i64,
    fields: BTreeMap<String, Value>,
}

/// One measurement's lines, checked.
struct Measurement {
    tags: Vec<String>,
    fields: Vec<FieldColumn>,
    points: Vec<Point>,
}

fn field_type(value: &LineValue<'_>) -> FieldType {
    match value {
        LineValue::I64(_) | LineValue::U64(_) => FieldType::Int64,
        LineValue::F64(_) => FieldType::Float64,
        LineValue::String(_) => FieldType::String,
        LineValue::Boolean(_) => FieldType::Boolean,
    }
}

fn field_value(value: &LineValue<'_>, line: usize, name: &str) -> Result<Value, Error> {
    Ok(match value {
        LineValue::I64(v) => Value::Int64(*v),
        LineValue::U64(v) => Value::Int64(i64::try_from(*v).map_err(|_| {
            Error::invalid(format!(
                "line {line}: field {name:?} = {v}u does not fit a signed 64-bit integer"
            ))
        })?),
        LineValue::F64(v) => Value::Float64(*v),
        LineValue::String(v) => Value::String(v.to_string()),
        LineValue::Boolean(v) => Value::Boolean(*v),
    })
}

/// Parses and checks a body; groups its points by measurement.
fn parse(
    body: &str,
    precision: Precision,
    now_ns: i64,
) -> Result<BTreeMap<String, Measurement>, Error> {
    let mut measurements: BTreeMap<String, Measurement> = BTreeMap::new();
    for (index, parsed) in parse_lines(body).enumerate() {
        let line = index + 1;
        let parsed: ParsedLine<'_> =
            parsed.map_err(|error| Error::invalid(format!("line {line}: {error}")))?;
        let table = parsed.series.measurement.to_string();
        check_name("measurement", &table)
            .map_err(|error| Error::invalid(format!("line {line}: {error}")))?;
        let ts_ns = match parsed.timestamp {
            None => now_ns,
            Some(value) => precision.to_ns(value).ok_or_else(|| {
                Error::invalid(format!(
                    "line {line}: timestamp {value} is out of range (nanoseconds from 1677 \
                     to 2262)"
                ))
            })?,
        };
        let entry = measurements
            .entry(table.clone())
            .or_insert_with(|| Measurement {
                tags: Vec::new(),
                fields: Vec::new(),
                points: Vec::new(),
            });
        let mut tags = BTreeMap::new();
        for (key, value) in parsed.series.tag_set.iter().flatten() {
            let key = key.to_string();
            check_name("tag", &key)
                .map_err(|error| Error::invalid(format!("line {line}: {error}")))?;
            if !entry.tags.contains(&key) {
                entry.tags.push(key.clone());
            }
            tags.insert(key, value.to_string());
        }
        let mut fields = BTreeMap::new();
        for (key, value) in &parsed.field_set {
            let key = key.to_string();
            check_name("field", &key)
                .map_err(|error| Error::invalid(format!("line {line}: {error}")))?;
            if tags.contains_key(&key) || key == TIME_INDEX {
                return Err(Error::invalid(format!(
                    "line {line}: field {key:?} collides with a tag or the time index"
                )));
            }
            let wanted = field_type(value);
            match entry.fields.iter().find(|f| f.name == key) {
                Some(existing) if existing.field_type != wanted => {
                    return Err(Error::invalid(format!(
                        "line {line}: field {key:?} of {table} is {:?} in this body, the line \
                         has {wanted:?}",
                        existing.field_type
                    )))
                }
                Some(_) => {}
                None => entry.fields.push(FieldColumn {
                    name: key.clone(),
                    field_type: wanted,
                }),
            }
            fields.insert(key.clone(), field_value(value, line, &key)?);
        }
        entry.points.push(Point {
            line,
            tags,
            ts_ns,
            fields,
        });
    }
    Ok(measurements)
}

/// The points with those of one series at one time merged into the first, field by
/// field, the later value winning (as InfluxDB merges them); the merged point keeps the
/// first's line.
fn merge_same_points(points: Vec<Point>) -> Vec<Point> {
    let mut first: std::collections::HashMap<(BTreeMap<String, String>, i64), usize> =
        std::collections::HashMap::with_capacity(points.len());
    let mut out: Vec<Point> = Vec::with_capacity(points.len());
    for point in points {
        match first.entry((point.tags.clone(), point.ts_ns)) {
            std::collections::hash_map::Entry::Occupied(at) => {
                out[*at.get()].fields.extend(point.fields);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(out.len());
                out.push(point);
            }
        }
    }
    out
}

/// Writes a line-protocol body to `database`; returns the number of points stored (points
/// of one series at one time count once).
/// Lines without a timestamp are at `now_ns`.
pub async fn write(
    tables: &TableStore,
    database: &str,
    body: &str,
    precision: Precision,
    now_ns: i64,
) -> Result<usize, Error> {
    if body.len() > BODY_BYTES_MAX {
        return Err(Error::invalid(format!(
            "the body has {} bytes, the limit is {BODY_BYTES_MAX}",
            body.len()
        )));
    }
    let measurements = parse(body, precision, now_ns)?;
    // Every table first, so that a schema conflict refuses the body before any write.
    let mut tables_now = Vec::new();
    for (name, measurement) in &measurements {
        let table = tables.table(database, name);
        let table = match table {
            None => {
                let mut tags = measurement.tags.clone();
                tags.sort();
                let mut fields = measurement.fields.clone();
                fields.sort_by(|a, b| a.name.cmp(&b.name));
                let schema = RegionSchema {
                    tags,
                    time_index: TIME_INDEX.to_string(),
                    time_unit: TimeUnit::Nanosecond,
                    fields,
                };
                tables
                    .create_table(
                        database,
                        NewTable {
                            name: name.to_string(),
                            schema,
                            ttl_ms: None,
                            partitions: 1,
                            partition_columns: Vec::new(),
                            column_order: Vec::new(),
                            if_not_exists: true,
                            replicas: None,
                        },
                    )
                    .await?;
                tables.table(database, name).ok_or_else(|| {
                    Error::internal(format!("table {name} vanished after its creation"))
                })?
            }
            Some(table) => table,
        };
        if !matches!(table.kind, TableKind::Regular { .. }) {
            return Err(Error::invalid(format!(
                "{name} is a Prometheus metric; line protocol cannot write to it"
            )));
        }
        if table.schema.time_index != TIME_INDEX {
            return Err(Error::invalid(format!(
                "table {name} has time index {:?}; line protocol writes {TIME_INDEX:?}",
                table.schema.time_index
            )));
        }
        let mut new_tags: Vec<String> = measurement
            .tags
            .iter()
            .filter(|tag| !table.schema.tags.contains(tag))
            .cloned()
            .collect();
        new_tags.sort();
        let mut new_fields = Vec::new();
        for field in &measurement.fields {
            match table.schema.fields.iter().find(|f| f.name == field.name) {
                Some(existing) if existing.field_type != field.field_type => {
                    return Err(Error::invalid(format!(
                        "field {:?} of table {name} is {:?}; the body writes {:?}",
                        field.name, existing.field_type, field.field_type
                    )))
                }
                Some(_) => {}
                None => new_fields.push(field.clone()),
            }
        }
        new_fields.sort_by(|a, b| a.name.cmp(&b.name));
        let table = if new_tags.is_empty() && new_fields.is_empty() {
            table
        } else {
            tables
                .add_columns(database, name, new_tags, new_fields)
                .await?;
            tables.table(database, name).ok_or_else(|| {
                Error::internal(format!("table {name} vanished while adding columns"))
            })?
        };
        tables_now.push(table);
    }
    // Every timestamp in its table's unit before any write, so that a body is refused
    // whole rather than stored in part.
    let mut batches = Vec::with_capacity(tables_now.len());
    for (table, (name, measurement)) in tables_now.iter().zip(measurements) {
        let schema = &table.schema;
        let unit = schema.time_unit;
        let mut rows = Vec::with_capacity(measurement.points.len());
        let mut written_ns = Vec::with_capacity(measurement.points.len());
        let mut lines = Vec::with_capacity(measurement.points.len());
        for mut point in merge_same_points(measurement.points) {
            let ts = round_to(unit, i128::from(point.ts_ns))
                .map_err(|error| Error::invalid(format!("line {}: {error}", point.line)))?;
            written_ns.push(i128::from(point.ts_ns));
            lines.push(point.line);
            rows.push(Row {
                tags: schema
                    .tags
                    .iter()
                    .map(|tag| point.tags.remove(tag).unwrap_or_default())
                    .collect(),
                ts,
                fields: schema
                    .fields
                    .iter()
                    .map(|field| point.fields.remove(&field.name).unwrap_or(Value::Null))
                    .collect(),
            });
        }
        if let Some((first, second)) = first_merged(&rows, &written_ns) {
            return Err(Error::invalid(merged_message(
                &format!("lines {} and {}", lines[first], lines[second]),
                &name,
                unit,
                written_ns[first],
                written_ns[second],
            )));
        }
        batches.push((table, rows));
    }
    let mut written = 0;
    for (table, rows) in batches {
        written += tables.write(table, rows).await?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_group_by_measurement_with_types_and_precision() {
        let body = "cpu,host=a,dc=eu usage=0.5,cores=4i 1700000000000000000\n\
                    cpu,host=b usage=0.7,up=true 1700000001000000000\n\
                    mem,host=a free=\"lots\"\n";
        let parsed = parse(body, Precision::Nanoseconds, 42).unwrap();
        let cpu = &parsed["cpu"];
        assert_eq!(cpu.tags, ["host", "dc"]);
        let types: Vec<(&str, FieldType)> = cpu
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.field_type))
            .collect();
        assert_eq!(
            types,
            [
                ("usage", FieldType::Float64),
                ("cores", FieldType::Int64),
                ("up", FieldType::Boolean)
            ]
        );
        assert_eq!(cpu.points[1].ts_ns, 1_700_000_001_000_000_000);
        assert_eq!(
            parsed["mem"].points[0].ts_ns, 42,
            "a line without a timestamp is now"
        );
        let seconds = parse("m v=1 1700000000", Precision::Seconds, 0).unwrap();
        assert_eq!(seconds["m"].points[0].ts_ns, 1_700_000_000_000_000_000);
        let micros = parse("m v=1 -3", Precision::Microseconds, 0).unwrap();
        assert_eq!(micros["m"].points[0].ts_ns, -3_000);
    }

    #[test]
    fn points_of_one_series_at_one_time_merge_field_by_field() {
        let parsed = parse(
            "m,host=a x=1 100\nm,host=b x=5 100\nm,host=a y=2 100\nm,host=a x=3 100\nm,host=a x=4 101",
            Precision::Nanoseconds,
            0,
        )
        .unwrap();
        let points = merge_same_points(parsed.into_values().next().unwrap().points);
        type Summary<'a> = (usize, &'a str, i64, Vec<(&'a str, &'a Value)>);
        let summary: Vec<Summary<'_>> = points
            .iter()
            .map(|p| {
                (
                    p.line,
                    p.tags["host"].as_str(),
                    p.ts_ns,
                    p.fields.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    1,
                    "a",
                    100,
                    vec![("x", &Value::Float64(3.0)), ("y", &Value::Float64(2.0))]
                ),
                (2, "b", 100, vec![("x", &Value::Float64(5.0))]),
                (5, "a", 101, vec![("x", &Value::Float64(4.0))]),
            ]
        );
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        for (body, expected) in [
            ("cpu usage=1\ncpu,host=a", "line 2"),
            ("cpu v=1\ncpu v=1i", "line 2: field \"v\""),
            ("cpu-load v=1", "cpu-load"),
            ("cpu ts=1", "time index"),
            ("cpu v=1 99999999999999999", "out of range"),
        ] {
            let precision = if body.contains("9999") {
                Precision::Hours
            } else {
                Precision::Nanoseconds
            };
            let error = parse(body, precision, 0).err().expect(body).to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
        assert!(Precision::parse(Some("fortnight")).is_err());
    }
}
