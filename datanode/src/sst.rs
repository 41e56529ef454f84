//! SST files: a region's rows, flushed from a memtable, as Parquet. Plain code over
//! bytes; storing and fetching the bytes is the caller's (`rt::object`).
//!
//! Layout: the tag columns (UTF-8, dictionary-encoded), the time index (timestamp in
//! milliseconds, delta-encoded), the fields (floats byte-stream-split, integers
//! delta-encoded, strings dictionary-encoded), and `__sequence`, the sequence of the write
//! each row came from (delta-encoded; it costs little and lets every merge keep the latest
//! write per (series, timestamp) whatever files the rows came from). zstd throughout,
//! page-level statistics, rows sorted by (series, ts).
//!
//! The footer's key-value metadata holds the file's schema and a **series index**: every
//! series in the file with its first row and row count. Rows of a series are contiguous, so
//! label matchers resolve to row ranges without reading data, and row groups whose time
//! statistics miss the requested range are skipped.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use metronome_core::data::{trim_empty_tags, FieldType, RegionSchema, Row, Value};
use metronome_wire::rows::{row_columns, row_schema};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::merge::SequencedSeries;

pub use metronome_wire::rows::rows_to_batch;

pub const SEQUENCE_COLUMN: &str = "__sequence";
const SCHEMA_KEY: &str = "metronome.schema";
const SERIES_KEY: &str = "metronome.series";
/// Rows per row group: the unit of time-range pruning.
const ROW_GROUP_ROWS_MAX: usize = 64 * 1024;
/// Rows per decoded batch when reading.
const READ_BATCH_ROWS: usize = 8 * 1024;

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

/// One series of the index: its tag values, first row and row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeriesEntry {
    tags: Vec<String>,
    first_row: u64,
    rows: u64,
}

/// The schema of an SST: the row schema and `__sequence`.
fn arrow_schema(schema: &RegionSchema) -> Schema {
    let mut fields: Vec<Field> = row_schema(schema)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(SEQUENCE_COLUMN, DataType::UInt64, false));
    Schema::new(fields)
}

fn writer_properties(schema: &RegionSchema, key_value: Vec<KeyValue>) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS_MAX))
        .set_key_value_metadata(Some(key_value));
    let column = |name: &str| ColumnPath::from(name.to_string());
    for tag in &schema.tags {
        builder = builder.set_column_dictionary_enabled(column(tag), true);
    }
    builder = builder
        .set_column_dictionary_enabled(column(&schema.time_index), false)
        .set_column_encoding(column(&schema.time_index), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(column(SEQUENCE_COLUMN), false)
        .set_column_encoding(column(SEQUENCE_COLUMN), Encoding::DELTA_BINARY_PACKED);
    for field in &schema.fields {
        builder = match field.field_type {
            FieldType::Float64 => builder
                .set_column_dictionary_enabled(column(&field.name), false)
                .set_column_encoding(column(&field.name), Encoding::BYTE_STREAM_SPLIT),
            FieldType::Int64 => builder
                .set_column_dictionary_enabled(column(&field.name), false)
                .set_column_encoding(column(&field.name), Encoding::DELTA_BINARY_PACKED),
            FieldType::String => builder.set_column_dictionary_enabled(column(&field.name), true),
            FieldType::Boolean => builder,
        };
    }
    builder.build()
}

/// Encodes `rows`, sorted and unique by (series, ts), as one SST: [`SstWriter`] with a
/// single chunk.
pub fn encode(
    schema: &RegionSchema,
    file_id: u64,
    rows: &[(u64, Row)],
) -> Result<(Vec<u8>, SstMeta), String> {
    let mut writer = SstWriter::new(schema, file_id)?;
    writer.write(rows)?;
    writer.finish()
}

/// Encodes an SST from rows that arrive in chunks, in (series, ts) order across chunks.
/// A flush or compaction yields to its shard between chunks, so the pause it imposes on
/// the shard's writes is one chunk's encoding, not the whole file's; and the rows of a
/// large memtable never need to exist as one vector.
pub struct SstWriter {
    file_id: u64,
    schema: RegionSchema,
    arrow_schema: Arc<Schema>,
    writer: ArrowWriter<Vec<u8>>,
    series: Vec<SeriesEntry>,
    rows: u64,
    min_ts: i64,
    max_ts: i64,
    max_sequence: u64,
    /// The last (series, ts) written, to check the order across chunks.
    last: Option<(Vec<String>, i64)>,
}

