//! `CREATE TABLE` in Metronome's dialect: standard SQL plus a `TIME INDEX` marker on the
//! timestamp column (`ts TIMESTAMP TIME INDEX`, or a `TIME INDEX (ts)` constraint),
//! `PRIMARY KEY (…)` naming the tag columns, an optional partition rule
//! `PARTITION BY HASH (tag, …) PARTITIONS n` after the column list, and
//! `WITH (ttl = '7d', partitions = 4)`.
//!
//! sqlparser knows neither `TIME INDEX` nor this `PARTITION` clause, so
//! [`strip_extensions`] removes both at the token level (remembering what they said)
//! before the statement is parsed.

use datafusion::sql::sqlparser::ast::{
    ColumnDef, ColumnOption, CreateTable, CreateTableOptions, DataType as SqlDataType, Expr, Ident,
    SqlOption, TableConstraint, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use metronome_catalog::replicas::REPLICAS_MAX;
use metronome_catalog::REGIONS_PER_TABLE_MAX;
use metronome_core::data::{FieldColumn, FieldType, RegionSchema, TimeUnit};

use super::SqlError;
use crate::table_store::NewTable;

/// What [`strip_extensions`] took out of a statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub time_index: Option<String>,
    pub partition: Option<PartitionClause>,
}

/// `PARTITION BY HASH (columns) [PARTITIONS count]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionClause {
    pub columns: Vec<String>,
    pub count: Option<u32>,
}

const PARTITION_SYNTAX: &str = "PARTITION BY HASH (column, …) [PARTITIONS n]";

/// An identifier as PostgreSQL (and DataFusion) resolve it: unquoted folds to lower case.
pub fn normalize(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn word_name(word: &datafusion::sql::sqlparser::tokenizer::Word) -> String {
    if word.quote_style.is_some() {
        word.value.clone()
    } else {
        word.value.to_lowercase()
    }
}

/// Removes `TIME INDEX` and the `PARTITION BY HASH` clause from a `CREATE TABLE`
/// statement's text; returns the new text and what they said.
pub fn strip_extensions(sql: &str) -> Result<(String, Extensions), SqlError> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|error| SqlError::Invalid(format!("cannot tokenize the statement: {error}")))?;
    let is_word = |token: &Token, keyword: &str| {
        matches!(token, Token::Word(word) if word.quote_style.is_none()
            && word.value.eq_ignore_ascii_case(keyword))
    };
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    let mut out = Vec::with_capacity(tokens.len());
    let mut time_index = None;
    let mut partition = None;
    let mut depth = 0usize;
    // The first word of the current column definition (at depth 1).
    let mut column_start: Option<String> = None;
    let mut expect_column = false;
    let mut skip_until = 0usize;
    for (position, &index) in significant.iter().enumerate() {
        let token = &tokens[index];
        if index < skip_until {
            continue;
        }
        match token {
            Token::LParen => {
                depth += 1;
                if depth == 1 {
                    expect_column = true;
                }
            }
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Comma if depth == 1 => expect_column = true,
            Token::Word(word) if depth == 1 && expect_column => {
                column_start = Some(if word.quote_style.is_some() {
                    word.value.clone()
                } else {
                    word.value.to_lowercase()
                });
                expect_column = false;
            }
            _ => {}
        }
        let next = significant.get(position + 1).map(|&i| &tokens[i]);
        if depth == 0 && is_word(token, "PARTITION") {
            if partition.is_some() {
                return Err(SqlError::Invalid(
                    "a table has at most one PARTITION clause".to_string(),
                ));
            }
            let at = |offset: usize| significant.get(position + offset).map(|&i| &tokens[i]);
            let syntax =
                || SqlError::Invalid(format!("the partition rule must read {PARTITION_SYNTAX}"));
            if !(at(1).is_some_and(|t| is_word(t, "BY"))
                && at(2).is_some_and(|t| is_word(t, "HASH"))
                && matches!(at(3), Some(Token::LParen)))
            {
                return Err(syntax());
            }
            let mut columns = Vec::new();
            let mut offset = 4;
            loop {
                match (at(offset), at(offset + 1)) {
                    (Some(Token::Word(word)), Some(Token::Comma)) => columns.push(word_name(word)),
                    (Some(Token::Word(word)), Some(Token::RParen)) => {
                        columns.push(word_name(word));
                        break;
                    }
                    _ => return Err(syntax()),
                }
                offset += 2;
            }
            // `offset + 1` is the closing parenthesis.
            let mut last = offset + 1;
            let mut count = None;
            if at(last + 1).is_some_and(|t| is_word(t, "PARTITIONS")) {
                let Some(Token::Number(text, _)) = at(last + 2) else {
                    return Err(syntax());
                };
                count = Some(text.parse::<u32>().map_err(|_| {
                    SqlError::Invalid(format!("PARTITIONS {text} is not a whole number"))
                })?);
                last += 2;
            }
            partition = Some(PartitionClause { columns, count });
            skip_until = significant[position + last] + 1;
            continue;
        }
        if depth == 1 && is_word(token, "TIME") && next.is_some_and(|t| is_word(t, "INDEX")) {
            if time_index.is_some() {
                return Err(SqlError::Invalid(
                    "a table has exactly one TIME INDEX column".to_string(),
                ));
            }
            let after = significant.get(position + 2).map(|&i| &tokens[i]);
            if matches!(after, Some(Token::LParen)) {
                // The constraint form, `TIME INDEX (ts)`: drop it and a comma before it.
                let column = significant.get(position + 3).map(|&i| &tokens[i]);
                let close = significant.get(position + 4).map(|&i| &tokens[i]);
                let (Some(Token::Word(column)), Some(Token::RParen)) = (column, close) else {
                    return Err(SqlError::Invalid(
                        "TIME INDEX takes one column: TIME INDEX (ts)".to_string(),
                    ));
                };
                time_index = Some(if column.quote_style.is_some() {
                    column.value.clone()
                } else {
                    column.value.to_lowercase()
                });
                while matches!(out.last(), Some(Token::Whitespace(_))) {
                    out.pop();
                }
                if matches!(out.last(), Some(Token::Comma)) {
                    out.pop();
                }
                skip_until = significant[position + 4] + 1;
                expect_column = false;
                continue;
            }
            time_index = column_start.clone();
            skip_until = significant[position + 1] + 1;
            continue;
        }
        // Keep the whitespace between this token and the next significant one.
        let end = significant
            .get(position + 1)
            .copied()
            .unwrap_or(tokens.len());
        out.extend(tokens[index..end].iter().cloned());
    }
    let text: String = out.iter().map(|token| token.to_string()).collect();
    Ok((
        text,
        Extensions {
            time_index,
            partition,
        },
    ))
}

