//! `histogram_quantile` over classic buckets, with Prometheus' binary search and Go's float parsing.

use super::*;

/// `histogram_quantile` on classic buckets (`le` labels), as Prometheus'
/// `bucketQuantile`: buckets sorted and coalesced, counts forced monotonic, linear
/// interpolation inside the bucket the rank falls in.
pub(super) fn histogram_quantile(q: f64, input: Vec<Sample>) -> Result<Value, QueryError> {
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    let mut index: foldhash::HashMap<Labels, usize> = foldhash::HashMapExt::new();
    for sample in input {
        let Some(upper) = label(&sample.labels, "le").and_then(parse_go_float) else {
            continue;
        };
        let key = with_label(&sample.labels, "le", "");
        let at = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((drop_metric_name(&key), Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push((upper, sample.value));
    }
    let out: Vec<Sample> = groups
        .into_iter()
        .map(|(labels, mut buckets)| Sample {
            labels,
            value: bucket_quantile(q, &mut buckets),
        })
        .collect();
    check_unique_labels(&out)?;
    Ok(Value::Vector(out))
}

/// Go's `strconv.ParseFloat` for bucket bounds (`+Inf`, `Inf`, `-Inf`, `NaN` included).
pub(super) fn parse_go_float(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

pub(super) fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets
        .last()
        .is_none_or(|(upper, _)| *upper != f64::INFINITY)
    {
        return f64::NAN;
    }
    // Coalesce buckets with the same bound (series that differ only in their name).
    let mut coalesced: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(upper, count) in buckets.iter() {
        match coalesced.last_mut() {
            Some(last) if last.0 == upper => last.1 += count,
            _ => coalesced.push((upper, count)),
        }
    }
    // Force monotonic counts: scrapes of different buckets are not atomic.
    let mut max = f64::NEG_INFINITY;
    for bucket in &mut coalesced {
        if bucket.1 > max {
            max = bucket.1;
        } else if bucket.1 < max {
            bucket.1 = max;
        }
    }
    if coalesced.len() < 2 {
        return f64::NAN;
    }
    let observations = coalesced[coalesced.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let searchable = coalesced.len() - 1;
    let b = go_search(searchable, |i| coalesced[i].1 >= rank);
    if b == searchable {
        return coalesced[coalesced.len() - 2].0;
    }
    if b == 0 && coalesced[0].0 <= 0.0 {
        return coalesced[0].0;
    }
    let (bucket_end, mut count) = coalesced[b];
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = coalesced[b - 1].0;
        count -= coalesced[b - 1].1;
        rank -= coalesced[b - 1].1;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Go's `sort.Search`: the first index in `0..n` where `f` holds, assuming it holds from
/// some index on. When it does not (a NaN count makes every comparison false), the
/// answer depends on where the bisection looks; this looks where Go's does, so the answer
/// is Go's (the standard library's `partition_point` bisects differently).
pub(super) fn go_search(n: usize, f: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, n);
    while low < high {
        let middle = low + (high - low) / 2;
        if f(middle) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    low
}
