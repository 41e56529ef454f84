//! SQL: statements over Metronome's tables, for `POST /v1/sql` and the PostgreSQL wire
//! protocol.
//!
//! DDL (`CREATE TABLE`, `DROP TABLE`), `INSERT … VALUES`, `SHOW TABLES` and `DESCRIBE`
//! are executed here against the catalog and the regions; queries are planned and run by
//! DataFusion over [`provider::DatabaseSchema`]. Session statements that drivers send on
//! their own (`SET`, `RESET`, `SHOW`, `DISCARD`, `DEALLOCATE`) are accepted and change
//! nothing here (pgwire drops a deallocated prepared statement); `BEGIN`, `COMMIT` and
//! `ROLLBACK` follow a [`Session`], which tells the truth about the absence of
//! transactions.

pub mod admin;
pub mod ddl;
mod error;
pub mod information_schema;
pub mod insert;
pub mod limits;
pub mod provider;
mod session;

pub use error::*;
pub use session::*;

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::{SessionConfig, SessionContext, SessionState};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::ColumnarValue;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    DiscardObject, Expr as SqlExpr, ExprWithAlias, Ident, ObjectType, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Tokenizer;

use metronome_core::rt::time;

use crate::datanode_figures::DatanodeFigures;
use crate::meta::Meta;
use metronome_core::error::{Error, ErrorKind};

use crate::prom_store::PromStore;
use crate::table_store::TableStore;

/// SQL text longer than this is refused before parsing.
const SQL_BYTES_MAX: usize = 16 * 1024 * 1024;

/// What one statement produced.
#[derive(Debug, Clone)]
pub enum SqlOutput {
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A statement without rows: its command tag (`INSERT`, `CREATE TABLE`, …) and the
    /// number of rows it affected.
    Done {
        tag: &'static str,
        rows: usize,
        /// Rows an INSERT wrote that its table's TTL had already expired.
        expired: Option<Expired>,
    },
}

impl SqlOutput {
    fn done(tag: &'static str, rows: usize) -> SqlOutput {
        SqlOutput::Done {
            tag,
            rows,
            expired: None,
        }
    }
}

/// Rows an INSERT wrote (and counts in its tag, as PostgreSQL counts the rows it
/// accepted) that were already older than the table's TTL: the region keeps them only
/// until its next compaction, and no query ever sees them. The client is told: over
/// HTTP in the response, over pgwire in a NOTICE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub rows: usize,
    pub message: String,
}

/// The rows of `rows` (timestamps in `unit`) that `ttl_ms` has expired at `now_ms`, as a
/// region's scans leave them out: those older than `now - ttl`.
fn expired(
    table: &str,
    ttl_ms: Option<i64>,
    unit: metronome_core::data::TimeUnit,
    rows: &[metronome_core::data::Row],
    now_ms: i64,
) -> Option<Expired> {
    let ttl = ttl_ms?;
    let cutoff =
        metronome_core::data::TimeUnit::Millisecond.convert_floor(now_ms.saturating_sub(ttl), unit);
    let count = rows.iter().filter(|row| row.ts < cutoff).count();
    (count > 0).then(|| Expired {
        rows: count,
        message: format!(
            "{count} of the {} rows written are older than the TTL of table {table} ({}) \
             and will not be visible to queries",
            rows.len(),
            ttl_text(ttl),
        ),
    })
}

/// A TTL as `WITH (ttl = …)` would write it: `30d`, `12h`, or milliseconds.
fn ttl_text(ms: i64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Bounds on every SQL query, so one statement cannot take the frontend down (a cross
/// join of three tables used to pin both of its threads until SIGKILL).
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    /// How long a query may run; past it, it fails (and its work is dropped).
    pub timeout: std::time::Duration,
    /// Memory DataFusion's operators may hold, all SQL queries together (its memory
    /// pool: sorts, joins' build sides, aggregations).
    pub memory_bytes_max: usize,
    /// Bytes of Arrow data a query's result may hold; past it, it fails.
    pub result_bytes_max: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            timeout: std::time::Duration::from_secs(120),
            memory_bytes_max: 1 << 30,
            result_bytes_max: 256 << 20,
        }
    }
}