/// A column's type: a field's, or a timestamp's unit.
enum ColumnType {
    Field(FieldType),
    Time(TimeUnit),
}

/// `TIMESTAMP(p)` is kept in the coarsest unit that holds `p` fractional digits (0, 3,
/// 6, 9); a bare `TIMESTAMP` in milliseconds, Prometheus' unit and GreptimeDB's default.
fn column_type(column: &ColumnDef) -> Result<ColumnType, SqlError> {
    let name = normalize(&column.name);
    let precision = |digits: Option<u64>| match digits {
        None => Ok(ColumnType::Time(TimeUnit::Millisecond)),
        Some(digits) => TimeUnit::for_precision_digits(digits)
            .map(ColumnType::Time)
            .ok_or_else(|| {
                SqlError::Invalid(format!(
                    "column {name:?} is {}: a timestamp keeps at most 9 fractional digits \
                     (nanoseconds)",
                    column.data_type
                ))
            }),
    };
    match &column.data_type {
        SqlDataType::Timestamp(digits, _) | SqlDataType::Datetime(digits) => {
            return precision(*digits)
        }
        SqlDataType::TimestampNtz(digits) => return precision(*digits),
        _ => {}
    }
    let text = column.data_type.to_string().to_uppercase();
    let base = text.split('(').next().unwrap_or("").trim();
    Ok(ColumnType::Field(match base {
        "STRING" | "TEXT" | "VARCHAR" | "CHAR" | "CHARACTER VARYING" => FieldType::String,
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "FLOAT64" | "FLOAT8" | "REAL" | "FLOAT4"
        | "FLOAT32" => FieldType::Float64,
        "BIGINT" | "INT" | "INTEGER" | "INT64" | "INT8" | "INT4" | "INT32" | "SMALLINT"
        | "INT2" | "TINYINT" => FieldType::Int64,
        "BOOLEAN" | "BOOL" => FieldType::Boolean,
        "TIMESTAMP_S" => return Ok(ColumnType::Time(TimeUnit::Second)),
        "TIMESTAMP_MS" => return Ok(ColumnType::Time(TimeUnit::Millisecond)),
        "TIMESTAMP_US" => return Ok(ColumnType::Time(TimeUnit::Microsecond)),
        "TIMESTAMP_NS" => return Ok(ColumnType::Time(TimeUnit::Nanosecond)),
        _ => {
            return Err(SqlError::Invalid(format!(
                "column {name:?} has type {text}, which is not supported: use STRING, DOUBLE, \
                 BIGINT, BOOLEAN or TIMESTAMP[(0|3|6|9)]"
            )))
        }
    }))
}

