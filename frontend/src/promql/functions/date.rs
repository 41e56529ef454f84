//! The calendar functions (`day_of_month`, `hour`, …) in UTC, as Go's `time` computes them.

use super::*;

/// The date functions: of each sample's value read as Unix seconds, or of the
/// evaluation time without an argument.
pub(super) fn date_function(
    ev: &Evaluator,
    name: &str,
    args: &[&Expr],
    t: i64,
) -> Result<Value, QueryError> {
    let input = match args.first() {
        Some(arg) => vector_arg(ev, arg, t)?,
        None => vec![Sample {
            labels: empty_labels(),
            value: t as f64 / 1000.0,
        }],
    };
    let mut out = Vec::with_capacity(input.len());
    for sample in input {
        // Go converts to int64 by truncation; values outside chrono's range (or NaN)
        // have no date, and are left out rather than invented.
        if !sample.value.is_finite() {
            continue;
        }
        let Some(date) = DateTime::<Utc>::from_timestamp(sample.value.trunc() as i64, 0) else {
            continue;
        };
        let value = match name {
            "year" => f64::from(date.year()),
            "month" => f64::from(date.month()),
            "day_of_month" => f64::from(date.day()),
            "day_of_week" => f64::from(date.weekday().num_days_from_sunday()),
            "day_of_year" => f64::from(date.ordinal()),
            "hour" => f64::from(date.hour()),
            "minute" => f64::from(date.minute()),
            _ => f64::from(days_in_month(date.year(), date.month())),
        };
        out.push(Sample {
            labels: ev.without_name(&sample.labels),
            value,
        });
    }
    Ok(Value::Vector(out))
}

pub(super) fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    match (
        NaiveDate::from_ymd_opt(year, month, 1),
        NaiveDate::from_ymd_opt(next_year, next_month, 1),
    ) {
        (Some(first), Some(next)) => u32::try_from((next - first).num_days()).unwrap_or(31),
        _ => 31,
    }
}
