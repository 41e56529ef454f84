//! Metronome's tables as DataFusion sees them: a schema provider over the catalog, and a
//! table provider per table whose scan fans out to the table's regions with the time
//! range, tag conditions and (when nothing else filters) the limit pushed down.
//!
//! Pushed-down filters are reported as `Inexact`: regions return a superset (a time range
//! widened to whole steps of the table's time unit, say) and DataFusion applies the filter again, so a
//! condition we do not understand can never change an answer.

use std::fmt;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use metronome_catalog::{metric_label, Catalog, Table, TableKind, METRIC_NAME_LABEL};
use metronome_core::data::{MatchOp, ScanRequest, TagMatcher, TimeUnit as DataTimeUnit, Value};
use metronome_wire::rows::{row_schema, rows_to_batch};

use crate::prom_store::PromStore;
use crate::sql::insert::sql_column_order;
use crate::table_store::TableStore;

/// The tables of one database, resolved against a catalog snapshot.
pub struct DatabaseSchema {
    pub database: String,
    pub catalog: Arc<Catalog>,
    pub tables: Arc<TableStore>,
    pub prom: Arc<PromStore>,
}

impl fmt::Debug for DatabaseSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseSchema({})", self.database)
    }
}

#[async_trait]
impl SchemaProvider for DatabaseSchema {
    fn table_names(&self) -> Vec<String> {
        self.catalog
            .database(&self.database)
            .map(|db| db.tables.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Ok(table) = self.catalog.table(&self.database, name) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(RegionTable {
            table: table.clone(),
            schema: Arc::new(sql_schema(table)),
            tables: self.tables.clone(),
            prom: self.prom.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.table(&self.database, name).is_ok()
    }
}

/// The schema SQL sees: a regular table's columns in their declared order (see
/// [`sql_column_order`]); a metric's labels, `ts`, `value`.
pub fn sql_schema(table: &Table) -> Schema {
    match &table.kind {
        TableKind::Regular { .. } => {
            let rows = row_schema(&table.schema);
            rows.project(&sql_permutation(table))
                .expect("the permutation names columns of the row schema")
        }
        TableKind::Metric { .. } => {
            let mut fields: Vec<Field> = table
                .schema
                .tags
                .iter()
                .map(|tag| Field::new(tag, DataType::Utf8, false))
                .collect();
            // Metric samples are Prometheus' milliseconds, whatever the physical regions
            // would allow (`PromStore` reads and writes milliseconds).
            fields.push(Field::new(
                &table.schema.time_index,
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ));
            fields.push(Field::new(
                &table.schema.fields[0].name,
                DataType::Float64,
                true,
            ));
            Schema::new(fields)
        }
    }
}

/// For each column of the SQL schema, its position in the row schema (tags, time
/// index, fields).
fn sql_permutation(table: &Table) -> Vec<usize> {
    let schema = &table.schema;
    let row_order: Vec<&String> = schema
        .tags
        .iter()
        .chain([&schema.time_index])
        .chain(schema.fields.iter().map(|f| &f.name))
        .collect();
    sql_column_order(table)
        .iter()
        .map(|name| {
            row_order
                .iter()
                .position(|column| *column == name)
                .expect("the catalog checks that the column order names every column")
        })
        .collect()
}

pub struct RegionTable {
    table: Table,
    schema: SchemaRef,
    tables: Arc<TableStore>,
    prom: Arc<PromStore>,
}

impl fmt::Debug for RegionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RegionTable({}.{})",
            self.table.database, self.table.name
        )
    }
}

/// What a scan asks of the regions, from the filters DataFusion offers; the time range
/// in the table's unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushdown {
    pub start: i64,
    pub end: i64,
    pub matchers: Vec<TagMatcher>,
}

fn column_and_literal(expr: &BinaryExpr) -> Option<(&str, Operator, &ScalarValue)> {
    match (expr.left.as_ref(), expr.right.as_ref()) {
        (Expr::Column(column), Expr::Literal(value, _)) => Some((&column.name, expr.op, value)),
        (Expr::Literal(value, _), Expr::Column(column)) => {
            Some((&column.name, expr.op.swap()?, value))
        }
        _ => None,
    }
}

