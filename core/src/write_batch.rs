//! A write to one region, in the one form it keeps from the frontend's decoder to the
//! datanode's memtable: each series once, with only its own tags, then its rows.
//!
//! A series names its tags by their position in the region's tags and leaves out those it
//! lacks, so what it costs depends on its own labels alone: a metric region shared by
//! metrics with thousands of label names between them costs a two-label series two tags,
//! not thousands of empty ones. (A [`Row`] is positional: it carries an empty value for
//! every tag before its last one.)

use std::collections::HashMap;

use crate::data::{RegionSchema, Row, Value};

/// One series of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesWrite {
    /// (position among the region's tags, value) of every tag the series has: positions
    /// strictly increasing, values not empty (an empty value is a tag left out).
    pub tags: Vec<(u32, String)>,
    /// (timestamp in the region's unit, fields in schema order), in write order: of two
    /// rows at one timestamp the later wins.
    pub rows: Vec<(i64, Vec<Value>)>,
}

/// A write to one region.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteBatch {
    pub series: Vec<SeriesWrite>,
}

impl SeriesWrite {
    /// The series of positional `tags` (empty values and trailing ones left out).
    pub fn sparse_tags(tags: &[String]) -> Vec<(u32, String)> {
        tags.iter()
            .enumerate()
            .filter(|(_, value)| !value.is_empty())
            .map(|(index, value)| (tag_position(index), value.clone()))
            .collect()
    }

    /// The tags in positional form, as a [`Row`] carries them (trailing empty ones left
    /// out).
    pub fn positional_tags(&self) -> Vec<String> {
        let width = self.tags.last().map_or(0, |(index, _)| *index as usize + 1);
        let mut tags = vec![String::new(); width];
        for (index, value) in &self.tags {
            tags[*index as usize] = value.clone();
        }
        tags
    }

    /// Why the series' tags are not in the form [`SeriesWrite::tags`] describes, if they
    /// are not.
    pub fn check_tags(&self) -> Result<(), String> {
        for pair in self.tags.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return Err(format!(
                    "tag positions {} and {} are not increasing",
                    pair[0].0, pair[1].0
                ));
            }
        }
        if let Some((index, _)) = self.tags.iter().find(|(_, value)| value.is_empty()) {
            return Err(format!("tag {index} has an empty value"));
        }
        Ok(())
    }
}

impl WriteBatch {
    /// `rows` grouped by series, each series where its first row was and its rows in
    /// their order, so that a later row of one (series, ts) still wins.
    pub fn from_rows(rows: Vec<Row>) -> WriteBatch {
        let mut position: HashMap<Vec<(u32, String)>, usize> = HashMap::new();
        let mut series: Vec<SeriesWrite> = Vec::new();
        for row in rows {
            let tags = SeriesWrite::sparse_tags(&row.tags);
            let index = *position.entry(tags).or_insert_with_key(|tags| {
                series.push(SeriesWrite {
                    tags: tags.clone(),
                    rows: Vec::new(),
                });
                series.len() - 1
            });
            series[index].rows.push((row.ts, row.fields));
        }
        WriteBatch { series }
    }

    /// Every row in positional form, series by series.
    pub fn to_rows(&self) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.rows());
        for one in &self.series {
            let tags = one.positional_tags();
            for (ts, fields) in &one.rows {
                rows.push(Row {
                    tags: tags.clone(),
                    ts: *ts,
                    fields: fields.clone(),
                });
            }
        }
        rows
    }

    /// The batch cut into batches of at most `rows_max` rows each, in order, moving the
    /// rows (a series longer than that is cut, its tags copied to each part).
    pub fn split(self, rows_max: usize) -> Vec<WriteBatch> {
        assert!(rows_max > 0, "a part holds a row at least");
        let mut parts = vec![WriteBatch::default()];
        let mut rows = 0;
        for mut series in self.series {
            while rows + series.rows.len() > rows_max {
                let rest = series.rows.split_off(rows_max - rows);
                let tags = series.tags.clone();
                if !series.rows.is_empty() {
                    parts.last_mut().expect("one part").series.push(series);
                }
                parts.push(WriteBatch::default());
                rows = 0;
                series = SeriesWrite { tags, rows: rest };
            }
            rows += series.rows.len();
            if !series.rows.is_empty() {
                parts.last_mut().expect("one part").series.push(series);
            }
        }
        parts.retain(|part| !part.series.is_empty());
        parts
    }

    pub fn rows(&self) -> usize {
        self.series.iter().map(|one| one.rows.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|one| one.rows.is_empty())
    }

    /// Checks the batch against `schema`: the error names the series and row at fault
    /// (counted from 0 in the batch) and why.
    pub fn check(&self, schema: &RegionSchema) -> Result<(), BatchFault> {
        for (series, one) in self.series.iter().enumerate() {
            let fault = |row: Option<usize>, reason: String| BatchFault {
                series,
                row,
                reason,
            };
            one.check_tags().map_err(|reason| fault(None, reason))?;
            if let Some((index, _)) = one.tags.last() {
                if *index as usize >= schema.tags.len() {
                    return Err(fault(
                        None,
                        format!(
                            "names tag {index}, the schema has only {} tags",
                            schema.tags.len()
                        ),
                    ));
                }
            }
            for (row, (_, fields)) in one.rows.iter().enumerate() {
                schema
                    .check_fields(fields)
                    .map_err(|reason| fault(Some(row), reason))?;
            }
        }
        Ok(())
    }
}

