//! The data model every component shares: regions, their schemas, and rows.
//!
//! A table has tag columns (the primary key), one timestamp column (the time index) and
//! field columns. A *series* is one combination of tag values. A table is split into
//! regions; a region's rows are kept sorted by (series, timestamp), and a later write of
//! the same (series, timestamp) replaces the earlier one.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::time_unit::TimeUnit;

/// A region: partition `number` of table `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegionId {
    pub table: u32,
    pub number: u32,
}

impl RegionId {
    pub fn new(table: u32, number: u32) -> RegionId {
        RegionId { table, number }
    }

    /// The id packed into one integer (table in the high half), as stored on disk.
    pub fn as_u64(self) -> u64 {
        (u64::from(self.table) << 32) | u64::from(self.number)
    }

    pub fn from_u64(packed: u64) -> RegionId {
        RegionId {
            table: (packed >> 32) as u32,
            number: packed as u32,
        }
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.table, self.number)
    }
}

/// The type of a field column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Float64,
    Int64,
    String,
    Boolean,
}

/// A field value; `Null` where a row has no value for the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Float64(f64),
    Int64(i64),
    String(String),
    Boolean(bool),
}

impl Value {
    /// Whether this value may be stored in a column of `field_type`.
    pub fn fits(&self, field_type: FieldType) -> bool {
        matches!(
            (self, field_type),
            (Value::Null, _)
                | (Value::Float64(_), FieldType::Float64)
                | (Value::Int64(_), FieldType::Int64)
                | (Value::String(_), FieldType::String)
                | (Value::Boolean(_), FieldType::Boolean)
        )
    }

    /// Bytes this value takes in memory, for memory budgets.
    pub fn estimated_bytes(&self) -> usize {
        std::mem::size_of::<Value>()
            + match self {
                Value::String(text) => text.len(),
                _ => 0,
            }
    }
}

/// A field column of a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldColumn {
    pub name: String,
    pub field_type: FieldType,
}

/// The columns of a region: tags (the primary key, in order), the time index and its
/// unit, fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionSchema {
    pub tags: Vec<String>,
    pub time_index: String,
    /// The unit of every `ts` of the region's rows, scans and files.
    #[serde(default)]
    pub time_unit: TimeUnit,
    pub fields: Vec<FieldColumn>,
}

impl RegionSchema {
    /// This schema with only the fields of `projection`, in its order (all of them for
    /// `None`), and where each is among this schema's fields. A field this schema lacks
    /// is `None`: it reads as null, as a field added by ALTER does for rows written
    /// before (a table's region may not have caught up with its catalog yet). A field
    /// named twice, or of another type than this schema's, is an error naming it.
    pub fn project(
        &self,
        projection: Option<&[FieldColumn]>,
    ) -> Result<(RegionSchema, Vec<Option<usize>>), String> {
        let Some(columns) = projection else {
            return Ok((self.clone(), (0..self.fields.len()).map(Some).collect()));
        };
        let mut indexes = Vec::with_capacity(columns.len());
        for (position, column) in columns.iter().enumerate() {
            if columns[..position].iter().any(|c| c.name == column.name) {
                return Err(format!("projection names {:?} twice", column.name));
            }
            let index = self.fields.iter().position(|f| f.name == column.name);
            if let Some(index) = index {
                let field_type = self.fields[index].field_type;
                if field_type != column.field_type {
                    return Err(format!(
                        "projection asks for field {:?} as {:?}; it is {field_type:?}",
                        column.name, column.field_type
                    ));
                }
            }
            indexes.push(index);
        }
        let projected = RegionSchema {
            tags: self.tags.clone(),
            time_index: self.time_index.clone(),
            time_unit: self.time_unit,
            fields: columns.to_vec(),
        };
        Ok((projected, indexes))
    }

