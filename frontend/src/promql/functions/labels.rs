//! `label_replace` and `label_join`.

use super::*;

pub(super) fn label_replace(ev: &Evaluator, args: &[&Expr], t: i64) -> Result<Value, QueryError> {
    let destination = string_arg(args[1])?;
    let replacement = string_arg(args[2])?;
    let source = string_arg(args[3])?;
    let pattern = string_arg(args[4])?;
    // Go's syntax, anchored as Prometheus anchors it (see `metronome_core::re2`).
    let regex = metronome_core::re2::compile_anchored(pattern).map_err(|_| {
        QueryError::Execution(format!(
            "invalid regular expression in label_replace(): {pattern}"
        ))
    })?;
    if !is_valid_label_name(destination) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_replace(): {destination}"
        )));
    }
    let vector = vector_arg(ev, args[0], t)?;
    let mut out = Vec::with_capacity(vector.len());
    for sample in vector {
        let value = label(&sample.labels, source).unwrap_or("");
        let labels = match regex.captures(value) {
            None => sample.labels,
            Some(captures) => {
                // Go's Regexp.Expand and the regex crate agree on `$1`, `${1}`, `$name`
                // and the longest-name rule.
                let mut expanded = String::new();
                captures.expand(replacement, &mut expanded);
                with_label(&sample.labels, destination, &expanded)
            }
        };
        out.push(Sample {
            labels,
            value: sample.value,
        });
    }
    check_unique_labels(&out)?;
    Ok(Value::Vector(out))
}

pub(super) fn label_join(ev: &Evaluator, args: &[&Expr], t: i64) -> Result<Value, QueryError> {
    let destination = string_arg(args[1])?;
    let separator = string_arg(args[2])?;
    let sources: Vec<&str> = args[3..]
        .iter()
        .map(|arg| string_arg(arg))
        .collect::<Result<_, _>>()?;
    if !is_valid_label_name(destination) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_join(): {destination}"
        )));
    }
    if let Some(bad) = sources.iter().find(|source| !is_valid_label_name(source)) {
        return Err(QueryError::Execution(format!(
            "invalid source label name in label_join(): {bad}"
        )));
    }
    let vector = vector_arg(ev, args[0], t)?;
    let mut out = Vec::with_capacity(vector.len());
    for sample in vector {
        let joined: Vec<&str> = sources
            .iter()
            .map(|source| label(&sample.labels, source).unwrap_or(""))
            .collect();
        out.push(Sample {
            labels: with_label(&sample.labels, destination, &joined.join(separator)),
            value: sample.value,
        });
    }
    check_unique_labels(&out)?;
    Ok(Value::Vector(out))
}
