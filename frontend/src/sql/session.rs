//! A connection's session: its transaction block, and the statements drivers send on their own (`SHOW`, `SET`, `DISCARD`, …).

use super::*;

/// The command tag of a session statement, as PostgreSQL's.
pub(super) fn session_tag(statement: &Statement) -> &'static str {
    match statement {
        Statement::Set(_) => "SET",
        Statement::Reset(_) => "RESET",
        Statement::Discard { object_type } => match object_type {
            DiscardObject::ALL => "DISCARD ALL",
            DiscardObject::PLANS => "DISCARD PLANS",
            DiscardObject::SEQUENCES => "DISCARD SEQUENCES",
            DiscardObject::TEMP => "DISCARD TEMP",
        },
        Statement::Deallocate { name, .. } if is_all(name) => "DEALLOCATE ALL",
        Statement::Deallocate { .. } => "DEALLOCATE",
        Statement::StartTransaction { .. } => "BEGIN",
        Statement::Commit { .. } => "COMMIT",
        _ => "ROLLBACK",
    }
}

/// Whether `DEALLOCATE name` names every prepared statement (`DEALLOCATE ALL`).
pub fn is_all(name: &Ident) -> bool {
    name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all")
}

/// `SHOW name`: the session settings drivers and tools ask for on their own, with the
/// values Metronome behaves by. Anything else is unknown, as in PostgreSQL.
pub(super) fn show(variable: &[Ident], database: &str) -> Result<SqlOutput, SqlError> {
    let name = variable
        .iter()
        .map(|part| part.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    let value = match name.as_str() {
        // Every statement takes effect on its own when it runs (see [`Session`]): no
        // statement sees another's uncommitted writes.
        "transaction_isolation" | "transaction isolation level" => "read committed",
        "default_transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" => "off",
        "standard_conforming_strings" | "integer_datetimes" => "on",
        "server_encoding" | "client_encoding" => "UTF8",
        "datestyle" => "ISO, MDY",
        "timezone" => "UTC",
        "intervalstyle" => "postgres",
        "server_version" => "16.0",
        "server_version_num" => "160000",
        "search_path" => database,
        "max_identifier_length" => "63",
        _ => {
            return Err(SqlError::Rejected {
                sqlstate: "42704",
                message: format!("unrecognized configuration parameter \"{name}\""),
            })
        }
    };
    let column = match name.as_str() {
        "transaction isolation level" => "transaction_isolation".to_string(),
        other => other.to_string(),
    };
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec![value])) as ArrayRef],
    )
    .map_err(|error| SqlError::internal(error.to_string()))?;
    Ok(SqlOutput::Rows {
        schema,
        batches: vec![batch],
    })
}

/// What a statement does to the transaction block, for [`Session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Begin,
    End,
    Other,
}

/// One client's session: its transaction block, for one pgwire connection or one HTTP
/// request.
///
/// Metronome has no transactions: every statement takes effect when it runs, inside a
/// block or not, as if each were committed on its own. `BEGIN` and `COMMIT` are
/// accepted so that drivers, which send them on their own, work; since a `COMMIT` only
/// confirms what has already happened, it is always true. A `ROLLBACK` is true only if
/// nothing was written since `BEGIN`: it then succeeds, and otherwise it is refused with
/// SQLSTATE 25000 and a message saying what was written and cannot be undone, rather
/// than letting the client believe its writes are gone. Either way the block ends.
#[derive(Debug, Default)]
pub struct Session {
    /// While a block is open: what was written since `BEGIN`.
    pub(super) block: Option<Written>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Written {
    pub(super) rows: usize,
    /// Tables created or dropped.
    pub(super) tables: usize,
}

impl Session {
    /// Whether a transaction block is open.
    pub fn in_block(&self) -> bool {
        self.block.is_some()
    }

    /// Called before `statement` runs: refuses a `ROLLBACK` that cannot undo the
    /// block's writes (and ends the block, whose writes stand).
    pub fn before(&mut self, statement: &Statement) -> Result<Control, SqlError> {
        match statement {
            Statement::StartTransaction { .. } => Ok(Control::Begin),
            Statement::Commit { .. } => Ok(Control::End),
            Statement::Rollback { .. } => match self.block.take() {
                Some(written) if written.rows > 0 || written.tables > 0 => {
                    let mut what = Vec::new();
                    if written.rows > 0 {
                        what.push(format!(
                            "{} {} written",
                            written.rows,
                            if written.rows == 1 { "row" } else { "rows" }
                        ));
                    }
                    if written.tables > 0 {
                        what.push(format!(
                            "{} {} created or dropped",
                            written.tables,
                            if written.tables == 1 {
                                "table"
                            } else {
                                "tables"
                            }
                        ));
                    }
                    Err(SqlError::Rejected {
                        sqlstate: sqlstate::INVALID_TRANSACTION_STATE,
                        message: format!(
                            "ROLLBACK cannot undo the {} since BEGIN: Metronome has no \
                             transactions, and every statement took effect when it ran; \
                             the transaction block is closed",
                            what.join(" and ")
                        ),
                    })
                }
                _ => Ok(Control::End),
            },
            _ => Ok(Control::Other),
        }
    }

    /// Called after a statement ran with `output`.
    pub fn after(&mut self, control: Control, output: &SqlOutput) {
        match control {
            Control::Begin => {
                self.block.get_or_insert_with(Written::default);
            }
            Control::End => self.block = None,
            Control::Other => {
                if let (Some(written), SqlOutput::Done { tag, rows, .. }) =
                    (&mut self.block, output)
                {
                    match *tag {
                        "INSERT" => written.rows += rows,
                        "CREATE TABLE" | "DROP TABLE" => written.tables += 1,
                        _ => {}
                    }
                }
            }
        }
    }
}
