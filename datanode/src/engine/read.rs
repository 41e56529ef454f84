//! Reads: scans of rows, of series and of series only, and streamed scans, over the
//! memtables and the SSTs the request's range and matchers select.

use super::*;

/// A scan compiled against its region: the request (within the retention), its label
/// matchers and its projection.
pub(super) struct Scan {
    pub(super) request: ScanRequest,
    pub(super) filter: SeriesFilter,
    pub(super) projection: Projection,
}

/// A memtable's or an SST reader's view of the rows a scan keeps: (the series' tags) →
/// whether the scan's matchers keep it.
type Keep<'a> = &'a dyn Fn(&[String]) -> bool;

impl Scan {
    /// Calls a memtable reader with the scan's range, matchers and equalities.
    fn in_memtable<T>(&self, read: impl FnOnce(i64, i64, Keep<'_>, &[(usize, &str)]) -> T) -> T {
        let keep = |tags: &[String]| self.filter.keeps(tags);
        read(
            self.request.start,
            self.request.end,
            &keep,
            &self.filter.equalities(),
        )
    }

    /// Calls an SST reader with the projected schema (it decodes no other field), the
    /// scan's range and its matchers.
    fn in_sst<T>(
        &self,
        parsed: &sst::SstFile,
        read: impl FnOnce(&sst::SstFile, &RegionSchema, i64, i64, Keep<'_>) -> Result<T, String>,
    ) -> Result<T, String> {
        let keep = |tags: &[String]| self.filter.keeps(tags);
        let (start, end) = (self.request.start, self.request.end);
        read(parsed, &self.projection.schema, start, end, &keep)
    }
}

/// An SST a scan reads: its key (which names it in errors), its entry in the manifest
/// and its parsed file.
pub(super) struct SstInput<'a> {
    key: &'a str,
    file: &'a SstMeta,
    parsed: &'a sst::SstFile,
}

/// What one kind of scan makes of each source and of them all. Every scan goes through
/// [`ShardEngine::run_scan`]: the same snapshot of memtables and files, the same reads;
/// the shapes differ only in what a source gives and how the sources are merged.
pub(super) trait ScanShape {
    type Source;
    type Output;
    /// A memtable's part (the live one first, then the frozen ones).
    fn memtable(&self, memtable: &Memtable, scan: &Scan) -> Self::Source;
    /// An SST's part.
    fn sst(&self, input: &SstInput<'_>, scan: &Scan) -> Result<Self::Source, String>;
    /// Every source merged; one source alone is the live memtable's, which holds each
    /// (series, ts) once and in order.
    fn merge(self, sources: Vec<Self::Source>, scan: &Scan) -> Self::Output;
}

/// A compiled scan, what the memtables gave, and the SSTs still to read.
type Snapshot<Source> = (Scan, Vec<Source>, Vec<SstMeta>);

/// Rows with their sequences, merged by sorting: [`ShardEngine::scan`].
struct RowsShape;

impl ScanShape for RowsShape {
    type Source = Vec<(u64, Row)>;
    type Output = Vec<Row>;

    fn memtable(&self, memtable: &Memtable, scan: &Scan) -> Self::Source {
        let mut rows = scan.in_memtable(|start, end, keep, equal| {
            memtable.scan_sequenced(start, end, keep, equal)
        });
        for (_, row) in rows.iter_mut() {
            scan.projection.apply(&mut row.fields);
        }
        rows
    }

    fn sst(&self, input: &SstInput<'_>, scan: &Scan) -> Result<Self::Source, String> {
        scan.in_sst(input.parsed, |file, schema, start, end, keep| {
            sst::read_file(file, schema, start, end, keep)
        })
    }

    fn merge(self, sources: Vec<Self::Source>, scan: &Scan) -> Self::Output {
        let limit = scan.request.limit.unwrap_or(usize::MAX);
        if sources.len() == 1 {
            // One memtable yields its rows in (series, ts) order, one per (series, ts):
            // already merged. Sorting them again was a query profile's top shard cost.
            let rows = sources.into_iter().next().expect("one source");
            debug_assert!(rows
                .windows(2)
                .all(|pair| { (&pair[0].1.tags, pair[0].1.ts) < (&pair[1].1.tags, pair[1].1.ts) }));
            return rows.into_iter().take(limit).map(|(_, row)| row).collect();
        }
        merge_latest(sources.into_iter().flatten().collect(), limit)
    }
}

/// Series with their rows, merged by [`merge_series`]: [`ShardEngine::scan_series`].
struct SeriesShape;

impl ScanShape for SeriesShape {
    type Source = Vec<SequencedSeries>;
    type Output = Vec<SeriesRows>;

