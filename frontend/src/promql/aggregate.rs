//! Aggregation operators (`sum`, `avg`, `count`, `min`, `max`, `group`, `stddev`,
//! `stdvar`, `topk`, `bottomk`, `quantile`, `count_values`) with `by`/`without`,
//! following Prometheus' `aggregation` step by step, including its running mean and
//! variance and the heap `topk`/`bottomk` keep (which decides ties).

// Label sets are hashed per sample and step: foldhash, not SipHash (6 % of a query).
use foldhash::{HashMap, HashMapExt};

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::{type_error, Evaluator};
use super::value::{
    empty_labels, format_float, is_valid_label_name, keep_labels, remove_labels, with_label,
    Labels, Sample, Value, METRIC_NAME,
};
use super::QueryError;

pub fn evaluate(ev: &Evaluator, expr: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
    let op = expr.op.id();
    let param = match &expr.param {
        Some(param) => Some(ev.instant(param, t)?),
        None => None,
    };
    let input = match ev.instant(&expr.expr, t)? {
        Value::Vector(samples) => samples,
        other => return Err(type_error("an aggregation", &other)),
    };
    let (without, grouping): (bool, Vec<String>) = match &expr.modifier {
        None => (false, Vec::new()),
        Some(LabelModifier::Include(labels)) => (false, labels.labels.clone()),
        Some(LabelModifier::Exclude(labels)) => (true, labels.labels.clone()),
    };
    // A series' group is worked out once per query, not once per step (count_values,
    // which makes new label sets every step, works it out each time).
    let node = expr as *const AggregateExpr as usize;
    let remembered_group = |labels: &Labels| {
        ev.derived_labels(node, labels, |labels| group_of(labels, &grouping, without))
    };
    let scalar_param = || -> Result<f64, QueryError> {
        match &param {
            Some(Value::Scalar(value)) => Ok(*value),
            _ => Err(QueryError::Execution(format!(
                "{} needs a scalar parameter",
                expr.op
            ))),
        }
    };
    match op {
        T_TOPK | T_BOTTOMK => {
            let k = scalar_param()?;
            if !(-9.223_372_036_854_776e18..=9.223_372_036_854_776e18).contains(&k) {
                return Err(QueryError::Execution(format!(
                    "Scalar value {} overflows int64",
                    format_float(k)
                )));
            }
            // Go converts by truncating toward zero.
            let k = k.trunc() as i64;
            if k < 1 {
                return Ok(Value::Vector(Vec::new()));
            }
            Ok(Value::Vector(top_k(
                input,
                remembered_group,
                usize::try_from(k).unwrap_or(usize::MAX),
                op == T_TOPK,
            )))
        }
        T_COUNT_VALUES => {
            let Some(Value::String(label)) = &param else {
                return Err(QueryError::Execution(
                    "count_values needs a string parameter".to_string(),
                ));
            };
            if !is_valid_label_name(label) {
                return Err(QueryError::Execution(format!(
                    "invalid label name {label:?}"
                )));
            }
            let mut grouping = grouping;
            if !without {
                grouping.push(label.clone());
            }
            let relabelled = input
                .into_iter()
                .map(|sample| Sample {
                    labels: with_label(&sample.labels, label, &format_float(sample.value)),
                    value: sample.value,
                })
                .collect();
            Ok(Value::Vector(aggregate(
                T_COUNT,
                relabelled,
                |labels: &Labels| group_of(labels, &grouping, without),
                0.0,
            )))
        }
        T_QUANTILE => {
            let q = scalar_param()?;
            Ok(Value::Vector(aggregate(op, input, remembered_group, q)))
        }
        T_SUM | T_AVG | T_COUNT | T_MIN | T_MAX | T_GROUP | T_STDDEV | T_STDVAR => {
            Ok(Value::Vector(aggregate(op, input, remembered_group, 0.0)))
        }
        _ => Err(QueryError::BadData(format!(
            "aggregation {} is not part of Prometheus 2.42's PromQL",
            expr.op
        ))),
    }
}