/// A timestamp literal in `unit`, rounded down (saturating: a bound past the unit's
/// range is no narrower than the range).
fn timestamp_in(value: &ScalarValue, unit: DataTimeUnit) -> Option<i64> {
    let (value, literal_unit) = match value {
        ScalarValue::TimestampSecond(Some(v), _) => (*v, DataTimeUnit::Second),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, DataTimeUnit::Millisecond),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, DataTimeUnit::Microsecond),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, DataTimeUnit::Nanosecond),
        _ => return None,
    };
    Some(literal_unit.convert_floor(value, unit))
}

fn text(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => Some(v),
        _ => None,
    }
}

/// Narrows a scan with the filters it understands: comparisons of the time index (whose
/// unit is `unit`) with a timestamp, and (in)equality of a tag with a string. Others are
/// left to DataFusion.
pub fn pushdown(
    filters: &[Expr],
    time_index: &str,
    unit: DataTimeUnit,
    tags: &[String],
) -> Pushdown {
    let mut out = Pushdown {
        start: i64::MIN,
        end: i64::MAX,
        matchers: Vec::new(),
    };
    let mut narrow = |start: i64, end: i64| {
        out.start = out.start.max(start);
        out.end = out.end.min(end);
    };
    let mut matchers = Vec::new();
    for filter in filters {
        match filter {
            Expr::BinaryExpr(binary) => {
                let Some((column, op, value)) = column_and_literal(binary) else {
                    continue;
                };
                if column == time_index {
                    let Some(at) = timestamp_in(value, unit) else {
                        continue;
                    };
                    // Widened to whole steps of the unit: the filter is applied again above.
                    match op {
                        Operator::Eq => narrow(at, at.saturating_add(1)),
                        Operator::Gt | Operator::GtEq => narrow(at, i64::MAX),
                        Operator::Lt | Operator::LtEq => narrow(i64::MIN, at.saturating_add(1)),
                        _ => {}
                    }
                } else if tags.iter().any(|tag| tag == column) {
                    let Some(value) = text(value) else { continue };
                    let op = match op {
                        Operator::Eq => MatchOp::Equal,
                        Operator::NotEq => MatchOp::NotEqual,
                        _ => continue,
                    };
                    matchers.push(TagMatcher {
                        tag: column.to_string(),
                        op,
                        value: value.to_string(),
                    });
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                if let (Expr::Column(column), Expr::Literal(low, _), Expr::Literal(high, _)) =
                    (expr.as_ref(), low.as_ref(), high.as_ref())
                {
                    if column.name == time_index {
                        if let (Some(low), Some(high)) =
                            (timestamp_in(low, unit), timestamp_in(high, unit))
                        {
                            narrow(low, high.saturating_add(1));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out.matchers = matchers;
    out
}

fn internal(error: impl fmt::Display) -> DataFusionError {
    DataFusionError::External(error.to_string().into())
}

#[async_trait]
impl TableProvider for RegionTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = &self.table.schema;
        let pushed = pushdown(filters, &schema.time_index, schema.time_unit, &schema.tags);
        let batch = match &self.table.kind {
            TableKind::Regular { .. } => {
                // The fields the plan reads (tags and the time index come anyway): the
                // datanodes decode no other.
                let wanted: Vec<usize> = match projection {
                    None => (0..schema.fields.len()).collect(),
                    Some(columns) => (0..schema.fields.len())
                        .filter(|&i| {
                            columns
                                .iter()
                                .any(|&c| self.schema.field(c).name() == &schema.fields[i].name)
                        })
                        .collect(),
                };
                let request = ScanRequest {
                    start: pushed.start,
                    end: pushed.end,
                    matchers: pushed.matchers,
                    // Only without filters does the first N rows answer the query.
                    limit: if filters.is_empty() { limit } else { None },
                    series_only: false,
                    projection: Some(wanted.iter().map(|&i| schema.fields[i].clone()).collect()),
                };
                let mut rows = self
                    .tables
                    .scan(&self.table, &request)
                    .await
                    .map_err(internal)?;
                for row in &mut rows {
                    if row.fields.len() != wanted.len() {
                        return Err(internal(format!(
                            "a scan of {} asked for {} fields and returned rows of {}",
                            self.table.name,
                            wanted.len(),
                            row.fields.len()
                        )));
                    }
                    // Back to the table's shape: the fields left out are null, and the
                    // plan's projection drops them.
                    let mut fields = vec![Value::Null; schema.fields.len()];
                    for (value, &i) in row.fields.drain(..).zip(&wanted) {
                        fields[i] = value;
                    }
                    row.fields = fields;
                }
                rows_to_batch(schema, &rows)
                    .and_then(|batch| {
                        batch
                            .project(&sql_permutation(&self.table))
                            .map_err(|error| error.to_string())
                    })
                    .map_err(internal)?
            }
            TableKind::Metric { .. } => {
                // The metric store takes matchers on labels, not on their columns.
                let mut matchers: Vec<TagMatcher> = pushed
                    .matchers
                    .into_iter()
                    .map(|matcher| TagMatcher {
                        tag: metric_label(&matcher.tag).to_string(),
                        ..matcher
                    })
                    .collect();
                matchers.push(TagMatcher {
                    tag: METRIC_NAME_LABEL.to_string(),
                    op: MatchOp::Equal,
                    value: self.table.name.clone(),
                });
                let series = self
                    .prom
                    .select(&matchers, pushed.start, pushed.end)
                    .await
                    .map_err(internal)?;
                metric_batch(&self.schema, &schema.tags, &series)?
            }
        };
        let plan = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(plan)
    }
}

/// Series of a metric as rows of its logical table, whose tags are `label_columns`.
fn metric_batch(
    schema: &SchemaRef,
    label_columns: &[String],
    series: &[crate::prom_store::SeriesSamples],
) -> DfResult<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(label_columns.len() + 2);
    for column in label_columns {
        let label = metric_label(column);
        let values = series.iter().flat_map(|one| {
            let value = one
                .labels
                .iter()
                .find(|(name, _)| name == label)
                .map_or("", |(_, value)| value.as_str());
            std::iter::repeat_n(value, one.samples.len())
        });
        columns.push(Arc::new(StringArray::from(values.collect::<Vec<&str>>())));
    }
    columns.push(Arc::new(TimestampMillisecondArray::from(
        series
            .iter()
            .flat_map(|one| one.samples.iter().map(|(ts, _)| *ts))
            .collect::<Vec<i64>>(),
    )));
    columns.push(Arc::new(Float64Array::from(
        series
            .iter()
            .flat_map(|one| one.samples.iter().map(|(_, v)| *v))
            .collect::<Vec<f64>>(),
    )));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn time_ranges_and_tag_conditions_are_pushed_down() {
        let ts = |ms: i64| lit(ScalarValue::TimestampMillisecond(Some(ms), None));
        let filters = vec![
            col("ts").gt_eq(ts(1000)),
            col("ts").lt(ts(5000)),
            lit("a").eq(col("host")),
            col("dc").not_eq(lit("x")),
            col("usage").gt(lit(1.0)),
            col("ts").between(ts(0), ts(3000)),
        ];
        let tags = ["host".into(), "dc".into()];
        let pushed = pushdown(&filters, "ts", DataTimeUnit::Millisecond, &tags);
        assert_eq!((pushed.start, pushed.end), (1000, 3001));
        assert_eq!(pushed.matchers.len(), 2);
        assert_eq!(pushed.matchers[0].tag, "host");
        assert_eq!(pushed.matchers[1].op, MatchOp::NotEqual);
        let nanos = [col("ts").lt(lit(ScalarValue::TimestampNanosecond(Some(1_500_000), None)))];
        let in_ms = pushdown(&nanos, "ts", DataTimeUnit::Millisecond, &[]);
        assert_eq!(in_ms.end, 2, "widened to the whole millisecond");
        let in_us = pushdown(&nanos, "ts", DataTimeUnit::Microsecond, &[]);
        assert_eq!(in_us.end, 1_501, "in a microsecond table, microseconds");
        let seconds = [col("ts").gt_eq(lit(ScalarValue::TimestampSecond(Some(2), None)))];
        let in_ns = pushdown(&seconds, "ts", DataTimeUnit::Nanosecond, &[]);
        assert_eq!(in_ns.start, 2_000_000_000);
    }
}
