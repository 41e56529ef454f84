//! `INSERT INTO t [(columns)] VALUES (…), (…)`: rows of literals, `$n` parameters of the
//! extended query protocol and constant expressions (evaluated by DataFusion) turned into
//! region rows.
//!
//! The time index takes a timestamp (text such as `'2024-01-01 00:00:00.000500'`, a
//! `TIMESTAMP` value or parameter) rounded down to the table's unit, or an integer in
//! the table's unit. An INSERT in which rounding makes two rows of a series one is
//! refused ([`crate::precision`]); one that gives a (series, ts) twice keeps the last
//! and counts one row.

use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{Expr, Insert, SetExpr, TableObject, UnaryOperator, Value};
use metronome_catalog::{Table, TableKind};
use metronome_core::data::{FieldType, Row, TimeUnit, Value as FieldValue};

use crate::precision::{first_merged, merged_message, round_to, series};

use super::ddl::normalize;
use super::SqlError;

/// Rows one INSERT may carry.
const ROWS_MAX: usize = 1_000_000;

/// The table an INSERT writes to.
pub fn target(insert: &Insert) -> Result<String, SqlError> {
    match &insert.table {
        TableObject::TableName(name) => match name.0.as_slice() {
            [part] => part
                .as_ident()
                .map(normalize)
                .ok_or_else(|| SqlError::Invalid(format!("invalid table name {name}"))),
            _ => Err(SqlError::Invalid(format!(
                "table {name} names a schema; only the current database is supported"
            ))),
        },
        other => Err(SqlError::Invalid(format!("cannot insert into {other}"))),
    }
}

/// What a column of the SQL view of a table is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColumnRole {
    Tag(usize),
    TimeIndex,
    Field(usize, FieldType),
}

/// The columns of a table in SQL order (as declared; see [`sql_column_order`]) with
/// their roles.
pub fn columns(table: &Table) -> Vec<(String, ColumnRole)> {
    let schema = &table.schema;
    sql_column_order(table)
        .into_iter()
        .map(|name| {
            let role = if let Some(i) = schema.tags.iter().position(|tag| *tag == name) {
                ColumnRole::Tag(i)
            } else if let Some(i) = schema.fields.iter().position(|f| f.name == name) {
                ColumnRole::Field(i, schema.fields[i].field_type)
            } else {
                ColumnRole::TimeIndex
            };
            (name, role)
        })
        .collect()
}

/// A table's column names in the order SQL shows them: as declared in `CREATE TABLE`
/// (later columns at the end); for tables without a declared order (metrics, line
/// protocol), tags, then the time index, then fields.
pub fn sql_column_order(table: &Table) -> Vec<String> {
    if let TableKind::Regular { column_order, .. } = &table.kind {
        if !column_order.is_empty() {
            return column_order.clone();
        }
    }
    let schema = &table.schema;
    schema
        .tags
        .iter()
        .chain([&schema.time_index])
        .chain(schema.fields.iter().map(|f| &f.name))
        .cloned()
        .collect()
}

/// A literal of an INSERT, or the parameter it names.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Number(String),
    Text(String),
    Boolean(bool),
    Timestamp(i64, TimeUnit),
}

/// Evaluates a constant expression of an INSERT that is not a plain literal (`now()`,
/// `1 + 1`, `CAST(…)`, `to_timestamp(…)`); see [`super::SqlEngine`].
pub type Evaluate<'a> = dyn FnMut(&Expr) -> Result<ScalarValue, SqlError> + 'a;

