//! The values PromQL expressions evaluate to at one evaluation time, and the label-set
//! operations the operators and functions share.
//!
//! Label sets are sorted by name and shared (`Arc`), since most operations pass them
//! through unchanged from step to step.

use std::fmt::Write;
use std::sync::Arc;

/// The label holding a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// A series' labels, sorted by name, without empty values.
pub type Labels = Arc<[(String, String)]>;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// One series of a range vector (or of a range evaluation's result).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    /// (timestamp ms, value), in time order.
    pub points: Vec<(i64, f64)>,
}

/// What an expression evaluates to at one instant.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    /// A range vector: a range selector's or a subquery's samples.
    Matrix(Vec<RangeSeries>),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "instant vector",
            Value::Matrix(_) => "range vector",
        }
    }
}

pub fn empty_labels() -> Labels {
    Arc::from(Vec::new())
}

/// The value of label `name`, if the set has it.
pub fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(n, _)| n.as_str().cmp(name))
        .ok()
        .map(|i| labels[i].1.as_str())
}

/// The set without `__name__` (the same `Arc` when it has none).
pub fn drop_metric_name(labels: &Labels) -> Labels {
    if label(labels, METRIC_NAME).is_none() {
        return labels.clone();
    }
    labels
        .iter()
        .filter(|(name, _)| name != METRIC_NAME)
        .cloned()
        .collect::<Vec<_>>()
        .into()
}

/// The set with `name` set to `value`; an empty value removes the label, as in
/// Prometheus' label builder.
pub fn with_label(labels: &[(String, String)], name: &str, value: &str) -> Labels {
    let mut out: Vec<(String, String)> =
        labels.iter().filter(|(n, _)| n != name).cloned().collect();
    if !value.is_empty() {
        let at = out.partition_point(|(n, _)| n.as_str() < name);
        out.insert(at, (name.to_string(), value.to_string()));
    }
    out.into()
}

/// Only the labels named in `names`.
pub fn keep_labels(labels: &[(String, String)], names: &[String]) -> Labels {
    labels
        .iter()
        .filter(|(name, _)| names.iter().any(|n| n == name))
        .cloned()
        .collect::<Vec<_>>()
        .into()
}

/// The labels not named in `names`.
pub fn remove_labels(labels: &[(String, String)], names: &[String]) -> Labels {
    labels
        .iter()
        .filter(|(name, _)| !names.iter().any(|n| n == name))
        .cloned()
        .collect::<Vec<_>>()
        .into()
}

/// The set as Prometheus prints it in messages: `{a="1", b="2"}`.
pub fn format_labels(labels: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{name}={value:?}");
    }
    out.push('}');
    out
}

/// A sample value as Prometheus writes it (Go's `FormatFloat(v, 'f', -1, 64)`).
pub fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{value}")
    }
}

pub use crate::prom_model::is_valid_label_name;

/// Go's `math.Max`: +Inf if either is +Inf, even against NaN; else NaN if either is NaN
/// (Rust's `f64::max` ignores NaN); +0 over -0.
pub fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            b
        } else {
            a
        }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: -Inf if either is -Inf, even against NaN; else NaN if either is NaN;
/// -0 under +0.
pub fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

/// Neumaier's compensated summation step, as Prometheus' `kahanSumInc`.
pub fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn label_edits_keep_the_set_sorted() {
        let labels = set(&[("__name__", "up"), ("job", "a")]);
        assert_eq!(&*drop_metric_name(&labels), &*set(&[("job", "a")]));
        assert_eq!(
            &*with_label(&labels, "instance", "x"),
            &*set(&[("__name__", "up"), ("instance", "x"), ("job", "a")])
        );
        assert_eq!(
            &*with_label(&labels, "job", ""),
            &*set(&[("__name__", "up")])
        );
        assert_eq!(label(&labels, "job"), Some("a"));
        assert_eq!(label(&labels, "nope"), None);
        assert_eq!(format_labels(&labels), r#"{__name__="up", job="a"}"#);
    }

    #[test]
    fn go_min_and_max_propagate_nan() {
        assert!(go_max(1.0, f64::NAN).is_nan());
        assert!(go_min(f64::NAN, 1.0).is_nan());
        assert_eq!(go_max(1.0, 2.0), 2.0);
        assert_eq!(go_min(1.0, 2.0), 1.0);
        // An infinity in the direction sought wins over NaN, as in Go.
        assert_eq!(go_max(f64::NAN, f64::INFINITY), f64::INFINITY);
        assert_eq!(go_max(f64::INFINITY, f64::NAN), f64::INFINITY);
        assert_eq!(go_min(f64::NAN, f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert_eq!(go_min(f64::NEG_INFINITY, f64::NAN), f64::NEG_INFINITY);
        assert!(go_max(f64::NAN, f64::NEG_INFINITY).is_nan());
        assert!(go_min(f64::INFINITY, f64::NAN).is_nan());
        assert!(go_max(-0.0, 0.0).is_sign_positive() && go_max(0.0, -0.0).is_sign_positive());
        assert!(go_min(-0.0, 0.0).is_sign_negative() && go_min(0.0, -0.0).is_sign_negative());
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
    }
}
