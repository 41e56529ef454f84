//! A region's in-memory rows: series → timestamp → (sequence, fields), and postings
//! (tag, value) → series, so that a selective matcher visits only its series.
//!
//! Writes to one region may complete their WAL commit in one order and reach the memtable
//! in another, so each row carries the sequence of the write that made it, and the
//! higher sequence wins: "the later write of a (series, timestamp) replaces the earlier"
//! holds whatever order the tasks run in.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;
use metronome_core::data::{Row, Value};
use metronome_core::write_batch::SeriesWrite;

use crate::merge::SequencedSeries;

/// Memory accounting per stored row beyond its values (map nodes, keys).
const ROW_OVERHEAD_BYTES: usize = 64;

/// One series' points: timestamp → (sequence of the write that made it, fields).
type Points = BTreeMap<i64, (u64, Vec<Value>)>;

/// A series' tags, shared by the series map and its postings.
pub type SeriesKey = Arc<[String]>;

/// A series' place in [`Memtable::series`].
type SeriesIndex = u32;

#[derive(Debug, Default)]
pub struct Memtable {
    /// Every series with its points, in insertion order.
    series: Vec<(SeriesKey, Points)>,
    /// The series in tag order, for scans.
    order: BTreeMap<SeriesKey, SeriesIndex>,
    /// The series by the hash of the tags they have ([`series_hash`]), for writes:
    /// hashing a series' tags once is cheaper than comparing them with a dozen others on
    /// the way down the ordered map.
    lookup: HashTable<SeriesIndex>,
    /// (tag index, non-empty value) → the series with that value, in insertion order.
    postings: HashMap<(usize, String), Vec<SeriesIndex>>,
    bytes: usize,
    rows: usize,
    max_sequence: u64,
}

/// The hash of a series by the tags it has, (position, value) with the value not empty,
/// so that positional and sparse forms of one series hash alike.
fn series_hash<'a>(tags: impl Iterator<Item = (usize, &'a str)>) -> u64 {
    let mut hasher = foldhash::fast::FixedState::default().build_hasher();
    for (index, value) in tags {
        hasher.write_usize(index);
        hasher.write(value.as_bytes());
        hasher.write_u8(0xff);
    }
    hasher.finish()
}

/// Whether the positional `key` is the series of sparse `tags`.
fn same_series(key: &[String], tags: &[(u32, String)]) -> bool {
    let mut sparse = tags.iter();
    for (index, value) in key.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
        match sparse.next() {
            Some((position, expected)) if *position as usize == index && expected == value => {}
            _ => return false,
        }
    }
    sparse.next().is_none()
}

impl Memtable {
    /// Inserts `row` written by `sequence`, unless a later write already holds its place
    /// (see [`Memtable::insert_series`]).
    pub fn insert(&mut self, sequence: u64, row: Row) -> isize {
        let tags = SeriesWrite::sparse_tags(&row.tags);
        self.insert_series(sequence, &tags, vec![(row.ts, row.fields)])
    }