fn literal(
    expr: &Expr,
    params: &[ScalarValue],
    evaluate: &mut Evaluate,
) -> Result<Literal, SqlError> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::Null => Ok(Literal::Null),
            Value::Number(number, _) => Ok(Literal::Number(number.to_string())),
            Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => {
                Ok(Literal::Text(text.clone()))
            }
            Value::Boolean(value) => Ok(Literal::Boolean(*value)),
            Value::Placeholder(name) => {
                let index = name
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| (1..=params.len()).contains(n))
                    .ok_or_else(|| {
                        SqlError::Invalid(format!(
                            "parameter {name} has no value ({} were bound)",
                            params.len()
                        ))
                    })?;
                Ok(scalar_literal(&params[index - 1]))
            }
            other => Err(SqlError::Invalid(format!("unsupported value {other}"))),
        },
        // A negative number stays the text it is, so that an integer keeps every digit.
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: inner,
        } if matches!(inner.as_ref(), Expr::Value(value) if matches!(value.value, Value::Number(..))) => {
            match literal(inner, params, evaluate)? {
                Literal::Number(number) => Ok(Literal::Number(format!("-{number}"))),
                _ => Err(SqlError::Invalid(format!("cannot negate {inner}"))),
            }
        }
        // A parameter with a cast (`$1::timestamp`) takes the column's type anyway.
        Expr::Cast { expr: inner, .. } | Expr::Nested(inner) if matches!(inner.as_ref(), Expr::Value(value) if matches!(value.value, Value::Placeholder(_))) => {
            literal(inner, params, evaluate)
        }
        other => Ok(scalar_literal(&evaluate(other)?)),
    }
}

fn scalar_literal(value: &ScalarValue) -> Literal {
    if value.is_null() {
        return Literal::Null;
    }
    match value {
        ScalarValue::Boolean(Some(v)) => Literal::Boolean(*v),
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => Literal::Text(v.clone()),
        ScalarValue::TimestampSecond(Some(v), _) => Literal::Timestamp(*v, TimeUnit::Second),
        ScalarValue::TimestampMillisecond(Some(v), _) => {
            Literal::Timestamp(*v, TimeUnit::Millisecond)
        }
        ScalarValue::TimestampMicrosecond(Some(v), _) => {
            Literal::Timestamp(*v, TimeUnit::Microsecond)
        }
        ScalarValue::TimestampNanosecond(Some(v), _) => {
            Literal::Timestamp(*v, TimeUnit::Nanosecond)
        }
        other => Literal::Number(other.to_string()),
    }
}

/// A timestamp written as text, in nanoseconds since the epoch (exact, whatever its
/// range): RFC 3339, or `YYYY-MM-DD[ HH:MM:SS[.fffffffff]]` in UTC.
fn parse_timestamp_ns(text: &str) -> Option<i128> {
    let time = if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        time.naive_utc()
    } else {
        let formats = [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S",
        ];
        match formats
            .iter()
            .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        {
            Some(time) => time,
            None => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)?,
        }
    };
    let time = time.and_utc();
    Some(i128::from(time.timestamp()) * 1_000_000_000 + i128::from(time.timestamp_subsec_nanos()))
}

/// A time-index value as written, in nanoseconds: an integer is in the table's `unit`.
fn written_ns(value: &Literal, unit: TimeUnit) -> Option<i128> {
    match value {
        Literal::Number(text) | Literal::Text(text) => match text.parse::<i64>() {
            Ok(integer) => Some(unit.to_ns(integer)),
            Err(_) if matches!(value, Literal::Text(_)) => parse_timestamp_ns(text),
            Err(_) => None,
        },
        Literal::Timestamp(value, unit) => Some(unit.to_ns(*value)),
        Literal::Null | Literal::Boolean(_) => None,
    }
}