impl SstWriter {
    pub fn new(schema: &RegionSchema, file_id: u64) -> Result<SstWriter, String> {
        let arrow_schema = Arc::new(arrow_schema(schema));
        // The series index is known only at the end; it is appended to the footer then.
        let key_value = vec![KeyValue::new(
            SCHEMA_KEY.to_string(),
            serde_json::to_string(schema).expect("schema serializes"),
        )];
        let writer = ArrowWriter::try_new(
            Vec::new(),
            arrow_schema.clone(),
            Some(writer_properties(schema, key_value)),
        )
        .map_err(|e| format!("starting the SST writer: {e}"))?;
        Ok(SstWriter {
            file_id,
            schema: schema.clone(),
            arrow_schema,
            writer,
            series: Vec::new(),
            rows: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            max_sequence: 0,
            last: None,
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends a chunk; its rows follow every row written before in (series, ts) order.
    pub fn write(&mut self, rows: &[(u64, Row)]) -> Result<(), String> {
        let Some((_, first)) = rows.first() else {
            return Ok(());
        };
        assert!(
            self.last
                .as_ref()
                .is_none_or(|(tags, ts)| (tags, *ts) < (&first.tags, first.ts)),
            "SST rows are sorted and unique by (series, ts) across chunks"
        );
        debug_assert!(
            rows.windows(2)
                .all(|w| (&w[0].1.tags, w[0].1.ts) < (&w[1].1.tags, w[1].1.ts)),
            "SST rows are sorted and unique by (series, ts)"
        );
        for (index, (sequence, row)) in rows.iter().enumerate() {
            let row_number = self.rows + index as u64;
            match self.series.last_mut() {
                Some(last) if last.tags == row.tags => last.rows += 1,
                _ => self.series.push(SeriesEntry {
                    tags: row.tags.clone(),
                    first_row: row_number,
                    rows: 1,
                }),
            }
            self.min_ts = self.min_ts.min(row.ts);
            self.max_ts = self.max_ts.max(row.ts);
            self.max_sequence = self.max_sequence.max(*sequence);
        }
        let refs: Vec<&Row> = rows.iter().map(|(_, row)| row).collect();
        let mut columns = row_columns(&self.schema, &refs);
        columns.push(Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(sequence, _)| *sequence),
        )));
        let batch = RecordBatch::try_new(self.arrow_schema.clone(), columns)
            .map_err(|e| format!("building the SST batch: {e}"))?;
        self.writer
            .write(&batch)
            .map_err(|e| format!("writing the SST: {e}"))?;
        self.rows += rows.len() as u64;
        let (_, last) = rows.last().expect("not empty");
        self.last = Some((last.tags.clone(), last.ts));
        Ok(())
    }

    /// Closes the file: its bytes and what the manifest records of it.
    pub fn finish(mut self) -> Result<(Vec<u8>, SstMeta), String> {
        assert!(self.rows > 0, "an SST holds at least one row");
        self.writer.append_key_value_metadata(KeyValue::new(
            SERIES_KEY.to_string(),
            serde_json::to_string(&self.series).expect("index serializes"),
        ));
        let bytes = self
            .writer
            .into_inner()
            .map_err(|e| format!("finishing the SST: {e}"))?;
        let meta = SstMeta {
            file_id: self.file_id,
            rows: self.rows,
            bytes: bytes.len() as u64,
            series: self.series.len() as u64,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            max_sequence: self.max_sequence,
        };
        Ok((bytes, meta))
    }
}

/// An SST's footer: the Parquet reader, the file's schema, its series index, and the
/// row ranges of the row groups whose time range overlaps `start..end`.
struct Footer<'f> {
    builder: ParquetRecordBatchReaderBuilder<bytes::Bytes>,
    file_schema: &'f RegionSchema,
    series: &'f [SeriesEntry],
    total_rows: u64,
    wanted_groups: Vec<(u64, u64)>,
}