    fn memtable(&self, memtable: &Memtable, scan: &Scan) -> Self::Source {
        let mut series = scan.in_memtable(|start, end, keep, equal| {
            memtable.scan_series_sequenced(start, end, keep, equal)
        });
        for (_, samples) in series.iter_mut() {
            for (_, _, fields) in samples {
                scan.projection.apply(fields);
            }
        }
        series
    }

    fn sst(&self, input: &SstInput<'_>, scan: &Scan) -> Result<Self::Source, String> {
        scan.in_sst(input.parsed, |file, schema, start, end, keep| {
            sst::read_series(file, schema, start, end, keep)
        })
    }

    fn merge(self, sources: Vec<Self::Source>, scan: &Scan) -> Self::Output {
        if sources.len() == 1 {
            // The live memtable alone: its series as they are, no merge.
            let series = sources.into_iter().next().expect("one source");
            return series
                .into_iter()
                .map(|(tags, rows)| SeriesRows {
                    tags,
                    rows: rows
                        .into_iter()
                        .map(|(ts, _, fields)| (ts, fields))
                        .collect(),
                })
                .collect();
        }
        merge_series(sources, scan.projection.schema.fields.len())
    }
}

/// One row per series with null fields, from the memtables and the SSTs' series indexes
/// (see [`ScanRequest::series_only`]): a memtable's series with their first timestamp in
/// range, an SST's from the start of its data there.
struct SeriesOnlyShape;

impl ScanShape for SeriesOnlyShape {
    type Source = Vec<(Vec<String>, i64)>;
    type Output = Vec<Row>;

    fn memtable(&self, memtable: &Memtable, scan: &Scan) -> Self::Source {
        scan.in_memtable(|start, end, keep, equal| memtable.series(start, end, keep, equal))
    }

    fn sst(&self, input: &SstInput<'_>, scan: &Scan) -> Result<Self::Source, String> {
        let ts = input.file.min_ts.max(scan.request.start);
        let found = scan.in_sst(input.parsed, |file, schema, start, end, keep| {
            sst::series(file, schema, start, end, keep)
        })?;
        Ok(found.into_iter().map(|tags| (tags, ts)).collect())
    }

    fn merge(self, sources: Vec<Self::Source>, scan: &Scan) -> Self::Output {
        let mut series: BTreeMap<Vec<String>, i64> = BTreeMap::new();
        for (tags, ts) in sources.into_iter().flatten() {
            let first = series.entry(tags).or_insert(ts);
            *first = (*first).min(ts);
        }
        let field_count = scan.projection.schema.fields.len();
        series
            .into_iter()
            .take(scan.request.limit.unwrap_or(usize::MAX))
            .map(|(tags, ts)| Row {
                tags,
                ts,
                fields: vec![Value::Null; field_count],
            })
            .collect()
    }
}

/// Arrow batches merged as they are taken: [`ShardEngine::scan_stream`].
struct StreamShape {
    batch_rows: usize,
}

impl ScanShape for StreamShape {
    type Source = Run;
    type Output = ScanStream;

    fn memtable(&self, memtable: &Memtable, scan: &Scan) -> Self::Source {
        Run::Rows(Some(RowsShape.memtable(memtable, scan)))
    }

    /// A reader over the cached file that decodes a batch of chunks at a time.
    fn sst(&self, input: &SstInput<'_>, scan: &Scan) -> Result<Self::Source, String> {
        let reader = scan.in_sst(input.parsed, |file, schema, start, end, keep| {
            sst::SstReader::open(file, schema, start, end, keep)
        })?;
        Ok(Run::Sst {
            key: input.key.to_string(),
            reader,
        })
    }

