//! `POST /v1/sql`: statements over HTTP, answered in JSON.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use metronome_core::rt::time;
use serde_json::{json, Value as Json};

use super::{status_code, Frontend, Params};
use crate::promql::value::format_float;
use crate::sql::SqlOutput;

/// `POST /v1/sql` (form field or query parameter `sql`, or the statement as a
/// `text/plain` body): every statement's output as JSON.
pub(super) async fn sql(State(frontend): State<Arc<Frontend>>, params: Params) -> Response {
    let started = time::now();
    let is_text = params
        .content_type
        .as_deref()
        .is_some_and(|v| v.starts_with("text/plain"));
    let text = match params.get("sql") {
        Some(text) => Some(text.to_string()),
        None if is_text => std::str::from_utf8(&params.body).ok().map(str::to_string),
        None => None,
    };
    match text {
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "missing parameter \"sql\""})),
        )
            .into_response(),
        Some(text) => match frontend.sql.execute(&text).await {
            Ok(outputs) => {
                let output: Vec<Json> = outputs.into_iter().map(sql_output_json).collect();
                let elapsed_ms = metronome_core::rt::time::elapsed(started).as_millis() as u64;
                axum::Json(json!({"output": output, "execution_time_ms": elapsed_ms}))
                    .into_response()
            }
            Err(error) => {
                let status = status_code(error.http_status());
                (status, axum::Json(json!({"error": error.to_string()}))).into_response()
            }
        },
    }
}

fn sql_output_json(output: SqlOutput) -> Json {
    match output {
        SqlOutput::Done {
            rows,
            expired: Some(expired),
            ..
        } => json!({
            "affectedrows": rows,
            "expired_rows": expired.rows,
            "warning": expired.message,
        }),
        SqlOutput::Done { rows, .. } => json!({"affectedrows": rows}),
        SqlOutput::Rows { schema, batches } => {
            let columns: Vec<Json> = schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "data_type": f.data_type().to_string()}))
                .collect();
            let mut rows = Vec::new();
            for batch in &batches {
                for row in 0..batch.num_rows() {
                    rows.push(Json::Array(
                        batch
                            .columns()
                            .iter()
                            .map(|column| json_cell(column.as_ref(), row))
                            .collect(),
                    ));
                }
            }
            let total = rows.len();
            json!({"records": {"schema": {"column_schemas": columns}, "rows": rows, "total_rows": total}})
        }
    }
}

/// One value as JSON: numbers and booleans as such, timestamps as integers since the
/// Unix epoch in their column's unit (the column's `data_type` names it), everything else
/// as Arrow displays it.
fn json_cell(column: &dyn arrow_array::Array, row: usize) -> Json {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Float64Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampNanosecondType, TimestampSecondType,
    };
    use arrow_schema::{DataType, TimeUnit};
    if column.is_null(row) {
        return Json::Null;
    }
    match column.data_type() {
        DataType::Boolean => json!(column.as_boolean().value(row)),
        DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => {
            let value = column.as_primitive::<Float64Type>().value(row);
            serde_json::Number::from_f64(value)
                .map_or_else(|| json!(format_float(value)), Json::Number)
        }
        DataType::Timestamp(unit, _) => json!(match unit {
            TimeUnit::Second => column.as_primitive::<TimestampSecondType>().value(row),
            TimeUnit::Millisecond => column.as_primitive::<TimestampMillisecondType>().value(row),
            TimeUnit::Microsecond => column.as_primitive::<TimestampMicrosecondType>().value(row),
            TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(row),
        }),
        DataType::Utf8 => json!(column.as_string::<i32>().value(row)),
        _ => json!(
            datafusion::arrow::util::display::array_value_to_string(column, row)
                .unwrap_or_default()
        ),
    }
}
