//! Rows as Arrow: the columnar shape in which row data leaves a region (scans) and, on
//! the network, travels as Arrow IPC. The datanode's SSTs use the same columns.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray,
};
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, TimeUnit as ArrowTimeUnit};
use metronome_core::data::{
    trim_empty_tags, FieldColumn, FieldType, RegionSchema, Row, SeriesRows, TimeUnit, Value,
};

pub fn field_data_type(field_type: FieldType) -> DataType {
    match field_type {
        FieldType::Float64 => DataType::Float64,
        FieldType::Int64 => DataType::Int64,
        FieldType::String => DataType::Utf8,
        FieldType::Boolean => DataType::Boolean,
    }
}

/// Arrow's name for a time unit.
pub fn arrow_time_unit(unit: TimeUnit) -> ArrowTimeUnit {
    match unit {
        TimeUnit::Second => ArrowTimeUnit::Second,
        TimeUnit::Millisecond => ArrowTimeUnit::Millisecond,
        TimeUnit::Microsecond => ArrowTimeUnit::Microsecond,
        TimeUnit::Nanosecond => ArrowTimeUnit::Nanosecond,
    }
}

/// A time-index column: `values` in `unit`, without a time zone.
pub fn timestamp_array(unit: TimeUnit, values: Vec<i64>) -> ArrayRef {
    match unit {
        TimeUnit::Second => Arc::new(TimestampSecondArray::from(values)),
        TimeUnit::Millisecond => Arc::new(TimestampMillisecondArray::from(values)),
        TimeUnit::Microsecond => Arc::new(TimestampMicrosecondArray::from(values)),
        TimeUnit::Nanosecond => Arc::new(TimestampNanosecondArray::from(values)),
    }
}

/// The Arrow schema of a region's rows as scans return them: tags, time index (in the
/// region's unit), fields.
pub fn row_schema(schema: &RegionSchema) -> Schema {
    let mut fields: Vec<Field> = schema
        .tags
        .iter()
        .map(|tag| Field::new(tag, DataType::Utf8, false))
        .collect();
    fields.push(Field::new(
        &schema.time_index,
        DataType::Timestamp(arrow_time_unit(schema.time_unit), None),
        false,
    ));
    for field in &schema.fields {
        fields.push(Field::new(
            &field.name,
            field_data_type(field.field_type),
            true,
        ));
    }
    Schema::new(fields)
}

/// A row's parts, wherever the row lives: a [`Row`], or one row of a [`SeriesRows`]
/// under its series' shared tags.
pub trait RowView {
    /// Tag `index`; empty where the row leaves it out.
    fn tag(&self, index: usize) -> &str;
    fn tag_count(&self) -> usize;
    fn ts(&self) -> i64;
    fn fields(&self) -> &[Value];
    /// Bytes the row takes in memory, for bounding frames.
    fn estimated_bytes(&self) -> usize {
        std::mem::size_of::<Row>()
            + (0..self.tag_count())
                .map(|i| self.tag(i).len() + std::mem::size_of::<String>())
                .sum::<usize>()
            + self
                .fields()
                .iter()
                .map(Value::estimated_bytes)
                .sum::<usize>()
    }
}

impl RowView for Row {
    fn tag(&self, index: usize) -> &str {
        Row::tag(self, index)
    }
    fn tag_count(&self) -> usize {
        self.tags.len()
    }
    fn ts(&self) -> i64 {
        self.ts
    }
    fn fields(&self) -> &[Value] {
        &self.fields
    }
}

impl<R: RowView> RowView for &R {
    fn tag(&self, index: usize) -> &str {
        (**self).tag(index)
    }
    fn tag_count(&self) -> usize {
        (**self).tag_count()
    }
    fn ts(&self) -> i64 {
        (**self).ts()
    }
    fn fields(&self) -> &[Value] {
        (**self).fields()
    }
}

/// One row of a [`SeriesRows`].
#[derive(Debug, Clone, Copy)]
pub struct SeriesRow<'a> {
    pub tags: &'a [String],
    pub ts: i64,
    pub fields: &'a [Value],
}

