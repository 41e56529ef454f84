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

fn writer_properties(schema: &RegionSchema, key_value: Vec<KeyValue>) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_CHUNKS_MAX))
        .set_key_value_metadata(Some(key_value));
    let column = |name: &str| ColumnPath::from(name.to_string());
    for tag in &schema.tags {
        builder = builder.set_column_dictionary_enabled(column(tag), true);
    }
    // zstd stays on for the blobs too: pco's output does not shrink further, but short
    // chunks store their numbers plainly, and strings are plain bytes.
    builder.build()
}

/// Encodes `rows`, sorted and unique by (series, ts), as one SST: [`SstWriter`] with a
/// single chunk of rows.
pub fn encode(
    schema: &RegionSchema,
    file_id: u64,
    rows: &[(u64, Row)],
) -> Result<(Vec<u8>, SstMeta), String> {
    let mut writer = SstWriter::new(schema, file_id)?;
    writer.write(rows)?;
    writer.finish()
}

/// The samples of one series not yet closed into a chunk.
struct OpenChunk {
    tags: Vec<String>,
    ts: Vec<i64>,
    sequences: Vec<u64>,
    fields: Vec<Vec<Value>>,
}

/// Closed chunks not yet handed to Parquet, column by column.
#[derive(Default)]
struct ClosedChunks {
    tags: Vec<Vec<String>>,
    ts_min: Vec<i64>,
    ts_max: Vec<i64>,
    samples: Vec<u32>,
    ts: Vec<Vec<u8>>,
    sequences: Vec<Vec<u8>>,
    fields: Vec<Vec<Vec<u8>>>,
}

/// Encodes an SST from rows that arrive in chunks, in (series, ts) order across chunks.
/// A flush or compaction yields to its shard between chunks, so the pause it imposes on
/// the shard's writes is one chunk's encoding, not the whole file's; and the rows of a
/// large memtable never need to exist as one vector. Memory is bounded by one series
/// chunk and [`BATCH_CHUNKS`] closed ones.
pub struct SstWriter {
    file_id: u64,
    schema: RegionSchema,
    arrow_schema: Arc<Schema>,
    writer: ArrowWriter<Vec<u8>>,
    series: Vec<SeriesEntry>,
    open: OpenChunk,
    closed: ClosedChunks,
    chunks: u64,
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
        let key_value = vec![
            KeyValue::new(FORMAT_KEY.to_string(), FORMAT.to_string()),
            KeyValue::new(
                SCHEMA_KEY.to_string(),
                serde_json::to_string(schema).expect("schema serializes"),
            ),
        ];
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
            open: OpenChunk {
                tags: Vec::new(),
                ts: Vec::new(),
                sequences: Vec::new(),
                fields: vec![Vec::new(); schema.fields.len()],
            },
            closed: ClosedChunks {
                fields: vec![Vec::new(); schema.fields.len()],
                ..ClosedChunks::default()
            },
            chunks: 0,
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