/// An SST with its footer parsed: the Parquet metadata, the file's schema and its series
/// index. Parsing is the fixed cost of every read of a file (a selective query spent most
/// of its time on it), so the engine caches `SstFile`s, not bytes.
pub struct SstFile {
    bytes: bytes::Bytes,
    metadata: ArrowReaderMetadata,
    file_schema: RegionSchema,
    series: Vec<SeriesEntry>,
}

impl SstFile {
    pub fn parse(bytes: bytes::Bytes) -> Result<SstFile, String> {
        let metadata = ArrowReaderMetadata::load(&bytes, Default::default())
            .map_err(|e| format!("not a readable Parquet file: {e}"))?;
        let key_value = metadata
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .cloned()
            .unwrap_or_default();
        let lookup = |key: &str| {
            key_value
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
                .ok_or_else(|| format!("missing footer entry {key}"))
        };
        let file_schema: RegionSchema = serde_json::from_str(&lookup(SCHEMA_KEY)?)
            .map_err(|e| format!("bad schema in footer: {e}"))?;
        let series: Vec<SeriesEntry> = serde_json::from_str(&lookup(SERIES_KEY)?)
            .map_err(|e| format!("bad series index in footer: {e}"))?;
        Ok(SstFile {
            bytes,
            metadata,
            file_schema,
            series,
        })
    }

    /// Memory the parsed file holds, for cache budgets: its bytes and its series index.
    pub fn memory_bytes(&self) -> usize {
        let index: usize = self
            .series
            .iter()
            .map(|entry| 64 + entry.tags.iter().map(|t| t.len() + 24).sum::<usize>())
            .sum();
        self.bytes.len() + index
    }
}

fn read_footer<'f>(
    file: &'f SstFile,
    schema: &RegionSchema,
    start: i64,
    end: i64,
) -> Result<Footer<'f>, String> {
    let file_schema = &file.file_schema;
    // A region only ever appends tags, so a file written before that has a prefix of
    // them; its rows have the empty value for the rest.
    if !schema.tags.starts_with(&file_schema.tags) || file_schema.time_index != schema.time_index {
        return Err("the file's tags or time index differ from the region's".to_string());
    }
    let metadata = file.metadata.metadata();
    let total_rows = metadata.file_metadata().num_rows().max(0) as u64;

    // Row groups whose time range overlaps the request.
    let ts_column = file_schema.tags.len();
    let mut wanted_groups: Vec<(u64, u64)> = Vec::new();
    let mut group_start = 0u64;
    for group in metadata.row_groups() {
        let group_rows = group.num_rows().max(0) as u64;
        let overlaps = match group.column(ts_column).statistics() {
            Some(Statistics::Int64(stats)) => match (stats.min_opt(), stats.max_opt()) {
                (Some(min), Some(max)) => *max >= start && *min < end,
                _ => true,
            },
            _ => true,
        };
        if overlaps {
            wanted_groups.push((group_start, group_start + group_rows));
        }
        group_start += group_rows;
    }
    Ok(Footer {
        builder: ParquetRecordBatchReaderBuilder::new_with_metadata(
            file.bytes.clone(),
            file.metadata.clone(),
        ),
        file_schema,
        series: &file.series,
        total_rows,
        wanted_groups,
    })
}

impl Footer<'_> {
    /// The row ranges of a series' rows inside the wanted row groups.
    fn ranges(&self, entry: &SeriesEntry) -> Result<Vec<(u64, u64)>, String> {
        let (from, to) = (entry.first_row, entry.first_row + entry.rows);
        if to > self.total_rows {
            return Err(format!(
                "series index points past the file's {} rows",
                self.total_rows
            ));
        }
        Ok(self
            .wanted_groups
            .iter()
            .map(|&(group_from, group_to)| (from.max(group_from), to.min(group_to)))
            .filter(|(a, b)| a < b)
            .collect())
    }
}

