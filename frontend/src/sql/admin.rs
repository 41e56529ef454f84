//! `ADMIN function(arguments)`, GreptimeDB's statement for cluster administration:
//! `ADMIN migrate_region('7.0', 2)` moves region 7.0's leadership to datanode 2,
//! `ADMIN drain_datanode(2)` moves every copy off datanode 2 (`ADMIN
//! undrain_datanode(2)` ends that), and each answers, once done, with one row
//! (`crate::admin` does the work).
//!
//! sqlparser has no `ADMIN` statement, so [`parse`] reads the call as the expression of
//! a `SELECT` and keeps the function and its literal arguments; anything else is refused
//! at parse time, naming what is wrong.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr, Statement,
    UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use metronome_core::data::RegionId;

use super::{SqlError, SqlOutput};
use crate::admin::{parse_region, Drained, Migrated};

/// The administration functions, with their arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCall {
    /// `migrate_region(region, to_datanode)`.
    MigrateRegion { region: RegionId, datanode: u64 },
    /// `drain_datanode(datanode)` (`drain`) and `undrain_datanode(datanode)`.
    DrainDatanode { datanode: u64, drain: bool },
}

const FUNCTIONS: &str =
    "migrate_region(region, to_datanode), drain_datanode(datanode), undrain_datanode(datanode)";

/// A literal argument.
enum Literal {
    Text(String),
    Number(String),
}

/// `Some` for a statement that starts with `ADMIN`: the `SELECT` it reads as (what the
/// session's transaction bookkeeping sees) and the call.
pub fn parse(sql: &str) -> Result<Option<(Statement, AdminCall)>, SqlError> {
    let text = sql.trim_start();
    let keyword = text.get(..5);
    let after = text[keyword.map_or(0, str::len)..].chars().next();
    if !keyword.is_some_and(|k| k.eq_ignore_ascii_case("admin"))
        || !after.is_some_and(char::is_whitespace)
    {
        return Ok(None);
    }
    let select = format!("SELECT {}", &text[5..]);
    let syntax = |reason: String| {
        SqlError::Invalid(format!(
            "ADMIN takes one function call ({FUNCTIONS}): {reason}"
        ))
    };
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, &select)
        .map_err(|error| syntax(format!("syntax error: {error}")))?;
    if statements.len() != 1 {
        return Err(syntax(format!("{} statements", statements.len())));
    }
    let statement = statements.pop().expect("one statement");
    let call = {
        let Statement::Query(query) = &statement else {
            return Err(syntax("not a call".to_string()));
        };
        let SetExpr::Select(body) = query.body.as_ref() else {
            return Err(syntax("not a call".to_string()));
        };
        let [SelectItem::UnnamedExpr(Expr::Function(function))] = body.projection.as_slice() else {
            return Err(syntax("not one function call".to_string()));
        };
        let FunctionArguments::List(list) = &function.args else {
            return Err(syntax(format!("{} has no argument list", function.name)));
        };
        let arguments = list
            .args
            .iter()
            .map(|argument| match argument {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => literal(expr),
                other => Err(syntax(format!("{other} is not a literal"))),
            })
            .collect::<Result<Vec<Literal>, SqlError>>()?;
        let name = function.name.to_string().to_ascii_lowercase();
        match (name.as_str(), arguments.as_slice()) {
            ("migrate_region", [region, datanode]) => AdminCall::MigrateRegion {
                region: match region {
                    Literal::Text(text) | Literal::Number(text) => {
                        parse_region(text).map_err(|error| SqlError::Invalid(error.message))?
                    }
                },
                datanode: datanode_id(datanode)?,
            },
            (name @ ("drain_datanode" | "undrain_datanode"), [datanode]) => {
                AdminCall::DrainDatanode {
                    datanode: datanode_id(datanode)?,
                    drain: name == "drain_datanode",
                }
            }
            ("migrate_region", other) => {
                return Err(syntax(format!(
                    "migrate_region takes 2 arguments, not {}",
                    other.len()
                )))
            }
            (name @ ("drain_datanode" | "undrain_datanode"), other) => {
                return Err(syntax(format!(
                    "{name} takes 1 argument, not {}",
                    other.len()
                )))
            }
            (other, _) => return Err(syntax(format!("no ADMIN function is named {other}"))),
        }
    };
    Ok(Some((statement, call)))
}

fn datanode_id(argument: &Literal) -> Result<u64, SqlError> {
    let syntax = |reason: String| {
        SqlError::Invalid(format!(
            "ADMIN takes one function call ({FUNCTIONS}): {reason}"
        ))
    };
    match argument {
        Literal::Number(number) => number
            .parse()
            .map_err(|_| syntax(format!("{number} is not a datanode id"))),
        Literal::Text(text) => Err(syntax(format!("'{text}' is not a datanode id"))),
    }
}

