//! Writing an SST: series chunks encoded as Parquet rows, with the footer's schema and series index.

use super::*;

pub(super) fn writer_properties(
    schema: &RegionSchema,
    key_value: Vec<KeyValue>,
) -> WriterProperties {
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
pub(super) struct OpenChunk {
    pub(super) tags: Vec<String>,
    pub(super) ts: Vec<i64>,
    pub(super) sequences: Vec<u64>,
    pub(super) fields: Vec<Vec<Value>>,
}

/// Closed chunks not yet handed to Parquet, column by column.
#[derive(Default)]
pub(super) struct ClosedChunks {
    pub(super) tags: Vec<Vec<String>>,
    pub(super) ts_min: Vec<i64>,
    pub(super) ts_max: Vec<i64>,
    pub(super) samples: Vec<u32>,
    pub(super) ts: Vec<Vec<u8>>,
    pub(super) sequences: Vec<Vec<u8>>,
    pub(super) fields: Vec<Vec<Vec<u8>>>,
}

/// Encodes an SST from rows that arrive in chunks, in (series, ts) order across chunks.
/// A flush or compaction yields to its shard between chunks, so the pause it imposes on
/// the shard's writes is one chunk's encoding, not the whole file's; and the rows of a
/// large memtable never need to exist as one vector. Memory is bounded by one series
/// chunk and [`BATCH_CHUNKS`] closed ones.
pub struct SstWriter {
    pub(super) file_id: u64,
    pub(super) schema: RegionSchema,
    pub(super) arrow_schema: Arc<Schema>,
    pub(super) writer: ArrowWriter<Vec<u8>>,
    pub(super) series: Vec<SeriesEntry>,
    pub(super) open: OpenChunk,
    pub(super) closed: ClosedChunks,
    pub(super) chunks: u64,
    pub(super) rows: u64,
    pub(super) min_ts: i64,
    pub(super) max_ts: i64,
    pub(super) max_sequence: u64,
    /// The last (series, ts) written, to check the order across chunks.
    pub(super) last: Option<(Vec<String>, i64)>,
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
    pub(super) fn close_chunk(&mut self) -> Result<(), String> {
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

    pub(super) fn write_closed(&mut self) -> Result<(), String> {
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
