//! Reads: scans of rows, of series and of series only, and streamed scans, over the
//! memtables and the SSTs the request's range and matchers select.

use super::*;

impl ShardEngine {
    /// Rows of a region matching the request, in (series, ts) order: the memtables and
    /// the SSTs merged, the latest write of each (series, ts) winning.
    pub async fn scan(&self, id: RegionId, request: &ScanRequest) -> Result<Vec<Row>, EngineError> {
        let request = &self.retained(id, request)?;
        if request.series_only {
            return self.scan_series_only(id, request).await;
        }
        let (filter, projection, mut rows, files, one_memtable) = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            let (projection, filter) = plan_scan(id, &region.manifest.schema, request)?;
            let keep = |tags: &[String]| filter.keeps(tags);
            let equal = filter.equalities();
            let mut rows = region
                .memtable
                .scan_sequenced(request.start, request.end, keep, &equal);
            for frozen in &region.frozen {
                rows.extend(frozen.scan_sequenced(request.start, request.end, keep, &equal));
            }
            for (_, row) in rows.iter_mut() {
                projection.apply(&mut row.fields);
            }
            let files = files_in_range(region, request);
            let one_memtable = region.frozen.is_empty() && files.is_empty();
            (filter, projection, rows, files, one_memtable)
        };
        for file in files {
            let (key, parsed) = self.read_sst(id, &file).await?;
            // Shaped to the projection by the reader, which decodes no other field.
            let read = sst::read_file(
                &parsed,
                &projection.schema,
                request.start,
                request.end,
                |tags| filter.keeps(tags),
            )
            .map_err(corrupt_sst(&key))?;
            rows.extend(read);
        }
        let limit = request.limit.unwrap_or(usize::MAX);
        if one_memtable {
            // One memtable yields its rows in (series, ts) order, one per (series, ts):
            // already merged. Sorting them again was a query profile's top shard cost.
            debug_assert!(rows
                .windows(2)
                .all(|pair| { (&pair[0].1.tags, pair[0].1.ts) < (&pair[1].1.tags, pair[1].1.ts) }));
            return Ok(rows.into_iter().take(limit).map(|(_, row)| row).collect());
        }
        Ok(merge_latest(rows, limit))
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

impl ShardEngine {
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

    /// Like [`ShardEngine::scan`], grouped by series, without building a `Row` per
    /// sample (a query profile's top cost on the shards): a lone live memtable answers
    /// with its series as they are; otherwise every memtable and SST gives its series
    /// with sequences and [`merge_series`] merges them, comparing tags once per series.
    pub async fn scan_series(
        &self,
        id: RegionId,
        request: &ScanRequest,
    ) -> Result<Vec<SeriesRows>, EngineError> {
        if request.series_only || request.limit.is_some() {
            return Ok(SeriesRows::group(self.scan(id, request).await?));
        }
        let request = &self.retained(id, request)?;
        let (filter, projection, mut sources, files) = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            let schema = &region.manifest.schema;
            let (projection, filter) = plan_scan(id, schema, request)?;
            let keep = |tags: &[String]| filter.keeps(tags);
            let equal = filter.equalities();
            let files = files_in_range(region, request);
            if region.frozen.is_empty() && files.is_empty() {
                // Only the live memtable: its series as they are, no merge.
                let mut series =
                    region
                        .memtable
                        .scan_series(request.start, request.end, keep, &equal);
                // An ALTER ADD COLUMN gives the memtable's rows their null field at once.
                debug_assert!(series.iter().all(|one| {
                    one.rows
                        .iter()
                        .all(|(_, fields)| fields.len() == schema.fields.len())
                }));
                if !projection.identity {
                    for one in &mut series {
                        for (_, fields) in &mut one.rows {
                            projection.apply(fields);
                        }
                    }
                }
                return Ok(series);
            }
            let mut sources: Vec<Vec<SequencedSeries>> = std::iter::once(&region.memtable)
                .chain(region.frozen.iter().map(|m| &**m))
                .map(|memtable| {
                    memtable.scan_series_sequenced(request.start, request.end, keep, &equal)
                })
                .collect();
            for (_, samples) in sources.iter_mut().flatten() {
                for (_, _, fields) in samples {
                    projection.apply(fields);
                }
            }
            (filter, projection, sources, files)
        };
        for file in files {
            let (key, parsed) = self.read_sst(id, &file).await?;
            sources.push(
                sst::read_series(
                    &parsed,
                    &projection.schema,
                    request.start,
                    request.end,
                    |tags| filter.keeps(tags),
                )
                .map_err(corrupt_sst(&key))?,
            );
        }
        Ok(merge_series(sources, projection.schema.fields.len()))
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

