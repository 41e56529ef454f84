//! What the whole-cluster simulation's frontends do: write samples, each with an
//! identity of its own, and read back at once what they begin (read your writes); and
//! the monitor that records who leads the metasrv.

use super::*;

pub(super) fn series(metric: &str, writer: &str, seq: u64) -> Vec<PromSeries> {
    (0..SERIES_PER_WRITE)
        .map(|k| PromSeries {
            labels: vec![
                ("__name__".to_string(), metric.to_string()),
                ("k".to_string(), format!("k{k}")),
                ("writer".to_string(), writer.to_string()),
            ],
            samples: vec![(TS_BASE_MS + seq as i64, seq as f64 + k as f64 / 10.0)],
        })
        .collect()
}

pub(super) fn keys(series: &[PromSeries]) -> Vec<(SampleKey, f64)> {
    let label = |one: &PromSeries, name: &str| {
        one.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    series
        .iter()
        .flat_map(|one| {
            one.samples.iter().map(move |(ts, value)| {
                (
                    (
                        label(one, "__name__"),
                        label(one, "writer"),
                        label(one, "k"),
                        *ts,
                    ),
                    *value,
                )
            })
        })
        .collect()
}

/// Frontend `writer`'s workload: writes until the process ends.
pub(super) async fn workload(
    frontend: Arc<Frontend>,
    writer: u64,
    history: Shared,
    sequences: Sequences,
    started: Instant,
) {
    let name = format!("fe{writer}");
    loop {
        let seq = sequences[writer as usize - 1].fetch_add(1, Ordering::Relaxed);
        let metric = if seq.is_multiple_of(NEW_METRIC_EVERY) {
            format!("sim_{name}_{seq}")
        } else {
            "sim_load".to_string()
        };
        let mut batch = series(&metric, &name, seq);
        // Now and then a label no series had, named after the time, so that both
        // frontends find it missing at about the same moment and both add it to the
        // metric regions' tags (a race that once answered one of them with a 400).
        if rand::gen_range(0..4) == 0 {
            let since_start = time::drift::true_now().duration_since(started);
            let label = format!("zz_{}", since_start.as_secs() / NEW_LABEL_EVERY.as_secs());
            for one in &mut batch {
                one.labels.push((label.clone(), "x".to_string()));
            }
        }
        {
            let mut history = history.lock().unwrap();
            if history.stopped {
                return;
            }
            history.metrics.insert(metric.clone());
            for (key, value) in keys(&batch) {
                history.attempted.insert(key, value);
            }
        }
        match time::timeout(WRITE_TIMEOUT, frontend.store.write(&batch)).await {
            Ok(Ok(_)) => {
                {
                    let mut history = history.lock().unwrap();
                    for (key, _) in keys(&batch) {
                        history.acknowledged.insert(key);
                    }
                }
                // Read your writes: a metric just begun is read back at once, through
                // this frontend (at a follower, for the second): a read that answers
                // must hold what was acknowledged (one that fails says nothing).
                if metric != "sim_load" {
                    if let Ok(Ok(read)) =
                        time::timeout(WRITE_TIMEOUT, read_back(&frontend, &metric)).await
                    {
                        let read: BTreeMap<SampleKey, f64> = read.into_iter().collect();
                        let missing: Vec<(SampleKey, f64)> = keys(&batch)
                            .into_iter()
                            .filter(|(key, value)| read.get(key) != Some(value))
                            .collect();
                        if !missing.is_empty() {
                            history.lock().unwrap().stale_reads.push(format!(
                                "frontend {writer} ({:?}) read {metric} without {missing:?}",
                                READ_PREFERENCES[writer as usize - 1]
                            ));
                        }
                    }
                }
            }
            // The client's mistake, which it must not retry: Prometheus drops such a
            // batch. These writes are valid, so faults may fail them only as retryable.
            Ok(Err(error)) if error.kind == ErrorKind::Invalid => {
                history
                    .lock()
                    .unwrap()
                    .refused_as_invalid
                    .push(error.message);
            }
            _ => {}
        }
        time::sleep(Duration::from_millis(rand::gen_range(0..100))).await;
    }
}

/// Asks every metasrv replica for its raft state every 50 ms and records who leads.
pub(super) async fn monitor(history: Shared) {
    let clients: Vec<_> = (1..=METASRVS)
        .map(|id| client_of(metasrv_addr(id), Duration::from_millis(500)))
        .collect();
    loop {
        for client in &clients {
            if let Some(status) = raft_status(client).await {
                if status.state == "Leader" {
                    history
                        .lock()
                        .unwrap()
                        .leaders
                        .entry(status.term)
                        .or_default()
                        .insert(status.node_id);
                }
            }
        }
        time::sleep(Duration::from_millis(50)).await;
    }
}

/// The frontend published in `slot`, waiting for it (it restarts after each fault).
pub(super) async fn frontend(slot: &FrontendSlot, within: Duration) -> Arc<Frontend> {
    let since = time::now();
    loop {
        if let Some(frontend) = slot.lock().unwrap().clone() {
            return frontend;
        }
        assert!(
            time::now().duration_since(since) < within,
            "a frontend did not open within {within:?}"
        );
        time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every sample of `metric` that `frontend` reads back, by key.
pub(super) async fn read_back(
    frontend: &Frontend,
    metric: &str,
) -> Result<Vec<(SampleKey, f64)>, String> {
    let matchers = [label_matcher("__name__", MatchOp::Equal, metric)];
    let series = frontend
        .store
        .select(&matchers, TS_BASE_MS - 1, TS_BASE_MS + 10_000_000)
        .await
        .map_err(|error| error.to_string())?;
    let mut read = Vec::new();
    for one in series {
        let label = |name: &str| {
            one.labels
                .iter()
                .find(|(label, _)| label == name)
                .map(|(_, value)| value.clone())
                .unwrap_or_default()
        };
        let timestamps: BTreeSet<i64> = one.samples.iter().map(|(ts, _)| *ts).collect();
        assert_eq!(
            timestamps.len(),
            one.samples.len(),
            "series {:?} holds a timestamp twice",
            one.labels
        );
        for (ts, value) in &one.samples {
            read.push((
                (label("__name__"), label("writer"), label("k"), *ts),
                *value,
            ));
        }
    }
    Ok(read)
}
