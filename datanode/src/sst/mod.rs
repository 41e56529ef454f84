//! SST files: a region's rows, flushed from a memtable, as Parquet. Plain code over
//! bytes; storing and fetching the bytes is the caller's (`rt::object`).
//!
//! Layout (format 3): one Parquet row per **series chunk**, up to
//! [`CHUNK_SAMPLES_MAX`] consecutive samples of one series. Its columns are the tags
//! (UTF-8, dictionary-encoded), `__ts_min` and `__ts_max` (the chunk's time range, with
//! statistics, so row groups and chunks outside a query's range are skipped undecoded),
//! `__samples`, and one blob each for the timestamps, the sequences and every field
//! ([`series_chunk`]: pco-compressed, lossless). `__sequence` holds the sequence of the
//! write each sample came from; it costs little and lets every merge keep the latest
//! write per (series, timestamp) whatever files the rows came from. Chunks are sorted by
//! (series, ts), and a series' chunks are contiguous.
//!
//! Format 1 stored a Parquet row per sample with Parquet's encodings (delta timestamps,
//! byte-stream-split floats); it cost twice the bytes, and this version refuses it with
//! an error that says so.
//!
//! The footer's key-value metadata holds the format, the file's schema and a **series
//! index** ([`series_index`]): every series in the file with its tags and chunk count, so
//! label matchers resolve to chunks without reading data. Format 3 differs from format 2
//! only there: format 2 stored the index as plain JSON, a third of a two-hour file.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt32Type};
use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use metronome_core::data::{trim_empty_tags, FieldType, RegionSchema, Row, Value};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::merge::SequencedSeries;
use crate::series_chunk::{self, CHUNK_SAMPLES_MAX};
use crate::series_index::{self, SeriesEntry};

mod reader;
mod writer;

pub use reader::*;
pub use writer::*;

pub use metronome_wire::rows::rows_to_batch;

pub const SEQUENCE_COLUMN: &str = "__sequence";
const TS_MIN_COLUMN: &str = "__ts_min";
const TS_MAX_COLUMN: &str = "__ts_max";
const SAMPLES_COLUMN: &str = "__samples";
const TS_COLUMN: &str = "__ts";
const FORMAT_KEY: &str = "metronome.sst_format";
const FORMAT: &str = "3";
const SCHEMA_KEY: &str = "metronome.schema";
const SERIES_KEY: &str = "metronome.series";
/// Chunks per row group: the unit of Parquet's statistics pruning.
const ROW_GROUP_CHUNKS_MAX: usize = 1024;
/// Chunks per Parquet batch, written or read.
const BATCH_CHUNKS: usize = 64;

/// What the manifest records about an SST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SstMeta {
    pub file_id: u64,
    pub rows: u64,
    pub bytes: u64,
    pub series: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub max_sequence: u64,
}

/// Where the key columns are: tags first, then these, then one column per field.
struct Columns {
    tags: usize,
}

impl Columns {
    fn ts_min(&self) -> usize {
        self.tags
    }
    fn ts_max(&self) -> usize {
        self.tags + 1
    }
    fn samples(&self) -> usize {
        self.tags + 2
    }
    fn ts(&self) -> usize {
        self.tags + 3
    }
    fn sequence(&self) -> usize {
        self.tags + 4
    }
    fn field(&self, index: usize) -> usize {
        self.tags + 5 + index
    }
}