impl SeriesRow<'_> {
    /// Every row of `series`, in order.
    pub fn all(series: &[SeriesRows]) -> Vec<SeriesRow<'_>> {
        series
            .iter()
            .flat_map(|one| {
                one.rows.iter().map(|(ts, fields)| SeriesRow {
                    tags: &one.tags,
                    ts: *ts,
                    fields,
                })
            })
            .collect()
    }
}

impl RowView for SeriesRow<'_> {
    fn tag(&self, index: usize) -> &str {
        self.tags.get(index).map_or("", String::as_str)
    }
    fn tag_count(&self) -> usize {
        self.tags.len()
    }
    fn ts(&self) -> i64 {
        self.ts
    }
    fn fields(&self) -> &[Value] {
        self.fields
    }
}

/// The columns of `rows` in the row schema's order.
pub fn row_columns<R: RowView>(schema: &RegionSchema, rows: &[R]) -> Vec<ArrayRef> {
    let mut columns: Vec<ArrayRef> = Vec::new();
    for tag in 0..schema.tags.len() {
        columns.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.tag(tag)),
        )));
    }
    columns.push(timestamp_array(
        schema.time_unit,
        rows.iter().map(|r| r.ts()).collect(),
    ));
    for (index, field) in schema.fields.iter().enumerate() {
        let values = rows.iter().map(|r| &r.fields()[index]);
        let column: ArrayRef = match field.field_type {
            FieldType::Float64 => Arc::new(
                values
                    .map(|v| {
                        if let Value::Float64(x) = v {
                            Some(*x)
                        } else {
                            None
                        }
                    })
                    .collect::<Float64Array>(),
            ),
            FieldType::Int64 => Arc::new(
                values
                    .map(|v| {
                        if let Value::Int64(x) = v {
                            Some(*x)
                        } else {
                            None
                        }
                    })
                    .collect::<Int64Array>(),
            ),
            FieldType::String => Arc::new(
                values
                    .map(|v| {
                        if let Value::String(x) = v {
                            Some(x.as_str())
                        } else {
                            None
                        }
                    })
                    .collect::<StringArray>(),
            ),
            FieldType::Boolean => Arc::new(
                values
                    .map(|v| {
                        if let Value::Boolean(x) = v {
                            Some(*x)
                        } else {
                            None
                        }
                    })
                    .collect::<BooleanArray>(),
            ),
        };
        columns.push(column);
    }
    columns
}

/// `rows` (each shaped to `schema`) as one Arrow batch in the row schema.
pub fn rows_to_batch<R: RowView>(schema: &RegionSchema, rows: &[R]) -> Result<RecordBatch, String> {
    RecordBatch::try_new(Arc::new(row_schema(schema)), row_columns(schema, rows))
        .map_err(|e| format!("building a scan batch: {e}"))
}

/// Rows in one Arrow IPC payload at most; a decoded row costs far more memory than its
/// encoded bytes, so this bounds what a frame can make a peer allocate.
pub const IPC_ROWS_MAX: usize = 1 << 20;

/// Why an Arrow IPC payload could not become rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rows payload: {0}")]
pub struct RowsError(pub String);

