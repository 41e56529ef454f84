//! SQL: statements over Metronome's tables, for `POST /v1/sql` and the PostgreSQL wire
//! protocol.
//!
//! DDL (`CREATE TABLE`, `DROP TABLE`), `INSERT … VALUES`, `SHOW TABLES` and `DESCRIBE`
//! are executed here against the catalog and the regions; queries are planned and run by
//! DataFusion over [`provider::DatabaseSchema`]. Session statements that drivers send on
//! connect (`SET …`, `BEGIN`, `COMMIT`) are accepted and change nothing.

pub mod ddl;
pub mod insert;
pub mod provider;

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::meta::Meta;
use crate::prom_store::{PromStore, StoreError};
use crate::table_store::TableStore;

/// SQL text longer than this is refused before parsing.
const SQL_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Why a statement failed; the message names what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The statement is wrong (syntax, unknown table or column, bad value).
    #[error("{0}")]
    Invalid(String),
    /// The statement is valid but not supported yet.
    #[error("{0}")]
    Unsupported(String),
    /// Retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for SqlError {
    fn from(error: StoreError) -> SqlError {
        match error {
            StoreError::Invalid(message) => SqlError::Invalid(message),
            StoreError::Unavailable(message) => SqlError::Unavailable(message),
            StoreError::Internal(message) => SqlError::Internal(message),
        }
    }
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(error: datafusion::error::DataFusionError) -> SqlError {
        use datafusion::error::DataFusionError as E;
        let message = error.to_string();
        // DataFusion wraps errors in context and diagnostics; the root says what it is.
        match error.find_root() {
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) => SqlError::Invalid(message),
            E::NotImplemented(_) => SqlError::Unsupported(message),
            _ => SqlError::Internal(message),
        }
    }
}

/// What one statement produced.
#[derive(Debug, Clone)]
pub enum SqlOutput {
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A statement without rows: its command tag (`INSERT`, `CREATE TABLE`, …) and the
    /// number of rows it affected.
    Done { tag: &'static str, rows: usize },
}

pub struct SqlEngine {
    database: String,
    meta: Arc<Meta>,
    tables: Arc<TableStore>,
    prom: Arc<PromStore>,
}

/// A statement parsed, with what `CREATE TABLE` said beyond standard SQL (see [`ddl`]).
pub struct Parsed {
    pub statement: Statement,
    pub extensions: ddl::Extensions,
}

impl SqlEngine {
    pub fn new(
        database: &str,
        meta: Arc<Meta>,
        tables: Arc<TableStore>,
        prom: Arc<PromStore>,
    ) -> SqlEngine {
        SqlEngine {
            database: database.to_string(),
            meta,
            tables,
            prom,
        }
    }

