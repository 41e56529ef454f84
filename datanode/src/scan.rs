//! A region scan as a stream of Arrow batches: the memtables as they were when the scan
//! began and the SSTs overlapping its range, k-way merged ([`Merge`]) a batch at a time.
//!
//! Plain code over the runs it is given: the engine gathers them (memtable rows, SST
//! readers over files already fetched) and the caller decides when to yield between
//! batches. Besides the SSTs' bytes (fetched whole, as every read is), memory is bounded by
//! the memtable rows in range (themselves bounded by the shard's memory budget) plus one
//! decoded batch of series chunks per SST, whatever the size of the result.

use arrow_array::RecordBatch;
use metronome_core::data::{RegionSchema, Row};

use crate::merge::{Merge, SortedRun};
use crate::sst::{self, SstReader};

/// One sorted input of a scan or compaction.
pub enum Run {
    /// Rows already in memory (a memtable's), in (series, ts) order; handed out at once.
    Rows(Option<Vec<(u64, Row)>>),
    /// An SST, read a batch of chunks at a time; `key` names it in errors.
    Sst { key: String, reader: SstReader },
}

impl SortedRun for Run {
    fn next_rows(&mut self) -> Result<Option<Vec<(u64, Row)>>, String> {
        match self {
            Run::Rows(rows) => Ok(rows.take()),
            Run::Sst { key, reader } => reader
                .next_rows()
                .map_err(|reason| format!("SST {key}: {reason}")),
        }
    }
}

/// A scan under way. Each [`ScanStream::next_batch`] merges up to `batch_rows` rows.
pub struct ScanStream {
    merge: Merge<Run>,
    /// The schema of the batches: the region's, projected.
    schema: RegionSchema,
    batch_rows: usize,
    /// Rows still to hand out (the request's limit).
    remaining: usize,
}

impl ScanStream {
    /// A scan merging `runs` into batches of at most `batch_rows` rows of `schema`, at
    /// most `limit` rows in all. Every run's rows must already be shaped to `schema`.
    pub fn new(runs: Vec<Run>, schema: RegionSchema, batch_rows: usize, limit: usize) -> Self {
        assert!(batch_rows > 0, "batches hold at least one row");
        ScanStream {
            merge: Merge::new(runs),
            schema,
            batch_rows,
            remaining: limit,
        }
    }

    /// The schema every batch has.
    pub fn schema(&self) -> &RegionSchema {
        &self.schema
    }

    /// The next batch, in (series, ts) order after the previous one, each (series, ts)
    /// once with its latest write; `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, String> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let rows = self.merge.next_chunk(self.batch_rows.min(self.remaining))?;
        if rows.is_empty() {
            self.remaining = 0;
            return Ok(None);
        }
        assert!(rows.len() <= self.remaining);
        self.remaining -= rows.len();
        let rows: Vec<Row> = rows.into_iter().map(|(_, row)| row).collect();
        sst::rows_to_batch(&self.schema, &rows).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::data::{FieldColumn, FieldType, TimeUnit, Value};

    fn schema() -> RegionSchema {
        RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![FieldColumn {
                name: "v".into(),
                field_type: FieldType::Float64,
            }],
        }
    }

    fn row(host: &str, ts: i64, value: f64) -> Row {
        Row {
            tags: vec![host.into()],
            ts,
            fields: vec![Value::Float64(value)],
        }
    }

    fn batches(mut stream: ScanStream) -> Vec<usize> {
        let mut sizes = Vec::new();
        while let Some(batch) = stream.next_batch().unwrap() {
            assert_eq!(batch.schema().fields().len(), 3);
            sizes.push(batch.num_rows());
        }
        assert!(stream.next_batch().unwrap().is_none());
        sizes
    }

    #[test]
    fn a_stream_merges_runs_into_batches_and_stops_at_the_limit() {
        // An older memtable and a newer one overlap at ("a", 1).
        let runs = || {
            vec![
                Run::Rows(Some(vec![(1, row("a", 1, 1.0)), (2, row("b", 1, 2.0))])),
                Run::Rows(Some(vec![(3, row("a", 1, 3.0)), (4, row("a", 2, 4.0))])),
                Run::Rows(None),
            ]
        };
        assert_eq!(
            batches(ScanStream::new(runs(), schema(), 2, usize::MAX)),
            [2, 1]
        );
        assert_eq!(batches(ScanStream::new(runs(), schema(), 1, 2)), [1, 1]);
        assert_eq!(
            batches(ScanStream::new(runs(), schema(), 5, 0)),
            Vec::<usize>::new()
        );
        let mut stream = ScanStream::new(runs(), schema(), 10, usize::MAX);
        let batch = stream.next_batch().unwrap().unwrap();
        let values = batch
            .column(2)
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        assert_eq!(
            values.values().to_vec(),
            [3.0, 4.0, 2.0],
            "the latest write wins"
        );
    }
}
