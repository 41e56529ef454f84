//! A write's timestamps in its table's unit (`metronome_core::time_unit`): rounded down,
//! as SQL rounds a value to its column's precision, and never so that two rows of one
//! write become one while the write reports both.
//!
//! The writers (SQL `INSERT`, line protocol) keep each row's timestamp as written, in
//! nanoseconds (exact for every unit), next to the rounded one, and refuse the write
//! when [`first_merged`] finds two rows of one series that rounding put on one
//! timestamp. Two rows written with the *same* timestamp are not merged by rounding: the
//! later replaces the earlier, as any later write of a (series, ts) does.

use std::collections::HashMap;

use metronome_core::data::{Row, TimeUnit, TS_END};

/// `written_ns` in `unit`, rounded down; an error naming the range for what an `i64` of
/// the unit cannot hold.
pub fn round_to(unit: TimeUnit, written_ns: i128) -> Result<i64, String> {
    unit.from_ns_floor(written_ns)
        .filter(|&ts| ts != TS_END)
        .ok_or_else(|| {
            let (start, end) = match unit {
                TimeUnit::Nanosecond => ("1677-09-21", "2262-04-11"),
                _ => ("292 billion years BC", "292 billion years AD"),
            };
            format!(
                "timestamp {} is out of the range of a table in {} (from {start} to {end})",
                written_text(written_ns),
                unit_name(unit)
            )
        })
}

/// A written timestamp as a message shows it: a date and time where chrono has one,
/// otherwise nanoseconds.
pub fn written_text(written_ns: i128) -> String {
    let seconds = written_ns.div_euclid(1_000_000_000);
    let nanos = written_ns.rem_euclid(1_000_000_000) as u32;
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, nanos))
        .map(|time| time.format("%Y-%m-%d %H:%M:%S%.f").to_string())
        .unwrap_or_else(|| format!("{written_ns} ns"))
}

/// The unit as an error message names it: `milliseconds (TIMESTAMP(3))`.
pub fn unit_name(unit: TimeUnit) -> String {
    let name = match unit {
        TimeUnit::Second => "seconds",
        TimeUnit::Millisecond => "milliseconds",
        TimeUnit::Microsecond => "microseconds",
        TimeUnit::Nanosecond => "nanoseconds",
    };
    format!("{name} (TIMESTAMP({}))", unit.precision_digits())
}

/// Why a write was refused: `which` ("rows 1 and 2", "lines 3 and 4") of `table` are one
/// row at its unit.
pub fn merged_message(
    which: &str,
    table: &str,
    unit: TimeUnit,
    first_ns: i128,
    second_ns: i128,
) -> String {
    let step = match unit {
        TimeUnit::Second => "one second",
        TimeUnit::Millisecond => "one millisecond",
        TimeUnit::Microsecond => "one microsecond",
        TimeUnit::Nanosecond => "one nanosecond",
    };
    format!(
        "{which} are one series at {} and {}, less than {step} apart: table {table} keeps \
         {}, so they would be one row. Round the timestamps before writing, or write to a \
         table with a finer time index (TIMESTAMP(6), TIMESTAMP(9))",
        written_text(first_ns),
        written_text(second_ns),
        unit_name(unit),
    )
}

/// The first two rows (by index, in order) of one series whose written timestamps differ
/// but whose rounded `ts` is the same; `written_ns[i]` is row `i`'s timestamp as written.
pub fn first_merged(rows: &[Row], written_ns: &[i128]) -> Option<(usize, usize)> {
    assert_eq!(
        rows.len(),
        written_ns.len(),
        "one written timestamp per row"
    );
    let mut seen: HashMap<(&[String], i64), usize> = HashMap::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        match seen.insert((series(&row.tags), row.ts), index) {
            Some(earlier) if written_ns[earlier] != written_ns[index] => {
                return Some((earlier, index))
            }
            _ => {}
        }
    }
    None
}

/// A row's series: its tags without trailing empty values (a series' one form, see
/// `Row::canonical_tags`).
pub fn series(tags: &[String]) -> &[String] {
    let end = tags
        .iter()
        .rposition(|tag| !tag.is_empty())
        .map_or(0, |i| i + 1);
    &tags[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, ts: i64) -> Row {
        Row {
            tags: vec![host.into(), String::new()],
            ts,
            fields: Vec::new(),
        }
    }

    #[test]
    fn rounding_that_makes_two_rows_one_is_found() {
        // 0.5 ms apart in a millisecond table: one series, one ts, two written times.
        let written = [1_000_000, 1_500_000, 1_000_000, 1_700_000];
        let ms: Vec<i64> = written
            .iter()
            .map(|&ns| round_to(TimeUnit::Millisecond, ns).unwrap())
            .collect();
        assert_eq!(ms, [1, 1, 1, 1]);
        let rows = [row("a", 1), row("b", 1), row("a", 1), row("b", 1)];
        assert_eq!(first_merged(&rows, &written), Some((1, 3)));
        let message = merged_message(
            "rows 2 and 4",
            "t",
            TimeUnit::Millisecond,
            1_500_000,
            1_700_000,
        );
        assert!(
            message.contains("1970-01-01 00:00:00.001500")
                && message.contains("less than one millisecond apart")
                && message.contains("milliseconds (TIMESTAMP(3))"),
            "{message}"
        );
        // The same written time twice is a replacement, not a merge; other series and
        // trailing empty tags do not matter.
        let rows = [row("a", 1), row("b", 1), row("a", 1)];
        assert_eq!(first_merged(&rows, &written[..3]), None);
        let mut short = row("a", 1);
        short.tags.pop();
        assert_eq!(
            first_merged(&[row("a", 1), short], &[1_000_000, 1_200_000]),
            Some((0, 1))
        );
    }

    #[test]
    fn what_a_unit_cannot_hold_is_an_error() {
        let year_3000_ns = 32_503_680_000i128 * 1_000_000_000;
        assert_eq!(round_to(TimeUnit::Second, year_3000_ns), Ok(32_503_680_000));
        let error = round_to(TimeUnit::Nanosecond, year_3000_ns).unwrap_err();
        assert!(error.contains("nanoseconds (TIMESTAMP(9))"), "{error}");
        assert!(error.contains("3000-01-01 00:00:00"), "{error}");
        assert!(error.contains("2262-04-11"), "{error}");
        // The end of every range is no timestamp a row may have.
        let end = TimeUnit::Nanosecond.to_ns(TS_END);
        assert!(round_to(TimeUnit::Nanosecond, end).is_err());
        assert_eq!(round_to(TimeUnit::Nanosecond, end - 1), Ok(TS_END - 1));
    }
}
