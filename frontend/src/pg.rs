//! The PostgreSQL wire protocol (pgwire): the simple and the extended query protocol over
//! [`SqlEngine`], so psql, tokio-postgres and psycopg work.
//!
//! Errors are ErrorResponses with a SQLSTATE: `42000` for a wrong statement, PostgreSQL's
//! own code for a mistake it has one for (class 22 for values: `22012` division by zero,
//! `22003` numeric overflow, `22008` a timestamp out of range, …; `25000` for a ROLLBACK
//! that cannot undo; `26000` for DEALLOCATE of an unknown statement), `0A000` for an
//! unsupported statement, `53000` for overload, `XX000` for internal failures; bytes that
//! are no valid message get a FATAL `08P01` (or `0A000` for an unknown protocol version)
//! before the connection closes ([`connection`]). Each connection has a
//! [`Session`](crate::sql::Session) for its transaction block. There is no
//! authentication yet: bind the port to a trusted network (the default is loopback).

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::Array;
use arrow_schema::{DataType, Schema, TimeUnit};
use async_trait::async_trait;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{Expr, SetExpr, Statement, Value as SqlValue};
use futures::{stream, Sink, SinkExt};
use metronome_core::rt::task;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::PgWireBackendMessage;
use tracing::Instrument;

use crate::sql::insert::{columns, ColumnRole};
use crate::sql::{is_all, Parsed, Session, SqlEngine, SqlError, SqlOutput};

pub struct PgHandler {
    sql: Arc<SqlEngine>,
    parser: Arc<NoopQueryParser>,
}

impl PgHandler {
    pub fn new(sql: Arc<SqlEngine>) -> PgHandler {
        PgHandler {
            sql,
            parser: Arc::new(NoopQueryParser::new()),
        }
    }
}

/// The handlers of one server; cheap to clone per connection.
#[derive(Clone)]
pub struct PgServer {
    handler: Arc<PgHandler>,
}

impl PgServer {
    pub fn new(sql: Arc<SqlEngine>) -> PgServer {
        PgServer {
            handler: Arc::new(PgHandler::new(sql)),
        }
    }
}

impl PgWireServerHandlers for PgServer {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }
}

/// Accepts PostgreSQL connections on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: PgServer,
    shutdown: impl std::future::Future<Output = ()>,
) {
    futures::pin_mut!(shutdown);
    loop {
        let accepted = {
            let accept = listener.accept();
            futures::pin_mut!(accept);
            match futures::future::select(&mut shutdown, accept).await {
                futures::future::Either::Left(_) => return,
                futures::future::Either::Right((accepted, _)) => accepted,
            }
        };
        match accepted {
            Ok((socket, peer)) => {
                let server = server.clone();
                // Every line a connection logs names it, so that one client's errors can
                // be found together.
                let id = format!("{:016x}", metronome_core::rt::rand::random::<u64>());
                let span = tracing::info_span!("pg", connection = %id, %peer);
                task::spawn(
                    async move {
                        if let Err(error) = connection::process(socket, server).await {
                            tracing::debug!(%error, "PostgreSQL connection ended with an error");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(error) => tracing::warn!(%error, "cannot accept a PostgreSQL connection"),
        }
    }
}

#[cfg(not(madsim))]
mod connection;

/// The simulation drives the frontend's engines, not its sockets: pgwire's connection
/// needs the real tokio's streams. A connection is refused, saying so.
#[cfg(madsim)]
mod connection {
    pub async fn process(
        _socket: tokio::net::TcpStream,
        _server: super::PgServer,
    ) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "the PostgreSQL protocol is not served in simulation",
        ))
    }
}

fn pg_error(error: SqlError) -> PgWireError {
    let code = error.sqlstate();
    // Once per error the client is sent, in the connection's span (its id and peer), as
    // HTTP logs its rejections: the client's mistakes at INFO, retryable states at
    // WARN, Metronome's faults at ERROR.
    let message = crate::http::logged_message(&error.to_string());
    let kind = error.kind();
    if kind.http_status() >= 500 && !kind.is_retryable() {
        tracing::error!(sqlstate = %code, error = %message, "statement failed");
    } else if kind.is_retryable() || kind.http_status() >= 500 {
        tracing::warn!(sqlstate = %code, error = %message, "statement failed");
    } else {
        tracing::info!(sqlstate = %code, error = %message, "statement rejected");
    }
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        error.to_string(),
    )))
}