/// The rows an INSERT carries, shaped to the table's schema.
pub fn rows(
    insert: &Insert,
    table: &Table,
    params: &[ScalarValue],
    evaluate: &mut Evaluate,
) -> Result<Vec<Row>, SqlError> {
    let schema = &table.schema;
    let all = columns(table);
    let targets: Vec<(String, ColumnRole)> = if insert.columns.is_empty() {
        all.clone()
    } else {
        insert
            .columns
            .iter()
            .map(|name| {
                let name = match name.0.as_slice() {
                    [part] => part.as_ident().map(normalize).unwrap_or_default(),
                    _ => name.to_string(),
                };
                all.iter()
                    .find(|(column, _)| *column == name)
                    .cloned()
                    .ok_or_else(|| SqlError::Invalid(format!("column {name:?} does not exist")))
            })
            .collect::<Result<_, _>>()?
    };
    if !targets
        .iter()
        .any(|(_, role)| *role == ColumnRole::TimeIndex)
    {
        return Err(SqlError::Invalid(format!(
            "INSERT must give the time index column {:?}",
            schema.time_index
        )));
    }
    let Some(source) = &insert.source else {
        return Err(SqlError::Invalid("INSERT needs VALUES".to_string()));
    };
    let SetExpr::Values(values) = source.body.as_ref() else {
        return Err(SqlError::Invalid(
            "only INSERT … VALUES is supported, not INSERT … SELECT".to_string(),
        ));
    };
    if values.rows.len() > ROWS_MAX {
        return Err(SqlError::Invalid(format!(
            "{} rows in one INSERT; the limit is {ROWS_MAX}",
            values.rows.len()
        )));
    }
    let unit = schema.time_unit;
    let mut out = Vec::with_capacity(values.rows.len());
    let mut written = Vec::with_capacity(values.rows.len());
    for (row_index, row) in values.rows.iter().enumerate() {
        let exprs = &row.content;
        if exprs.len() != targets.len() {
            return Err(SqlError::Invalid(format!(
                "row {} has {} values for {} columns",
                row_index + 1,
                exprs.len(),
                targets.len()
            )));
        }
        let mut tags = vec![String::new(); schema.tags.len()];
        let mut ts: Option<(i128, i64)> = None;
        let mut fields = vec![FieldValue::Null; schema.fields.len()];
        for ((column, role), expr) in targets.iter().zip(exprs) {
            let value = literal(expr, params, evaluate)?;
            let wrong = |expected: &str| {
                SqlError::Invalid(format!(
                    "row {}, column {column:?}: expected {expected}, got {expr}",
                    row_index + 1
                ))
            };
            match (*role, value) {
                (ColumnRole::Tag(i), Literal::Text(text)) => tags[i] = text,
                (ColumnRole::Tag(_), Literal::Null) => {}
                (ColumnRole::Tag(i), Literal::Number(text)) => tags[i] = text,
                (ColumnRole::Tag(_), _) => return Err(wrong("a string")),
                (ColumnRole::TimeIndex, Literal::Null) => {}
                (ColumnRole::TimeIndex, value) => {
                    let ns = written_ns(&value, unit).ok_or_else(|| wrong("a timestamp"))?;
                    let rounded = round_to(unit, ns).map_err(|error| SqlError::Rejected {
                        sqlstate: "22008",
                        message: format!("row {}, column {column:?}: {error}", row_index + 1),
                    })?;
                    ts = Some((ns, rounded));
                }
                (ColumnRole::Field(_, _), Literal::Null) => {}
                (ColumnRole::Field(i, FieldType::Float64), Literal::Number(text)) => {
                    fields[i] = FieldValue::Float64(text.parse().map_err(|_| wrong("a number"))?)
                }
                (ColumnRole::Field(i, FieldType::Int64), Literal::Number(text)) => {
                    fields[i] = FieldValue::Int64(text.parse().map_err(|_| wrong("an integer"))?)
                }
                (ColumnRole::Field(i, FieldType::String), Literal::Text(text)) => {
                    fields[i] = FieldValue::String(text)
                }
                (ColumnRole::Field(i, FieldType::Boolean), Literal::Boolean(value)) => {
                    fields[i] = FieldValue::Boolean(value)
                }
                (ColumnRole::Field(_, field_type), _) => {
                    return Err(wrong(&format!("{field_type:?}")))
                }
            }
        }
        let (ns, ts) = ts.ok_or_else(|| {
            SqlError::Invalid(format!(
                "row {}: the time index {:?} must not be NULL",
                row_index + 1,
                schema.time_index
            ))
        })?;
        written.push(ns);
        out.push(Row { tags, ts, fields });
    }
    if let Some((first, second)) = first_merged(&out, &written) {
        return Err(SqlError::Rejected {
            sqlstate: "22000",
            message: merged_message(
                &format!("rows {} and {}", first + 1, second + 1),
                &table.name,
                unit,
                written[first],
                written[second],
            ),
        });
    }
    Ok(last_of_each_key(out))
}

