//! Binary operators: arithmetic, comparison (filtering or with `bool`) and set
//! operators, with Prometheus' vector matching (`on`/`ignoring`,
//! `group_left`/`group_right`) and its rules for dropping the metric name.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD,
    T_MUL, T_NEQ, T_POW, T_SUB,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::eval::{type_error, Evaluator};
use super::value::{
    drop_metric_name, format_labels, keep_labels, label, remove_labels, with_label, Labels, Sample,
    Value, METRIC_NAME,
};
use super::QueryError;

type Op = u16;

pub fn evaluate(ev: &Evaluator, expr: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
    let op = expr.op.id();
    let return_bool = expr.return_bool();
    let lhs = ev.instant(&expr.lhs, t)?;
    let rhs = ev.instant(&expr.rhs, t)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(scalar_binop(op, l, r)?)),
        (Value::Vector(vector), Value::Scalar(scalar)) => Ok(Value::Vector(vector_scalar(
            ev,
            op,
            vector,
            scalar,
            false,
            return_bool,
        )?)),
        (Value::Scalar(scalar), Value::Vector(vector)) => Ok(Value::Vector(vector_scalar(
            ev,
            op,
            vector,
            scalar,
            true,
            return_bool,
        )?)),
        (Value::Vector(lhs), Value::Vector(rhs)) => {
            let matching = Matching::of(expr);
            Ok(Value::Vector(match op {
                T_LAND => vector_and(lhs, rhs, &matching),
                T_LOR => vector_or(lhs, rhs, &matching),
                T_LUNLESS => vector_unless(lhs, rhs, &matching),
                _ => vector_binop(op, lhs, rhs, &matching, return_bool)?,
            }))
        }
        (other, _) if !matches!(other, Value::Scalar(_) | Value::Vector(_)) => {
            Err(type_error("a binary operator", &other))
        }
        (_, other) => Err(type_error("a binary operator", &other)),
    }
}

fn is_comparison(op: Op) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Arithmetic drops the metric name; comparisons and set operators keep it, and so
/// does `atan2` in Prometheus 2.42 (it was added to the list later).
fn drops_metric_name(op: Op) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_POW | T_MOD)
}

/// The result of `lhs op rhs` on two sample values, and whether a filtering comparison
/// keeps the sample. Comparisons yield the left value.
fn elem_binop(op: Op, lhs: f64, rhs: f64) -> Result<(f64, bool), QueryError> {
    Ok(match op {
        T_ADD => (lhs + rhs, true),
        T_SUB => (lhs - rhs, true),
        T_MUL => (lhs * rhs, true),
        T_DIV => (lhs / rhs, true),
        // Go's math.Pow and math.Mod agree with C's pow and fmod, which Rust uses.
        T_POW => (lhs.powf(rhs), true),
        T_MOD => (lhs % rhs, true),
        T_ATAN2 => (lhs.atan2(rhs), true),
        T_EQLC => (lhs, lhs == rhs),
        T_NEQ => (lhs, lhs != rhs),
        T_GTR => (lhs, lhs > rhs),
        T_LSS => (lhs, lhs < rhs),
        T_GTE => (lhs, lhs >= rhs),
        T_LTE => (lhs, lhs <= rhs),
        other => {
            return Err(QueryError::Execution(format!(
                "operator {} is not a binary operator on samples",
                promql_parser::parser::token::TokenType::new(other)
            )));
        }
    })
}

fn scalar_binop(op: Op, lhs: f64, rhs: f64) -> Result<f64, QueryError> {
    let (value, keep) = elem_binop(op, lhs, rhs)?;
    // Comparisons between scalars always carry `bool` (the parser insists).
    Ok(if is_comparison(op) {
        f64::from(u8::from(keep))
    } else {
        value
    })
}