/// A duration option: seconds as a number, or `'7d'`, `'12h'`, `'30m'` style text.
fn duration_ms(key: &str, value: &Expr) -> Result<i64, SqlError> {
    let text = match value {
        Expr::Value(value) => match &value.value {
            Value::Number(number, _) => format!("{number}s"),
            Value::SingleQuotedString(text) => text.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    promql_parser::util::parse_duration(&text)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            SqlError::Invalid(format!(
                "option {key} = {text:?} is not a positive duration such as '7d' or '12h'"
            ))
        })
}

/// Checks a parsed `CREATE TABLE` and turns it into a table definition.
pub fn table_definition(
    create: &CreateTable,
    extensions: &Extensions,
) -> Result<NewTable, SqlError> {
    let time_index = extensions.time_index.clone();
    let name = match create.name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(normalize)
            .ok_or_else(|| SqlError::Invalid(format!("invalid table name {}", create.name)))?,
        _ => {
            return Err(SqlError::Invalid(format!(
                "table {} names a schema; only the current database is supported",
                create.name
            )))
        }
    };
    let time_index = time_index.ok_or_else(|| {
        SqlError::Invalid(format!(
            "table {name} needs a TIME INDEX column, e.g. `ts TIMESTAMP TIME INDEX`"
        ))
    })?;
    let mut primary_key: Vec<String> = Vec::new();
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::PrimaryKey(key) => {
                for column in &key.columns {
                    primary_key.push(match &column.column.expr {
                        Expr::Identifier(ident) => normalize(ident),
                        other => {
                            return Err(SqlError::Invalid(format!(
                                "PRIMARY KEY takes column names, got {other}"
                            )))
                        }
                    });
                }
            }
            other => {
                return Err(SqlError::Invalid(format!(
                    "constraint {other} is not supported; use PRIMARY KEY (…) and TIME INDEX"
                )))
            }
        }
    }
    let mut tags = Vec::new();
    let mut fields = Vec::new();
    let mut time_unit = None;
    let mut column_order = Vec::new();
    for column in &create.columns {
        let column_name = normalize(&column.name);
        column_order.push(column_name.clone());
        let column_type = column_type(column)?;
        let in_key = primary_key.contains(&column_name)
            || column
                .options
                .iter()
                .any(|option| matches!(option.option, ColumnOption::PrimaryKey(_)));
        if column_name == time_index {
            let ColumnType::Time(unit) = column_type else {
                return Err(SqlError::Invalid(format!(
                    "the TIME INDEX column {column_name:?} must be a TIMESTAMP"
                )));
            };
            time_unit = Some(unit);
            continue;
        }
        let ColumnType::Field(column_type) = column_type else {
            return Err(SqlError::Invalid(format!(
                "column {column_name:?} is a TIMESTAMP but not the TIME INDEX; store \
                 other times as BIGINT milliseconds"
            )));
        };
        match column_type {
            FieldType::String if in_key => tags.push(column_name),
            other if in_key => {
                return Err(SqlError::Invalid(format!(
                    "primary key column {column_name:?} is {other:?}; tag columns are STRING"
                )))
            }
            field_type => fields.push(FieldColumn {
                name: column_name,
                field_type,
            }),
        }
    }
    let Some(time_unit) = time_unit else {
        return Err(SqlError::Invalid(format!(
            "the TIME INDEX column {time_index:?} is not among the columns"
        )));
    };
    for key in &primary_key {
        if !tags.contains(key) {
            return Err(SqlError::Invalid(format!(
                "PRIMARY KEY column {key:?} is not a STRING column of the table"
            )));
        }
    }
    // Tags keep the PRIMARY KEY's order when one is given: it is the sort order.
    if !primary_key.is_empty() {
        tags = primary_key;
    }

    let mut ttl_ms = None;
    let mut replicas = None;
    let mut partitions = 1u32;
    let mut partition_columns = Vec::new();
    if let Some(clause) = &extensions.partition {
        for column in &clause.columns {
            if !tags.contains(column) {
                return Err(SqlError::Invalid(format!(
                    "partition column {column:?} is not a PRIMARY KEY column: rows are \
                     partitioned by tags, so that a series stays in one region"
                )));
            }
        }
        partition_columns = clause.columns.clone();
        if let Some(count) = clause.count {
            if !(1..=REGIONS_PER_TABLE_MAX).contains(&count) {
                return Err(SqlError::Invalid(format!(
                    "PARTITIONS {count} must be from 1 to {REGIONS_PER_TABLE_MAX}"
                )));
            }
            partitions = count;
        }
    }
    let options: &[SqlOption] = match &create.table_options {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(options) => options,
        other => {
            return Err(SqlError::Invalid(format!(
                "table options {other} are not supported; use WITH (ttl = '7d', partitions = 4)"
            )))
        }
    };
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(SqlError::Invalid(format!(
                "unsupported table option {option}"
            )));
        };
        match normalize(key).as_str() {
            "ttl" => ttl_ms = Some(duration_ms("ttl", value)?),
            "replicas" => {
                let text = value.to_string();
                replicas = Some(
                    text.parse::<u8>()
                        .ok()
                        .filter(|n| (1..=REPLICAS_MAX).contains(n))
                        .ok_or_else(|| {
                            SqlError::Invalid(format!(
                                "replicas = {text} must be a whole number from 1 to \
                                 {REPLICAS_MAX}"
                            ))
                        })?,
                );
            }
            "partitions" => {
                let text = value.to_string();
                if extensions
                    .partition
                    .as_ref()
                    .is_some_and(|clause| clause.count.is_some())
                {
                    return Err(SqlError::Invalid(
                        "the partition count is given twice (PARTITIONS and WITH partitions)"
                            .to_string(),
                    ));
                }
                partitions = text
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=REGIONS_PER_TABLE_MAX).contains(n))
                    .ok_or_else(|| {
                        SqlError::Invalid(format!(
                            "partitions = {text} must be a whole number from 1 to \
                             {REGIONS_PER_TABLE_MAX}"
                        ))
                    })?;
            }
            other => {
                return Err(SqlError::Invalid(format!(
                    "unknown table option {other:?}; known: ttl, partitions, replicas"
                )))
            }
        }
    }
    Ok(NewTable {
        name,
        schema: RegionSchema {
            tags,
            time_index,
            time_unit,
            fields,
        },
        ttl_ms,
        partitions,
        partition_columns,
        column_order,
        if_not_exists: create.if_not_exists,
        replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::parser::Parser;

    fn define(sql: &str) -> Result<NewTable, SqlError> {
        let (text, extensions) = strip_extensions(sql)?;
        let statements = Parser::parse_sql(&GenericDialect {}, &text)
            .map_err(|e| SqlError::Invalid(e.to_string()))?;
        let Statement::CreateTable(create) = &statements[0] else {
            panic!("not a CREATE TABLE: {text}")
        };
        table_definition(create, &extensions)
    }

    #[test]
    fn a_partition_rule_names_tags_and_a_count_and_columns_keep_their_order() {
        let table = define(
            "CREATE TABLE cpu (ts TIMESTAMP TIME INDEX, usage DOUBLE, host STRING, \
             \"DC\" STRING, PRIMARY KEY (host, \"DC\")) \
             PARTITION BY HASH (\"DC\") PARTITIONS 8 WITH (ttl = '1h')",
        )
        .unwrap();
        assert_eq!(table.partition_columns, ["DC"]);
        assert_eq!(table.partitions, 8);
        assert_eq!(table.ttl_ms, Some(3_600_000));
        assert_eq!(table.column_order, ["ts", "usage", "host", "DC"]);
        assert_eq!(table.schema.tags, ["host", "DC"]);
        let default = define(
            "CREATE TABLE t (host STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX) \
             PARTITION BY HASH (host) WITH (partitions = 3)",
        )
        .unwrap();
        assert_eq!(
            (default.partition_columns.len(), default.partitions),
            (1, 3)
        );
        let unpartitioned = define("CREATE TABLE t (ts TIMESTAMP TIME INDEX)").unwrap();
        assert!(unpartitioned.partition_columns.is_empty());
        assert_eq!(unpartitioned.partitions, 1);
    }

    #[test]
    fn both_time_index_forms_define_the_same_table() {
        let inline = define(
            "CREATE TABLE IF NOT EXISTS Cpu (host STRING, dc STRING, ts TIMESTAMP TIME INDEX, \
             usage DOUBLE, PRIMARY KEY (dc, host)) WITH (ttl = '7d', partitions = 4)",
        )
        .unwrap();
        let constraint = define(
            "create table cpu (host string, dc string, ts timestamp, usage double, \
             time index (ts), primary key (dc, host)) with (ttl = '7d', partitions = 4)",
        )
        .unwrap();
        assert_eq!(inline.schema, constraint.schema);
        assert_eq!(inline.name, "cpu");
        assert_eq!(inline.schema.tags, ["dc", "host"]);
        assert_eq!(inline.schema.time_index, "ts");
        assert_eq!(inline.schema.time_unit, TimeUnit::Millisecond);
        assert_eq!(inline.ttl_ms, Some(7 * 86_400_000));
        assert_eq!(inline.partitions, 4);
        assert!(inline.if_not_exists && !constraint.if_not_exists);
    }

    #[test]
    fn a_timestamp_keeps_the_precision_it_declares() {
        for (declared, unit) in [
            ("TIMESTAMP", TimeUnit::Millisecond),
            ("TIMESTAMP(0)", TimeUnit::Second),
            ("TIMESTAMP(3)", TimeUnit::Millisecond),
            ("TIMESTAMP(6)", TimeUnit::Microsecond),
            ("TIMESTAMP(9)", TimeUnit::Nanosecond),
            ("TIMESTAMP(4)", TimeUnit::Microsecond),
            ("TIMESTAMP(6) WITHOUT TIME ZONE", TimeUnit::Microsecond),
            ("TIMESTAMP_NS", TimeUnit::Nanosecond),
            ("TIMESTAMP_S", TimeUnit::Second),
        ] {
            let table = define(&format!("CREATE TABLE t (ts {declared} TIME INDEX)"))
                .unwrap_or_else(|error| panic!("{declared}: {error}"));
            assert_eq!(table.schema.time_unit, unit, "{declared}");
        }
        let error = define("CREATE TABLE t (ts TIMESTAMP(12) TIME INDEX)")
            .unwrap_err()
            .to_string();
        assert!(error.contains("at most 9"), "{error}");
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        for (sql, expected) in [
            ("CREATE TABLE t (host STRING, v DOUBLE)", "TIME INDEX"),
            (
                "CREATE TABLE t (ts BIGINT TIME INDEX)",
                "must be a TIMESTAMP",
            ),
            ("CREATE TABLE t (ts TIMESTAMP TIME INDEX, v BLOB)", "BLOB"),
            (
                "CREATE TABLE t (ts TIMESTAMP TIME INDEX, n BIGINT, PRIMARY KEY (n))",
                "tag columns are STRING",
            ),
            (
                "CREATE TABLE t (ts TIMESTAMP TIME INDEX) WITH (ttl = 'soon')",
                "soon",
            ),
            (
                "CREATE TABLE t (ts TIMESTAMP TIME INDEX) WITH (colour = 1)",
                "colour",
            ),
            (
                "CREATE TABLE t (ts TIMESTAMP TIME INDEX, t2 TIMESTAMP TIME INDEX)",
                "exactly one",
            ),
            (
                "CREATE TABLE t (ts TIMESTAMP TIME INDEX, v DOUBLE) PARTITION BY HASH (v)",
                "\"v\" is not a PRIMARY KEY column",
            ),
            (
                "CREATE TABLE t (ts TIMESTAMP TIME INDEX) PARTITION BY RANGE (ts)",
                "PARTITION BY HASH",
            ),
            (
                "CREATE TABLE t (h STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX) \
                 PARTITION BY HASH (h) PARTITIONS 0",
                "PARTITIONS 0",
            ),
            (
                "CREATE TABLE t (h STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX) \
                 PARTITION BY HASH (h) PARTITIONS 2 WITH (partitions = 2)",
                "given twice",
            ),
        ] {
            let error = define(sql).unwrap_err().to_string();
            assert!(error.contains(expected), "{sql}: {error}");
        }
    }
}
