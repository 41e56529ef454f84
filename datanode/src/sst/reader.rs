//! Reading an SST: its footer, the chunks a range and matchers select, decoded into rows or series.

use super::*;

/// An SST with its footer parsed: the Parquet metadata, the file's schema and its series
/// index. Parsing is the fixed cost of every read of a file (a selective query spent most
/// of its time on it), so the engine caches `SstFile`s, not bytes.
pub struct SstFile {
    pub(super) bytes: bytes::Bytes,
    pub(super) metadata: ArrowReaderMetadata,
    pub(super) file_schema: RegionSchema,
    pub(super) series: Vec<SeriesEntry>,
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
pub(super) struct Footer {
    pub(super) total_chunks: u64,
    pub(super) wanted_groups: Vec<(u64, u64)>,
}

pub(super) fn read_footer(
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
    pub(super) fn ranges(&self, entry: &SeriesEntry) -> Result<Vec<(u64, u64)>, String> {
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
pub(super) struct DecodedChunk {
    pub(super) tags: Vec<String>,
    pub(super) samples: Vec<(i64, u64, Vec<Value>)>,
}

/// [`read`] a batch of chunks at a time (at most [`BATCH_CHUNKS`]), so that a compaction
/// can merge files without decoding any of them whole.
pub struct SstReader {
    /// `None` when no chunk can match.
    pub(super) batches: Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) columns: Columns,
    /// Where each of the requested fields is in the batches read, if the file has it.
    pub(super) field_columns: Vec<Option<(usize, FieldType)>>,
    /// Columns in the last batch read.
    pub(super) columns_read: usize,
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
    pub(super) fn next_chunks(&mut self) -> Result<Option<Vec<DecodedChunk>>, String> {
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