    /// A series-only scan (see [`ScanRequest::series_only`]): one row per series, with
    /// null fields, from the memtables and the SSTs' series indexes.
    pub(super) async fn scan_series_only(
        &self,
        id: RegionId,
        request: &ScanRequest,
    ) -> Result<Vec<Row>, EngineError> {
        let (filter, schema, mut series, files) = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            let schema = region.manifest.schema.clone();
            let projection = Projection::of(id, &schema, request)?;
            let filter = SeriesFilter::compile_for(id, &schema, &request.matchers)?;
            let keep = |tags: &[String]| filter.keeps(tags);
            let mut series: BTreeMap<Vec<String>, i64> = BTreeMap::new();
            for memtable in
                std::iter::once(&region.memtable).chain(region.frozen.iter().map(|m| &**m))
            {
                let equal = filter.equalities();
                for (tags, ts) in memtable.series(request.start, request.end, keep, &equal) {
                    let first = series.entry(tags).or_insert(ts);
                    *first = (*first).min(ts);
                }
            }
            let files = files_in_range(region, request);
            (filter, projection.schema, series, files)
        };
        for file in files {
            let (key, parsed) = self.read_sst(id, &file).await?;
            let found = sst::series(&parsed, &schema, request.start, request.end, |tags| {
                filter.keeps(tags)
            })
            .map_err(corrupt_sst(&key))?;
            let ts = file.min_ts.max(request.start);
            for tags in found {
                series.entry(tags).or_insert(ts);
            }
        }
        Ok(series
            .into_iter()
            .take(request.limit.unwrap_or(usize::MAX))
            .map(|(tags, ts)| Row {
                tags,
                ts,
                fields: vec![Value::Null; schema.fields.len()],
            })
            .collect())
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
        let request = &self.retained(id, request)?;
        let limit = request.limit.unwrap_or(usize::MAX);
        if request.series_only {
            let schema = Projection::of(id, &self.schema(id)?, request)?.schema;
            let rows = self.scan_series_only(id, request).await?;
            let rows = rows.into_iter().map(|row| (0, row)).collect();
            return Ok(ScanStream::new(
                vec![Run::Rows(Some(rows))],
                schema,
                batch_rows,
                limit,
            ));
        }
        // The memtables and the file list are taken in one step, so that no row flushed
        // meanwhile is missed or read twice from different places.
        let (filter, projection, mut runs, files) = {
            let regions = self.regions.borrow();
            let region = usable_region(&regions, id)?;
            let schema = &region.manifest.schema;
            let (projection, filter) = plan_scan(id, schema, request)?;
            let keep = |tags: &[String]| filter.keeps(tags);
            let equal = filter.equalities();
            let runs: Vec<Run> = std::iter::once(&region.memtable)
                .chain(region.frozen.iter().map(|m| &**m))
                .map(|memtable| {
                    let mut rows =
                        memtable.scan_sequenced(request.start, request.end, keep, &equal);
                    for (_, row) in &mut rows {
                        projection.apply(&mut row.fields);
                    }
                    Run::Rows(Some(rows))
                })
                .collect();
            (filter, projection, runs, files_in_range(region, request))
        };
        for file in files {
            let (key, parsed) = self.read_sst(id, &file).await?;
            let reader = sst::SstReader::open(
                &parsed,
                &projection.schema,
                request.start,
                request.end,
                |tags| filter.keeps(tags),
            )
            .map_err(corrupt_sst(&key))?;
            runs.push(Run::Sst { key, reader });
        }
        Ok(ScanStream::new(runs, projection.schema, batch_rows, limit))
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
    let region = live_region(regions, id)?;
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
