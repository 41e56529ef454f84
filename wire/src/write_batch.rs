//! A [`WriteBatch`]'s bytes: one encoding for a write on the network and in the datanode's
//! WAL, so that a datanode logs a write's bytes as it received them.
//!
//! Protobuf (prost): a batch is its series, each with its tags' positions and values,
//! its timestamps, and one column per field (values of one type, the null rows listed
//! apart). Decoding never trusts the bytes: prost bounds every length by the input, the
//! rows of one payload are at most [`BATCH_ROWS_MAX`], and a series in any other form
//! than [`SeriesWrite`] describes is an error naming it.

use metronome_core::data::{Row, Value};
use metronome_core::write_batch::{SeriesWrite, WriteBatch};
use prost::Message;

use crate::rows::RowsError;

/// Rows in one payload at most: a decoded row costs far more memory than its encoded
/// bytes, so this bounds what a frame (or a WAL record) can make a reader allocate.
pub const BATCH_ROWS_MAX: usize = 1 << 20;

#[derive(Clone, PartialEq, Message)]
struct BatchProto {
    /// Rows one by one: the WAL's records before batches were series (protocol 3 and
    /// earlier). Read so that old records replay; never written.
    #[prost(message, repeated, tag = "1")]
    legacy_rows: Vec<LegacyRowProto>,
    #[prost(message, repeated, tag = "2")]
    series: Vec<SeriesProto>,
}

#[derive(Clone, PartialEq, Message)]
struct SeriesProto {
    #[prost(uint32, repeated, tag = "1")]
    tag_positions: Vec<u32>,
    #[prost(string, repeated, tag = "2")]
    tag_values: Vec<String>,
    #[prost(sint64, repeated, tag = "3")]
    ts: Vec<i64>,
    #[prost(message, repeated, tag = "4")]
    fields: Vec<ColumnProto>,
}