    fn merge(self, sources: Vec<Self::Source>, scan: &Scan) -> Self::Output {
        let limit = scan.request.limit.unwrap_or(usize::MAX);
        ScanStream::new(
            sources,
            scan.projection.schema.clone(),
            self.batch_rows,
            limit,
        )
    }
}

impl ShardEngine {
    /// Every scan's one pipeline: the request within the retention, compiled against the
    /// region's schema; the memtables (live, then frozen) and the list of SSTs in range
    /// taken in one step, so that no row flushed meanwhile is missed or read twice; each
    /// SST read (through the cache); then `shape` merges the sources.
    async fn run_scan<S: ScanShape>(
        &self,
        id: RegionId,
        request: &ScanRequest,
        shape: S,
    ) -> Result<S::Output, EngineError> {
        let (scan, mut sources, files) = self.scan_snapshot(id, request, &shape)?;
        for file in files {
            let (key, parsed) = self.read_sst(id, &file).await?;
            let input = SstInput {
                key: &key,
                file: &file,
                parsed: &parsed,
            };
            sources.push(shape.sst(&input, &scan).map_err(corrupt_sst(&key))?);
        }
        Ok(shape.merge(sources, &scan))
    }

    /// The compiled scan, the memtables' sources and the SSTs to read, in one step.
    fn scan_snapshot<S: ScanShape>(
        &self,
        id: RegionId,
        request: &ScanRequest,
        shape: &S,
    ) -> Result<Snapshot<S::Source>, EngineError> {
        let request = self.retained(id, request)?;
        let regions = self.regions.borrow();
        let region = region(&regions, id, Need::Serving)?;
        let (projection, filter) = plan_scan(id, &region.manifest.schema, &request)?;
        let scan = Scan {
            request,
            filter,
            projection,
        };
        let sources = std::iter::once(&region.memtable)
            .chain(region.frozen.iter().map(|m| &**m))
            .map(|memtable| shape.memtable(memtable, &scan))
            .collect();
        let files = files_in_range(region, &scan.request);
        Ok((scan, sources, files))
    }

    /// Rows of a region matching the request, in (series, ts) order: the memtables and
    /// the SSTs merged, the latest write of each (series, ts) winning.
    pub async fn scan(&self, id: RegionId, request: &ScanRequest) -> Result<Vec<Row>, EngineError> {
        if request.series_only {
            return self.run_scan(id, request, SeriesOnlyShape).await;
        }
        self.run_scan(id, request, RowsShape).await
    }

    /// Like [`ShardEngine::scan`], grouped by series, without building a `Row` per
    /// sample (a query profile's top cost on the shards): every memtable and SST gives
    /// its series with sequences and [`merge_series`] merges them, comparing tags once
    /// per series.
    pub async fn scan_series(
        &self,
        id: RegionId,
        request: &ScanRequest,
    ) -> Result<Vec<SeriesRows>, EngineError> {
        if request.series_only || request.limit.is_some() {
            return Ok(SeriesRows::group(self.scan(id, request).await?));
        }
        self.run_scan(id, request, SeriesShape).await
    }

    /// An SST's object key and bytes.
    pub(super) async fn read_sst(
        &self,
        id: RegionId,
        file: &SstMeta,
    ) -> Result<(String, Rc<sst::SstFile>), EngineError> {
        let key = sst_key(&self.root, id, file.file_id);
        if let Some(parsed) = self.sst_cache.borrow_mut().get(&key) {
            return Ok((key, parsed));
        }
        let bytes: bytes::Bytes = self
            .store
            .get(&key)
            .await
            .map_err(|error| EngineError::Io(format!("reading {key}: {error}")))?
            .into();
        let parsed = Rc::new(sst::SstFile::parse(bytes).map_err(corrupt_sst(&key))?);
        self.sst_cache
            .borrow_mut()
            .insert(key.clone(), parsed.clone());
        Ok((key, parsed))
    }