    /// Checks that column names are non-empty and unique.
    pub fn validate(&self) -> Result<(), String> {
        let mut names: Vec<&str> = self.tags.iter().map(String::as_str).collect();
        names.push(&self.time_index);
        names.extend(self.fields.iter().map(|f| f.name.as_str()));
        if names.iter().any(|name| name.is_empty()) {
            return Err("column names must not be empty".to_string());
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!("column {:?} appears twice", pair[0]));
        }
        Ok(())
    }

    /// Checks one row against the schema; the error names the column at fault.
    pub fn check_row(&self, row: &Row) -> Result<(), String> {
        if row.tags.len() > self.tags.len() {
            return Err(format!(
                "has {} tag values, the schema has only {} tags",
                row.tags.len(),
                self.tags.len()
            ));
        }
        self.check_fields(&row.fields)
    }

    /// Checks one row's fields against the schema; the error names the field at fault.
    pub fn check_fields(&self, fields: &[Value]) -> Result<(), String> {
        if fields.len() != self.fields.len() {
            return Err(format!(
                "has {} field values, the schema has {} fields",
                fields.len(),
                self.fields.len()
            ));
        }
        for (value, column) in fields.iter().zip(&self.fields) {
            if !value.fits(column.field_type) {
                return Err(format!(
                    "field {:?} is {:?}, got {value:?}",
                    column.name, column.field_type
                ));
            }
        }
        Ok(())
    }
}

/// One row: its series (tag values in schema order), timestamp in its region's
/// [`TimeUnit`], fields.
///
/// Trailing tags may be left out: a missing tag has the empty value, as a label a
/// Prometheus series lacks does. That is what lets a region gain tag columns without
/// rewriting its rows, and it is why series are compared in [`Row::canonical_tags`] form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub tags: Vec<String>,
    pub ts: i64,
    pub fields: Vec<Value>,
}

impl Row {
    /// Drops trailing empty tags, so that one series has one representation whatever
    /// number of tag columns its region had when the row was written.
    pub fn canonical_tags(&mut self) {
        trim_empty_tags(&mut self.tags);
    }

    /// The value of tag `index`; empty where the row leaves it out.
    pub fn tag(&self, index: usize) -> &str {
        self.tags.get(index).map_or("", String::as_str)
    }
    /// Bytes this row takes in memory, for memory budgets.
    pub fn estimated_bytes(&self) -> usize {
        std::mem::size_of::<Row>()
            + self
                .tags
                .iter()
                .map(|t| t.len() + std::mem::size_of::<String>())
                .sum::<usize>()
            + self
                .fields
                .iter()
                .map(Value::estimated_bytes)
                .sum::<usize>()
    }
}

/// One series' rows of a scan: its tags (trailing empty ones left out) once, then each
/// row's timestamp and fields, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRows {
    pub tags: Vec<String>,
    pub rows: Vec<(i64, Vec<Value>)>,
}

impl SeriesRows {
    /// Groups rows in (series, ts) order by series.
    pub fn group(rows: Vec<Row>) -> Vec<SeriesRows> {
        let mut out: Vec<SeriesRows> = Vec::new();
        for row in rows {
            match out.last_mut() {
                Some(last) if last.tags == row.tags => last.rows.push((row.ts, row.fields)),
                _ => out.push(SeriesRows {
                    tags: row.tags,
                    rows: vec![(row.ts, row.fields)],
                }),
            }
        }
        out
    }
}

/// Drops trailing empty values from a series' tags (see [`Row::canonical_tags`]).
pub fn trim_empty_tags(tags: &mut Vec<String>) {
    while tags.last().is_some_and(String::is_empty) {
        tags.pop();
    }
}

/// How a label matcher compares a tag's value (PromQL's `=`, `!=`, `=~`, `!~`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    Equal,
    NotEqual,
    /// A fully anchored regular expression.
    Regex,
    NotRegex,
}

/// A condition on one tag. A series without the tag has the empty value for it, as in
/// Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagMatcher {
    pub tag: String,
    pub op: MatchOp,
    pub value: String,
}

/// The exclusive end of every time range (`ScanRequest::all` reads up to it): no new row
/// may have this timestamp, or no scan would return it.
pub const TS_END: i64 = i64::MAX;

