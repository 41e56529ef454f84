//! Rows as Arrow: the columnar shape in which row data leaves a region (scans) and, on
//! the network, travels as Arrow IPC. The datanode's SSTs use the same columns.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use metronome_core::data::{FieldType, RegionSchema, Row, Value};

pub fn field_data_type(field_type: FieldType) -> DataType {
    match field_type {
        FieldType::Float64 => DataType::Float64,
        FieldType::Int64 => DataType::Int64,
        FieldType::String => DataType::Utf8,
        FieldType::Boolean => DataType::Boolean,
    }
}

/// The Arrow schema of a region's rows as scans return them: tags, time index, fields.
pub fn row_schema(schema: &RegionSchema) -> Schema {
    let mut fields: Vec<Field> = schema
        .tags
        .iter()
        .map(|tag| Field::new(tag, DataType::Utf8, false))
        .collect();
    fields.push(Field::new(
        &schema.time_index,
        DataType::Timestamp(TimeUnit::Millisecond, None),
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

/// The columns of `rows` in the row schema's order.
pub fn row_columns(schema: &RegionSchema, rows: &[&Row]) -> Vec<ArrayRef> {
    let mut columns: Vec<ArrayRef> = Vec::new();
    for tag in 0..schema.tags.len() {
        columns.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.tag(tag)),
        )));
    }
    columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
        rows.iter().map(|r| r.ts),
    )));
    for (index, field) in schema.fields.iter().enumerate() {
        let values = rows.iter().map(|r| &r.fields[index]);
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
pub fn rows_to_batch(schema: &RegionSchema, rows: &[Row]) -> Result<RecordBatch, String> {
    let refs: Vec<&Row> = rows.iter().collect();
    RecordBatch::try_new(Arc::new(row_schema(schema)), row_columns(schema, &refs))
        .map_err(|e| format!("building a scan batch: {e}"))
}