fn vector_scalar(
    ev: &Evaluator,
    op: Op,
    vector: Vec<Sample>,
    scalar: f64,
    scalar_on_left: bool,
    return_bool: bool,
) -> Result<Vec<Sample>, QueryError> {
    let mut out = Vec::with_capacity(vector.len());
    for sample in vector {
        let (l, r) = if scalar_on_left {
            (scalar, sample.value)
        } else {
            (sample.value, scalar)
        };
        let (mut value, mut keep) = elem_binop(op, l, r)?;
        // A comparison keeps the vector's value, whichever side it is on.
        if is_comparison(op) && scalar_on_left {
            value = r;
        }
        if return_bool {
            value = f64::from(u8::from(keep));
            keep = true;
        }
        if keep {
            let labels = if drops_metric_name(op) || return_bool {
                ev.without_name(&sample.labels)
            } else {
                sample.labels
            };
            out.push(Sample { labels, value });
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

/// How two vectors' samples pair up.
struct Matching<'e> {
    card: Card,
    /// `on(...)` rather than `ignoring(...)`.
    on: bool,
    names: &'e [String],
    /// `group_left(...)`/`group_right(...)`'s labels, copied from the "one" side.
    include: &'e [String],
}

impl<'e> Matching<'e> {
    fn of(expr: &'e BinaryExpr) -> Matching<'e> {
        let set_operator = matches!(expr.op.id(), T_LAND | T_LOR | T_LUNLESS);
        let Some(modifier) = &expr.modifier else {
            return Matching {
                card: if set_operator {
                    Card::ManyToMany
                } else {
                    Card::OneToOne
                },
                on: false,
                names: &[],
                include: &[],
            };
        };
        let (card, include): (Card, &[String]) = match &modifier.card {
            _ if set_operator => (Card::ManyToMany, &[]),
            VectorMatchCardinality::OneToOne => (Card::OneToOne, &[]),
            VectorMatchCardinality::ManyToOne(labels) => (Card::ManyToOne, &labels.labels),
            VectorMatchCardinality::OneToMany(labels) => (Card::OneToMany, &labels.labels),
            VectorMatchCardinality::ManyToMany => (Card::ManyToMany, &[]),
        };
        let (on, names): (bool, &[String]) = match &modifier.matching {
            Some(LabelModifier::Include(labels)) => (true, &labels.labels),
            Some(LabelModifier::Exclude(labels)) => (false, &labels.labels),
            None => (false, &[]),
        };
        Matching {
            card,
            on,
            names,
            include,
        }
    }

    /// The labels a sample is matched by: `on`'s, or all but `ignoring`'s and the name.
    fn matched<'l>(&self, labels: &'l [(String, String)]) -> Vec<&'l (String, String)> {
        labels
            .iter()
            .filter(|(name, _)| {
                let listed = self.names.iter().any(|n| n == name);
                if self.on {
                    listed
                } else {
                    !listed && name != METRIC_NAME
                }
            })
            .collect()
    }

    fn signature(&self, labels: &[(String, String)]) -> String {
        let mut key = String::new();
        for (name, value) in self.matched(labels) {
            key.push_str(name);
            key.push('\u{ff}');
            key.push_str(value);
            key.push('\u{fe}');
        }
        key
    }
}

fn vector_and(lhs: Vec<Sample>, rhs: Vec<Sample>, matching: &Matching) -> Vec<Sample> {
    if lhs.is_empty() || rhs.is_empty() {
        return Vec::new();
    }
    let right: HashSet<String> = rhs.iter().map(|s| matching.signature(&s.labels)).collect();
    lhs.into_iter()
        .filter(|s| right.contains(&matching.signature(&s.labels)))
        .collect()
}

fn vector_or(lhs: Vec<Sample>, rhs: Vec<Sample>, matching: &Matching) -> Vec<Sample> {
    if lhs.is_empty() {
        return rhs;
    }
    if rhs.is_empty() {
        return lhs;
    }
    let left: HashSet<String> = lhs.iter().map(|s| matching.signature(&s.labels)).collect();
    let mut out = lhs;
    out.extend(
        rhs.into_iter()
            .filter(|s| !left.contains(&matching.signature(&s.labels))),
    );
    out
}

fn vector_unless(lhs: Vec<Sample>, rhs: Vec<Sample>, matching: &Matching) -> Vec<Sample> {
    if lhs.is_empty() || rhs.is_empty() {
        return lhs;
    }
    let right: HashSet<String> = rhs.iter().map(|s| matching.signature(&s.labels)).collect();
    lhs.into_iter()
        .filter(|s| !right.contains(&matching.signature(&s.labels)))
        .collect()
}

/// Arithmetic and comparison between two vectors, as Prometheus' `VectorBinop`.
fn vector_binop(
    op: Op,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    matching: &Matching,
    return_bool: bool,
) -> Result<Vec<Sample>, QueryError> {
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(Vec::new());
    }
    // One-to-many is many-to-one with the sides swapped (values are swapped back below).
    let (many, one) = if matching.card == Card::OneToMany {
        (rhs, lhs)
    } else {
        (lhs, rhs)
    };
    let mut one_side: HashMap<String, &Sample> = HashMap::with_capacity(one.len());
    for sample in &one {
        let signature = matching.signature(&sample.labels);
        if let Some(duplicate) = one_side.insert(signature, sample) {
            let side = if matching.card == Card::OneToMany {
                "left"
            } else {
                "right"
            };
            let matched: Vec<(String, String)> = matching
                .matched(&sample.labels)
                .into_iter()
                .cloned()
                .collect();
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the \
                 operation: [{}, {}];many-to-many matching not allowed: matching labels must be \
                 unique on one side",
                format_labels(&matched),
                format_labels(&sample.labels),
                format_labels(&duplicate.labels),
            )));
        }
    }
    let mut matched_one_to_one: HashSet<String> = HashSet::new();
    let mut matched_many: HashMap<String, HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for sample in &many {
        let signature = matching.signature(&sample.labels);
        let Some(partner) = one_side.get(&signature) else {
            continue;
        };
        let (l, r) = if matching.card == Card::OneToMany {
            (partner.value, sample.value)
        } else {
            (sample.value, partner.value)
        };
        let (mut value, keep) = elem_binop(op, l, r)?;
        if return_bool {
            value = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let mut labels = result_labels(&sample.labels, &partner.labels, op, matching);
        if return_bool {
            labels = drop_metric_name(&labels);
        }
        if matching.card == Card::OneToOne {
            if !matched_one_to_one.insert(signature) {
                return Err(QueryError::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit \
                     (group_left/group_right)"
                        .to_string(),
                ));
            }
        } else if !matched_many
            .entry(signature)
            .or_default()
            .insert(labels.clone())
        {
            return Err(QueryError::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches"
                    .to_string(),
            ));
        }
        out.push(Sample { labels, value });
    }
    Ok(out)
}

/// The labels of a result sample from the "many" side's and the "one" side's labels.
fn result_labels(many: &Labels, one: &Labels, op: Op, matching: &Matching) -> Labels {
    let mut labels = if drops_metric_name(op) {
        drop_metric_name(many)
    } else {
        many.clone()
    };
    if matching.card == Card::OneToOne {
        labels = if matching.on {
            keep_labels(&labels, matching.names)
        } else {
            remove_labels(&labels, matching.names)
        };
    }
    for name in matching.include {
        labels = with_label(&labels, name, label(one, name).unwrap_or(""));
    }
    labels
}