/// The group a sample belongs to, and the labels of that group's result.
fn group_of(labels: &[(String, String)], grouping: &[String], without: bool) -> Labels {
    if without {
        let mut drop = grouping.to_vec();
        drop.push(METRIC_NAME.to_string());
        remove_labels(labels, &drop)
    } else if grouping.is_empty() {
        empty_labels()
    } else {
        keep_labels(labels, grouping)
    }
}

struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: f64,
    values: Vec<f64>,
}

/// Aggregates `input` per group (`group`: a sample's labels → its group's labels).
fn aggregate(
    op: u16,
    input: Vec<Sample>,
    group: impl Fn(&Labels) -> Labels,
    q: f64,
) -> Vec<Sample> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for sample in input {
        let key = group(&sample.labels);
        let v = sample.value;
        let Some(&at) = index.get(&key) else {
            index.insert(key.clone(), groups.len());
            groups.push(Group {
                labels: key,
                value: match op {
                    T_STDDEV | T_STDVAR => 0.0,
                    T_GROUP => 1.0,
                    _ => v,
                },
                mean: v,
                count: 1.0,
                values: if op == T_QUANTILE {
                    vec![v]
                } else {
                    Vec::new()
                },
            });
            continue;
        };
        let group = &mut groups[at];
        match op {
            T_SUM => group.value += v,
            T_AVG => {
                group.count += 1.0;
                if group.mean.is_infinite() {
                    // An infinite mean stays what it is unless a NaN or an infinity of
                    // the other sign arrives (which the update below turns into NaN).
                    if v.is_infinite() && (group.mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                group.mean += v / group.count - group.mean / group.count;
            }
            T_MAX if group.value < v || group.value.is_nan() => group.value = v,
            T_MIN if group.value > v || group.value.is_nan() => group.value = v,
            T_COUNT => group.count += 1.0,
            T_STDDEV | T_STDVAR => {
                group.count += 1.0;
                let delta = v - group.mean;
                group.mean += delta / group.count;
                group.value += delta * (v - group.mean);
            }
            T_QUANTILE => group.values.push(v),
            _ => {}
        }
    }
    groups
        .into_iter()
        .map(|group| {
            let value = match op {
                T_AVG => group.mean,
                T_COUNT => group.count,
                T_STDVAR => group.value / group.count,
                T_STDDEV => (group.value / group.count).sqrt(),
                T_QUANTILE => {
                    let mut values = group.values;
                    quantile(q, &mut values)
                }
                _ => group.value,
            };
            Sample {
                labels: group.labels,
                value,
            }
        })
        .collect()
}

/// The φ-quantile of `values` by linear interpolation between the closest ranks, as
/// Prometheus' `quantile` (shared with `quantile_over_time`).
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Prometheus sorts NaN first.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.partial_cmp(b).expect("neither is NaN"),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// `topk`/`bottomk`: per group, the `k` largest (smallest) samples, kept with Go's
/// binary heap exactly as Prometheus keeps them, so that ties resolve the same way.
fn top_k(
    input: Vec<Sample>,
    group: impl Fn(&Labels) -> Labels,
    k: usize,
    top: bool,
) -> Vec<Sample> {
    let mut heaps: Vec<GoHeap> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for sample in input {
        let key = group(&sample.labels);
        let Some(&at) = index.get(&key) else {
            index.insert(key, heaps.len());
            heaps.push(GoHeap {
                items: vec![sample],
                top,
            });
            continue;
        };
        let heap = &mut heaps[at];
        let root = heap.items[0].value;
        let better = if top {
            root < sample.value
        } else {
            root > sample.value
        };
        if heap.items.len() < k || better || root.is_nan() {
            if heap.items.len() == k {
                if k == 1 {
                    heap.items[0] = sample;
                    continue;
                }
                heap.pop();
            }
            heap.push(sample);
        }
    }
    let mut out = Vec::new();
    for heap in heaps {
        let mut items = heap.items;
        // Largest first for topk, smallest first for bottomk.
        items.sort_by(|a, b| {
            let order = a
                .value
                .partial_cmp(&b.value)
                .unwrap_or(std::cmp::Ordering::Equal);
            if top {
                order.reverse()
            } else {
                order
            }
        });
        out.extend(items);
    }
    out
}

/// Go's `container/heap` over Prometheus' `vectorByValueHeap` (topk: the smallest on
/// top) or `vectorByReverseValueHeap` (bottomk: the largest on top); NaN sorts first.
struct GoHeap {
    items: Vec<Sample>,
    top: bool,
}

impl GoHeap {
    fn less(&self, i: usize, j: usize) -> bool {
        let (a, b) = (self.items[i].value, self.items[j].value);
        if a.is_nan() {
            return true;
        }
        if self.top {
            a < b
        } else {
            a > b
        }
    }

    fn push(&mut self, sample: Sample) {
        self.items.push(sample);
        let mut j = self.items.len() - 1;
        while j > 0 {
            let parent = (j - 1) / 2;
            if !self.less(j, parent) {
                break;
            }
            self.items.swap(parent, j);
            j = parent;
        }
    }

    fn pop(&mut self) {
        let n = self.items.len() - 1;
        self.items.swap(0, n);
        let mut i = 0;
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let mut j = left;
            if left + 1 < n && self.less(left + 1, left) {
                j = left + 1;
            }
            if !self.less(j, i) {
                break;
            }
            self.items.swap(i, j);
            i = j;
        }
        self.items.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pairs: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into(),
            value,
        }
    }

    #[test]
    fn quantile_interpolates_between_ranks() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(0.0, &mut [5.0, 1.0]), 1.0);
        assert_eq!(quantile(1.0, &mut [5.0, 1.0]), 5.0);
        assert_eq!(quantile(1.5, &mut [5.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn topk_keeps_the_largest_per_group_and_bottomk_the_smallest() {
        let input = || {
            vec![
                sample(&[("g", "a"), ("i", "1")], 1.0),
                sample(&[("g", "a"), ("i", "2")], 5.0),
                sample(&[("g", "a"), ("i", "3")], 3.0),
                sample(&[("g", "b"), ("i", "4")], 2.0),
            ]
        };
        let values = |out: Vec<Sample>| out.iter().map(|s| s.value).collect::<Vec<_>>();
        let by_g = ["g".to_string()];
        assert_eq!(
            values(top_k(
                input(),
                |l: &Labels| group_of(l, &by_g, false),
                2,
                true
            )),
            [5.0, 3.0, 2.0]
        );
        assert_eq!(
            values(top_k(
                input(),
                |l: &Labels| group_of(l, &[], false),
                2,
                false
            )),
            [1.0, 2.0]
        );
        assert_eq!(
            values(top_k(
                input(),
                |l: &Labels| group_of(l, &[], false),
                1,
                true
            )),
            [5.0]
        );
    }

    #[test]
    fn stddev_and_avg_follow_the_running_formulas() {
        let input = vec![
            sample(&[("i", "1")], 2.0),
            sample(&[("i", "2")], 4.0),
            sample(&[("i", "3")], 4.0),
            sample(&[("i", "4")], 4.0),
            sample(&[("i", "5")], 5.0),
            sample(&[("i", "6")], 5.0),
            sample(&[("i", "7")], 7.0),
            sample(&[("i", "8")], 9.0),
        ];
        let one =
            |op| aggregate(op, input.clone(), |l: &Labels| group_of(l, &[], false), 0.0)[0].value;
        assert_eq!(one(T_STDDEV), 2.0);
        assert_eq!(one(T_STDVAR), 4.0);
        assert_eq!(one(T_AVG), 5.0);
        assert_eq!(one(T_COUNT), 8.0);
        assert_eq!(one(T_SUM), 40.0);
        assert_eq!(one(T_MIN), 2.0);
        assert_eq!(one(T_MAX), 9.0);
        let by_name = aggregate(
            T_SUM,
            input,
            |l: &Labels| group_of(l, &["i".to_string()], true),
            0.0,
        );
        assert_eq!(by_name.len(), 1, "without(i) leaves one group");
    }
}