/// The series of an SST that `keep` accepts and that have rows in a row group
/// overlapping `start..end`, from the footer's series index alone (no sample is
/// decoded), in series order.
pub fn series(
    file: &SstFile,
    schema: &RegionSchema,
    start: i64,
    end: i64,
    keep: impl Fn(&[String]) -> bool,
) -> Result<Vec<Vec<String>>, String> {
    let footer = read_footer(file, schema, start, end)?;
    let mut out = Vec::new();
    for entry in footer.series.iter().filter(|entry| keep(&entry.tags)) {
        if !footer.ranges(entry)?.is_empty() {
            out.push(entry.tags.clone());
        }
    }
    Ok(out)
}

/// Reads the rows of an SST with `ts` in `start..end` whose series `keep` accepts, each
/// with its sequence, in (series, ts) order, shaped to `schema` (fields the file predates
/// read as null). Errors name what is wrong with the file.
pub fn read(
    bytes: bytes::Bytes,
    schema: &RegionSchema,
    start: i64,
    end: i64,
    keep: impl Fn(&[String]) -> bool,
) -> Result<Vec<(u64, Row)>, String> {
    read_file(&SstFile::parse(bytes)?, schema, start, end, keep)
}

/// [`read`] of a parsed file.
pub fn read_file(
    file: &SstFile,
    schema: &RegionSchema,
    start: i64,
    end: i64,
    keep: impl Fn(&[String]) -> bool,
) -> Result<Vec<(u64, Row)>, String> {
    let mut reader = SstReader::open(file, schema, start, end, keep)?;
    let mut rows = Vec::new();
    while let Some(batch) = reader.next_rows()? {
        rows.extend(batch);
    }
    Ok(rows)
}

/// [`read`] a batch at a time (at most `READ_BATCH_ROWS` rows), so that a compaction can
/// merge files without decoding any of them whole.
pub struct SstReader {
    /// `None` when no row can match.
    batches: Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>,
    start: i64,
    end: i64,
    ts_column: usize,
    sequence_column: usize,
    /// Where each of the region's fields is in the file, if the file has it.
    field_columns: Vec<Option<(usize, FieldType)>>,
}