/// The rows with the last of each (series, ts) the INSERT gives more than once: the
/// region would keep only that one, and the INSERT counts what is kept.
fn last_of_each_key(rows: Vec<Row>) -> Vec<Row> {
    let mut last: std::collections::HashMap<(&[String], i64), usize> =
        std::collections::HashMap::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        last.insert((series(&row.tags), row.ts), index);
    }
    if last.len() == rows.len() {
        return rows;
    }
    let keep: Vec<bool> = (0..rows.len())
        .map(|index| last[&(series(&rows[index].tags), rows[index].ts)] == index)
        .collect();
    rows.into_iter()
        .zip(keep)
        .filter_map(|(row, keep)| keep.then_some(row))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use metronome_core::data::{FieldColumn, RegionSchema};

    /// `cpu (ts TIMESTAMP TIME INDEX, usage DOUBLE, host STRING PRIMARY KEY, ok BOOLEAN)`.
    fn table() -> Table {
        Table {
            id: 1,
            database: "public".into(),
            name: "cpu".into(),
            schema: schema(),
            ttl_ms: None,
            kind: TableKind::Regular {
                regions: Vec::new(),
                partition_columns: Vec::new(),
                column_order: vec!["ts".into(), "usage".into(), "host".into(), "ok".into()],
            },
        }
    }

    fn schema() -> RegionSchema {
        RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![
                FieldColumn {
                    name: "usage".into(),
                    field_type: FieldType::Float64,
                },
                FieldColumn {
                    name: "ok".into(),
                    field_type: FieldType::Boolean,
                },
            ],
        }
    }

    fn insert_rows(sql: &str, params: &[ScalarValue]) -> Result<Vec<Row>, SqlError> {
        let statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        let Statement::Insert(insert) = &statements[0] else {
            panic!("not an insert")
        };
        rows(insert, &table(), params, &mut |expr| {
            // What DataFusion would make of the constant expressions these tests use.
            Ok(match expr.to_string().as_str() {
                "1 + 1" => ScalarValue::Int64(Some(2)),
                "now()" => ScalarValue::TimestampNanosecond(Some(7_000_000), None),
                other => {
                    return Err(SqlError::Invalid(format!("{other} is not constant")));
                }
            })
        })
    }

    #[test]
    fn values_and_parameters_become_rows() {
        let rows = insert_rows(
            "INSERT INTO cpu (ts, host, usage) VALUES ('2024-01-01 00:00:01', 'a', -1.5), \
             (2000, $1, $2)",
            &[
                ScalarValue::Utf8(Some("b".into())),
                ScalarValue::Float64(Some(2.5)),
            ],
        )
        .unwrap();
        assert_eq!(rows[0].tags, ["a"]);
        assert_eq!(rows[0].ts, 1_704_067_201_000);
        assert_eq!(
            rows[0].fields,
            [FieldValue::Float64(-1.5), FieldValue::Null]
        );
        assert_eq!(rows[1].tags, ["b"]);
        assert_eq!(rows[1].ts, 2000);
        assert_eq!(rows[1].fields[0], FieldValue::Float64(2.5));
        // Without a column list, values follow the declared column order.
        let all = insert_rows("INSERT INTO cpu VALUES (5, 0.5, 'h', true)", &[]).unwrap();
        assert_eq!((all[0].ts, &all[0].tags[..]), (5, &["h".to_string()][..]));
        assert_eq!(
            all[0].fields,
            [FieldValue::Float64(0.5), FieldValue::Boolean(true)]
        );
    }

    #[test]
    fn bad_rows_name_the_row_and_column() {
        for (sql, expected) in [
            (
                "INSERT INTO cpu (host, usage) VALUES ('a', 1)",
                "time index",
            ),
            ("INSERT INTO cpu (ts, nope) VALUES (1, 1)", "nope"),
            (
                "INSERT INTO cpu (ts, usage) VALUES (1, 'x')",
                "row 1, column \"usage\"",
            ),
            (
                "INSERT INTO cpu (ts, usage) VALUES (1, 2), (2)",
                "row 2 has 1 values",
            ),
            ("INSERT INTO cpu (ts) VALUES ('yesterday')", "timestamp"),
            ("INSERT INTO cpu (ts) VALUES ($3)", "$3"),
            ("INSERT INTO cpu (ts) SELECT 1", "INSERT … SELECT"),
        ] {
            let error = insert_rows(sql, &[]).unwrap_err().to_string();
            assert!(error.contains(expected), "{sql}: {error}");
        }
    }
}
