//! How a region write travels in a WAL record: rows as protobuf (prost).
//!
//! Decoding never trusts the bytes: prost bounds every length by the input, and a row
//! whose shape does not fit the region is reported, not applied.

use metronome_core::data::{Row, Value};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct RowsProto {
    #[prost(message, repeated, tag = "1")]
    rows: Vec<RowProto>,
}

#[derive(Clone, PartialEq, Message)]
struct RowProto {
    #[prost(string, repeated, tag = "1")]
    tags: Vec<String>,
    #[prost(sint64, tag = "2")]
    ts: i64,
    #[prost(message, repeated, tag = "3")]
    fields: Vec<ValueProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueProto {
    #[prost(oneof = "ValueKind", tags = "1, 2, 3, 4")]
    kind: Option<ValueKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ValueKind {
    #[prost(double, tag = "1")]
    Float64(f64),
    #[prost(sint64, tag = "2")]
    Int64(i64),
    #[prost(string, tag = "3")]
    String(String),
    #[prost(bool, tag = "4")]
    Boolean(bool),
}

pub fn encode_rows(rows: &[Row]) -> Vec<u8> {
    let proto = RowsProto {
        rows: rows
            .iter()
            .map(|row| RowProto {
                tags: row.tags.clone(),
                ts: row.ts,
                fields: row
                    .fields
                    .iter()
                    .map(|value| ValueProto {
                        kind: match value {
                            Value::Null => None,
                            Value::Float64(v) => Some(ValueKind::Float64(*v)),
                            Value::Int64(v) => Some(ValueKind::Int64(*v)),
                            Value::String(v) => Some(ValueKind::String(v.clone())),
                            Value::Boolean(v) => Some(ValueKind::Boolean(*v)),
                        },
                    })
                    .collect(),
            })
            .collect(),
    };
    proto.encode_to_vec()
}

pub fn decode_rows(bytes: &[u8]) -> Result<Vec<Row>, prost::DecodeError> {
    let proto = RowsProto::decode(bytes)?;
    Ok(proto
        .rows
        .into_iter()
        .map(|row| Row {
            tags: row.tags,
            ts: row.ts,
            fields: row
                .fields
                .into_iter()
                .map(|value| match value.kind {
                    None => Value::Null,
                    Some(ValueKind::Float64(v)) => Value::Float64(v),
                    Some(ValueKind::Int64(v)) => Value::Int64(v),
                    Some(ValueKind::String(v)) => Value::String(v),
                    Some(ValueKind::Boolean(v)) => Value::Boolean(v),
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_garbage_is_an_error() {
        let rows = vec![
            Row {
                tags: vec!["a".into(), "".into()],
                ts: -5,
                fields: vec![
                    Value::Float64(f64::NAN),
                    Value::Null,
                    Value::String("s".into()),
                ],
            },
            Row {
                tags: vec![],
                ts: i64::MAX,
                fields: vec![Value::Int64(-1), Value::Boolean(true)],
            },
        ];
        let decoded = decode_rows(&encode_rows(&rows)).unwrap();
        assert_eq!(decoded.len(), 2);
        assert!(matches!(decoded[0].fields[0], Value::Float64(v) if v.is_nan()));
        assert_eq!(decoded[1], rows[1]);
        assert_eq!(decoded[0].fields[1..], rows[0].fields[1..]);
        assert!(decode_rows(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