/// `rows` as an Arrow IPC stream in *positional* form: tag columns `tag_0..`, then the
/// time index `ts`, then field columns `field_0..`, each typed by its values. Rows carry
/// no column names, and the datanode applies them to a region's schema by position, as
/// it does in-process; this keeps a write's payload self-contained.
///
/// Every row must have the same number of fields, and a field column one type (nulls
/// fit any); rows may leave trailing tags out.
pub fn rows_to_ipc<R: RowView>(rows: &[R]) -> Result<Vec<u8>, RowsError> {
    let tags = rows.iter().map(|row| row.tag_count()).max().unwrap_or(0);
    let field_count = rows.first().map_or(0, |row| row.fields().len());
    let mut field_types = vec![FieldType::Float64; field_count];
    let mut typed = vec![false; field_count];
    for (index, row) in rows.iter().enumerate() {
        if row.fields().len() != field_count {
            return Err(RowsError(format!(
                "row {index} has {} fields, row 0 has {field_count}",
                row.fields().len()
            )));
        }
        for (column, value) in row.fields().iter().enumerate() {
            let Some(field_type) = value_type(value) else {
                continue;
            };
            if !typed[column] {
                field_types[column] = field_type;
                typed[column] = true;
            } else if field_types[column] != field_type {
                return Err(RowsError(format!(
                    "row {index} field {column} is {field_type:?}, earlier rows have {:?}",
                    field_types[column]
                )));
            }
        }
    }
    // The stream carries a region's `ts` integers as they are: the transport does not
    // know the region, so the column's Arrow unit is nominal and the reader, who asked
    // that region, reads the integers in the region's unit.
    let schema = RegionSchema {
        tags: (0..tags).map(|i| format!("tag_{i}")).collect(),
        time_index: "ts".to_string(),
        time_unit: TimeUnit::Millisecond,
        fields: field_types
            .iter()
            .enumerate()
            .map(|(i, field_type)| FieldColumn {
                name: format!("field_{i}"),
                field_type: *field_type,
            })
            .collect(),
    };
    let batch = rows_to_batch(&schema, rows).map_err(RowsError)?;
    let mut payload = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    let mut writer = StreamWriter::try_new(&mut payload, &batch.schema())
        .map_err(|error| RowsError(format!("encoding: {error}")))?;
    writer
        .write(&batch)
        .and_then(|()| writer.finish())
        .map_err(|error| RowsError(format!("encoding: {error}")))?;
    drop(writer);
    Ok(payload)
}

fn value_type(value: &Value) -> Option<FieldType> {
    match value {
        Value::Null => None,
        Value::Float64(_) => Some(FieldType::Float64),
        Value::Int64(_) => Some(FieldType::Int64),
        Value::String(_) => Some(FieldType::String),
        Value::Boolean(_) => Some(FieldType::Boolean),
    }
}

/// The rows of an Arrow IPC stream written by [`rows_to_ipc`] (or any stream of the same
/// shape: non-null UTF-8 tags, one millisecond timestamp, typed fields), each series'
/// rows grouped under its tags (rows in (series, ts) order, as scans send them); appends
/// to `out`, continuing its last series if the payload starts with more of it. Tags come
/// back without trailing empty values. Anything else is an error naming what is wrong;
/// at most [`IPC_ROWS_MAX`] rows are accepted.
pub fn ipc_to_series(payload: &[u8], out: &mut Vec<SeriesRows>) -> Result<(), RowsError> {
    decode_ipc(payload, |batch, tags, fields| {
        append_series(batch, tags, fields, out)
    })
}

/// Decodes an Arrow IPC stream of positional rows, handing each batch (with the number
/// of tag columns and the field types) to `each`.
fn decode_ipc(
    payload: &[u8],
    mut each: impl FnMut(&RecordBatch, usize, &[FieldType]) -> Result<(), RowsError>,
) -> Result<(), RowsError> {
    // Arrow's decoder asserts on some malformed inputs instead of returning an error; a
    // peer's bytes must never bring the process down, so such a panic is an error here.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut decoder = StreamDecoder::new();
        let mut buffer = Buffer::from(payload);
        let mut decoded_rows = 0usize;
        let mut layout: Option<(usize, Vec<FieldType>)> = None;
        while !buffer.is_empty() {
            let Some(batch) = decoder
                .decode(&mut buffer)
                .map_err(|error| RowsError(format!("decoding: {error}")))?
            else {
                continue;
            };
            let (tags, fields) = match &layout {
                Some(layout) => layout,
                None => layout.insert(positional_layout(&batch.schema())?),
            };
            decoded_rows += batch.num_rows();
            if decoded_rows > IPC_ROWS_MAX {
                return Err(RowsError(format!(
                    "more than {IPC_ROWS_MAX} rows in one payload"
                )));
            }
            each(&batch, *tags, fields)?;
        }
        decoder
            .finish()
            .map_err(|error| RowsError(format!("truncated stream: {error}")))?;
        Ok(())
    }))
    .unwrap_or_else(|_| {
        Err(RowsError(
            "malformed Arrow IPC stream (the decoder panicked)".to_string(),
        ))
    })
}