impl SstReader {
    pub fn open(
        file: &SstFile,
        schema: &RegionSchema,
        start: i64,
        end: i64,
        keep: impl Fn(&[String]) -> bool,
    ) -> Result<SstReader, String> {
        let footer = read_footer(file, schema, start, end)?;
        let ts_column = footer.file_schema.tags.len();
        // Rows worth reading: those of matching series, within row groups whose time
        // range overlaps the request.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for entry in footer.series.iter().filter(|entry| keep(&entry.tags)) {
            ranges.extend(footer.ranges(entry)?);
        }
        let Footer {
            builder,
            file_schema,
            ..
        } = footer;
        let field_columns: Vec<Option<(usize, FieldType)>> = schema
            .fields
            .iter()
            .map(|field| {
                file_schema
                    .fields
                    .iter()
                    .position(|f| f.name == field.name && f.field_type == field.field_type)
                    .map(|i| (ts_column + 1 + i, field.field_type))
            })
            .collect();
        let sequence_column = ts_column + 1 + file_schema.fields.len();
        let batches = if ranges.is_empty() {
            None
        } else {
            ranges.sort_unstable();
            let mut selectors = Vec::new();
            let mut position = 0u64;
            for (from, to) in ranges {
                if from > position {
                    selectors.push(RowSelector::skip((from - position) as usize));
                }
                selectors.push(RowSelector::select((to - from.max(position)) as usize));
                position = to.max(position);
            }
            Some(
                builder
                    .with_row_selection(RowSelection::from(selectors))
                    .with_batch_size(READ_BATCH_ROWS)
                    .build()
                    .map_err(|e| format!("reading the SST: {e}"))?,
            )
        };
        Ok(SstReader {
            batches,
            start,
            end,
            ts_column,
            sequence_column,
            field_columns,
        })
    }

    /// The next batch's rows in range (possibly none), or `None` at the end of the file.
    pub fn next_rows(&mut self) -> Result<Option<Vec<(u64, Row)>>, String> {
        let Some(batch) = self.next_batch()? else {
            return Ok(None);
        };
        let (tags, ts, sequences) = self.key_columns(&batch);
        let mut rows = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let row_ts = ts.value(i);
            if row_ts < self.start || row_ts >= self.end {
                continue;
            }
            let mut row = Row {
                tags: tags
                    .iter()
                    .map(|column| column.value(i).to_string())
                    .collect(),
                ts: row_ts,
                fields: self.fields(&batch, i),
            };
            row.canonical_tags();
            rows.push((sequences.value(i), row));
        }
        Ok(Some(rows))
    }

    /// Decodes the next batch into `out`, grouped by series and continuing `out`'s last
    /// series: a series' tags are allocated once, not once per row. `false` at the end of
    /// the file.
    pub fn next_series(&mut self, out: &mut Vec<SequencedSeries>) -> Result<bool, String> {
        let Some(batch) = self.next_batch()? else {
            return Ok(false);
        };
        let (tags, ts, sequences) = self.key_columns(&batch);
        for i in 0..batch.num_rows() {
            let row_ts = ts.value(i);
            if row_ts < self.start || row_ts >= self.end {
                continue;
            }
            // The last series' tags are canonical (trailing empty values left out): a
            // missing one compares as empty.
            let same = out.last().is_some_and(|(last, _)| {
                last.len() <= tags.len()
                    && tags.iter().enumerate().all(|(j, column)| {
                        column.value(i) == last.get(j).map_or("", String::as_str)
                    })
            });
            if !same {
                let mut series: Vec<String> = tags
                    .iter()
                    .map(|column| column.value(i).to_string())
                    .collect();
                trim_empty_tags(&mut series);
                out.push((series, Vec::new()));
            }
            let fields = self.fields(&batch, i);
            out.last_mut().expect("a series was just pushed").1.push((
                row_ts,
                sequences.value(i),
                fields,
            ));
        }
        Ok(true)
    }

    /// A batch's tag, timestamp and sequence columns.
    fn key_columns<'b>(
        &self,
        batch: &'b RecordBatch,
    ) -> (
        Vec<&'b arrow_array::StringArray>,
        &'b arrow_array::TimestampMillisecondArray,
        &'b UInt64Array,
    ) {
        let tags = (0..self.ts_column)
            .map(|i| batch.column(i).as_string::<i32>())
            .collect();
        let ts = batch
            .column(self.ts_column)
            .as_primitive::<TimestampMillisecondType>();
        let sequences = batch
            .column(self.sequence_column)
            .as_primitive::<UInt64Type>();
        (tags, ts, sequences)
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, String> {
        match self.batches.as_mut().and_then(Iterator::next) {
            None => Ok(None),
            Some(batch) => batch
                .map(Some)
                .map_err(|e| format!("decoding the SST: {e}")),
        }
    }

    /// Row `i`'s fields, shaped to the region's schema.
    fn fields(&self, batch: &RecordBatch, i: usize) -> Vec<Value> {
        self.field_columns
            .iter()
            .map(|column| match column {
                None => Value::Null,
                Some((index, _)) if batch.column(*index).is_null(i) => Value::Null,
                Some((index, FieldType::Float64)) => {
                    Value::Float64(batch.column(*index).as_primitive::<Float64Type>().value(i))
                }
                Some((index, FieldType::Int64)) => {
                    Value::Int64(batch.column(*index).as_primitive::<Int64Type>().value(i))
                }
                Some((index, FieldType::String)) => {
                    Value::String(batch.column(*index).as_string::<i32>().value(i).to_string())
                }
                Some((index, FieldType::Boolean)) => {
                    Value::Boolean(batch.column(*index).as_boolean().value(i))
                }
            })
            .collect()
    }
}

/// [`read`] grouped by series, each row with its sequence (see
/// [`SstReader::next_series`]).
pub fn read_series(
    file: &SstFile,
    schema: &RegionSchema,
    start: i64,
    end: i64,
    keep: impl Fn(&[String]) -> bool,
) -> Result<Vec<SequencedSeries>, String> {
    let mut reader = SstReader::open(file, schema, start, end, keep)?;
    let mut out = Vec::new();
    while reader.next_series(&mut out)? {}
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::data::FieldColumn;

    fn schema() -> RegionSchema {
        RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
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
