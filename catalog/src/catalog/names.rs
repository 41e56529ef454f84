//! The names the catalog accepts (tables, columns, metrics, labels) and how a metric's
//! labels map to the physical metric regions' columns: plain functions that
//! `Catalog::apply` calls to check a command.

use metronome_core::data::RegionSchema;

use super::CatalogError;

/// Checks a regular table's partition columns (distinct tags) and column order (every
/// column once).
pub(super) fn check_layout(
    database: &str,
    name: &str,
    schema: &RegionSchema,
    partition_columns: &[String],
    column_order: &[String],
) -> Result<(), CatalogError> {
    let invalid = |what: &str, reason: String| CatalogError::Invalid {
        what: format!("{what} of {database}.{name}"),
        reason,
    };
    for (index, column) in partition_columns.iter().enumerate() {
        if !schema.tags.contains(column) {
            return Err(invalid(
                "partition columns",
                format!("{column:?} is not a PRIMARY KEY (tag) column"),
            ));
        }
        if partition_columns[..index].contains(column) {
            return Err(invalid(
                "partition columns",
                format!("{column:?} appears twice"),
            ));
        }
    }
    if !column_order.is_empty() {
        let mut expected: Vec<&String> = schema
            .tags
            .iter()
            .chain([&schema.time_index])
            .chain(schema.fields.iter().map(|f| &f.name))
            .collect();
        let mut given: Vec<&String> = column_order.iter().collect();
        expected.sort_unstable();
        given.sort_unstable();
        if expected != given {
            return Err(invalid(
                "column order",
                "it must name every column exactly once".to_string(),
            ));
        }
    }
    Ok(())
}

/// Column names that SQL and PromQL can both use: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn check_name(what: &str, name: &str) -> Result<(), CatalogError> {
    check_chars(what, name, "")
}

/// Metric names as Prometheus allows them: `[a-zA-Z_:][a-zA-Z0-9_:]*` (recording rules
/// use the colon).
pub fn check_metric_name(name: &str) -> Result<(), CatalogError> {
    check_chars("metric name", name, ":")
}

fn check_chars(what: &str, name: &str, extra: &str) -> Result<(), CatalogError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || extra.contains(c);
    let valid =
        name.chars().next().is_some_and(|c| !c.is_ascii_digit()) && name.chars().all(allowed);
    if valid && name.len() <= 255 {
        Ok(())
    } else {
        Err(CatalogError::Invalid {
            what: format!("{what} {name:?}"),
            reason: format!(
                "names are 1 to 255 characters of [a-zA-Z0-9_{extra}], not starting with a digit"
            ),
        })
    }
}

/// The time index and value column of every metric table, as SQL sees them.
pub const METRIC_TIME_INDEX: &str = "ts";
pub const METRIC_VALUE: &str = "value";

/// The physical metric regions' time index and value columns.
pub const PHYSICAL_TIME_INDEX: &str = "__ts";
pub const PHYSICAL_VALUE: &str = "__value";
pub const METRIC_NAME_LABEL: &str = "__name__";

/// The prefix of a column that holds a label whose own name is taken (see
/// [`metric_column`]).
const ESCAPED_LABEL_PREFIX: &str = "__label_";

/// The column that holds label `label` in the physical metric regions and in the metric's
/// SQL table. Every label name Prometheus accepts must be storable, `value`, `ts` and
/// `__`-prefixed ones included, so the four names the metric columns use (`ts` and
/// `value` in SQL, `__ts` and `__value` in the regions) are stored as
/// `__label_<name>`, and so is every label that itself starts with `__label_`. That
/// keeps the mapping one-to-one: an escaped column always starts with `__label_`, an
/// unescaped one never does. Every other label is its own column, so no data directory
/// written before this rule needs migrating (those names were refused then).
pub fn metric_column(label: &str) -> std::borrow::Cow<'_, str> {
    let taken = [
        METRIC_TIME_INDEX,
        METRIC_VALUE,
        PHYSICAL_TIME_INDEX,
        PHYSICAL_VALUE,
    ];
    let column = if taken.contains(&label) || label.starts_with(ESCAPED_LABEL_PREFIX) {
        std::borrow::Cow::Owned(format!("{ESCAPED_LABEL_PREFIX}{label}"))
    } else {
        std::borrow::Cow::Borrowed(label)
    };
    debug_assert_eq!(metric_label(&column), label, "the mapping reads back");
    debug_assert!(
        !taken.contains(&column.as_ref()),
        "no column is a metric column"
    );
    column
}

/// The label a metric column holds: the inverse of [`metric_column`].
pub fn metric_label(column: &str) -> &str {
    column.strip_prefix(ESCAPED_LABEL_PREFIX).unwrap_or(column)
}