/// The number of tag columns and the field types of a positional row schema.
fn positional_layout(schema: &Schema) -> Result<(usize, Vec<FieldType>), RowsError> {
    let time = schema
        .fields()
        .iter()
        .position(|field| matches!(field.data_type(), DataType::Timestamp(_, _)))
        .ok_or_else(|| RowsError("no timestamp column".to_string()))?;
    let time_field = &schema.fields()[time];
    if time_field.data_type() != &DataType::Timestamp(ArrowTimeUnit::Millisecond, None) {
        return Err(RowsError(format!(
            "time column {:?} is {}, expected milliseconds without a time zone",
            time_field.name(),
            time_field.data_type()
        )));
    }
    for field in &schema.fields()[..time] {
        if field.data_type() != &DataType::Utf8 {
            return Err(RowsError(format!(
                "tag column {:?} is {}, expected Utf8",
                field.name(),
                field.data_type()
            )));
        }
    }
    let fields = schema.fields()[time + 1..]
        .iter()
        .map(|field| match field.data_type() {
            DataType::Float64 => Ok(FieldType::Float64),
            DataType::Int64 => Ok(FieldType::Int64),
            DataType::Utf8 => Ok(FieldType::String),
            DataType::Boolean => Ok(FieldType::Boolean),
            other => Err(RowsError(format!(
                "field column {:?} has unsupported type {other}",
                field.name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((time, fields))
}

/// A batch's tag columns (checked free of nulls) and time column.
fn key_columns(
    batch: &RecordBatch,
    tags: usize,
) -> Result<(Vec<&StringArray>, &arrow_array::TimestampMillisecondArray), RowsError> {
    let tag_columns: Vec<&StringArray> = (0..tags)
        .map(|index| {
            let array = batch.column(index).as_string::<i32>();
            if array.null_count() > 0 {
                return Err(RowsError(format!("tag column {index} has nulls")));
            }
            Ok(array)
        })
        .collect::<Result<_, _>>()?;
    let times = batch
        .column(tags)
        .as_primitive::<TimestampMillisecondType>();
    if times.null_count() > 0 {
        return Err(RowsError("the time column has nulls".to_string()));
    }
    Ok((tag_columns, times))
}

/// Row `index`'s fields.
fn row_fields(batch: &RecordBatch, tags: usize, fields: &[FieldType], index: usize) -> Vec<Value> {
    fields
        .iter()
        .enumerate()
        .map(|(offset, field_type)| {
            let array = batch.column(tags + 1 + offset);
            if array.is_null(index) {
                return Value::Null;
            }
            match field_type {
                FieldType::Float64 => {
                    Value::Float64(array.as_primitive::<Float64Type>().value(index))
                }
                FieldType::Int64 => Value::Int64(array.as_primitive::<Int64Type>().value(index)),
                FieldType::String => {
                    Value::String(array.as_string::<i32>().value(index).to_string())
                }
                FieldType::Boolean => Value::Boolean(array.as_boolean().value(index)),
            }
        })
        .collect()
}

/// Row `index`'s tags, trailing empty ones left out.
fn row_tags(tag_columns: &[&StringArray], index: usize) -> Vec<String> {
    let mut tags: Vec<String> = tag_columns
        .iter()
        .map(|array| array.value(index).to_string())
        .collect();
    trim_empty_tags(&mut tags);
    tags
}

fn append_series(
    batch: &RecordBatch,
    tags: usize,
    fields: &[FieldType],
    out: &mut Vec<SeriesRows>,
) -> Result<(), RowsError> {
    let (tag_columns, times) = key_columns(batch, tags)?;
    for index in 0..batch.num_rows() {
        // Compared in place: a row of the current series allocates no tags.
        let same_series =
            out.last().is_some_and(|last| {
                tag_columns.iter().enumerate().all(|(i, array)| {
                    array.value(index) == last.tags.get(i).map_or("", String::as_str)
                }) && last.tags.len() <= tag_columns.len()
            });
        let row = (times.value(index), row_fields(batch, tags, fields, index));
        if same_series {
            out.last_mut().expect("checked").rows.push(row);
        } else {
            out.push(SeriesRows {
                tags: row_tags(&tag_columns, index),
                rows: vec![row],
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn sample_rows() -> Vec<Row> {
        vec![
            Row {
                tags: vec!["a".into(), "x".into()],
                ts: -5,
                fields: vec![
                    Value::Float64(f64::from_bits(0x7ff0_0000_0000_0002)),
                    Value::Null,
                    Value::String("é".into()),
                    Value::Boolean(true),
                ],
            },
            Row {
                tags: vec!["b".into()],
                ts: i64::MAX,
                fields: vec![
                    Value::Float64(1.5),
                    Value::Int64(-7),
                    Value::Null,
                    Value::Boolean(false),
                ],
            },
        ]
    }

    /// The rows of `payload`, series by series.
    fn ipc_to_rows(payload: &[u8]) -> Result<Vec<Row>, RowsError> {
        let mut series = Vec::new();
        ipc_to_series(payload, &mut series)?;
        Ok(series
            .into_iter()
            .flat_map(|one| {
                let tags = one.tags;
                one.rows.into_iter().map(move |(ts, fields)| Row {
                    tags: tags.clone(),
                    ts,
                    fields,
                })
            })
            .collect())
    }

    #[test]
    fn rows_round_trip_through_ipc_bit_for_bit() {
        let rows = sample_rows();
        let decoded = ipc_to_rows(&rows_to_ipc(&rows).unwrap()).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[1], rows[1]);
        assert_eq!(decoded[0].tags, rows[0].tags);
        // A NaN payload (a Prometheus staleness marker, say) survives unchanged.
        match (&decoded[0].fields[0], &rows[0].fields[0]) {
            (Value::Float64(a), Value::Float64(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            other => panic!("{other:?}"),
        }
        assert_eq!(decoded[0].fields[1..], rows[0].fields[1..]);
        assert!(ipc_to_rows(&rows_to_ipc::<Row>(&[]).unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn series_decoding_groups_rows_across_payloads() {
        let row = |tags: &[&str], ts: i64| {
            let mut row = Row {
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ts,
                fields: vec![Value::Float64(ts as f64)],
            };
            row.canonical_tags();
            row
        };
        // Series a/x, then a (its second tag empty), then b/x; the second payload goes
        // on with b/x and adds c/y.
        let first = vec![
            row(&["a", "x"], 1),
            row(&["a", "x"], 2),
            row(&["a", ""], 1),
            row(&["b", "x"], 1),
        ];
        let second = vec![row(&["b", "x"], 2), row(&["c", "y"], 1)];
        let mut series = Vec::new();
        ipc_to_series(&rows_to_ipc(&first).unwrap(), &mut series).unwrap();
        ipc_to_series(&rows_to_ipc(&second).unwrap(), &mut series).unwrap();
        let all: Vec<Row> = first.into_iter().chain(second).collect();
        assert_eq!(series, SeriesRows::group(all));
        let counts: Vec<usize> = series.iter().map(|s| s.rows.len()).collect();
        assert_eq!(counts, [2, 1, 2, 1]);
        assert_eq!(series[1].tags, ["a"], "trailing empty tags are left out");
        // Corrupt input is an error here too.
        let payload = rows_to_ipc(&sample_rows()).unwrap();
        assert!(ipc_to_series(&payload[..payload.len() / 2], &mut Vec::new()).is_err());
    }

    #[test]
    fn inconsistent_rows_are_refused_before_encoding() {
        let mut rows = sample_rows();
        rows[1].fields[2] = Value::Int64(1);
        let error = rows_to_ipc(&rows).unwrap_err();
        assert!(error.to_string().contains("row 1 field 2"), "{error}");
        rows[1].fields.pop();
        let error = rows_to_ipc(&rows).unwrap_err();
        assert!(error.to_string().contains("row 1 has 3 fields"), "{error}");
    }

    #[test]
    fn corrupt_payloads_are_errors_never_panics() {
        let payload = rows_to_ipc(&sample_rows()).unwrap();
        assert!(ipc_to_rows(&payload[..payload.len() / 2]).is_err());
        let mut random = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let mut corrupt = payload.clone();
            for _ in 0..random.gen_range(1..8) {
                let at = random.gen_range(0..corrupt.len());
                corrupt[at] = random.gen();
            }
            if let Ok(rows) = ipc_to_rows(&corrupt) {
                assert!(rows.len() <= IPC_ROWS_MAX);
            }
        }
    }
}