    /// Appends rows; they follow every row written before in (series, ts) order.
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
        for (sequence, row) in rows {
            assert_eq!(row.fields.len(), self.schema.fields.len());
            if !self.open.ts.is_empty() && self.open.tags != row.tags {
                self.close_chunk()?;
            }
            if self.open.ts.is_empty() {
                self.open.tags.clone_from(&row.tags);
            }
            self.open.ts.push(row.ts);
            self.open.sequences.push(*sequence);
            for (column, value) in self.open.fields.iter_mut().zip(&row.fields) {
                column.push(value.clone());
            }
            if self.open.ts.len() == CHUNK_SAMPLES_MAX {
                self.close_chunk()?;
            }
            self.min_ts = self.min_ts.min(row.ts);
            self.max_ts = self.max_ts.max(row.ts);
            self.max_sequence = self.max_sequence.max(*sequence);
        }
        self.rows += rows.len() as u64;
        let (_, last) = rows.last().expect("not empty");
        self.last = Some((last.tags.clone(), last.ts));
        Ok(())
    }

    /// Turns the open chunk into blobs, and hands a full batch of chunks to Parquet.
    fn close_chunk(&mut self) -> Result<(), String> {
        let open = &mut self.open;
        let samples = open.ts.len();
        assert!((1..=CHUNK_SAMPLES_MAX).contains(&samples));
        match self.series.last_mut() {
            Some(entry) if entry.tags == open.tags => entry.chunks += 1,
            _ => self.series.push(SeriesEntry {
                tags: open.tags.clone(),
                first_chunk: self.chunks,
                chunks: 1,
            }),
        }
        let closed = &mut self.closed;
        closed.tags.push(std::mem::take(&mut open.tags));
        closed.ts_min.push(open.ts[0]);
        closed.ts_max.push(open.ts[samples - 1]);
        closed.samples.push(samples as u32);
        closed.ts.push(series_chunk::encode_timestamps(&open.ts));
        closed
            .sequences
            .push(series_chunk::encode_sequences(&open.sequences));
        for ((blobs, values), field) in closed
            .fields
            .iter_mut()
            .zip(&open.fields)
            .zip(&self.schema.fields)
        {
            let refs: Vec<&Value> = values.iter().collect();
            blobs.push(series_chunk::encode_field(field.field_type, &refs));
        }
        open.ts.clear();
        open.sequences.clear();
        open.fields.iter_mut().for_each(Vec::clear);
        self.chunks += 1;
        if self.closed.ts.len() >= BATCH_CHUNKS {
            self.write_closed()?;
        }
        Ok(())
    }

    fn write_closed(&mut self) -> Result<(), String> {
        if self.closed.ts.is_empty() {
            return Ok(());
        }
        let closed = std::mem::replace(
            &mut self.closed,
            ClosedChunks {
                fields: vec![Vec::new(); self.schema.fields.len()],
                ..ClosedChunks::default()
            },
        );
        let mut columns: Vec<ArrayRef> = Vec::new();
        for tag in 0..self.schema.tags.len() {
            // Tags are canonical (trailing empty values left out): a missing one is empty.
            columns.push(Arc::new(StringArray::from_iter_values(
                closed
                    .tags
                    .iter()
                    .map(|tags| tags.get(tag).map_or("", String::as_str)),
            )));
        }
        columns.push(Arc::new(Int64Array::from(closed.ts_min)));
        columns.push(Arc::new(Int64Array::from(closed.ts_max)));
        columns.push(Arc::new(UInt32Array::from(closed.samples)));
        let binary = |blobs: &[Vec<u8>]| -> ArrayRef {
            Arc::new(BinaryArray::from_iter_values(blobs.iter()))
        };
        columns.push(binary(&closed.ts));
        columns.push(binary(&closed.sequences));
        for blobs in &closed.fields {
            columns.push(binary(blobs));
        }
        let batch = RecordBatch::try_new(self.arrow_schema.clone(), columns)
            .map_err(|e| format!("building the SST batch: {e}"))?;
        self.writer
            .write(&batch)
            .map_err(|e| format!("writing the SST: {e}"))
    }

    /// Closes the file: its bytes and what the manifest records of it.
    pub fn finish(mut self) -> Result<(Vec<u8>, SstMeta), String> {
        assert!(self.rows > 0, "an SST holds at least one row");
        // A series that filled its last chunk exactly left nothing open.
        if !self.open.ts.is_empty() {
            self.close_chunk()?;
        }
        self.write_closed()?;
        self.writer.append_key_value_metadata(KeyValue::new(
            SERIES_KEY.to_string(),
            series_index::encode(&self.series),
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
        };
        match lookup(FORMAT_KEY) {
            Some(format) if format == FORMAT => {}
            Some(format) => {
                return Err(format!(
                    "SST format {format}; this version reads format {FORMAT}"
                ))
            }
            None => {
                return Err(format!(
                    "SST format 1 (a Parquet row per sample), written before format {FORMAT}; \
                     this version does not read it"
                ))
            }
        }
        let required = |key: &str| lookup(key).ok_or_else(|| format!("missing footer entry {key}"));
        let file_schema: RegionSchema = serde_json::from_str(&required(SCHEMA_KEY)?)
            .map_err(|e| format!("bad schema in footer: {e}"))?;
        let expected = arrow_schema(&file_schema);
        if metadata.schema().fields() != expected.fields() {
            return Err("the file's columns do not match its schema".to_string());
        }
        // The series index tiles the file's chunks in order: each series' chunks follow
        // the previous series' and the last ends at the last chunk. Readers rely on it,
        // and decoding checks it.
        let total_chunks = metadata.metadata().file_metadata().num_rows().max(0) as u64;
        let series =
            series_index::decode(&required(SERIES_KEY)?, file_schema.tags.len(), total_chunks)
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

/// An SST's footer, checked against the region's schema, with the chunk ranges of the
/// row groups whose time range overlaps `start..end`.
struct Footer {
    total_chunks: u64,
    wanted_groups: Vec<(u64, u64)>,
}

fn read_footer(
    file: &SstFile,
    schema: &RegionSchema,
    start: i64,
    end: i64,
) -> Result<Footer, String> {
    let file_schema = &file.file_schema;
    // A region only ever appends tags, so a file written before that has a prefix of
    // them; its rows have the empty value for the rest.
    if !schema.tags.starts_with(&file_schema.tags)
        || file_schema.time_index != schema.time_index
        || file_schema.time_unit != schema.time_unit
    {
        return Err(
            "the file's tags, time index or time unit differ from the region's".to_string(),
        );
    }
    let metadata = file.metadata.metadata();
    let total_chunks = metadata.file_metadata().num_rows().max(0) as u64;
    let columns = Columns {
        tags: file_schema.tags.len(),
    };
    let int64_stats = |stats: Option<&Statistics>| match stats {
        Some(Statistics::Int64(stats)) => {
            Some((stats.min_opt().copied(), stats.max_opt().copied()))
        }
        _ => None,
    };
    let mut wanted_groups: Vec<(u64, u64)> = Vec::new();
    let mut group_start = 0u64;
    for group in metadata.row_groups() {
        let group_chunks = group.num_rows().max(0) as u64;
        let min = int64_stats(group.column(columns.ts_min()).statistics()).and_then(|s| s.0);
        let max = int64_stats(group.column(columns.ts_max()).statistics()).and_then(|s| s.1);
        let overlaps = match (min, max) {
            (Some(min), Some(max)) => max >= start && min < end,
            _ => true,
        };
        if overlaps {
            wanted_groups.push((group_start, group_start + group_chunks));
        }
        group_start += group_chunks;
    }
    Ok(Footer {
        total_chunks,
        wanted_groups,
    })
}

impl Footer {
    /// The chunk ranges of a series inside the wanted row groups.
    fn ranges(&self, entry: &SeriesEntry) -> Result<Vec<(u64, u64)>, String> {
        let (from, to) = (entry.first_chunk, entry.first_chunk + entry.chunks);
        if to > self.total_chunks {
            return Err(format!(
                "series index points past the file's {} chunks",
                self.total_chunks
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

/// The series of an SST that `keep` accepts and that have chunks in a row group
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
    for entry in file.series.iter().filter(|entry| keep(&entry.tags)) {
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

/// One decoded series chunk: its canonical tags and the samples in the requested range.
struct DecodedChunk {
    tags: Vec<String>,
    samples: Vec<(i64, u64, Vec<Value>)>,
}

/// [`read`] a batch of chunks at a time (at most [`BATCH_CHUNKS`]), so that a compaction
/// can merge files without decoding any of them whole.
pub struct SstReader {
    /// `None` when no chunk can match.
    batches: Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>,
    start: i64,
    end: i64,
    columns: Columns,
    /// Where each of the requested fields is in the batches read, if the file has it.
    field_columns: Vec<Option<(usize, FieldType)>>,
    /// Columns in the last batch read.
    columns_read: usize,
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
        let file_schema = &file.file_schema;
        let columns = Columns {
            tags: file_schema.tags.len(),
        };
        // Chunks worth reading: those of matching series, within row groups whose time
        // range overlaps the request.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for entry in file.series.iter().filter(|entry| keep(&entry.tags)) {
            ranges.extend(footer.ranges(entry)?);
        }
        // `schema` may be a projection of the region's: only its fields are read, and a
        // field's blobs are not even decompressed unless it is asked for.
        let file_fields: Vec<Option<usize>> = schema
            .fields
            .iter()
            .map(|field| {
                file_schema
                    .fields
                    .iter()
                    .position(|f| f.name == field.name && f.field_type == field.field_type)
            })
            .collect();
        let mut read_fields: Vec<usize> = file_fields.iter().flatten().copied().collect();
        read_fields.sort_unstable();
        // Batches hold the key columns, then the fields read in file order.
        let field_columns: Vec<Option<(usize, FieldType)>> = file_fields
            .iter()
            .zip(&schema.fields)
            .map(|(file_field, field)| {
                file_field.map(|i| {
                    let rank = read_fields.binary_search(&i).expect("a field read");
                    (columns.field(rank), field.field_type)
                })
            })
            .collect();
        // Every column when every field is read: the reader's plain path.
        let mask = if read_fields.len() == file_schema.fields.len() {
            ProjectionMask::all()
        } else {
            ProjectionMask::roots(
                file.metadata.metadata().file_metadata().schema_descr(),
                (0..columns.field(0)).chain(read_fields.iter().map(|&i| columns.field(i))),
            )
        };
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
                ParquetRecordBatchReaderBuilder::new_with_metadata(
                    file.bytes.clone(),
                    file.metadata.clone(),
                )
                .with_row_selection(RowSelection::from(selectors))
                .with_projection(mask)
                .with_batch_size(BATCH_CHUNKS)
                .build()
                .map_err(|e| format!("reading the SST: {e}"))?,
            )
        };
        Ok(SstReader {
            batches,
            start,
            end,
            columns,
            field_columns,
            columns_read: 0,
        })
    }

    /// The number of columns Parquet decoded for the last batch: the key columns and
    /// the projected fields the file has.
    pub fn columns_read(&self) -> usize {
        self.columns_read
    }

    /// The next batch's rows in range (possibly none), or `None` at the end of the file.
    pub fn next_rows(&mut self) -> Result<Option<Vec<(u64, Row)>>, String> {
        let Some(chunks) = self.next_chunks()? else {
            return Ok(None);
        };
        let mut rows = Vec::new();
        for chunk in chunks {
            for (ts, sequence, fields) in chunk.samples {
                rows.push((
                    sequence,
                    Row {
                        tags: chunk.tags.clone(),
                        ts,
                        fields,
                    },
                ));
            }
        }
        Ok(Some(rows))
    }

    /// Decodes the next batch into `out`, grouped by series and continuing `out`'s last
    /// series: a series' tags are allocated once, not once per row. `false` at the end of
    /// the file.
    pub fn next_series(&mut self, out: &mut Vec<SequencedSeries>) -> Result<bool, String> {
        let Some(chunks) = self.next_chunks()? else {
            return Ok(false);
        };
        for chunk in chunks {
            if chunk.samples.is_empty() {
                continue;
            }
            match out.last_mut() {
                Some((tags, samples)) if *tags == chunk.tags => samples.extend(chunk.samples),
                _ => out.push((chunk.tags, chunk.samples)),
            }
        }
        Ok(true)
    }

    /// The next Parquet batch of chunks, decoded; chunks wholly outside the time range
    /// are skipped undecoded.
    fn next_chunks(&mut self) -> Result<Option<Vec<DecodedChunk>>, String> {
        let batch = match self.batches.as_mut().and_then(Iterator::next) {
            None => return Ok(None),
            Some(batch) => batch.map_err(|e| format!("decoding the SST: {e}"))?,
        };
        self.columns_read = batch.num_columns();
        let tags: Vec<&StringArray> = (0..self.columns.tags)
            .map(|i| batch.column(i).as_string::<i32>())
            .collect();
        let int64 = |i: usize| batch.column(i).as_primitive::<Int64Type>();
        let (ts_min, ts_max) = (int64(self.columns.ts_min()), int64(self.columns.ts_max()));
        let samples = batch
            .column(self.columns.samples())
            .as_primitive::<UInt32Type>();
        let ts_blobs = batch.column(self.columns.ts()).as_binary::<i32>();
        let sequence_blobs = batch.column(self.columns.sequence()).as_binary::<i32>();
        let mut chunks = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            if ts_max.value(i) < self.start || ts_min.value(i) >= self.end {
                continue;
            }
            let count = samples.value(i) as usize;
            if !(1..=CHUNK_SAMPLES_MAX).contains(&count) {
                return Err(format!("a chunk of {count} samples"));
            }
            let ts = series_chunk::decode_timestamps(ts_blobs.value(i), count)?;
            let sequences = series_chunk::decode_sequences(sequence_blobs.value(i), count)?;
            let mut fields: Vec<std::vec::IntoIter<Value>> = Vec::new();
            for column in &self.field_columns {
                let values = match column {
                    None => vec![Value::Null; count],
                    Some((index, field_type)) => series_chunk::decode_field(
                        *field_type,
                        batch.column(*index).as_binary::<i32>().value(i),
                        count,
                    )?,
                };
                fields.push(values.into_iter());
            }
            let mut chunk_samples = Vec::new();
            for (ts, sequence) in ts.into_iter().zip(sequences) {
                let row_fields: Vec<Value> = fields
                    .iter_mut()
                    .map(|column| column.next().expect("a value per sample"))
                    .collect();
                if ts >= self.start && ts < self.end {
                    chunk_samples.push((ts, sequence, row_fields));
                }
            }
            let mut chunk_tags: Vec<String> = tags
                .iter()
                .map(|column| column.value(i).to_string())
                .collect();
            trim_empty_tags(&mut chunk_tags);
            chunks.push(DecodedChunk {
                tags: chunk_tags,
                samples: chunk_samples,
            });
        }
        Ok(Some(chunks))
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