pub struct SqlEngine {
    database: String,
    meta: Arc<Meta>,
    /// What `information_schema.region_peers` reads of the datanodes.
    datanodes: Arc<dyn DatanodeFigures>,
    tables: Arc<TableStore>,
    prom: Arc<PromStore>,
    limits: SqlLimits,
    /// One runtime for every query, so that the memory pool bounds them all together.
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
}

/// A statement parsed, with what `CREATE TABLE` said beyond standard SQL (see [`ddl`]).
pub struct Parsed {
    pub statement: Statement,
    pub extensions: ddl::Extensions,
    /// An `ADMIN` call ([`admin`]); `statement` is then the `SELECT` it reads as.
    pub admin: Option<admin::AdminCall>,
}

impl SqlEngine {
    pub fn new(
        database: &str,
        meta: Arc<Meta>,
        datanodes: Arc<dyn DatanodeFigures>,
        tables: Arc<TableStore>,
        prom: Arc<PromStore>,
        limits: SqlLimits,
    ) -> SqlEngine {
        use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.memory_bytes_max)))
            // No spilling: DataFusion would write its temporary files with std::fs,
            // past `rt`. A query over the memory budget fails instead.
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .expect("a runtime without a disk manager builds");
        SqlEngine {
            database: database.to_string(),
            meta,
            datanodes,
            tables,
            prom,
            limits,
            runtime,
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
        limits::check(sql)?;
        if let Some((statement, call)) = admin::parse(sql)? {
            return Ok(vec![Parsed {
                statement,
                extensions: ddl::Extensions::default(),
                admin: Some(call),
            }]);
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
                    admin: None,
                }
            })
            .collect())
    }

    /// Runs every statement of `sql` in order; stops at the first error. The statements
    /// share one [`Session`], as those of one query string over pgwire do.
    pub async fn execute(&self, sql: &str) -> Result<Vec<SqlOutput>, SqlError> {
        let mut session = Session::default();
        let mut outputs = Vec::new();
        for parsed in self.parse(sql)? {
            outputs.push(self.execute_in(&mut session, parsed, &[]).await?);
        }
        Ok(outputs)
    }

    /// Runs one parsed statement in `session`, which follows its transaction block.
    pub async fn execute_in(
        &self,
        session: &mut Session,
        parsed: Parsed,
        params: &[ScalarValue],
    ) -> Result<SqlOutput, SqlError> {
        let control = session.before(&parsed.statement)?;
        let output = self.execute_parsed(parsed, params).await?;
        session.after(control, &output);
        Ok(output)
    }

    fn context(&self) -> SessionContext {
        // DataFusion's own information_schema is off: ours serves its tables and the
        // cluster's (`information_schema.rs`), as a schema of the catalog.
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("metronome", &self.database)
            .with_information_schema(false);
        let context = SessionContext::new_with_config_rt(config, self.runtime.clone());
        let catalog = Arc::new(datafusion::catalog::MemoryCatalogProvider::new());
        let information_schema = Arc::new(information_schema::InformationSchema::new(
            context.state().catalog_list().clone(),
            self.meta.clone(),
            self.datanodes.clone(),
        ));
        datafusion::catalog::CatalogProvider::register_schema(
            catalog.as_ref(),
            "information_schema",
            information_schema,
        )
        .expect("a memory catalog accepts schemas");
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

    /// Runs a query to its end within [`SqlLimits`]: its deadline and its result's size.
    /// The task yields between batches, so a query that computes without waiting (a
    /// cross join over memtables) neither starves `/health`, writes and other queries on
    /// its thread nor outlives its deadline or its client (dropping the future, as a
    /// closed connection does, stops it at the next batch).
    async fn collect_bounded(
        &self,
        frame: datafusion::dataframe::DataFrame,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        use futures::StreamExt;
        let started = metronome_core::rt::time::now();
        let timeout = self.limits.timeout;
        let deadline_passed = || {
            SqlError::Failed(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the query ran longer than {} ms (query.timeout_ms)",
                    timeout.as_millis()
                ),
            ))
        };
        let mut stream = metronome_core::rt::time::timeout(timeout, frame.execute_stream())
            .await
            .map_err(|_| deadline_passed())??;
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        loop {
            let remaining = timeout.saturating_sub(metronome_core::rt::time::elapsed(started));
            let next = metronome_core::rt::time::timeout(remaining, stream.next())
                .await
                .map_err(|_| deadline_passed())?;
            let Some(batch) = next else { break };
            let batch = batch?;
            bytes = bytes.saturating_add(batch.get_array_memory_size());
            if bytes > self.limits.result_bytes_max {
                return Err(SqlError::Rejected {
                    sqlstate: sqlstate::PROGRAM_LIMIT_EXCEEDED,
                    message: format!(
                        "the result holds more than {} bytes (query.sql_result_bytes_max); \
                         narrow it with WHERE, LIMIT or an aggregation",
                        self.limits.result_bytes_max
                    ),
                });
            }
            batches.push(batch);
            if metronome_core::rt::time::elapsed(started) > timeout {
                return Err(deadline_passed());
            }
            metronome_core::rt::task::yield_now().await;
        }
        Ok(batches)
    }

    /// A table of this engine's database, as the catalog has it now.
    pub fn table(&self, name: &str) -> Result<metronome_catalog::Table, SqlError> {
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
        if let Some(call) = &parsed.admin {
            return admin::execute(&self.meta, call).await;
        }
        match &parsed.statement {
            Statement::Query(_) => {
                let mut plan = self.plan_query(&parsed.statement).await?;
                if !params.is_empty() {
                    plan = plan.with_param_values(params.to_vec())?;
                }
                let context = self.context();
                let frame = context.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                let batches = self.collect_bounded(frame).await?;
                Ok(SqlOutput::Rows { schema, batches })
            }
            Statement::CreateTable(create) => {
                let definition = ddl::table_definition(create, &parsed.extensions)?;
                self.tables.create_table(database, definition).await?;
                Ok(SqlOutput::done("CREATE TABLE", 0))
            }
            Statement::Insert(insert) => {
                let name = insert::target(insert)?;
                let catalog = self.meta.catalog();
                let table = catalog
                    .table(database, &name)
                    .map_err(|error| SqlError::Invalid(error.to_string()))?;
                let now_ms = time::unix_time_ms();
                let mut state = None;
                let rows = insert::rows(insert, table, params, &mut |expr| {
                    let state = state.get_or_insert_with(|| self.context().state());
                    evaluate_constant(state, expr, now_ms)
                })?;
                let expired = expired(&name, table.ttl_ms, table.schema.time_unit, &rows, now_ms);
                let count = self.tables.write(table, rows).await?;
                Ok(SqlOutput::Done {
                    tag: "INSERT",
                    rows: count,
                    expired,
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
                Ok(SqlOutput::done("DROP TABLE", 0))
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
                .map_err(|error| SqlError::internal(error.to_string()))?;
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
            | Statement::Reset(_)
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. } => Ok(SqlOutput::done(session_tag(&parsed.statement), 0)),
            Statement::ShowVariable { variable } => show(variable, database),
            other => Err(SqlError::Unsupported(format!(
                "this statement is not supported: {}",
                excerpt(&other.to_string())
            ))),
        }
    }
}

/// Evaluates a constant expression of an INSERT with DataFusion, as `SELECT expr`
/// would, with `now()` at `now_ms`.
fn evaluate_constant(
    state: &SessionState,
    expr: &SqlExpr,
    now_ms: i64,
) -> Result<ScalarValue, SqlError> {
    let schema = Arc::new(DFSchema::empty());
    let logical = state.create_logical_expr_from_sql_expr(
        ExprWithAlias {
            expr: expr.clone(),
            alias: None,
        },
        &schema,
    )?;
    // The simplifier folds constants, `now()` among them, into one literal.
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(schema.clone())
            .with_config_options(state.config_options().clone())
            .with_query_execution_start_time(chrono::DateTime::from_timestamp_millis(now_ms))
            .build(),
    );
    let simplified = simplifier.simplify(simplifier.coerce(logical, &schema)?)?;
    if let datafusion::logical_expr::Expr::Literal(value, _) = simplified {
        return Ok(value);
    }
    // What the simplifier left (an expression it cannot fold, or one whose evaluation
    // fails, such as `1 / 0`) is evaluated once over a batch of one row.
    let physical = state.create_physical_expr(simplified, &schema)?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        Vec::new(),
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|error| SqlError::internal(error.to_string()))?;
    match physical.evaluate(&one_row)? {
        ColumnarValue::Scalar(value) => Ok(value),
        ColumnarValue::Array(array) => Ok(ScalarValue::try_from_array(&array, 0)?),
    }
}