/// What a region scan returns: rows with `ts` in `start..end` (in the region's
/// [`TimeUnit`]) whose series match every matcher, in (series, ts) order, at most `limit`
/// of them, with the fields `projection` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRequest {
    pub start: i64,
    pub end: i64,
    pub matchers: Vec<TagMatcher>,
    pub limit: Option<usize>,
    /// One row per matching series instead of its samples (fields null, `ts` within the
    /// range or the start of a stored file's data there), answered from the series
    /// indexes without decoding samples. A series counts when a stored file holding it
    /// overlaps the range (as a Prometheus block does) or a memtable row lies in it.
    pub series_only: bool,
    /// The fields each row carries, in this order (see [`RegionSchema::project`]);
    /// `None` is every field in schema order. Fields left out are not decoded from
    /// stored files.
    #[serde(default)]
    pub projection: Option<Vec<FieldColumn>>,
}

impl ScanRequest {
    /// Every row.
    pub fn all() -> ScanRequest {
        ScanRequest {
            start: i64::MIN,
            end: TS_END,
            matchers: Vec::new(),
            limit: None,
            series_only: false,
            projection: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> RegionSchema {
        RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![FieldColumn {
                name: "value".into(),
                field_type: FieldType::Float64,
            }],
        }
    }

    #[test]
    fn projections_pick_fields_by_name_in_their_order() {
        let mut schema = schema();
        schema.fields.push(FieldColumn {
            name: "count".into(),
            field_type: FieldType::Int64,
        });
        let column = |name: &str, field_type| FieldColumn {
            name: name.into(),
            field_type,
        };
        let (all, indexes) = schema.project(None).unwrap();
        assert_eq!((all, indexes), (schema.clone(), vec![Some(0), Some(1)]));
        let columns = [
            column("count", FieldType::Int64),
            column("later", FieldType::String),
            column("value", FieldType::Float64),
        ];
        let (projected, indexes) = schema.project(Some(&columns)).unwrap();
        assert_eq!(indexes, [Some(1), None, Some(0)]);
        assert_eq!(projected.fields, columns);
        assert_eq!(projected.tags, schema.tags);
        assert!(schema.project(Some(&[])).unwrap().0.fields.is_empty());
        let retyped = [column("value", FieldType::Int64)];
        assert!(schema
            .project(Some(&retyped))
            .unwrap_err()
            .contains("\"value\""));
        let twice = [
            column("count", FieldType::Int64),
            column("count", FieldType::Int64),
        ];
        assert!(schema.project(Some(&twice)).unwrap_err().contains("twice"));
    }

    #[test]
    fn region_ids_pack_into_one_integer() {
        let id = RegionId::new(7, 3);
        assert_eq!(RegionId::from_u64(id.as_u64()), id);
        assert!(RegionId::new(1, u32::MAX) < RegionId::new(2, 0));
    }

    #[test]
    fn rows_are_checked_against_the_schema() {
        let schema = schema();
        assert!(schema.validate().is_ok());
        let good = Row {
            tags: vec!["a".into()],
            ts: 1,
            fields: vec![Value::Float64(1.0)],
        };
        assert!(schema.check_row(&good).is_ok());
        let wrong_type = Row {
            fields: vec![Value::String("x".into())],
            ..good.clone()
        };
        assert!(schema.check_row(&wrong_type).unwrap_err().contains("value"));
        let extra_tag = Row {
            tags: vec!["a".into(), "b".into()],
            ..good.clone()
        };
        assert!(schema.check_row(&extra_tag).unwrap_err().contains("tag"));
        let mut omitted_tag = Row {
            tags: vec!["".into()],
            ..good
        };
        assert!(schema.check_row(&omitted_tag).is_ok());
        omitted_tag.canonical_tags();
        assert!(omitted_tag.tags.is_empty());
        assert_eq!(omitted_tag.tag(0), "");
        let duplicate = RegionSchema {
            tags: vec!["ts".into()],
            ..schema
        };
        assert!(duplicate.validate().unwrap_err().contains("ts"));
    }
}