fn literal(expr: &Expr) -> Result<Literal, SqlError> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(text) => Ok(Literal::Text(text.clone())),
            Value::Number(number, _) => Ok(Literal::Number(number.clone())),
            other => Err(SqlError::Invalid(format!(
                "ADMIN takes numbers and strings, not {other}"
            ))),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            ..
        } => Err(SqlError::Invalid(format!(
            "ADMIN takes no negative numbers: {expr}"
        ))),
        other => Err(SqlError::Invalid(format!(
            "ADMIN takes literal arguments, not {other}"
        ))),
    }
}

/// The columns an ADMIN call answers with.
pub fn schema(call: &AdminCall) -> SchemaRef {
    match call {
        AdminCall::MigrateRegion { .. } => Arc::new(Schema::new(vec![
            Field::new("region_id", DataType::Utf8, false),
            Field::new("from_datanode", DataType::Int64, false),
            Field::new("to_datanode", DataType::Int64, false),
            Field::new("shard", DataType::Int64, false),
            Field::new("epoch", DataType::Int64, false),
            Field::new("took_ms", DataType::Int64, false),
        ])),
        AdminCall::DrainDatanode { .. } => Arc::new(Schema::new(vec![
            Field::new("datanode", DataType::Int64, false),
            Field::new("draining", DataType::Boolean, false),
            Field::new("regions_held", DataType::Int64, false),
            Field::new("regions_moved", DataType::Int64, false),
            Field::new("took_ms", DataType::Int64, false),
        ])),
    }
}

/// Runs `call` with the frontend's view of the cluster.
pub async fn execute(meta: &crate::meta::Meta, call: &AdminCall) -> Result<SqlOutput, SqlError> {
    let int = |value: u64| Arc::new(Int64Array::from(vec![value as i64])) as ArrayRef;
    let one_row = |columns: Vec<ArrayRef>| {
        let schema = schema(call);
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|error| SqlError::internal(error.to_string()))?;
        Ok(SqlOutput::Rows {
            schema,
            batches: vec![batch],
        })
    };
    match call {
        AdminCall::DrainDatanode { datanode, drain } => {
            let Drained {
                datanode,
                draining,
                copies,
                moved,
                took_ms,
            } = crate::admin::drain_datanode(meta, *datanode, *drain).await?;
            one_row(vec![
                int(datanode),
                Arc::new(BooleanArray::from(vec![draining])) as ArrayRef,
                int(copies),
                int(moved),
                int(took_ms),
            ])
        }
        AdminCall::MigrateRegion { region, datanode } => {
            let Migrated {
                region,
                from,
                to,
                shard,
                epoch,
                took_ms,
            } = crate::admin::migrate_region(meta, *region, *datanode).await?;
            one_row(vec![
                Arc::new(StringArray::from(vec![region.to_string()])) as ArrayRef,
                int(from),
                int(to),
                int(u64::from(shard)),
                int(epoch),
                int(took_ms),
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(sql: &str) -> Result<Option<AdminCall>, String> {
        parse(sql)
            .map(|parsed| parsed.map(|(_, call)| call))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn calls_parse_and_mistakes_are_named() {
        let expected = AdminCall::MigrateRegion {
            region: RegionId::new(7, 1),
            datanode: 2,
        };
        assert_eq!(
            call("ADMIN migrate_region('7.1', 2)"),
            Ok(Some(expected.clone()))
        );
        let packed = RegionId::new(7, 1).as_u64();
        assert_eq!(
            call(&format!("  admin MIGRATE_REGION({packed}, 2);")),
            Ok(Some(expected))
        );
        assert_eq!(
            call("ADMIN drain_datanode(3)"),
            Ok(Some(AdminCall::DrainDatanode {
                datanode: 3,
                drain: true
            }))
        );
        assert_eq!(
            call("admin UNDRAIN_DATANODE(3)"),
            Ok(Some(AdminCall::DrainDatanode {
                datanode: 3,
                drain: false
            }))
        );
        assert_eq!(call("SELECT 1"), Ok(None));
        assert_eq!(call("administrators"), Ok(None));
        for (sql, named) in [
            (
                "ADMIN flush_table('x')",
                "no ADMIN function is named flush_table",
            ),
            ("ADMIN migrate_region('7.1')", "takes 2 arguments"),
            ("ADMIN migrate_region('7.1', '2')", "is not a datanode id"),
            ("ADMIN migrate_region('seven', 2)", "is not a region"),
            ("ADMIN migrate_region('7.1', -2)", "no negative numbers"),
            ("ADMIN migrate_region('7.1', 2 + 1)", "literal arguments"),
            ("ADMIN migrate_region('7.1', 2), 3", "not one function call"),
            ("ADMIN 1; SELECT 2", "2 statements"),
            ("ADMIN drain_datanode(1, 2)", "takes 1 argument, not 2"),
            ("ADMIN drain_datanode('one')", "is not a datanode id"),
        ] {
            let error = call(sql).unwrap_err();
            assert!(error.contains(named), "{sql}: {error}");
        }
    }
}
