//! Prometheus remote write 1.0 and 2.0 request bodies: snappy block + protobuf, decoded
//! and validated into [`PromSeries`], or refused with a message naming what and where.
//!
//! The protobuf messages are declared with prost's derive, field numbers as in
//! `prometheus/prompb/types.proto` (1.0) and `prometheus/prompb/io/prometheus/write/v2/
//! types.proto` (2.0). Fields we do not use are left out; prost skips them.

use metronome_catalog::{MetricMetadata, METRIC_HELP_BYTES_MAX};
use prost::Message;

use crate::prom_model::{is_valid_label_name, is_valid_metric_name};

/// Compressed bodies larger than this are refused before decompression.
pub const BODY_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Decompressed bodies larger than this are refused before allocation (Prometheus sends a
/// few MiB at most).
pub const DECODED_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The longest label name or value accepted.
const LABEL_BYTES_MAX: usize = 64 * 1024;

/// One series of a request: labels sorted by name (with `__name__`), and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSeries {
    pub labels: Vec<(String, String)>,
    /// (timestamp ms, value); NaN values, staleness markers among them, are kept.
    pub samples: Vec<(i64, f64)>,
}

impl PromSeries {
    pub fn metric_name(&self) -> &str {
        self.labels
            .iter()
            .find(|(name, _)| name == "__name__")
            .map_or("", |(_, value)| value.as_str())
    }
}

/// Which remote-write protocol a request speaks, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
}

/// A request that cannot be accepted: the HTTP status it maps to and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// 415: the content type or encoding is not one we speak.
    #[error("{0}")]
    Unsupported(String),
    /// 400: the body is damaged or its samples are invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Picks the protocol from `Content-Type` and checks `Content-Encoding`, as the remote
/// write spec asks: 1.0 is `application/x-protobuf` (optionally with
/// `proto=prometheus.WriteRequest`), 2.0 adds `proto=io.prometheus.write.v2.Request`.
pub fn negotiate(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<Protocol, DecodeError> {
    let content_type = content_type.unwrap_or("application/x-protobuf");
    let mut parts = content_type.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(DecodeError::Unsupported(format!(
            "unsupported Content-Type {content_type:?}: remote write takes application/x-protobuf"
        )));
    }
    let mut protocol = Protocol::V1;
    for parameter in parts {
        if let Some(proto) = parameter.strip_prefix("proto=") {
            protocol = match proto.trim_matches('"') {
                "prometheus.WriteRequest" => Protocol::V1,
                "io.prometheus.write.v2.Request" => Protocol::V2,
                other => {
                    return Err(DecodeError::Unsupported(format!(
                        "unsupported remote write message {other:?}: use prometheus.WriteRequest \
                         or io.prometheus.write.v2.Request"
                    )))
                }
            };
        }
    }
    match content_encoding {
        None => Ok(protocol),
        Some(encoding) if encoding.eq_ignore_ascii_case("snappy") => Ok(protocol),
        Some(other) => Err(DecodeError::Unsupported(format!(
            "unsupported Content-Encoding {other:?}: remote write bodies are snappy-compressed"
        ))),
    }
}

/// Decompresses a snappy block with its declared length checked first.
pub fn decompress(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if body.len() > BODY_BYTES_MAX {
        return Err(DecodeError::Invalid(format!(
            "the body has {} bytes, the limit is {BODY_BYTES_MAX}",
            body.len()
        )));
    }
    let declared = snap::raw::decompress_len(body)
        .map_err(|error| DecodeError::Invalid(format!("the body is not valid snappy: {error}")))?;
    if declared > DECODED_BYTES_MAX {
        return Err(DecodeError::Invalid(format!(
            "the body declares {declared} decompressed bytes, the limit is {DECODED_BYTES_MAX}"
        )));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|error| DecodeError::Invalid(format!("the body is not valid snappy: {error}")))
}

/// A decoded request: its series, and the metric metadata it reports (one entry per
/// metric, the last report winning).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    pub series: Vec<PromSeries>,
    pub metadata: Vec<(String, MetricMetadata)>,
}

/// Decodes a snappy-compressed request body of `protocol`.
pub fn decode(protocol: Protocol, body: &[u8]) -> Result<Decoded, DecodeError> {
    let bytes = decompress(body)?;
    match protocol {
        Protocol::V1 => decode_v1(&bytes),
        Protocol::V2 => decode_v2(&bytes),
    }
}