    /// Parses `sql` into statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<Parsed>, SqlError> {
        if sql.len() > SQL_BYTES_MAX {
            return Err(SqlError::Invalid(format!(
                "the statement has {} bytes, the limit is {SQL_BYTES_MAX}",
                sql.len()
            )));
        }
        let (text, extensions) = ddl::strip_extensions(sql)?;
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, &text)
            .map_err(|error| SqlError::Invalid(format!("syntax error: {error}")))?;
        let mut extensions = Some(extensions);
        Ok(statements
            .into_iter()
            .map(|statement| {
                let extensions = match statement {
                    Statement::CreateTable(_) => extensions.take().unwrap_or_default(),
                    _ => ddl::Extensions::default(),
                };
                Parsed {
                    statement,
                    extensions,
                }
            })
            .collect())
    }

    /// Runs every statement of `sql` in order; stops at the first error.
    pub async fn execute(&self, sql: &str) -> Result<Vec<SqlOutput>, SqlError> {
        let mut outputs = Vec::new();
        for parsed in self.parse(sql)? {
            outputs.push(self.execute_parsed(parsed, &[]).await?);
        }
        Ok(outputs)
    }

    fn context(&self) -> SessionContext {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("metronome", &self.database)
            .with_information_schema(true);
        let context = SessionContext::new_with_config(config);
        let catalog = Arc::new(datafusion::catalog::MemoryCatalogProvider::new());
        let schema = Arc::new(provider::DatabaseSchema {
            database: self.database.clone(),
            catalog: self.meta.catalog(),
            tables: self.tables.clone(),
            prom: self.prom.clone(),
        });
        datafusion::catalog::CatalogProvider::register_schema(
            catalog.as_ref(),
            &self.database,
            schema,
        )
        .expect("a memory catalog accepts schemas");
        context.register_catalog("metronome", catalog);
        context
    }

    /// A table of this engine's database, as the catalog has it now.
    pub fn table(&self, name: &str) -> Result<metronome_metasrv::catalog::Table, SqlError> {
        self.meta
            .catalog()
            .table(&self.database, name)
            .cloned()
            .map_err(|error| SqlError::Invalid(error.to_string()))
    }

    /// Plans a query (for describing it before it runs).
    pub async fn plan_query(&self, statement: &Statement) -> Result<LogicalPlan, SqlError> {
        let context = self.context();
        let plan = context
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
            .await?;
        Ok(plan)
    }

    /// Runs one parsed statement with the values of its `$n` parameters.
    pub async fn execute_parsed(
        &self,
        parsed: Parsed,
        params: &[ScalarValue],
    ) -> Result<SqlOutput, SqlError> {
        let database = &self.database;
        match &parsed.statement {
            Statement::Query(_) => {
                let mut plan = self.plan_query(&parsed.statement).await?;
                if !params.is_empty() {
                    plan = plan.with_param_values(params.to_vec())?;
                }
                let context = self.context();
                let frame = context.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                let batches = frame.collect().await?;
                Ok(SqlOutput::Rows { schema, batches })
            }
            Statement::CreateTable(create) => {
                let definition = ddl::table_definition(create, &parsed.extensions)?;
                self.tables.create_table(database, definition).await?;
                Ok(SqlOutput::Done {
                    tag: "CREATE TABLE",
                    rows: 0,
                })
            }
            Statement::Insert(insert) => {
                let name = insert::target(insert)?;
                let catalog = self.meta.catalog();
                let table = catalog
                    .table(database, &name)
                    .map_err(|error| SqlError::Invalid(error.to_string()))?;
                let rows = insert::rows(insert, table, params)?;
                let count = self.tables.write(table, rows).await?;
                Ok(SqlOutput::Done {
                    tag: "INSERT",
                    rows: count,
                })
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                if_exists,
                names,
                ..
            } => {
                for name in names {
                    let name = match name.0.as_slice() {
                        [part] => part.as_ident().map(ddl::normalize).unwrap_or_default(),
                        _ => name.to_string(),
                    };
                    self.tables.drop_table(database, &name, *if_exists).await?;
                }
                Ok(SqlOutput::Done {
                    tag: "DROP TABLE",
                    rows: 0,
                })
            }
            Statement::ShowTables { .. } => {
                let catalog = self.meta.catalog();
                let names: Vec<String> = catalog
                    .database(database)
                    .map(|db| db.tables.keys().cloned().collect())
                    .unwrap_or_default();
                let schema = Arc::new(Schema::new(vec![Field::new(
                    "Tables",
                    DataType::Utf8,
                    false,
                )]));
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(StringArray::from(names)) as ArrayRef],
                )
                .map_err(|error| SqlError::Internal(error.to_string()))?;
                Ok(SqlOutput::Rows {
                    schema,
                    batches: vec![batch],
                })
            }
            Statement::ExplainTable { table_name, .. } => {
                let name = match table_name.0.as_slice() {
                    [part] => part.as_ident().map(ddl::normalize).unwrap_or_default(),
                    _ => table_name.to_string(),
                };
                let catalog = self.meta.catalog();
                let table = catalog
                    .table(database, &name)
                    .map_err(|error| SqlError::Invalid(error.to_string()))?;
                Ok(describe(table))
            }
            Statement::Set(_)
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. } => Ok(SqlOutput::Done {
                tag: session_tag(&parsed.statement),
                rows: 0,
            }),
            other => Err(SqlError::Unsupported(format!(
                "this statement is not supported: {}",
                first_words(&other.to_string())
            ))),
        }
    }
}

fn session_tag(statement: &Statement) -> &'static str {
    match statement {
        Statement::Set(_) => "SET",
        Statement::StartTransaction { .. } => "BEGIN",
        Statement::Commit { .. } => "COMMIT",
        _ => "ROLLBACK",
    }
}

fn first_words(text: &str) -> String {
    text.split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `DESCRIBE t`: one row per column with its type and role.
fn describe(table: &metronome_metasrv::catalog::Table) -> SqlOutput {
    let schema = provider::sql_schema(table);
    let mut names = Vec::new();
    let mut types = Vec::new();
    let mut keys = Vec::new();
    for field in schema.fields() {
        names.push(field.name().clone());
        types.push(field.data_type().to_string());
        let role = if table.schema.tags.contains(field.name()) {
            "TAG"
        } else if *field.name() == table.schema.time_index {
            "TIME INDEX"
        } else {
            "FIELD"
        };
        keys.push(role);
    }
    let out = Arc::new(Schema::new(vec![
        Field::new("Column", DataType::Utf8, false),
        Field::new("Type", DataType::Utf8, false),
        Field::new("Semantic Type", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        out.clone(),
        vec![
            Arc::new(StringArray::from(names)) as ArrayRef,
            Arc::new(StringArray::from(types)),
            Arc::new(StringArray::from(keys)),
        ],
    )
    .expect("three string columns of equal length");
    SqlOutput::Rows {
        schema: out,
        batches: vec![batch],
    }
}