/// One field's values for every row of a series: the non-null ones in the list of their
/// type (at most one list is not empty), and the positions of the null rows.
#[derive(Clone, PartialEq, Message)]
struct ColumnProto {
    #[prost(double, repeated, tag = "1")]
    float64: Vec<f64>,
    #[prost(sint64, repeated, tag = "2")]
    int64: Vec<i64>,
    #[prost(string, repeated, tag = "3")]
    string: Vec<String>,
    #[prost(bool, repeated, tag = "4")]
    boolean: Vec<bool>,
    #[prost(uint32, repeated, tag = "5")]
    nulls: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct LegacyRowProto {
    #[prost(string, repeated, tag = "1")]
    tags: Vec<String>,
    #[prost(sint64, tag = "2")]
    ts: i64,
    #[prost(message, repeated, tag = "3")]
    fields: Vec<LegacyValueProto>,
}

#[derive(Clone, PartialEq, Message)]
struct LegacyValueProto {
    #[prost(oneof = "LegacyValue", tags = "1, 2, 3, 4")]
    kind: Option<LegacyValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum LegacyValue {
    #[prost(double, tag = "1")]
    Float64(f64),
    #[prost(sint64, tag = "2")]
    Int64(i64),
    #[prost(string, tag = "3")]
    String(String),
    #[prost(bool, tag = "4")]
    Boolean(bool),
}

/// Part of one series: its tags and a run of its rows. A write too big for one frame is
/// sent as pieces, each frame encoded from its pieces without copying the batch.
#[derive(Debug, Clone, Copy)]
pub struct SeriesPiece<'a> {
    pub tags: &'a [(u32, String)],
    pub rows: &'a [(i64, Vec<Value>)],
}

impl<'a> SeriesPiece<'a> {
    pub fn whole(series: &'a SeriesWrite) -> SeriesPiece<'a> {
        SeriesPiece {
            tags: &series.tags,
            rows: &series.rows,
        }
    }
}

/// `batch` as bytes.
pub fn encode(batch: &WriteBatch) -> Result<Vec<u8>, RowsError> {
    let pieces: Vec<SeriesPiece<'_>> = batch.series.iter().map(SeriesPiece::whole).collect();
    encode_pieces(&pieces)
}

/// `pieces` as one batch's bytes. Every row of a series must have the same number of
/// fields, and a field one type (nulls fit any).
pub fn encode_pieces(pieces: &[SeriesPiece<'_>]) -> Result<Vec<u8>, RowsError> {
    let mut proto = BatchProto {
        legacy_rows: Vec::new(),
        series: Vec::with_capacity(pieces.len()),
    };
    for (index, piece) in pieces.iter().enumerate() {
        proto.series.push(
            encode_series(piece).map_err(|error| RowsError(format!("series {index}: {error}")))?,
        );
    }
    Ok(proto.encode_to_vec())
}

fn encode_series(piece: &SeriesPiece<'_>) -> Result<SeriesProto, String> {
    let field_count = piece.rows.first().map_or(0, |(_, fields)| fields.len());
    let mut fields = vec![ColumnProto::default(); field_count];
    let mut ts = Vec::with_capacity(piece.rows.len());
    for (row, (time, values)) in piece.rows.iter().enumerate() {
        if values.len() != field_count {
            return Err(format!(
                "row {row} has {} fields, row 0 has {field_count}",
                values.len()
            ));
        }
        ts.push(*time);
        for (column, value) in fields.iter_mut().zip(values) {
            let kind = column.kind();
            let mismatch = |got: &str| {
                Err(format!(
                    "row {row}: a field holds {got} after {}",
                    kind.unwrap_or("nulls")
                ))
            };
            match value {
                Value::Null => column.nulls.push(row_position(row)),
                Value::Float64(v) if matches!(kind, None | Some("floats")) => {
                    column.float64.push(*v)
                }
                Value::Int64(v) if matches!(kind, None | Some("integers")) => column.int64.push(*v),
                Value::String(v) if matches!(kind, None | Some("strings")) => {
                    column.string.push(v.clone())
                }
                Value::Boolean(v) if matches!(kind, None | Some("booleans")) => {
                    column.boolean.push(*v)
                }
                Value::Float64(_) => return mismatch("a float"),
                Value::Int64(_) => return mismatch("an integer"),
                Value::String(_) => return mismatch("a string"),
                Value::Boolean(_) => return mismatch("a boolean"),
            }
        }
    }
    Ok(SeriesProto {
        tag_positions: piece.tags.iter().map(|(position, _)| *position).collect(),
        tag_values: piece.tags.iter().map(|(_, value)| value.clone()).collect(),
        ts,
        fields,
    })
}

impl ColumnProto {
    /// The type of the column's non-null values, once it has one.
    fn kind(&self) -> Option<&'static str> {
        if !self.float64.is_empty() {
            Some("floats")
        } else if !self.int64.is_empty() {
            Some("integers")
        } else if !self.string.is_empty() {
            Some("strings")
        } else if !self.boolean.is_empty() {
            Some("booleans")
        } else {
            None
        }
    }

    fn typed_count(&self) -> usize {
        self.float64.len() + self.int64.len() + self.string.len() + self.boolean.len()
    }
}

fn row_position(row: usize) -> u32 {
    u32::try_from(row).expect("a series piece has fewer than 2^32 rows")
}

/// The batch `bytes` hold. Anything but what [`encode`] writes (or a legacy WAL record)
/// is an error naming what is wrong.
pub fn decode(bytes: &[u8]) -> Result<WriteBatch, RowsError> {
    let proto = BatchProto::decode(bytes).map_err(|error| RowsError(format!("{error}")))?;
    let rows = proto.legacy_rows.len() + proto.series.iter().map(|one| one.ts.len()).sum::<usize>();
    if rows > BATCH_ROWS_MAX {
        return Err(RowsError(format!(
            "{rows} rows in one batch, at most {BATCH_ROWS_MAX} are accepted"
        )));
    }
    let mut batch = WriteBatch {
        series: Vec::with_capacity(proto.series.len()),
    };
    if !proto.legacy_rows.is_empty() {
        batch = WriteBatch::from_rows(proto.legacy_rows.into_iter().map(legacy_row).collect());
    }
    for (index, one) in proto.series.into_iter().enumerate() {
        batch.series.push(
            decode_series(one).map_err(|error| RowsError(format!("series {index}: {error}")))?,
        );
    }
    Ok(batch)
}

fn decode_series(proto: SeriesProto) -> Result<SeriesWrite, String> {
    if proto.tag_positions.len() != proto.tag_values.len() {
        return Err(format!(
            "{} tag positions for {} values",
            proto.tag_positions.len(),
            proto.tag_values.len()
        ));
    }
    let rows = proto.ts.len();
    let mut columns = Vec::with_capacity(proto.fields.len());
    for (index, column) in proto.fields.into_iter().enumerate() {
        columns
            .push(column_values(column, rows).map_err(|error| format!("field {index}: {error}"))?);
    }
    let mut values: Vec<Vec<Value>> = (0..rows)
        .map(|_| Vec::with_capacity(columns.len()))
        .collect();
    for column in columns {
        for (row, value) in values.iter_mut().zip(column) {
            row.push(value);
        }
    }
    let series = SeriesWrite {
        tags: proto
            .tag_positions
            .into_iter()
            .zip(proto.tag_values)
            .collect(),
        rows: proto.ts.into_iter().zip(values).collect(),
    };
    series.check_tags()?;
    Ok(series)
}

/// A column's value for each of `rows` rows.
fn column_values(column: ColumnProto, rows: usize) -> Result<Vec<Value>, String> {
    let lists = [
        !column.float64.is_empty(),
        !column.int64.is_empty(),
        !column.string.is_empty(),
        !column.boolean.is_empty(),
    ];
    if lists.iter().filter(|typed| **typed).count() > 1 {
        return Err("values of more than one type".to_string());
    }
    if column.typed_count() + column.nulls.len() != rows {
        return Err(format!(
            "{} values and {} nulls for {rows} rows",
            column.typed_count(),
            column.nulls.len()
        ));
    }
    if let Some(pair) = column.nulls.windows(2).find(|pair| pair[0] >= pair[1]) {
        return Err(format!(
            "null rows {} and {} are not increasing",
            pair[0], pair[1]
        ));
    }
    if column
        .nulls
        .last()
        .is_some_and(|last| *last as usize >= rows)
    {
        return Err(format!("a null row past the last of {rows}"));
    }
    let mut typed: Box<dyn Iterator<Item = Value>> = if lists[0] {
        Box::new(column.float64.into_iter().map(Value::Float64))
    } else if lists[1] {
        Box::new(column.int64.into_iter().map(Value::Int64))
    } else if lists[2] {
        Box::new(column.string.into_iter().map(Value::String))
    } else {
        Box::new(column.boolean.into_iter().map(Value::Boolean))
    };
    let mut nulls = column.nulls.into_iter().peekable();
    let mut values = Vec::with_capacity(rows);
    for row in 0..rows {
        if nulls.next_if(|null| *null as usize == row).is_some() {
            values.push(Value::Null);
        } else {
            values.push(typed.next().expect("the counts were checked"));
        }
    }
    Ok(values)
}

fn legacy_row(row: LegacyRowProto) -> Row {
    Row {
        tags: row.tags,
        ts: row.ts,
        fields: row
            .fields
            .into_iter()
            .map(|value| match value.kind {
                None => Value::Null,
                Some(LegacyValue::Float64(v)) => Value::Float64(v),
                Some(LegacyValue::Int64(v)) => Value::Int64(v),
                Some(LegacyValue::String(v)) => Value::String(v),
                Some(LegacyValue::Boolean(v)) => Value::Boolean(v),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WriteBatch {
        WriteBatch {
            series: vec![
                SeriesWrite {
                    tags: vec![(0, "a".into()), (3, "x".into())],
                    rows: vec![
                        (-5, vec![Value::Float64(f64::INFINITY), Value::Null]),
                        (7, vec![Value::Null, Value::String("s".into())]),
                        (7, vec![Value::Float64(2.5), Value::String("t".into())]),
                    ],
                },
                SeriesWrite {
                    tags: vec![],
                    rows: vec![(i64::MIN, vec![Value::Int64(-1), Value::Boolean(true)])],
                },
                SeriesWrite {
                    tags: vec![(1, "only tags".into())],
                    rows: vec![],
                },
            ],
        }
    }

    #[test]
    fn batches_round_trip() {
        let batch = sample();
        assert_eq!(decode(&encode(&batch).unwrap()).unwrap(), batch);
        assert_eq!(decode(&[]).unwrap(), WriteBatch::default());
    }

    #[test]
    fn pieces_of_series_encode_as_their_rows() {
        let batch = sample();
        let first = &batch.series[0];
        let pieces = [
            SeriesPiece {
                tags: &first.tags,
                rows: &first.rows[1..],
            },
            SeriesPiece::whole(&batch.series[1]),
        ];
        let decoded = decode(&encode_pieces(&pieces).unwrap()).unwrap();
        assert_eq!(decoded.series[0].rows, first.rows[1..].to_vec());
        assert_eq!(decoded.series[1], batch.series[1]);
    }

    #[test]
    fn mixed_types_and_ragged_rows_do_not_encode() {
        let mut batch = sample();
        batch.series[1]
            .rows
            .push((1, vec![Value::Float64(1.0), Value::Null]));
        let error = encode(&batch).unwrap_err();
        assert!(
            error.0.contains("series 1") && error.0.contains("a float after integers"),
            "{error}"
        );
        let mut batch = sample();
        batch.series[0].rows.push((1, vec![Value::Null]));
        assert!(encode(&batch).unwrap_err().0.contains("row 3 has 1 fields"));
    }

    #[test]
    fn legacy_wal_records_decode_as_series() {
        let legacy = BatchProto {
            legacy_rows: vec![
                LegacyRowProto {
                    tags: vec!["a".into(), "".into(), "x".into()],
                    ts: 1,
                    fields: vec![LegacyValueProto {
                        kind: Some(LegacyValue::Float64(1.5)),
                    }],
                },
                LegacyRowProto {
                    tags: vec!["a".into(), "".into(), "x".into(), "".into()],
                    ts: 2,
                    fields: vec![LegacyValueProto { kind: None }],
                },
            ],
            series: vec![],
        };
        let batch = decode(&legacy.encode_to_vec()).unwrap();
        assert_eq!(
            batch.series.len(),
            1,
            "one series whatever its trailing tags"
        );
        assert_eq!(batch.series[0].tags, vec![(0, "a".into()), (2, "x".into())]);
        assert_eq!(
            batch.series[0].rows,
            vec![(1, vec![Value::Float64(1.5)]), (2, vec![Value::Null])]
        );
    }

    #[test]
    fn malformed_series_are_errors_naming_them() {
        let bad = |series: SeriesProto| {
            let proto = BatchProto {
                legacy_rows: vec![],
                series: vec![SeriesProto::default(), series],
            };
            decode(&proto.encode_to_vec()).unwrap_err().0
        };
        let base = SeriesProto {
            tag_positions: vec![0],
            tag_values: vec!["a".into()],
            ts: vec![1, 2],
            fields: vec![ColumnProto {
                float64: vec![1.0],
                nulls: vec![1],
                ..ColumnProto::default()
            }],
        };
        assert!(decode(
            &BatchProto {
                legacy_rows: vec![],
                series: vec![base.clone()]
            }
            .encode_to_vec()
        )
        .is_ok());
        let mut one = base.clone();
        one.tag_values.push("b".into());
        assert!(bad(one).contains("series 1: 1 tag positions for 2 values"));
        let mut one = base.clone();
        one.tag_positions = vec![0, 0];
        one.tag_values = vec!["a".into(), "b".into()];
        assert!(bad(one).contains("not increasing"));
        let mut one = base.clone();
        one.tag_values = vec![String::new()];
        assert!(bad(one).contains("empty value"));
        let mut one = base.clone();
        one.fields[0].int64 = vec![1];
        assert!(bad(one).contains("more than one type"));
        let mut one = base.clone();
        one.fields[0].nulls = vec![];
        assert!(bad(one).contains("1 values and 0 nulls for 2 rows"));
        let mut one = base.clone();
        one.fields[0].nulls = vec![5];
        assert!(bad(one).contains("past the last"));
        let mut one = base;
        one.ts = vec![0; BATCH_ROWS_MAX + 1];
        one.fields.clear();
        assert!(bad(one).contains("at most"));
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let bytes = encode(&sample()).unwrap();
        for index in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[index] ^= flip;
                let _ = decode(&corrupt);
            }
            let _ = decode(&bytes[..index]);
        }
    }
}
