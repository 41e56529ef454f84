//! The unit of a table's timestamps, and exact conversions between units.
//!
//! A table keeps the precision it declares: its rows' `ts` are integers in its unit, from
//! the write path to the files and back to the reader. Prometheus metrics are
//! milliseconds; SQL declares `TIMESTAMP(0|3|6|9)`; line protocol creates nanosecond
//! tables. A written timestamp finer than its table's unit is rounded down to it (as
//! SQL rounds to a column's precision); the writers refuse a write in which that
//! rounding would make two of its rows one ([`TimeUnit::to_ns`] keeps what was written
//! exactly, to tell). Time *bounds* (a scan's range, a TTL cutoff) round outward or
//! inward as their use requires ([`TimeUnit::convert_floor`], [`TimeUnit::convert_ceil`]).

use serde::{Deserialize, Serialize};

/// One step of a time index.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    Second,
    /// Prometheus' unit and the default: a schema written before units existed (no
    /// `time_unit` in its JSON) is in milliseconds.
    #[default]
    Millisecond,
    Microsecond,
    Nanosecond,
}

impl TimeUnit {
    /// Every unit, coarsest first.
    pub const ALL: [TimeUnit; 4] = [
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ];

    /// Steps of this unit in one second.
    pub fn per_second(self) -> i64 {
        match self {
            TimeUnit::Second => 1,
            TimeUnit::Millisecond => 1_000,
            TimeUnit::Microsecond => 1_000_000,
            TimeUnit::Nanosecond => 1_000_000_000,
        }
    }

    /// SQL's fractional-second digits of this unit (`TIMESTAMP(p)`): 0, 3, 6 or 9.
    pub fn precision_digits(self) -> u8 {
        match self {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 3,
            TimeUnit::Microsecond => 6,
            TimeUnit::Nanosecond => 9,
        }
    }

    /// The coarsest unit that holds `digits` fractional-second digits (`TIMESTAMP(2)` is
    /// kept in milliseconds: finer than declared, never coarser); `None` past 9.
    pub fn for_precision_digits(digits: u64) -> Option<TimeUnit> {
        TimeUnit::ALL
            .into_iter()
            .find(|unit| u64::from(unit.precision_digits()) >= digits)
    }