    /// Inserts the rows of one series (its tags as [`SeriesWrite::tags`] gives them)
    /// written by `sequence`, each unless a later write already holds its place. Rows of
    /// one write share its sequence, and of those the last one inserted wins, as if each
    /// row were its own write. Returns the change in accounted bytes.
    ///
    /// Finding an existing series costs its own tags only: the lookup hashes and compares
    /// the tags the series has, never the empty ones before them.
    pub fn insert_series(
        &mut self,
        sequence: u64,
        tags: &[(u32, String)],
        rows: Vec<(i64, Vec<Value>)>,
    ) -> isize {
        debug_assert!(
            tags.windows(2).all(|pair| pair[0].0 < pair[1].0)
                && tags.iter().all(|(_, value)| !value.is_empty()),
            "a series' tags are by increasing position and not empty"
        );
        if rows.is_empty() {
            return 0;
        }
        let before = self.bytes;
        self.max_sequence = self.max_sequence.max(sequence);
        let hash = series_hash(
            tags.iter()
                .map(|(index, value)| (*index as usize, value.as_str())),
        );
        let series = &self.series;
        let found = self
            .lookup
            .find(hash, |slot| same_series(&series[*slot as usize].0, tags))
            .copied();
        let slot = match found {
            Some(slot) => slot,
            None => self.add_series(hash, tags),
        };
        for (ts, fields) in rows {
            let value_bytes: usize = fields.iter().map(Value::estimated_bytes).sum();
            let points = &mut self.series[slot as usize].1;
            match points.get_mut(&ts) {
                Some((existing, old)) => {
                    if *existing <= sequence {
                        let old_bytes: usize = old.iter().map(Value::estimated_bytes).sum();
                        *existing = sequence;
                        *old = fields;
                        self.bytes = self.bytes - old_bytes + value_bytes;
                    }
                }
                None => {
                    points.insert(ts, (sequence, fields));
                    self.bytes += value_bytes + ROW_OVERHEAD_BYTES;
                    self.rows += 1;
                }
            }
        }
        self.bytes as isize - before as isize
    }