/// The name Prometheus' metadata API gives a metric type; the numbering is the same in
/// 1.0's `MetricMetadata.MetricType` and 2.0's `Metadata.MetricType` (0 is unknown or
/// unspecified).
fn metric_type_name(number: i32) -> &'static str {
    match number {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

fn check_metadata(what: String, metadata: &MetricMetadata) -> Result<(), DecodeError> {
    if metadata.help.len() > METRIC_HELP_BYTES_MAX || metadata.unit.len() > METRIC_HELP_BYTES_MAX {
        return Err(DecodeError::Invalid(format!(
            "{what}: help and unit are limited to {METRIC_HELP_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

/// Keeps the last metadata reported for each metric.
fn last_per_metric(metadata: Vec<(String, MetricMetadata)>) -> Vec<(String, MetricMetadata)> {
    let by_name: std::collections::BTreeMap<String, MetricMetadata> =
        metadata.into_iter().collect();
    by_name.into_iter().collect()
}

fn decode_v1(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let request = v1::WriteRequest::decode(bytes).map_err(|error| {
        DecodeError::Invalid(format!(
            "the body is not a valid prometheus.WriteRequest: {error}"
        ))
    })?;
    let mut out = Vec::with_capacity(request.timeseries.len());
    for (index, series) in request.timeseries.into_iter().enumerate() {
        if !series.histograms.is_empty() {
            return Err(DecodeError::Invalid(format!(
                "timeseries[{index}] carries native histograms, which are not supported yet"
            )));
        }
        let labels = series
            .labels
            .into_iter()
            .map(|label| (label.name, label.value))
            .collect();
        let samples = series
            .samples
            .into_iter()
            .map(|sample| (sample.timestamp, sample.value))
            .collect();
        out.push(validate(index, labels, samples)?);
    }
    let mut metadata = Vec::with_capacity(request.metadata.len());
    for (index, reported) in request.metadata.into_iter().enumerate() {
        let name = reported.metric_family_name;
        if !is_valid_metric_name(&name) {
            return Err(DecodeError::Invalid(format!(
                "metadata[{index}]: invalid metric family name {name:?}"
            )));
        }
        let entry = MetricMetadata {
            metric_type: metric_type_name(reported.r#type).to_string(),
            help: reported.help,
            unit: reported.unit,
        };
        check_metadata(format!("metadata[{index}]"), &entry)?;
        metadata.push((name, entry));
    }
    Ok(Decoded {
        series: out,
        metadata: last_per_metric(metadata),
    })
}

fn decode_v2(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let request = v2::Request::decode(bytes).map_err(|error| {
        DecodeError::Invalid(format!(
            "the body is not a valid io.prometheus.write.v2.Request: {error}"
        ))
    })?;
    let symbol = |index: usize, reference: u32| -> Result<String, DecodeError> {
        request
            .symbols
            .get(reference as usize)
            .cloned()
            .ok_or_else(|| {
                DecodeError::Invalid(format!(
                    "timeseries[{index}] refers to symbol {reference}, the table has {}",
                    request.symbols.len()
                ))
            })
    };
    if request
        .symbols
        .first()
        .is_some_and(|first| !first.is_empty())
    {
        return Err(DecodeError::Invalid(
            "symbols[0] must be the empty string".to_string(),
        ));
    }
    let mut out = Vec::with_capacity(request.timeseries.len());
    let mut metadata = Vec::new();
    for (index, series) in request.timeseries.iter().enumerate() {
        if !series.histograms.is_empty() {
            return Err(DecodeError::Invalid(format!(
                "timeseries[{index}] carries native histograms, which are not supported yet"
            )));
        }
        if series.labels_refs.len() % 2 != 0 {
            return Err(DecodeError::Invalid(format!(
                "timeseries[{index}] has an odd number of label references"
            )));
        }
        let mut labels = Vec::with_capacity(series.labels_refs.len() / 2);
        for pair in series.labels_refs.chunks_exact(2) {
            labels.push((symbol(index, pair[0])?, symbol(index, pair[1])?));
        }
        let samples = series
            .samples
            .iter()
            .map(|sample| (sample.timestamp, sample.value))
            .collect();
        let valid = validate(index, labels, samples)?;
        if let Some(reported) = series
            .metadata
            .as_ref()
            .filter(|m| m.r#type != 0 || m.help_ref != 0 || m.unit_ref != 0)
        {
            let entry = MetricMetadata {
                metric_type: metric_type_name(reported.r#type).to_string(),
                help: symbol(index, reported.help_ref)?,
                unit: symbol(index, reported.unit_ref)?,
            };
            check_metadata(format!("timeseries[{index}] metadata"), &entry)?;
            metadata.push((valid.metric_name().to_string(), entry));
        }
        out.push(valid);
    }
    Ok(Decoded {
        series: out,
        metadata: last_per_metric(metadata),
    })
}

/// Checks one series as Prometheus' own receiver does: label names valid, sorted and
/// unique; a valid metric name. Labels with empty values are dropped (in Prometheus an
/// empty label is an absent one).
fn validate(
    index: usize,
    labels: Vec<(String, String)>,
    samples: Vec<(i64, f64)>,
) -> Result<PromSeries, DecodeError> {
    let invalid = |what: String| DecodeError::Invalid(format!("timeseries[{index}]: {what}"));
    for (position, (name, value)) in labels.iter().enumerate() {
        if name.is_empty() {
            return Err(invalid(format!("label {position} has an empty name")));
        }
        if name.len() > LABEL_BYTES_MAX || value.len() > LABEL_BYTES_MAX {
            return Err(invalid(format!(
                "label {name:.64?} is longer than {LABEL_BYTES_MAX} bytes"
            )));
        }
        if !is_valid_label_name(name) {
            return Err(invalid(format!("invalid label name {name:?}")));
        }
        if let Some(previous) = position.checked_sub(1).map(|p| &labels[p].0) {
            if previous == name {
                return Err(invalid(format!("duplicate label name {name:?}")));
            }
            if previous > name {
                return Err(invalid(format!(
                    "labels are not sorted by name: {previous:?} comes before {name:?}"
                )));
            }
        }
    }
    let series = PromSeries {
        labels: labels
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect(),
        samples,
    };
    let name = series.metric_name();
    if name.is_empty() {
        return Err(invalid("no __name__ label".to_string()));
    }
    if !is_valid_metric_name(name) {
        return Err(invalid(format!("invalid metric name {name:?}")));
    }
    Ok(series)
}

/// Remote write 1.0 messages (`prometheus` package).
pub mod v1 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        /// Native histograms; only their presence is checked (they are refused).
        #[prost(bytes = "vec", repeated, tag = "4")]
        pub histograms: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }
}

/// Remote write 2.0 messages (`io.prometheus.write.v2` package).
pub mod v2 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        /// Native histograms; only their presence is checked (they are refused).
        #[prost(bytes = "vec", repeated, tag = "3")]
        pub histograms: Vec<Vec<u8>>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> v1::Label {
        v1::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn body_v1(labels: Vec<v1::Label>) -> Vec<u8> {
        let request = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels,
                samples: vec![v1::Sample {
                    value: 1.5,
                    timestamp: 1000,
                }],
                histograms: vec![],
            }],
            metadata: vec![],
        };
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    #[test]
    fn valid_v1_and_v2_bodies_decode_to_the_same_series() {
        let v1_body = body_v1(vec![
            label("__name__", "up"),
            label("empty", ""),
            label("job", "node"),
        ]);
        let from_v1 = decode(Protocol::V1, &v1_body).unwrap().series;
        let request = v2::Request {
            symbols: vec![
                "".into(),
                "__name__".into(),
                "up".into(),
                "job".into(),
                "node".into(),
                "Whether the target is up.".into(),
            ],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![v2::Sample {
                    value: 1.5,
                    timestamp: 1000,
                }],
                histograms: vec![],
                metadata: Some(v2::Metadata {
                    r#type: 2,
                    help_ref: 5,
                    unit_ref: 0,
                }),
            }],
        };
        let v2_body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let from_v2 = decode(Protocol::V2, &v2_body).unwrap();
        assert_eq!(from_v1, from_v2.series);
        assert_eq!(
            from_v2.metadata,
            [(
                "up".to_string(),
                MetricMetadata {
                    metric_type: "gauge".into(),
                    help: "Whether the target is up.".into(),
                    unit: String::new(),
                }
            )]
        );
        assert_eq!(
            from_v1[0].labels,
            [
                ("__name__".to_string(), "up".to_string()),
                ("job".to_string(), "node".to_string())
            ],
            "the empty label is dropped"
        );
        assert_eq!(from_v1[0].samples, [(1000, 1.5)]);
    }

    #[test]
    fn v1_metadata_keeps_the_last_report_per_metric_and_checks_names() {
        let report = |name: &str, r#type: i32, help: &str| v1::MetricMetadata {
            r#type,
            metric_family_name: name.into(),
            help: help.into(),
            unit: String::new(),
        };
        let encode = |metadata: Vec<v1::MetricMetadata>| {
            let request = v1::WriteRequest {
                timeseries: vec![],
                metadata,
            };
            snap::raw::Encoder::new()
                .compress_vec(&request.encode_to_vec())
                .unwrap()
        };
        let decoded = decode(
            Protocol::V1,
            &encode(vec![
                report("requests_total", 1, "old"),
                report("latency", 3, "Latency."),
                report("requests_total", 1, "Requests."),
                report("odd", 42, ""),
            ]),
        )
        .unwrap();
        assert!(decoded.series.is_empty());
        let got: Vec<(&str, &str, &str)> = decoded
            .metadata
            .iter()
            .map(|(name, m)| (name.as_str(), m.metric_type.as_str(), m.help.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("latency", "histogram", "Latency."),
                ("odd", "unknown", ""),
                ("requests_total", "counter", "Requests.")
            ]
        );
        let error = decode(Protocol::V1, &encode(vec![report("1bad", 1, "")])).unwrap_err();
        assert!(error.to_string().contains("metadata[0]"), "{error}");
    }

    #[test]
    fn malformed_bodies_are_refused_with_what_is_wrong() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("bad snappy", b"\xff\xff\xff\xff\xff\xff".to_vec(), "snappy"),
            (
                "truncated protobuf",
                {
                    let full = v1::WriteRequest {
                        timeseries: vec![v1::TimeSeries {
                            labels: vec![label("__name__", "up")],
                            samples: vec![],
                            histograms: vec![],
                        }],
                        metadata: vec![],
                    }
                    .encode_to_vec();
                    snap::raw::Encoder::new()
                        .compress_vec(&full[..full.len() - 3])
                        .unwrap()
                },
                "WriteRequest",
            ),
            (
                "unsorted labels",
                body_v1(vec![label("job", "a"), label("__name__", "up")]),
                "not sorted",
            ),
            (
                "duplicate labels",
                body_v1(vec![
                    label("__name__", "up"),
                    label("a", "1"),
                    label("a", "2"),
                ]),
                "duplicate label name \"a\"",
            ),
            (
                "empty label name",
                body_v1(vec![label("", "x"), label("__name__", "up")]),
                "empty name",
            ),
            (
                "invalid metric name",
                body_v1(vec![label("__name__", "1up")]),
                "invalid metric name \"1up\"",
            ),
            (
                "no metric name",
                body_v1(vec![label("job", "a")]),
                "__name__",
            ),
            (
                "invalid label name",
                body_v1(vec![label("__name__", "up"), label("bad-name", "1")]),
                "bad-name",
            ),
            (
                "huge declared length",
                {
                    // A snappy header declaring 2^32-1 bytes, then nothing.
                    vec![0xff, 0xff, 0xff, 0xff, 0x0f]
                },
                "limit",
            ),
        ];
        for (what, body, expected) in cases {
            match decode(Protocol::V1, &body) {
                Err(DecodeError::Invalid(message)) => {
                    assert!(message.contains(expected), "{what}: {message}")
                }
                other => panic!("{what}: expected an invalid-body error, got {other:?}"),
            }
        }
    }

    #[test]
    fn v2_symbol_references_are_bounds_checked() {
        let request = v2::Request {
            symbols: vec!["".into(), "__name__".into()],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 99],
                samples: vec![],
                histograms: vec![],
                metadata: None,
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let error = decode(Protocol::V2, &body).unwrap_err().to_string();
        assert!(error.contains("symbol 99"), "{error}");
    }

    #[test]
    fn content_types_pick_the_protocol_or_are_refused() {
        assert_eq!(
            negotiate(Some("application/x-protobuf"), Some("snappy")),
            Ok(Protocol::V1)
        );
        assert_eq!(
            negotiate(
                Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
                Some("snappy")
            ),
            Ok(Protocol::V2)
        );
        assert!(matches!(
            negotiate(Some("application/json"), None),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            negotiate(Some("application/x-protobuf"), Some("gzip")),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            negotiate(Some("application/x-protobuf;proto=foo.Bar"), None),
            Err(DecodeError::Unsupported(_))
        ));
    }
}