    /// The unit's short name, as line protocol's `precision=` and durations spell it.
    pub fn abbreviation(self) -> &'static str {
        match self {
            TimeUnit::Second => "s",
            TimeUnit::Millisecond => "ms",
            TimeUnit::Microsecond => "us",
            TimeUnit::Nanosecond => "ns",
        }
    }

    /// `value` in this unit as nanoseconds, exactly (an `i128` holds any unit's `i64`).
    pub fn to_ns(self, value: i64) -> i128 {
        i128::from(value) * i128::from(1_000_000_000 / self.per_second())
    }

    /// Nanoseconds in this unit, rounded down; `None` past what an `i64` of this unit
    /// holds.
    pub fn from_ns_floor(self, ns: i128) -> Option<i64> {
        i64::try_from(ns.div_euclid(i128::from(1_000_000_000 / self.per_second()))).ok()
    }

    /// `value` in this unit expressed in `to`, if that is exact and fits an `i64`:
    /// `None` for a value finer than `to` can hold, or out of `to`'s range.
    pub fn convert_exact(self, value: i64, to: TimeUnit) -> Option<i64> {
        let (from_steps, to_steps) = (self.per_second(), to.per_second());
        if to_steps >= from_steps {
            value.checked_mul(to_steps / from_steps)
        } else {
            let factor = from_steps / to_steps;
            (value % factor == 0).then_some(value / factor)
        }
    }

    /// `value` in `to`, rounded down, saturating at `i64`'s ends: the start of a range.
    pub fn convert_floor(self, value: i64, to: TimeUnit) -> i64 {
        let (from_steps, to_steps) = (self.per_second(), to.per_second());
        if to_steps >= from_steps {
            value.saturating_mul(to_steps / from_steps)
        } else {
            value.div_euclid(from_steps / to_steps)
        }
    }

    /// `value` in `to`, rounded up, saturating at `i64`'s ends: the (exclusive) end of a
    /// range, so that a range converted to a coarser unit still covers what it did.
    pub fn convert_ceil(self, value: i64, to: TimeUnit) -> i64 {
        let (from_steps, to_steps) = (self.per_second(), to.per_second());
        if to_steps >= from_steps {
            value.saturating_mul(to_steps / from_steps)
        } else {
            let factor = from_steps / to_steps;
            let floor = value.div_euclid(factor);
            if value.rem_euclid(factor) == 0 {
                floor
            } else {
                floor + 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_conversions_refuse_what_would_merge_or_overflow() {
        use TimeUnit::*;
        assert_eq!(Millisecond.convert_exact(1_500, Second), None);
        assert_eq!(Millisecond.convert_exact(-2_000, Second), Some(-2));
        assert_eq!(Nanosecond.convert_exact(500_000, Millisecond), None);
        assert_eq!(Nanosecond.convert_exact(3_000_000, Millisecond), Some(3));
        assert_eq!(Microsecond.convert_exact(7, Nanosecond), Some(7_000));
        assert_eq!(Second.convert_exact(i64::MAX / 10, Nanosecond), None);
        for from in TimeUnit::ALL {
            for to in TimeUnit::ALL {
                for value in [-1_000_000_007, -1, 0, 1, 999, 86_400_000_000] {
                    if let Some(there) = from.convert_exact(value, to) {
                        assert_eq!(
                            to.convert_exact(there, from),
                            Some(value),
                            "{from:?}→{to:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn nanoseconds_are_exact_for_every_unit_and_round_down() {
        use TimeUnit::*;
        assert_eq!(Second.to_ns(i64::MAX), i128::from(i64::MAX) * 1_000_000_000);
        assert_eq!(Second.from_ns_floor(Second.to_ns(i64::MAX)), Some(i64::MAX));
        assert_eq!(Nanosecond.from_ns_floor(i128::from(i64::MAX) + 1), None);
        assert_eq!(Millisecond.from_ns_floor(1_999_999), Some(1));
        assert_eq!(Millisecond.from_ns_floor(-1), Some(-1));
        assert_eq!(Microsecond.from_ns_floor(Microsecond.to_ns(-7)), Some(-7));
    }

    #[test]
    fn bounds_round_outward_and_saturate() {
        use TimeUnit::*;
        assert_eq!(Nanosecond.convert_floor(-1, Millisecond), -1);
        assert_eq!(Nanosecond.convert_ceil(1, Millisecond), 1);
        assert_eq!(Nanosecond.convert_ceil(2_000_000, Millisecond), 2);
        assert_eq!(Nanosecond.convert_ceil(-1_999_999, Millisecond), -1);
        assert_eq!(Millisecond.convert_floor(i64::MIN, Nanosecond), i64::MIN);
        assert_eq!(Millisecond.convert_ceil(i64::MAX, Nanosecond), i64::MAX);
        assert_eq!(
            Nanosecond.convert_ceil(i64::MAX, Second),
            i64::MAX / 1_000_000_000 + 1
        );
        for from in TimeUnit::ALL {
            for to in TimeUnit::ALL {
                for value in [-1_000_000_007i64, -1, 0, 1, 999, 86_400_001] {
                    let (low, high) = (from.convert_floor(value, to), from.convert_ceil(value, to));
                    assert!(
                        to.convert_floor(low, from) <= value,
                        "{from:?}→{to:?} {value}"
                    );
                    assert!(
                        to.convert_floor(high, from) >= value,
                        "{from:?}→{to:?} {value}"
                    );
                }
            }
        }
    }

    #[test]
    fn sql_precisions_map_to_the_coarsest_unit_that_holds_them() {
        let units: Vec<_> = (0..=10).map(TimeUnit::for_precision_digits).collect();
        use TimeUnit::*;
        let ms = Some(Millisecond);
        let us = Some(Microsecond);
        let ns = Some(Nanosecond);
        assert_eq!(
            units,
            [Some(Second), ms, ms, ms, us, us, us, ns, ns, ns, None]
        );
        assert_eq!(
            serde_json::from_str::<TimeUnit>("\"nanosecond\"").unwrap(),
            Nanosecond
        );
    }
}