/// The PostgreSQL type a column is sent as.
fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        _ => Type::VARCHAR,
    }
}

fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            FieldInfo::new(
                field.name().clone(),
                None,
                None,
                pg_type(field.data_type()),
                format.format_for(index),
            )
        })
        .collect()
}

/// A timestamp as PostgreSQL writes one in text: `2024-01-01 00:00:00`, with a fraction
/// only where there is one, and without trailing zeros. A nanosecond table's fraction
/// has up to nine digits (PostgreSQL's own stop at six).
fn timestamp_text(time: chrono::NaiveDateTime) -> String {
    let mut text = time.format("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = time.and_utc().timestamp_subsec_nanos();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text
}

/// Row `row` of a time column of any unit, as a date and time (`None` past chrono's
/// range).
fn naive_time(column: &dyn Array, unit: TimeUnit, row: usize) -> Option<chrono::NaiveDateTime> {
    let (value, per_second) = match unit {
        TimeUnit::Second => (column.as_primitive::<TimestampSecondType>().value(row), 1),
        TimeUnit::Millisecond => (
            column.as_primitive::<TimestampMillisecondType>().value(row),
            1_000,
        ),
        TimeUnit::Microsecond => (
            column.as_primitive::<TimestampMicrosecondType>().value(row),
            1_000_000,
        ),
        TimeUnit::Nanosecond => (
            column.as_primitive::<TimestampNanosecondType>().value(row),
            1_000_000_000,
        ),
    };
    let nanos = value.rem_euclid(per_second) * (1_000_000_000 / per_second);
    chrono::DateTime::from_timestamp(value.div_euclid(per_second), nanos as u32)
        .map(|time| time.naive_utc())
}

/// Encodes one value of `column` at `row` into the row being built.
fn encode_value(
    encoder: &mut DataRowEncoder,
    field: &FieldInfo,
    column: &dyn Array,
    row: usize,
) -> PgWireResult<()> {
    if column.is_null(row) {
        return encoder.encode_field(&None::<i64>);
    }
    match column.data_type() {
        DataType::Boolean => encoder.encode_field(&column.as_boolean().value(row)),
        DataType::Int8 => {
            encoder.encode_field(&i16::from(column.as_primitive::<Int8Type>().value(row)))
        }
        DataType::Int16 => encoder.encode_field(&column.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => {
            encoder.encode_field(&i16::from(column.as_primitive::<UInt8Type>().value(row)))
        }
        DataType::Int32 => encoder.encode_field(&column.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => {
            encoder.encode_field(&i32::from(column.as_primitive::<UInt16Type>().value(row)))
        }
        DataType::Int64 => encoder.encode_field(&column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => {
            encoder.encode_field(&i64::from(column.as_primitive::<UInt32Type>().value(row)))
        }
        DataType::UInt64 => encoder.encode_field(
            &i64::try_from(column.as_primitive::<UInt64Type>().value(row)).unwrap_or(i64::MAX),
        ),
        DataType::Float32 => encoder.encode_field(&column.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => encoder.encode_field(&column.as_primitive::<Float64Type>().value(row)),
        // In binary, PostgreSQL's format: microseconds (a nanosecond table's last three
        // digits travel only in text).
        DataType::Timestamp(unit, None) => match naive_time(column, *unit, row) {
            Some(time) if field.format() == FieldFormat::Text => {
                encoder.encode_field(&timestamp_text(time))
            }
            Some(time) => encoder.encode_field(&time),
            None => encoder.encode_field(&None::<i64>),
        },
        DataType::Utf8 => encoder.encode_field(&column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => encoder.encode_field(&column.as_string::<i64>().value(row)),
        DataType::Utf8View => encoder.encode_field(&column.as_string_view().value(row)),
        _ => {
            // Everything else travels as text, formatted as Arrow displays it.
            let formatter = arrow_cast_display(column, row);
            encoder.encode_field(&formatter)
        }
    }
}

fn arrow_cast_display(column: &dyn Array, row: usize) -> String {
    datafusion::arrow::util::display::array_value_to_string(column, row)
        .unwrap_or_else(|error| format!("<{error}>"))
}

fn response(output: SqlOutput, format: &Format) -> PgWireResult<Response> {
    match output {
        SqlOutput::Done { tag, rows, .. } => {
            let tag = match tag {
                "INSERT" => Tag::new("INSERT").with_oid(0).with_rows(rows),
                "BEGIN" => return Ok(Response::TransactionStart(Tag::new("BEGIN"))),
                "COMMIT" | "ROLLBACK" => return Ok(Response::TransactionEnd(Tag::new(tag))),
                other => Tag::new(other),
            };
            Ok(Response::Execution(tag))
        }
        SqlOutput::Rows { schema, batches } => {
            let header = Arc::new(fields(&schema, format));
            let mut rows: Vec<PgWireResult<DataRow>> = Vec::new();
            let mut encoder = DataRowEncoder::new(header.clone());
            for batch in &batches {
                for row in 0..batch.num_rows() {
                    for (field, column) in header.iter().zip(batch.columns()) {
                        encode_value(&mut encoder, field, column.as_ref(), row)?;
                    }
                    rows.push(Ok(encoder.take_row()));
                }
            }
            Ok(Response::Query(QueryResponse::new(
                header,
                stream::iter(rows),
            )))
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for PgHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if query.trim().trim_end_matches(';').trim().is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let parsed = self.sql.parse(query).map_err(pg_error)?;
        let mut responses = Vec::with_capacity(parsed.len());
        for statement in parsed {
            let is_rollback = matches!(statement.statement, Statement::Rollback { .. });
            match self.execute(client, statement, &[]).await {
                Ok(output) => {
                    notice(client, &output).await?;
                    responses.push(response(output, &Format::UnifiedText)?)
                }
                Err(error) => {
                    // A refused ROLLBACK has still ended the block (its writes stand):
                    // complete it, so that the session is idle again as it truly is,
                    // then say why it undid nothing. PostgreSQL's COMMIT that fails
                    // likewise ends the block with an error.
                    if is_rollback && matches!(error, SqlError::Rejected { .. }) {
                        responses.push(Response::TransactionEnd(Tag::new("ROLLBACK")));
                    }
                    // Statements before the failing one have taken effect, as in PostgreSQL's
                    // implicit per-statement transactions.
                    let PgWireError::UserError(info) = pg_error(error) else {
                        unreachable!("pg_error makes user errors")
                    };
                    responses.push(Response::Error(info));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

impl PgHandler {
    /// Runs one statement in the connection's [`Session`]; `DEALLOCATE` also drops the
    /// prepared statement it names from the connection's store.
    async fn execute<C>(
        &self,
        client: &C,
        parsed: Parsed,
        params: &[ScalarValue],
    ) -> Result<SqlOutput, SqlError>
    where
        C: ClientInfo + ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        if let Statement::Deallocate { name, .. } = &parsed.statement {
            // pgwire's store can drop one statement by name but cannot list them, so
            // `DEALLOCATE ALL` drops nothing; a statement parsed again under a name
            // replaces the old one, so nothing a driver does goes wrong by it.
            if !is_all(name) {
                let store = client.portal_store();
                if store.get_statement(&name.value).is_none() {
                    return Err(SqlError::Rejected {
                        sqlstate: "26000",
                        message: format!("prepared statement \"{}\" does not exist", name.value),
                    });
                }
                store.rm_statement(&name.value);
            }
        }
        let session = client
            .session_extensions()
            .get_or_insert_with(|| Mutex::new(Session::default()));
        let control = lock(&session).before(&parsed.statement)?;
        let output = self.sql.execute_parsed(parsed, params).await?;
        lock(&session).after(control, &output);
        Ok(output)
    }
}

/// Sends a NOTICE (a WARNING) for what the client should know of `output`: rows an
/// INSERT wrote that its table's TTL had already expired. It goes out ahead of the
/// statement's own response, as PostgreSQL's notices do.
async fn notice<C>(client: &mut C, output: &SqlOutput) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if let SqlOutput::Done {
        expired: Some(expired),
        ..
    } = output
    {
        let info = ErrorInfo::new(
            "WARNING".to_string(),
            "01000".to_string(),
            expired.message.clone(),
        );
        client
            .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                info,
            )))
            .await?;
    }
    Ok(())
}

fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    // A session is only touched by its own connection's task, between awaits; a panic
    // while it was held leaves nothing half-changed worth refusing service for.
    session
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The one statement of an extended-protocol query.
fn single(sql: &SqlEngine, text: &str) -> PgWireResult<Option<Parsed>> {
    let mut parsed = sql.parse(text).map_err(pg_error)?;
    match parsed.len() {
        0 => Ok(None),
        1 => Ok(parsed.pop()),
        n => Err(pg_error(SqlError::Invalid(format!(
            "a prepared statement holds one command, this has {n}"
        )))),
    }
}

/// The parameter types and result columns of a statement, for Describe.
async fn describe(
    sql: &SqlEngine,
    parsed: &Parsed,
    format: &Format,
) -> PgWireResult<(Vec<Type>, Vec<FieldInfo>)> {
    if let Some(call) = &parsed.admin {
        return Ok((vec![], fields(&crate::sql::admin::schema(call), format)));
    }
    match &parsed.statement {
        Statement::Query(_) => {
            let plan = sql.plan_query(&parsed.statement).await.map_err(pg_error)?;
            let types = plan
                .get_parameter_types()
                .map_err(|e| pg_error(SqlError::from(e)))?;
            let mut params: Vec<(usize, Type)> = types
                .iter()
                .filter_map(|(name, data_type)| {
                    let index = name.strip_prefix('$')?.parse::<usize>().ok()?;
                    Some((index, data_type.as_ref().map_or(Type::UNKNOWN, pg_type)))
                })
                .collect();
            params.sort_by_key(|(index, _)| *index);
            let schema = plan.schema().as_arrow().clone();
            Ok((
                params.into_iter().map(|(_, t)| t).collect(),
                fields(&schema, format),
            ))
        }
        Statement::Insert(insert) => {
            // Parameters take the types of the columns they fill, in order.
            let name = crate::sql::insert::target(insert).map_err(pg_error)?;
            let table = sql.table(&name).map_err(pg_error)?;
            let all = columns(&table);
            let targets: Vec<ColumnRole> = if insert.columns.is_empty() {
                all.iter().map(|(_, role)| *role).collect()
            } else {
                insert
                    .columns
                    .iter()
                    .filter_map(|column| {
                        let column = column.to_string().to_lowercase();
                        all.iter()
                            .find(|(name, _)| *name == column)
                            .map(|(_, r)| *r)
                    })
                    .collect()
            };
            // Each `$n` takes the type of the column whose value it is, wherever it
            // stands among literals; one that fills no column is of unknown type.
            let mut types: std::collections::BTreeMap<usize, Type> = Default::default();
            if let Some(source) = &insert.source {
                if let SetExpr::Values(values) = source.body.as_ref() {
                    for row in &values.rows {
                        for (expr, role) in row.content.iter().zip(&targets) {
                            if let Some(n) = placeholder(expr) {
                                types.entry(n).or_insert_with(|| column_type(*role));
                            }
                        }
                    }
                }
            }
            let count = types.keys().next_back().copied().unwrap_or(0);
            let params: Vec<Type> = (1..=count)
                .map(|n| types.get(&n).cloned().unwrap_or(Type::UNKNOWN))
                .collect();
            Ok((params, Vec::new()))
        }
        _ => Ok((Vec::new(), Vec::new())),
    }
}

/// The number `n` of a `$n` parameter standing for a whole value (perhaps with a cast).
fn placeholder(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Value(value) => match &value.value {
            SqlValue::Placeholder(name) => name.strip_prefix('$')?.parse().ok(),
            _ => None,
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => placeholder(expr),
        _ => None,
    }
}

/// The PostgreSQL type of a value for a column of `role`.
fn column_type(role: ColumnRole) -> Type {
    match role {
        ColumnRole::Tag(_) => Type::VARCHAR,
        ColumnRole::TimeIndex => Type::TIMESTAMP,
        ColumnRole::Field(_, field_type) => match field_type {
            metronome_core::data::FieldType::Float64 => Type::FLOAT8,
            metronome_core::data::FieldType::Int64 => Type::INT8,
            metronome_core::data::FieldType::String => Type::VARCHAR,
            metronome_core::data::FieldType::Boolean => Type::BOOL,
        },
    }
}

/// A timestamp parameter in nanoseconds, or microseconds past the years nanoseconds hold.
fn timestamp_parameter(time: Option<chrono::DateTime<chrono::Utc>>) -> ScalarValue {
    match time {
        None => ScalarValue::TimestampNanosecond(None, None),
        Some(time) => match time.timestamp_nanos_opt() {
            Some(ns) => ScalarValue::TimestampNanosecond(Some(ns), None),
            None => ScalarValue::TimestampMicrosecond(Some(time.timestamp_micros()), None),
        },
    }
}

/// Decodes the bound parameter `index` of `portal` into a value DataFusion understands.
fn parameter(portal: &Portal<String>, index: usize, pg: &Type) -> PgWireResult<ScalarValue> {
    Ok(match *pg {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(index, pg)?),
        Type::INT2 => ScalarValue::Int64(portal.parameter::<i16>(index, pg)?.map(i64::from)),
        Type::INT4 => ScalarValue::Int64(portal.parameter::<i32>(index, pg)?.map(i64::from)),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(index, pg)?),
        Type::FLOAT4 => ScalarValue::Float64(portal.parameter::<f32>(index, pg)?.map(f64::from)),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(index, pg)?),
        // The table's unit is applied at INSERT; a parameter keeps what it carries (text
        // may carry nanoseconds, binary is PostgreSQL's microseconds).
        Type::TIMESTAMP => timestamp_parameter(
            portal
                .parameter::<chrono::NaiveDateTime>(index, pg)?
                .map(|time| time.and_utc()),
        ),
        Type::TIMESTAMPTZ => timestamp_parameter(
            portal
                .parameter::<chrono::DateTime<chrono::FixedOffset>>(index, pg)?
                .map(|time| time.to_utc()),
        ),
        _ => ScalarValue::Utf8(portal.parameter::<String>(index, pg)?),
    })
}

#[async_trait]
impl ExtendedQueryHandler for PgHandler {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(parsed) = single(&self.sql, &target.statement)? else {
            return Ok(DescribeStatementResponse::new(Vec::new(), Vec::new()));
        };
        let (server_types, fields) = describe(&self.sql, &parsed, &Format::UnifiedBinary).await?;
        // The client's declared types win; ours fill the gaps.
        let count = server_types.len().max(target.parameter_types.len());
        let types = (0..count)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| server_types.get(i).cloned())
                    .unwrap_or(Type::UNKNOWN)
            })
            .collect();
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(parsed) = single(&self.sql, &target.statement.statement)? else {
            return Ok(DescribePortalResponse::new(Vec::new()));
        };
        let (_, fields) = describe(&self.sql, &parsed, &target.result_column_format).await?;
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(parsed) = single(&self.sql, &portal.statement.statement)? else {
            return Ok(Response::EmptyQuery);
        };
        let (server_types, _) = describe(&self.sql, &parsed, &Format::UnifiedText).await?;
        let mut params = Vec::with_capacity(portal.parameter_len());
        for index in 0..portal.parameter_len() {
            let declared = portal
                .statement
                .parameter_types
                .get(index)
                .cloned()
                .flatten()
                .or_else(|| server_types.get(index).cloned())
                .unwrap_or(Type::VARCHAR);
            params.push(parameter(portal, index, &declared)?);
        }
        let output = self
            .execute(&*client, parsed, &params)
            .await
            .map_err(pg_error)?;
        notice(client, &output).await?;
        response(output, &portal.result_column_format)
    }
}