fn arrow_schema(schema: &RegionSchema) -> Schema {
    let mut fields: Vec<Field> = schema
        .tags
        .iter()
        .map(|tag| Field::new(tag, DataType::Utf8, false))
        .collect();
    fields.push(Field::new(TS_MIN_COLUMN, DataType::Int64, false));
    fields.push(Field::new(TS_MAX_COLUMN, DataType::Int64, false));
    fields.push(Field::new(SAMPLES_COLUMN, DataType::UInt32, false));
    fields.push(Field::new(TS_COLUMN, DataType::Binary, false));
    fields.push(Field::new(SEQUENCE_COLUMN, DataType::Binary, false));
    for field in &schema.fields {
        fields.push(Field::new(&field.name, DataType::Binary, false));
    }
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::data::{FieldColumn, TimeUnit};

    fn schema() -> RegionSchema {
        RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![
                FieldColumn {
                    name: "v".into(),
                    field_type: FieldType::Float64,
                },
                FieldColumn {
                    name: "n".into(),
                    field_type: FieldType::Int64,
                },
                FieldColumn {
                    name: "s".into(),
                    field_type: FieldType::String,
                },
                FieldColumn {
                    name: "b".into(),
                    field_type: FieldType::Boolean,
                },
            ],
        }
    }

    fn rows(series: usize, points: i64) -> Vec<(u64, Row)> {
        let mut rows = Vec::new();
        for s in 0..series {
            for ts in 0..points {
                rows.push((
                    (s as u64) * 1000 + ts as u64,
                    Row {
                        tags: vec![format!("host-{s:03}")],
                        ts: ts * 15_000,
                        fields: vec![
                            Value::Float64(ts as f64 * 0.5),
                            if ts % 3 == 0 {
                                Value::Null
                            } else {
                                Value::Int64(ts)
                            },
                            Value::String(format!("s{}", ts % 2)),
                            Value::Boolean(ts % 2 == 0),
                        ],
                    },
                ));
            }
        }
        rows
    }

    #[test]
    fn an_sst_round_trips_rows_with_their_sequences() {
        let rows = rows(3, 50);
        let (bytes, meta) = encode(&schema(), 7, &rows).unwrap();
        assert_eq!(
            (meta.rows, meta.series, meta.min_ts, meta.max_ts),
            (150, 3, 0, 49 * 15_000)
        );
        assert_eq!(meta.bytes, bytes.len() as u64);
        let read_back = read(bytes.into(), &schema(), i64::MIN, i64::MAX, |_| true).unwrap();
        assert_eq!(read_back, rows);
    }

    #[test]
    fn a_projection_reads_only_its_fields_in_its_order() {
        let rows = rows(3, 300);
        let (bytes, _) = encode(&schema(), 1, &rows).unwrap();
        let full = schema();
        let later = FieldColumn {
            name: "later".into(),
            field_type: FieldType::Float64,
        };
        let projected = RegionSchema {
            fields: vec![full.fields[2].clone(), later, full.fields[0].clone()],
            ..full.clone()
        };
        let read_back = read(bytes.into(), &projected, i64::MIN, i64::MAX, |_| true).unwrap();
        let expected: Vec<(u64, Row)> = rows
            .iter()
            .map(|(sequence, row)| {
                let fields = vec![row.fields[2].clone(), Value::Null, row.fields[0].clone()];
                (
                    *sequence,
                    Row {
                        fields,
                        ..row.clone()
                    },
                )
            })
            .collect();
        assert_eq!(read_back, expected);
    }

    #[test]
    fn a_projection_does_not_read_the_fields_it_leaves_out() {
        let rows = rows(2, 200);
        let (bytes, _) = encode(&schema(), 1, &rows).unwrap();
        let parsed = SstFile::parse(bytes.into()).unwrap();
        let without_s = RegionSchema {
            fields: vec![schema().fields[0].clone(), schema().fields[3].clone()],
            ..schema()
        };
        let mut reader =
            SstReader::open(&parsed, &without_s, i64::MIN, i64::MAX, |_| true).unwrap();
        let mut read_back = Vec::new();
        while let Some(batch) = reader.next_rows().unwrap() {
            for (_, row) in &batch {
                assert_eq!(row.fields.len(), 2);
            }
            read_back.extend(batch);
        }
        assert_eq!(read_back.len(), rows.len());
        // Parquet handed over the key columns and the two fields' blobs, nothing else.
        assert_eq!(reader.columns_read(), 1 + 5 + 2);
        let mut full = SstReader::open(&parsed, &schema(), i64::MIN, i64::MAX, |_| true).unwrap();
        while full.next_rows().unwrap().is_some() {}
        assert_eq!(full.columns_read(), 1 + 5 + 4);
    }

    #[test]
    fn an_sst_written_in_chunks_equals_one_written_at_once() {
        // Chunks of 7 rows split series (of 50 rows) between chunks.
        let rows = rows(5, 50);
        let (whole, whole_meta) = encode(&schema(), 3, &rows).unwrap();
        let mut writer = SstWriter::new(&schema(), 3).unwrap();
        for chunk in rows.chunks(7) {
            writer.write(chunk).unwrap();
        }
        assert_eq!(writer.rows(), 250);
        let (chunked, meta) = writer.finish().unwrap();
        assert_eq!(meta.file_id, 3);
        assert_eq!(meta.bytes, chunked.len() as u64);
        assert_eq!(
            SstMeta { bytes: 0, ..meta },
            SstMeta {
                bytes: 0,
                ..whole_meta
            }
        );
        let chunked = bytes::Bytes::from(chunked);
        let read_back = read(chunked.clone(), &schema(), i64::MIN, i64::MAX, |_| true).unwrap();
        assert_eq!(read_back, rows);
        // The series index covers each series once, whole, across the chunk boundaries.
        let parsed = |bytes: bytes::Bytes| SstFile::parse(bytes).unwrap();
        let index = series(
            &parsed(chunked.clone()),
            &schema(),
            i64::MIN,
            i64::MAX,
            |_| true,
        )
        .unwrap();
        assert_eq!(
            index,
            series(&parsed(whole.into()), &schema(), i64::MIN, i64::MAX, |_| {
                true
            })
            .unwrap()
        );
        assert_eq!(index.len(), 5);
        let one = read(chunked, &schema(), i64::MIN, i64::MAX, |tags| {
            tags[0] == "host-002"
        })
        .unwrap();
        assert_eq!(one, rows[100..150].to_vec());
    }

    #[test]
    #[should_panic(expected = "sorted and unique by (series, ts) across chunks")]
    fn chunks_out_of_order_are_refused() {
        let rows = rows(2, 10);
        let mut writer = SstWriter::new(&schema(), 1).unwrap();
        writer.write(&rows[10..]).unwrap();
        let _ = writer.write(&rows[..10]);
    }

    #[test]
    fn the_series_index_and_time_range_select_rows_without_the_rest() {
        let rows = rows(20, 30);
        let (bytes, _) = encode(&schema(), 1, &rows).unwrap();
        let bytes = bytes::Bytes::from(bytes);
        let one = read(bytes.clone(), &schema(), 15_000, 45_000, |tags| {
            tags[0] == "host-007"
        })
        .unwrap();
        let expected: Vec<_> = rows
            .iter()
            .filter(|(_, r)| r.tags[0] == "host-007" && (15_000..45_000).contains(&r.ts))
            .cloned()
            .collect();
        assert_eq!(one, expected);
        assert_eq!(one.len(), 2);
        assert!(read(bytes, &schema(), 10_000_000, 20_000_000, |_| true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn fields_added_after_the_file_was_written_read_as_null() {
        let mut old = schema();
        old.fields.truncate(1);
        let rows: Vec<(u64, Row)> = rows(1, 3)
            .into_iter()
            .map(|(s, mut r)| {
                r.fields.truncate(1);
                (s, r)
            })
            .collect();
        let (bytes, _) = encode(&old, 1, &rows).unwrap();
        let read_back = read(bytes.into(), &schema(), i64::MIN, i64::MAX, |_| true).unwrap();
        assert_eq!(
            read_back[1].1.fields,
            [Value::Float64(0.5), Value::Null, Value::Null, Value::Null]
        );
    }

    #[test]
    fn a_long_series_spans_chunks_and_reads_back_by_time_range() {
        let total = CHUNK_SAMPLES_MAX * 2 + 100;
        let mut rows = rows(1, total as i64);
        // Another series after it, so that chunk boundaries and series boundaries differ.
        rows.extend(rows_for("host-zzz", 5));
        let (bytes, meta) = encode(&schema(), 1, &rows).unwrap();
        assert_eq!(meta.rows, rows.len() as u64);
        let file = SstFile::parse(bytes.into()).unwrap();
        assert_eq!(file.series.len(), 2);
        assert_eq!(
            (file.series[0].first_chunk, file.series[0].chunks),
            (0, 3),
            "8192 + 8192 + 100 samples"
        );
        assert_eq!((file.series[1].first_chunk, file.series[1].chunks), (3, 1));
        assert_eq!(
            read_file(&file, &schema(), i64::MIN, i64::MAX, |_| true).unwrap(),
            rows
        );
        // A range that straddles the first chunk boundary.
        let (start, end) = (8000 * 15_000, 8500 * 15_000);
        let expected: Vec<_> = rows
            .iter()
            .filter(|(_, r)| (start..end).contains(&r.ts))
            .cloned()
            .collect();
        assert_eq!(expected.len(), 500);
        assert_eq!(
            read_file(&file, &schema(), start, end, |_| true).unwrap(),
            expected
        );
        // Grouped by series, the chunks of one series come back as one series.
        let grouped = read_series(&file, &schema(), i64::MIN, i64::MAX, |_| true).unwrap();
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[0].1.len(), total);
    }

    #[test]
    fn a_last_series_that_fills_its_chunks_exactly_closes_cleanly() {
        for total in [CHUNK_SAMPLES_MAX, 2 * CHUNK_SAMPLES_MAX] {
            let rows = rows(1, total as i64);
            let (bytes, meta) = encode(&schema(), 1, &rows).unwrap();
            assert_eq!(meta.rows, total as u64);
            let file = SstFile::parse(bytes.into()).unwrap();
            assert_eq!(file.series[0].chunks as usize, total / CHUNK_SAMPLES_MAX);
            assert_eq!(
                read_file(&file, &schema(), i64::MIN, i64::MAX, |_| true).unwrap(),
                rows
            );
        }
    }

    fn rows_for(host: &str, points: i64) -> Vec<(u64, Row)> {
        (0..points)
            .map(|ts| {
                (
                    ts as u64 + 1,
                    Row {
                        tags: vec![host.to_string()],
                        ts: ts * 15_000,
                        fields: vec![Value::Null, Value::Int64(ts), Value::Null, Value::Null],
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_format_1_file_is_refused_with_an_error_that_says_so() {
        // Format 1: a Parquet row per sample and no format entry in the footer.
        let rows: Vec<Row> = rows(1, 3).into_iter().map(|(_, row)| row).collect();
        let batch = rows_to_batch(&schema(), &rows).unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        let bytes = writer.into_inner().unwrap();
        let error = SstFile::parse(bytes.into()).err().unwrap();
        assert!(error.contains("SST format 1"), "{error}");
    }

    #[test]
    fn a_staleness_marker_survives_the_file_bit_for_bit() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let mut rows = rows(1, 3);
        rows[1].1.fields[0] = Value::Float64(stale);
        let (bytes, _) = encode(&schema(), 1, &rows).unwrap();
        let back = read(bytes.into(), &schema(), i64::MIN, i64::MAX, |_| true).unwrap();
        match back[1].1.fields[0] {
            Value::Float64(x) => assert_eq!(x.to_bits(), stale.to_bits()),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let (bytes, _) = encode(&schema(), 1, &rows(2, 10)).unwrap();
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                read(
                    bytes[..cut].to_vec().into(),
                    &schema(),
                    i64::MIN,
                    i64::MAX,
                    |_| true
                )
                .is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        // A flipped data byte may or may not be detected by Parquet; it must not panic.
        let _ = read(flipped.into(), &schema(), i64::MIN, i64::MAX, |_| true);
    }
}