    /// Like [`ShardEngine::scan`], as a stream of Arrow batches of at most `batch_rows`
    /// rows in the region's row schema ([`sst::row_schema`]), projected: the memtables
    /// as they are now and the SSTs in range, merged as the batches are taken, so no
    /// more than a batch of each SST is decoded at a time.
    pub async fn scan_stream(
        &self,
        id: RegionId,
        request: &ScanRequest,
        batch_rows: usize,
    ) -> Result<ScanStream, EngineError> {
        assert!(batch_rows > 0, "batches hold at least one row");
        let shape = StreamShape { batch_rows };
        if request.series_only {
            // Series-only rows are few (one per series): gathered whole, then streamed.
            let schema = Projection::of(id, &self.schema(id)?, request)?.schema;
            let rows = self.run_scan(id, request, SeriesOnlyShape).await?;
            let rows = rows.into_iter().map(|row| (0, row)).collect();
            return Ok(ScanStream::new(
                vec![Run::Rows(Some(rows))],
                schema,
                batch_rows,
                usize::MAX,
            ));
        }
        self.run_scan(id, request, shape).await
    }

    /// [`ShardEngine::scan_stream`], every batch of it.
    pub async fn scan_batches(
        &self,
        id: RegionId,
        request: &ScanRequest,
        batch_rows: usize,
    ) -> Result<Vec<arrow_array::RecordBatch>, EngineError> {
        let mut stream = self.scan_stream(id, request, batch_rows).await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next_batch().map_err(EngineError::Io)? {
            batches.push(batch);
        }
        Ok(batches)
    }

    /// `request` without what lies past the region's retention: rows past it are gone
    /// for readers at once, whenever compaction gets to deleting them.
    pub(super) fn retained(
        &self,
        id: RegionId,
        request: &ScanRequest,
    ) -> Result<ScanRequest, EngineError> {
        let cutoff = retention_cutoff(&self.regions.borrow(), id)?;
        Ok(ScanRequest {
            start: request.start.max(cutoff),
            ..request.clone()
        })
    }
}

/// The region's SSTs whose time range overlaps the request's.
pub(super) fn files_in_range(region: &Region, request: &ScanRequest) -> Vec<SstMeta> {
    region
        .manifest
        .files
        .iter()
        .filter(|f| f.max_ts >= request.start && f.min_ts < request.end)
        .cloned()
        .collect()
}

/// What every scan compiles first against the region's schema: its projection and its
/// label matchers.
pub(super) fn plan_scan(
    id: RegionId,
    schema: &RegionSchema,
    request: &ScanRequest,
) -> Result<(Projection, SeriesFilter), EngineError> {
    Ok((
        Projection::of(id, schema, request)?,
        SeriesFilter::compile_for(id, schema, &request.matchers)?,
    ))
}

/// The fields a scan returns: a projection of the region's schema.
pub(super) struct Projection {
    /// The region's schema with only the projected fields: what SST readers decode.
    pub(super) schema: RegionSchema,
    /// Each projected field's index among the region's fields, if the region has it.
    pub(super) indexes: Vec<Option<usize>>,
    /// Every field, in schema order.
    pub(super) identity: bool,
}

impl Projection {
    pub(super) fn of(
        id: RegionId,
        schema: &RegionSchema,
        request: &ScanRequest,
    ) -> Result<Projection, EngineError> {
        let (projected, indexes) = schema
            .project(request.projection.as_deref())
            .map_err(|reason| EngineError::InvalidScan { region: id, reason })?;
        Ok(Projection {
            identity: indexes.len() == schema.fields.len()
                && indexes
                    .iter()
                    .enumerate()
                    .all(|(i, &index)| index == Some(i)),
            schema: projected,
            indexes,
        })
    }