    /// A new series of `tags` (hashing to `hash`), with no points yet.
    fn add_series(&mut self, hash: u64, tags: &[(u32, String)]) -> SeriesIndex {
        let slot = SeriesIndex::try_from(self.series.len())
            .expect("a memtable holds fewer than 2^32 series");
        let width = tags.last().map_or(0, |(index, _)| *index as usize + 1);
        let mut positional = vec![String::new(); width];
        for (index, value) in tags {
            positional[*index as usize] = value.clone();
        }
        let key_bytes: usize = positional
            .iter()
            .map(|t| t.len() + ROW_OVERHEAD_BYTES)
            .sum();
        self.bytes += key_bytes + 2 * std::mem::size_of::<SeriesKey>();
        let key: SeriesKey = Arc::from(positional);
        for (index, value) in tags {
            let posting = self
                .postings
                .entry((*index as usize, value.clone()))
                .or_default();
            if posting.is_empty() {
                self.bytes += value.len() + ROW_OVERHEAD_BYTES;
            }
            posting.push(slot);
            self.bytes += std::mem::size_of::<SeriesIndex>();
        }
        self.order.insert(key.clone(), slot);
        let series = &self.series;
        self.lookup.insert_unique(hash, slot, |slot| {
            let key = &series[*slot as usize].0;
            series_hash(
                key.iter()
                    .enumerate()
                    .filter(|(_, value)| !value.is_empty())
                    .map(|(index, value)| (index, value.as_str())),
            )
        });
        self.series.push((key, Points::new()));
        slot
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The highest sequence of any write applied.
    pub fn max_sequence(&self) -> u64 {
        self.max_sequence
    }

    /// The series `keep` accepts, in series order. `equal` lists (tag index, non-empty
    /// value) pairs that every accepted series has: with any, only the series of the
    /// shortest posting list are visited, instead of all of them.
    fn selected<'s>(
        &'s self,
        keep: impl Fn(&[String]) -> bool,
        equal: &[(usize, &str)],
    ) -> Vec<(&'s SeriesKey, &'s Points)> {
        let shortest = equal
            .iter()
            .map(|(index, value)| {
                self.postings
                    .get(&(*index, value.to_string()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|posting| posting.len());
        match shortest {
            None => self
                .order
                .values()
                .map(|&slot| self.entry(slot))
                .filter(|(tags, _)| keep(tags))
                .collect(),
            Some(posting) => {
                let mut found: Vec<(&SeriesKey, &Points)> = posting
                    .iter()
                    .map(|&slot| self.entry(slot))
                    .filter(|(tags, _)| keep(tags))
                    .collect();
                found.sort_unstable_by(|a, b| a.0.cmp(b.0));
                found
            }
        }
    }

    fn entry(&self, slot: SeriesIndex) -> (&SeriesKey, &Points) {
        let (tags, points) = &self.series[slot as usize];
        (tags, points)
    }

    /// Like [`Memtable::scan`], each row with the sequence of the write that made it;
    /// `equal` as in [`Memtable::selected`].
    pub fn scan_sequenced(
        &self,
        start: i64,
        end: i64,
        keep: impl Fn(&[String]) -> bool,
        equal: &[(usize, &str)],
    ) -> Vec<(u64, Row)> {
        let mut rows = Vec::new();
        if start >= end {
            return rows;
        }
        for (tags, points) in self.selected(keep, equal) {
            for (ts, (sequence, fields)) in
                points.range((Bound::Included(start), Bound::Excluded(end)))
            {
                rows.push((
                    *sequence,
                    Row {
                        tags: tags.to_vec(),
                        ts: *ts,
                        fields: fields.clone(),
                    },
                ));
            }
        }
        rows
    }

    /// Every row of the whole series after `after` (from the first series when `None`),
    /// in (series, ts) order with its sequence, until at least `rows_min` rows are taken
    /// (a series is never split); and the last series taken, the `after` of the next call
    /// (`None` once every series was taken). A flush walks a frozen memtable this way, so
    /// that it can yield between chunks and never copies all of it at once.
    pub fn chunk_after(
        &self,
        after: Option<&[String]>,
        rows_min: usize,
    ) -> (Vec<(u64, Row)>, Option<SeriesKey>) {
        assert!(rows_min > 0, "a chunk takes at least one row");
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rows = Vec::new();
        let mut last = None;
        for &slot in self
            .order
            .range::<[String], _>((lower, Bound::Unbounded))
            .map(|(_, s)| s)
        {
            let (tags, points) = self.entry(slot);
            rows.extend(points.iter().map(|(ts, (sequence, fields))| {
                (
                    *sequence,
                    Row {
                        tags: tags.to_vec(),
                        ts: *ts,
                        fields: fields.clone(),
                    },
                )
            }));
            last = Some(tags.clone());
            if rows.len() >= rows_min {
                break;
            }
        }
        (rows, last)
    }

    /// Like [`Memtable::scan_sequenced`], grouped by series: each series' tags are
    /// cloned once, not once per row.
    pub fn scan_series_sequenced(
        &self,
        start: i64,
        end: i64,
        keep: impl Fn(&[String]) -> bool,
        equal: &[(usize, &str)],
    ) -> Vec<SequencedSeries> {
        if start >= end {
            return Vec::new();
        }
        self.selected(keep, equal)
            .into_iter()
            .filter_map(|(tags, points)| {
                let rows: Vec<(i64, u64, Vec<Value>)> = points
                    .range((Bound::Included(start), Bound::Excluded(end)))
                    .map(|(ts, (sequence, fields))| (*ts, *sequence, fields.clone()))
                    .collect();
                (!rows.is_empty()).then(|| (tags.to_vec(), rows))
            })
            .collect()
    }

    /// The series that `keep` accepts with a row in `start..end`, each with its first
    /// timestamp there; `equal` as in [`Memtable::selected`].
    pub fn series(
        &self,
        start: i64,
        end: i64,
        keep: impl Fn(&[String]) -> bool,
        equal: &[(usize, &str)],
    ) -> Vec<(Vec<String>, i64)> {
        if start >= end {
            return Vec::new();
        }
        self.selected(keep, equal)
            .into_iter()
            .filter_map(|(tags, points)| {
                let (ts, _) = points
                    .range((Bound::Included(start), Bound::Excluded(end)))
                    .next()?;
                Some((tags.to_vec(), *ts))
            })
            .collect()
    }

    /// Rows of the series that `keep` accepts with `ts` in `start..end`, in (series, ts)
    /// order, at most `limit`.
    pub fn scan(
        &self,
        start: i64,
        end: i64,
        keep: impl Fn(&[String]) -> bool,
        limit: usize,
    ) -> Vec<Row> {
        let mut rows = Vec::new();
        if start >= end {
            return rows;
        }
        for (tags, points) in self.order.values().map(|&slot| self.entry(slot)) {
            if rows.len() >= limit {
                break;
            }
            if !keep(tags) {
                continue;
            }
            for (ts, (_, fields)) in points.range((Bound::Included(start), Bound::Excluded(end))) {
                if rows.len() >= limit {
                    break;
                }
                rows.push(Row {
                    tags: tags.to_vec(),
                    ts: *ts,
                    fields: fields.clone(),
                });
            }
        }
        rows
    }

    /// Appends a null field to every row (after the schema gained a column).
    pub fn add_null_field(&mut self) {
        for (_, points) in &mut self.series {
            for (_, fields) in points.values_mut() {
                fields.push(Value::Null);
                self.bytes += Value::Null.estimated_bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, ts: i64, value: f64) -> Row {
        Row {
            tags: vec![host.to_string()],
            ts,
            fields: vec![Value::Float64(value)],
        }
    }

    /// A series is its values at their positions: the same value under another tag is
    /// another series, whichever form (positional row, sparse batch) wrote it, and a
    /// trailing empty tag changes nothing.
    #[test]
    fn series_differ_by_position_and_not_by_trailing_empty_tags() {
        let mut memtable = Memtable::default();
        let value = |v: f64| vec![(1, vec![Value::Float64(v)])];
        memtable.insert_series(1, &[(0, "a".to_string())], value(1.0));
        memtable.insert_series(1, &[(1, "a".to_string())], value(2.0));
        memtable.insert(
            2,
            Row {
                tags: vec!["a".into(), String::new()],
                ts: 1,
                fields: vec![Value::Float64(3.0)],
            },
        );
        let rows = memtable.scan_sequenced(i64::MIN, i64::MAX, |_| true, &[]);
        let found: Vec<(Vec<String>, Value)> = rows
            .into_iter()
            .map(|(_, row)| (row.tags, row.fields[0].clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (vec!["".to_string(), "a".to_string()], Value::Float64(2.0)),
                (vec!["a".to_string()], Value::Float64(3.0)),
            ]
        );
    }

    #[test]
    fn chunks_walk_every_row_once_in_order_without_splitting_a_series() {
        let mut memtable = Memtable::default();
        // 30 series of 1 to 10 points, inserted out of order.
        for i in 0..30u64 {
            let host = format!("h{:02}", (i * 7) % 30);
            for ts in 0..=(i % 10) as i64 {
                memtable.insert(i, row(&host, 1000 - ts, ts as f64));
            }
        }
        let all = memtable.scan_sequenced(i64::MIN, i64::MAX, |_| true, &[]);
        let mut walked = Vec::new();
        let mut after: Option<SeriesKey> = None;
        let mut chunks = 0;
        loop {
            let (rows, last) = memtable.chunk_after(after.as_deref(), 12);
            if rows.is_empty() {
                assert!(last.is_none());
                break;
            }
            chunks += 1;
            assert!(chunks <= 30, "every chunk takes at least one series");
            // A chunk ends with a whole series: the last one is its cursor, and the
            // next chunk starts with another series.
            let last = last.expect("a non-empty chunk names its last series");
            assert_eq!(rows.last().unwrap().1.tags, last.to_vec());
            if let Some((_, next)) = walked.last() {
                let next: &Row = next;
                assert!(next.tags < rows[0].1.tags);
            }
            walked.extend(rows);
            after = Some(last);
        }
        assert_eq!(walked, all);
        assert!(chunks > 3, "{chunks} chunks");
    }

    #[test]
    fn postings_select_the_same_series_as_a_full_visit_in_series_order() {
        // Series over three tags, the last often missing; a seeded generator picks them.
        let mut memtable = Memtable::default();
        let mut state = 7u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        for i in 0..400 {
            let mut tags = vec![
                format!("job{}", next(3)),
                format!("host{}", next(40)),
                if next(2) == 0 {
                    String::new()
                } else {
                    format!("dc{}", next(2))
                },
            ];
            metronome_core::data::trim_empty_tags(&mut tags);
            memtable.insert(
                i,
                Row {
                    tags,
                    ts: i as i64,
                    fields: vec![Value::Float64(1.0)],
                },
            );
        }
        let value = |tags: &[String], i: usize| tags.get(i).map_or("", String::as_str).to_string();
        let cases: [&[(usize, &str)]; 5] = [
            &[(0, "job1")],
            &[(1, "host7")],
            &[(0, "job2"), (2, "dc1")],
            &[(1, "nohost")],
            &[(0, "job0"), (1, "host3"), (2, "dc0")],
        ];
        for equal in cases {
            let keep = |tags: &[String]| equal.iter().all(|(i, v)| value(tags, *i) == *v);
            let indexed = memtable.scan_sequenced(i64::MIN, i64::MAX, keep, equal);
            let visited = memtable.scan_sequenced(i64::MIN, i64::MAX, keep, &[]);
            assert_eq!(indexed, visited, "{equal:?}");
            assert!(
                indexed
                    .windows(2)
                    .all(|w| (&w[0].1.tags, w[0].1.ts) < (&w[1].1.tags, w[1].1.ts)),
                "in (series, ts) order"
            );
            let series = memtable.series(i64::MIN, i64::MAX, keep, equal);
            assert_eq!(series, memtable.series(i64::MIN, i64::MAX, keep, &[]));
        }
        assert!(!memtable
            .scan_sequenced(i64::MIN, i64::MAX, |_| true, &[(0, "job1")])
            .is_empty());
    }

    #[test]
    fn the_highest_sequence_wins_whatever_the_insert_order() {
        let mut memtable = Memtable::default();
        memtable.insert(2, row("a", 10, 2.0));
        memtable.insert(1, row("a", 10, 1.0));
        memtable.insert(3, row("a", 10, 3.0));
        let rows = memtable.scan(i64::MIN, i64::MAX, |_| true, usize::MAX);
        assert_eq!(rows, [row("a", 10, 3.0)]);
        assert_eq!(memtable.rows(), 1);
        memtable.insert(3, row("a", 10, 4.0));
        let rows = memtable.scan(i64::MIN, i64::MAX, |_| true, usize::MAX);
        assert_eq!(
            rows,
            [row("a", 10, 4.0)],
            "a later row of the same write wins"
        );
    }

    #[test]
    fn scans_are_ordered_by_series_then_time_and_honour_range_filter_and_limit() {
        let mut memtable = Memtable::default();
        for (i, (host, ts)) in [("b", 2), ("a", 3), ("b", 1), ("a", 1), ("c", 5)]
            .into_iter()
            .enumerate()
        {
            memtable.insert(i as u64 + 1, row(host, ts, ts as f64));
        }
        let all = memtable.scan(i64::MIN, i64::MAX, |_| true, usize::MAX);
        let keys: Vec<(String, i64)> = all.iter().map(|r| (r.tags[0].clone(), r.ts)).collect();
        assert_eq!(
            keys,
            [
                ("a".into(), 1),
                ("a".into(), 3),
                ("b".into(), 1),
                ("b".into(), 2),
                ("c".into(), 5)
            ]
        );
        let ranged = memtable.scan(2, 5, |tags| tags[0] != "a", usize::MAX);
        assert_eq!(ranged, [row("b", 2, 2.0)]);
        assert_eq!(memtable.scan(i64::MIN, i64::MAX, |_| true, 2).len(), 2);
        assert!(memtable.scan(5, 5, |_| true, 10).is_empty());
        assert!(memtable.bytes() > 0);
    }

    #[test]
    fn reported_growth_adds_up_to_the_accounted_bytes() {
        let mut memtable = Memtable::default();
        let mut total = 0isize;
        for i in 0..50 {
            total += memtable.insert(
                i,
                row(&format!("host-{}", i % 7), (i % 11) as i64, i as f64),
            );
        }
        assert_eq!(total, memtable.bytes() as isize);
    }
}
