//! Merging sorted runs of rows (SSTs, memtables) into one run, keeping for each
//! (series, ts) the row of the highest sequence, a chunk at a time: plain code over
//! sources that hand out their rows in batches, so that the caller decides when to yield
//! and no input is ever decoded whole.

use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, VecDeque};

use metronome_core::data::{Row, SeriesRows, Value};

/// One series of a source, tags (trailing empty ones left out) once, then its rows in
/// time order: (ts, sequence of the write, fields).
pub type SequencedSeries = (Vec<String>, SequencedRows);
/// Rows of one series: (ts, sequence of the write, fields), in time order.
pub type SequencedRows = Vec<(i64, u64, Vec<Value>)>;

/// Merges sources of series (memtables, SSTs) into one list in series order, each
/// (series, ts) once with its latest write, fields padded to `field_count` with nulls
/// (rows written before an ALTER ADD COLUMN lack the new ones). Tags are compared once per
/// series and source, never per row.
pub fn merge_series(sources: Vec<Vec<SequencedSeries>>, field_count: usize) -> Vec<SeriesRows> {
    let single = sources.iter().filter(|source| !source.is_empty()).count() <= 1;
    // Each series' rows, and whether a second source added to them.
    let mut merged: BTreeMap<Vec<String>, (SequencedRows, bool)> = BTreeMap::new();
    for source in sources {
        for (tags, rows) in source {
            match merged.entry(tags) {
                Entry::Vacant(entry) => {
                    entry.insert((rows, false));
                }
                Entry::Occupied(mut entry) => {
                    let (existing, interleaved) = entry.get_mut();
                    existing.extend(rows);
                    *interleaved = true;
                }
            }
        }
    }
    debug_assert!(!single || merged.values().all(|(_, interleaved)| !interleaved));
    merged
        .into_iter()
        .map(|(tags, (mut rows, interleaved))| {
            if interleaved {
                // Sorted runs, one per source: a stable sort merges them cheaply; of a
                // (ts) the highest sequence comes first and is kept.
                rows.sort_by_key(|&(ts, sequence, _)| (ts, Reverse(sequence)));
                rows.dedup_by_key(|(ts, _, _)| *ts);
            }
            SeriesRows {
                tags,
                rows: rows
                    .into_iter()
                    .map(|(ts, _, mut fields)| {
                        fields.resize(field_count, Value::Null);
                        (ts, fields)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A source of rows in (series, ts) order, each with its write's sequence, a batch at a
/// time. A batch may be empty; `None` is the end.
pub trait SortedRun {
    fn next_rows(&mut self) -> Result<Option<Vec<(u64, Row)>>, String>;
}

struct Input<R> {
    source: R,
    buffer: VecDeque<(u64, Row)>,
    done: bool,
}

/// A k-way merge of sorted runs. With the few runs a compaction has, picking the least
/// head by a linear scan beats a heap's bookkeeping.
pub struct Merge<R> {
    inputs: Vec<Input<R>>,
    /// The last (series, ts) handed out, to drop older writes of it that come later.
    last: Option<(Vec<String>, i64)>,
}

impl<R: SortedRun> Merge<R> {
    pub fn new(runs: Vec<R>) -> Merge<R> {
        Merge {
            inputs: runs
                .into_iter()
                .map(|source| Input {
                    source,
                    buffer: VecDeque::new(),
                    done: false,
                })
                .collect(),
            last: None,
        }
    }

    /// The next `rows_max` merged rows (fewer only at the end; none once every run is
    /// exhausted), in (series, ts) order, each (series, ts) once with its latest write.
    pub fn next_chunk(&mut self, rows_max: usize) -> Result<Vec<(u64, Row)>, String> {
        assert!(rows_max > 0, "a chunk takes at least one row");
        let mut out: Vec<(u64, Row)> = Vec::with_capacity(rows_max);
        while out.len() < rows_max {
            for input in &mut self.inputs {
                while input.buffer.is_empty() && !input.done {
                    match input.source.next_rows()? {
                        Some(rows) => input.buffer.extend(rows),
                        None => input.done = true,
                    }
                }
            }
            // The least head; of equal (series, ts), the highest sequence first.
            let least = self
                .inputs
                .iter()
                .enumerate()
                .filter_map(|(index, input)| input.buffer.front().map(|head| (index, head)))
                .min_by(|(_, (sa, a)), (_, (sb, b))| {
                    (&a.tags, a.ts, Reverse(*sa)).cmp(&(&b.tags, b.ts, Reverse(*sb)))
                })
                .map(|(index, _)| index);
            let Some(index) = least else {
                break;
            };
            let (sequence, row) = self.inputs[index]
                .buffer
                .pop_front()
                .expect("the least head exists");
            let previous = match out.last() {
                Some((_, last)) => Some((&last.tags, last.ts)),
                None => self.last.as_ref().map(|(tags, ts)| (tags, *ts)),
            };
            if previous.is_some_and(|(tags, ts)| *tags == row.tags && ts == row.ts) {
                // An older write of a (series, ts) already handed out.
                continue;
            }
            debug_assert!(
                previous.is_none_or(|(tags, ts)| (tags, ts) < (&row.tags, row.ts)),
                "every run is sorted by (series, ts)"
            );
            out.push((sequence, row));
        }
        if let Some((_, last)) = out.last() {
            self.last = Some((last.tags.clone(), last.ts));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that hands out its rows in batches of `batch` (and an empty batch first).
    struct Run {
        rows: VecDeque<(u64, Row)>,
        batch: usize,
        started: bool,
    }

    impl SortedRun for Run {
        fn next_rows(&mut self) -> Result<Option<Vec<(u64, Row)>>, String> {
            if !self.started {
                self.started = true;
                return Ok(Some(Vec::new()));
            }
            if self.rows.is_empty() {
                return Ok(None);
            }
            let take = self.batch.min(self.rows.len());
            Ok(Some(self.rows.drain(..take).collect()))
        }
    }

    fn row(series: u64, ts: i64, value: f64) -> Row {
        Row {
            tags: vec![format!("s{series:02}")],
            ts,
            fields: vec![Value::Float64(value)],
        }
    }

    #[test]
    fn runs_merge_into_one_with_the_latest_write_of_each_point() {
        // Seeded runs over overlapping series and timestamps; sequences unique per run.
        let mut state = 11u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let mut runs = Vec::new();
        let mut expected: std::collections::BTreeMap<(Vec<String>, i64), (u64, Row)> =
            Default::default();
        for run in 0..4u64 {
            let mut rows: std::collections::BTreeMap<(Vec<String>, i64), (u64, Row)> =
                Default::default();
            for i in 0..300u64 {
                let r = row(next(12), next(40) as i64, (run * 1000 + i) as f64);
                let sequence = run * 1000 + i;
                rows.insert((r.tags.clone(), r.ts), (sequence, r));
            }
            for (key, (sequence, r)) in &rows {
                let newer = expected.get(key).is_none_or(|(s, _)| s < sequence);
                if newer {
                    expected.insert(key.clone(), (*sequence, r.clone()));
                }
            }
            runs.push(Run {
                rows: rows.into_values().collect(),
                batch: 1 + next(50) as usize,
                started: false,
            });
        }
        let mut merge = Merge::new(runs);
        let mut merged = Vec::new();
        let mut chunks = 0;
        loop {
            let chunk = merge.next_chunk(37).unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 37);
            chunks += 1;
            merged.extend(chunk);
        }
        let expected: Vec<(u64, Row)> = expected.into_values().collect();
        assert_eq!(merged, expected);
        assert!(chunks > 5, "{chunks}");
        assert!(merge.next_chunk(10).unwrap().is_empty());
    }

    #[test]
    fn an_older_write_after_a_chunk_boundary_is_still_dropped() {
        let run = |rows: Vec<(u64, Row)>| Run {
            rows: rows.into(),
            batch: 1,
            started: true,
        };
        let mut merge = Merge::new(vec![
            run(vec![(5, row(1, 10, 5.0)), (6, row(1, 20, 6.0))]),
            run(vec![(2, row(1, 10, 2.0)), (3, row(1, 20, 3.0))]),
        ]);
        assert_eq!(merge.next_chunk(1).unwrap(), [(5, row(1, 10, 5.0))]);
        assert_eq!(merge.next_chunk(1).unwrap(), [(6, row(1, 20, 6.0))]);
        assert!(merge.next_chunk(1).unwrap().is_empty());
    }
}