    /// Turns a memtable row's fields (all of them, or fewer if they predate an ALTER ADD
    /// COLUMN) into the projected ones.
    pub(super) fn apply(&self, fields: &mut Vec<Value>) {
        if self.identity {
            fields.resize(self.indexes.len(), Value::Null);
            return;
        }
        let projected = self
            .indexes
            .iter()
            .map(|&index| {
                index
                    .and_then(|i| fields.get_mut(i))
                    .map_or(Value::Null, |v| std::mem::replace(v, Value::Null))
            })
            .collect();
        *fields = projected;
    }
}

/// The oldest timestamp the region still keeps, in its unit (rounded down: a row is
/// never hidden before its TTL has passed).
pub(super) fn retention_cutoff(
    regions: &BTreeMap<RegionId, Region>,
    id: RegionId,
) -> Result<i64, EngineError> {
    let region = region(regions, id, Need::Exists)?;
    Ok(match region.manifest.ttl_ms {
        Some(ttl) => {
            let cutoff_ms = metronome_core::rt::time::unix_time_ms().saturating_sub(ttl);
            TimeUnit::Millisecond.convert_floor(cutoff_ms, region.manifest.schema.time_unit)
        }
        None => i64::MIN,
    })
}

/// Like [`merge_latest`], keeping each surviving row's sequence.
pub(super) fn merge_latest_sequenced(mut rows: Vec<(u64, Row)>) -> Vec<(u64, Row)> {
    // The rows arrive as a few sorted runs (one per memtable and SST); the stable sort
    // merges such runs in about n log(runs) comparisons, where an unstable sort spends
    // n log(n) comparisons of tag vectors (a query profile showed them as the shards'
    // top cost).
    rows.sort_by(|(sa, a), (sb, b)| {
        (&a.tags, a.ts, std::cmp::Reverse(*sa)).cmp(&(&b.tags, b.ts, std::cmp::Reverse(*sb)))
    });
    rows.dedup_by(|later, earlier| later.1.tags == earlier.1.tags && later.1.ts == earlier.1.ts);
    rows
}

/// Sorts rows by (series, ts) and keeps, for each, the one with the highest sequence.
pub(super) fn merge_latest(rows: Vec<(u64, Row)>, limit: usize) -> Vec<Row> {
    merge_latest_sequenced(rows)
        .into_iter()
        .take(limit)
        .map(|(_, row)| row)
        .collect()
}

/// Label matchers compiled against a schema.
pub(super) struct SeriesFilter {
    pub(super) conditions: Vec<(Option<usize>, Condition)>,
}

pub(super) enum Condition {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

impl SeriesFilter {
    pub(super) fn compile(
        schema: &RegionSchema,
        matchers: &[TagMatcher],
    ) -> Result<SeriesFilter, String> {
        let mut conditions = Vec::with_capacity(matchers.len());
        for matcher in matchers {
            let index = schema.tags.iter().position(|tag| *tag == matcher.tag);
            // Label regexes are Prometheus' (Go's syntax, anchored as Prometheus
            // anchors them), whichever front end sent them.
            let anchored = || {
                re2::compile_matcher(&matcher.value).map_err(|error| {
                    format!(
                        "invalid regular expression {:?} for tag {:?}: {error}",
                        matcher.value, matcher.tag
                    )
                })
            };
            let condition = match matcher.op {
                MatchOp::Equal => Condition::Equal(matcher.value.clone()),
                MatchOp::NotEqual => Condition::NotEqual(matcher.value.clone()),
                MatchOp::Regex => Condition::Regex(anchored()?),
                MatchOp::NotRegex => Condition::NotRegex(anchored()?),
            };
            conditions.push((index, condition));
        }
        Ok(SeriesFilter { conditions })
    }

    /// The (tag index, value) equalities every kept series satisfies, for the
    /// memtables' postings. An empty value also matches a missing tag, so it is left out.
    pub(super) fn equalities(&self) -> Vec<(usize, &str)> {
        self.conditions
            .iter()
            .filter_map(|(index, condition)| match (index, condition) {
                (Some(index), Condition::Equal(value)) if !value.is_empty() => {
                    Some((*index, value.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    /// [`SeriesFilter::compile`] for a scan of `region`, its error as the engine's.
    pub(super) fn compile_for(
        region: RegionId,
        schema: &RegionSchema,
        matchers: &[TagMatcher],
    ) -> Result<SeriesFilter, EngineError> {
        SeriesFilter::compile(schema, matchers)
            .map_err(|reason| EngineError::InvalidScan { region, reason })
    }

    pub(super) fn keeps(&self, tags: &[String]) -> bool {
        self.conditions.iter().all(|(index, condition)| {
            // A tag the schema lacks has the empty value, as in Prometheus.
            let value = index.and_then(|i| tags.get(i)).map_or("", String::as_str);
            match condition {
                Condition::Equal(expected) => value == expected,
                Condition::NotEqual(expected) => value != expected,
                Condition::Regex(regex) => regex.is_match(value),
                Condition::NotRegex(regex) => !regex.is_match(value),
            }
        })
    }
}