/// Where a [`WriteBatch`] does not fit its region, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFault {
    pub series: usize,
    /// The row within the series, when the fault is one row's.
    pub row: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for BatchFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.row {
            Some(row) => write!(f, "series {} row {row}: {}", self.series, self.reason),
            None => write!(f, "series {}: {}", self.series, self.reason),
        }
    }
}

/// A tag's position as a batch stores it. Regions have far fewer than 2^32 tags (the
/// catalog bounds labels per metric), so this never truncates.
fn tag_position(index: usize) -> u32 {
    u32::try_from(index).expect("a region has fewer than 2^32 tags")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{FieldColumn, FieldType, TimeUnit};

    fn row(tags: &[&str], ts: i64, value: f64) -> Row {
        Row {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ts,
            fields: vec![Value::Float64(value)],
        }
    }

    #[test]
    fn rows_group_by_series_in_first_seen_order_and_come_back() {
        let rows = vec![
            row(&["a", "", "x"], 1, 1.0),
            row(&["b"], 1, 2.0),
            // The same series as the first, written with trailing empty tags.
            row(&["a", "", "x", ""], 1, 3.0),
        ];
        let batch = WriteBatch::from_rows(rows);
        assert_eq!(batch.series.len(), 2);
        assert_eq!(batch.series[0].tags, vec![(0, "a".into()), (2, "x".into())]);
        assert_eq!(batch.series[0].rows.len(), 2, "the later row stays after");
        assert_eq!(batch.series[0].rows[1].1, vec![Value::Float64(3.0)]);
        assert_eq!(batch.rows(), 3);
        let back = batch.to_rows();
        assert_eq!(back[0].tags, vec!["a", "", "x"]);
        assert_eq!(back[2].tags, vec!["b"]);
    }

    #[test]
    fn split_keeps_every_row_in_order_within_the_bound() {
        let rows: Vec<Row> = (0..7)
            .map(|ts| row(&["a"], ts, 0.0))
            .chain((0..2).map(|ts| row(&["b"], ts, 0.0)))
            .collect();
        let batch = WriteBatch::from_rows(rows.clone());
        let parts = batch.split(3);
        assert_eq!(
            parts.iter().map(WriteBatch::rows).collect::<Vec<_>>(),
            vec![3, 3, 3]
        );
        assert_eq!(parts[2].series.len(), 2, "the last part ends a, holds b");
        let back: Vec<Row> = parts.iter().flat_map(WriteBatch::to_rows).collect();
        assert_eq!(back, rows);
        assert!(WriteBatch::default().split(3).is_empty());
    }

    #[test]
    fn check_names_the_series_and_row_at_fault() {
        let schema = RegionSchema {
            tags: vec!["host".into(), "dc".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![FieldColumn {
                name: "value".into(),
                field_type: FieldType::Float64,
            }],
        };
        let mut batch = WriteBatch::from_rows(vec![row(&["a", "b"], 1, 1.0)]);
        assert_eq!(batch.check(&schema), Ok(()));
        batch.series[0].rows.push((2, vec![Value::Int64(1)]));
        let fault = batch.check(&schema).unwrap_err();
        assert_eq!((fault.series, fault.row), (0, Some(1)));
        batch.series[0].tags = vec![(2, "z".into())];
        assert!(batch
            .check(&schema)
            .unwrap_err()
            .reason
            .contains("only 2 tags"));
        batch.series[0].tags = vec![(1, "z".into()), (0, "y".into())];
        assert!(batch
            .check(&schema)
            .unwrap_err()
            .reason
            .contains("increasing"));
        batch.series[0].tags = vec![(0, String::new())];
        assert!(batch.check(&schema).unwrap_err().reason.contains("empty"));
    }
}