/// How much of a statement an error message quotes.
const EXCERPT_CHARS: usize = 80;

/// The start of a statement for an error message: whole tokens up to about
/// [`EXCERPT_CHARS`] characters, and ` …` where the rest is left out, so that a string
/// literal or a name is never shown cut in two.
pub fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= EXCERPT_CHARS {
        return text.to_string();
    }
    let mut out = String::new();
    let mut chars = 0;
    match Tokenizer::new(&PostgreSqlDialect {}, text).tokenize() {
        Ok(tokens) => {
            for token in tokens {
                let token = token.to_string();
                let length = token.chars().count();
                // A first token longer than the limit is still shown whole.
                if chars + length > EXCERPT_CHARS && chars > 0 {
                    break;
                }
                out.push_str(&token);
                chars += length;
            }
        }
        // Text that does not tokenize is cut between words.
        Err(_) => {
            for word in text.split_whitespace() {
                let length = word.chars().count() + 1;
                if chars + length > EXCERPT_CHARS && chars > 0 {
                    break;
                }
                out.push_str(word);
                out.push(' ');
                chars += length;
            }
        }
    }
    format!("{} …", out.trim_end())
}

/// `DESCRIBE t`: one row per column with its type and role.
fn describe(table: &metronome_catalog::Table) -> SqlOutput {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    fn run(session: &mut Session, sql: &str, output: SqlOutput) -> Result<(), SqlError> {
        let control = session.before(&statement(sql))?;
        session.after(control, &output);
        Ok(())
    }

    #[test]
    fn a_rollback_after_writes_is_refused_and_ends_the_block() {
        let mut session = Session::default();
        run(&mut session, "BEGIN", SqlOutput::done("BEGIN", 0)).unwrap();
        assert!(session.in_block());
        run(&mut session, "SELECT 1", SqlOutput::done("SELECT", 0)).unwrap();
        // Nothing written: the ROLLBACK is true.
        run(&mut session, "ROLLBACK", SqlOutput::done("ROLLBACK", 0)).unwrap();
        assert!(!session.in_block());

        run(&mut session, "BEGIN", SqlOutput::done("BEGIN", 0)).unwrap();
        let insert = "INSERT INTO t VALUES (1)";
        run(&mut session, insert, SqlOutput::done("INSERT", 2)).unwrap();
        run(&mut session, insert, SqlOutput::done("INSERT", 1)).unwrap();
        let error = run(&mut session, "ROLLBACK", SqlOutput::done("ROLLBACK", 0)).unwrap_err();
        let SqlError::Rejected { sqlstate, message } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(*sqlstate, "25000");
        assert!(message.contains("3 rows written since BEGIN"), "{message}");
        assert!(!session.in_block());
        // Outside a block, writes are nobody's to roll back.
        run(&mut session, insert, SqlOutput::done("INSERT", 1)).unwrap();
        run(&mut session, "ROLLBACK", SqlOutput::done("ROLLBACK", 0)).unwrap();
        // COMMIT is always true.
        run(&mut session, "BEGIN", SqlOutput::done("BEGIN", 0)).unwrap();
        run(&mut session, insert, SqlOutput::done("INSERT", 1)).unwrap();
        run(&mut session, "COMMIT", SqlOutput::done("COMMIT", 0)).unwrap();
        assert!(!session.in_block());
    }

    #[test]
    fn excerpts_end_between_tokens() {
        assert_eq!(
            excerpt("  CREATE VIEW v AS SELECT 1 "),
            "CREATE VIEW v AS SELECT 1"
        );
        let long = format!(
            "CREATE VIEW v AS SELECT 'a string literal that is long', {} FROM t",
            "column_name, ".repeat(10)
        );
        let short = excerpt(&long);
        assert!(short.ends_with(" …"), "{short}");
        assert!(short.chars().count() <= EXCERPT_CHARS + 2, "{short}");
        assert!(short.contains("'a string literal that is long'"), "{short}");
        assert!(long.starts_with(short.trim_end_matches(" …")), "{short}");
        // A cut never splits a quoted literal, even one past the limit.
        let literal = format!("SELECT '{}' AS x", "y".repeat(100));
        let short = excerpt(&literal);
        assert_eq!(short, "SELECT …");
    }

    #[test]
    fn rows_past_the_ttl_are_counted() {
        let row = |ts| metronome_core::data::Row {
            tags: Vec::new(),
            ts,
            fields: Vec::new(),
        };
        use metronome_core::data::TimeUnit;
        let ms = TimeUnit::Millisecond;
        let day = 86_400_000;
        let rows = [row(0), row(50 * day), row(99 * day)];
        assert_eq!(expired("t", None, ms, &rows, 100 * day), None);
        let found = expired("t", Some(30 * day), ms, &rows, 100 * day).unwrap();
        assert_eq!(found.rows, 2);
        assert!(
            found.message.contains("TTL of table t (30d)"),
            "{}",
            found.message
        );
        assert_eq!(expired("t", Some(day), ms, &rows[2..], 100 * day), None);
        // A microsecond table's rows are compared in microseconds.
        let micros: Vec<_> = rows.iter().map(|r| row(r.ts * 1_000)).collect();
        let found = expired(
            "t",
            Some(30 * day),
            TimeUnit::Microsecond,
            &micros,
            100 * day,
        );
        assert_eq!(found.map(|f| f.rows), Some(2));
        assert_eq!(
            expired(
                "t",
                Some(day),
                TimeUnit::Microsecond,
                &micros[2..],
                100 * day
            ),
            None
        );
    }

    #[test]
    fn show_answers_what_drivers_ask_and_refuses_the_unknown() {
        let Statement::ShowVariable { variable } = statement("SHOW TRANSACTION ISOLATION LEVEL")
        else {
            panic!()
        };
        let SqlOutput::Rows { schema, batches } = show(&variable, "public").unwrap() else {
            panic!()
        };
        assert_eq!(schema.field(0).name(), "transaction_isolation");
        assert_eq!(
            batches[0].column(0).as_ref(),
            &StringArray::from(vec!["read committed"]) as &dyn arrow_array::Array
        );
        let Statement::ShowVariable { variable } = statement("SHOW no_such_thing") else {
            panic!()
        };
        assert!(matches!(
            show(&variable, "public"),
            Err(SqlError::Rejected {
                sqlstate: "42704",
                ..
            })
        ));
    }

    /// What a query's error becomes, run by a plain DataFusion context.
    async fn error_of(sql: &str) -> SqlError {
        let context = SessionContext::new();
        let result = match context.sql(sql).await {
            Ok(frame) => frame.collect().await.map(drop),
            Err(error) => Err(error),
        };
        SqlError::from(result.expect_err(sql))
    }

    #[tokio::test]
    async fn mistakes_in_values_are_the_clients_with_their_sqlstate() {
        for (sql, expected) in [
            ("SELECT 1/0", "22012"),
            ("SELECT -9223372036854775808 / -1", "22003"),
            ("SELECT CAST(300 AS TINYINT)", "22003"),
            ("SELECT CAST('abc' AS INT)", "22P02"),
            ("SELECT TIMESTAMP '2263-01-01 00:00:00'", "22008"),
            ("SELECT to_timestamp(99999999999999)", "22008"),
            ("SELECT TIMESTAMP '2024-13-01 00:00:00'", "22007"),
            ("SELECT 1 LIMIT 18446744073709551615", "22003"),
        ] {
            match error_of(sql).await {
                SqlError::Rejected { sqlstate, message } => {
                    assert_eq!(sqlstate, expected, "{sql}: {message}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        assert!(matches!(
            error_of("SELECT nope").await,
            SqlError::Invalid(_)
        ));
    }
}
