//! A series chunk's columns as bytes: up to [`CHUNK_SAMPLES_MAX`] consecutive samples of
//! one series, whose timestamps, sequences and each field the SST stores as one
//! compressed blob apiece. Plain code over bytes.
//!
//! Numbers are compressed with pco (delta orders, integer and float multipliers, tANS),
//! which finds what Prometheus-like series have: timestamps on a schedule, counters at a
//! steady rate, gauges that rarely change, decimals. It is lossless bit for bit, NaN
//! payloads included (Prometheus' staleness marker is one). Parquet's own encodings work a
//! value at a time over pages that mix many series and left about half of the bytes on
//! the table (`benches/RESULTS.md`, "Bytes per sample").
//!
//! A field blob starts with one byte saying which samples have a value: all, none, or
//! those set in the validity bitmap that follows (one bit per sample, least significant
//! first). The present values follow: pco for floats and integers, a bitmap for booleans,
//! and for strings the pco-compressed lengths (prefixed by their blob's length, u32 LE)
//! then the bytes.
//!
//! Decoding never trusts the bytes: every count is checked against the chunk's sample
//! count, and damage is an error, not a panic.

use metronome_core::data::{FieldType, Value};
use pco::standalone::{simple_compress, simple_decompress_into};
use pco::ChunkConfig;

/// Samples per chunk at most. A chunk is decoded whole, so this bounds the work and
/// memory of reading a few samples; pco needs a few thousand numbers to pay for its
/// per-blob header (one day of a 15 s series is 5,760).
pub const CHUNK_SAMPLES_MAX: usize = 8192;

const ALL_PRESENT: u8 = 0;
const NONE_PRESENT: u8 = 1;
const BITMAP: u8 = 2;

/// Below this many numbers a blob stores them plainly (little-endian) and leaves them to
/// the page's zstd, which finds what neighbouring chunks share (the same scrape
/// timestamps, say): pco's header and tables cost more than a short run's numbers, and a
/// flush of many series holds only a few samples of each.
const PCO_NUMBERS_MIN: usize = 128;

const CODEC_PCO: u8 = 0;
const CODEC_PLAIN: u8 = 1;

/// A number pco compresses that also has a plain little-endian form.
trait Plain: pco::data_types::Number + Default {
    const BYTES: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl Plain for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend(self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("a whole number"))
            }
        }
    )*};
}
plain!(i64, u64, f64, u32);

fn compress<T: Plain>(values: &[T]) -> Vec<u8> {
    if values.is_empty() {
        return Vec::new();
    }
    if values.len() < PCO_NUMBERS_MIN {
        let mut out = Vec::with_capacity(1 + values.len() * T::BYTES);
        out.push(CODEC_PLAIN);
        for value in values {
            value.put(&mut out);
        }
        return out;
    }
    let mut out = vec![CODEC_PCO];
    out.extend(simple_compress(values, &ChunkConfig::default()).expect("pco compresses numbers"));
    out
}

fn decompress<T: Plain>(blob: &[u8], count: usize, what: &str) -> Result<Vec<T>, String> {
    if count == 0 {
        return if blob.is_empty() {
            Ok(Vec::new())
        } else {
            Err(format!("{what}: {} bytes for no values", blob.len()))
        };
    }
    let values: Vec<T> = match blob.split_first() {
        Some((&CODEC_PLAIN, plain)) if plain.len() == count * T::BYTES => {
            plain.chunks_exact(T::BYTES).map(T::get).collect()
        }
        Some((&CODEC_PCO, compressed)) => {
            // Into a buffer of the chunk's count: a damaged header claiming more numbers
            // cannot make the decoder allocate more.
            let mut values = vec![T::default(); count];
            let progress = simple_decompress_into(compressed, &mut values)
                .map_err(|e| format!("{what}: {e}"))?;
            if progress.n_processed != count || !progress.finished {
                return Err(format!(
                    "{what}: the blob does not hold exactly the chunk's {count} values"
                ));
            }
            values
        }
        _ => return Err(format!("{what}: not a blob of {count} numbers")),
    };
    if values.len() != count {
        return Err(format!(
            "{what}: {} values where the chunk has {count}",
            values.len()
        ));
    }
    Ok(values)
}

/// Timestamps (in the region's unit) of a chunk.
pub fn encode_timestamps(ts: &[i64]) -> Vec<u8> {
    assert!(ts.len() <= CHUNK_SAMPLES_MAX);
    compress(ts)
}

pub fn decode_timestamps(blob: &[u8], count: usize) -> Result<Vec<i64>, String> {
    decompress(blob, count, "timestamps")
}

/// Write sequences of a chunk.
pub fn encode_sequences(sequences: &[u64]) -> Vec<u8> {
    assert!(sequences.len() <= CHUNK_SAMPLES_MAX);
    compress(sequences)
}

pub fn decode_sequences(blob: &[u8], count: usize) -> Result<Vec<u64>, String> {
    decompress(blob, count, "sequences")
}

fn bitmap(bits: impl ExactSizeIterator<Item = bool>) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, bit) in bits.enumerate() {
        if bit {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap[i / 8] & (1 << (i % 8)) != 0
}

/// One field of a chunk: `values[i]` is sample `i`'s value, `Null` or of `field_type`.
pub fn encode_field(field_type: FieldType, values: &[&Value]) -> Vec<u8> {
    assert!(values.len() <= CHUNK_SAMPLES_MAX);
    let present = values.iter().filter(|v| !matches!(v, Value::Null)).count();
    let mut out = Vec::new();
    if present == values.len() {
        out.push(ALL_PRESENT);
    } else if present == 0 {
        out.push(NONE_PRESENT);
        return out;
    } else {
        out.push(BITMAP);
        out.extend(bitmap(values.iter().map(|v| !matches!(v, Value::Null))));
    }
    let present = values.iter().filter(|v| !matches!(v, Value::Null));
    match field_type {
        FieldType::Float64 => {
            let floats: Vec<f64> = present
                .map(|v| match v {
                    Value::Float64(x) => *x,
                    other => panic!("a Float64 field holds {other:?}"),
                })
                .collect();
            out.extend(compress(&floats));
        }
        FieldType::Int64 => {
            let ints: Vec<i64> = present
                .map(|v| match v {
                    Value::Int64(x) => *x,
                    other => panic!("an Int64 field holds {other:?}"),
                })
                .collect();
            out.extend(compress(&ints));
        }
        FieldType::Boolean => {
            let bools: Vec<bool> = present
                .map(|v| match v {
                    Value::Boolean(x) => *x,
                    other => panic!("a Boolean field holds {other:?}"),
                })
                .collect();
            out.extend(bitmap(bools.into_iter()));
        }
        FieldType::String => {
            let strings: Vec<&str> = present
                .map(|v| match v {
                    Value::String(x) => x.as_str(),
                    other => panic!("a String field holds {other:?}"),
                })
                .collect();
            let lengths: Vec<u32> = strings
                .iter()
                .map(|s| u32::try_from(s.len()).expect("a string under 4 GiB"))
                .collect();
            let lengths = compress(&lengths);
            out.extend(u32::try_from(lengths.len()).expect("small").to_le_bytes());
            out.extend(lengths);
            for s in strings {
                out.extend(s.as_bytes());
            }
        }
    }
    out
}

/// Decodes a field blob of `count` samples.
pub fn decode_field(
    field_type: FieldType,
    blob: &[u8],
    count: usize,
) -> Result<Vec<Value>, String> {
    let (&layout, rest) = blob.split_first().ok_or("field: empty blob")?;
    let (validity, payload): (Option<&[u8]>, &[u8]) = match layout {
        ALL_PRESENT => (None, rest),
        NONE_PRESENT if rest.is_empty() => return Ok(vec![Value::Null; count]),
        BITMAP if rest.len() >= count.div_ceil(8) => {
            let (validity, payload) = rest.split_at(count.div_ceil(8));
            (Some(validity), payload)
        }
        _ => return Err(format!("field: bad layout byte {layout} or short blob")),
    };
    let present = match validity {
        None => count,
        Some(validity) => (0..count).filter(|&i| bit(validity, i)).count(),
    };
    let mut values: Vec<Value> = match field_type {
        FieldType::Float64 => decompress::<f64>(payload, present, "float field")?
            .into_iter()
            .map(Value::Float64)
            .collect(),
        FieldType::Int64 => decompress::<i64>(payload, present, "integer field")?
            .into_iter()
            .map(Value::Int64)
            .collect(),
        FieldType::Boolean => {
            if payload.len() != present.div_ceil(8) {
                return Err(format!(
                    "boolean field: {} bytes for {present} values",
                    payload.len()
                ));
            }
            (0..present)
                .map(|i| Value::Boolean(bit(payload, i)))
                .collect()
        }
        FieldType::String => {
            let (prefix, rest) = payload
                .split_first_chunk::<4>()
                .ok_or("string field: no length prefix")?;
            let lengths_len = u32::from_le_bytes(*prefix) as usize;
            if lengths_len > rest.len() {
                return Err("string field: lengths run past the blob".to_string());
            }
            let (lengths, mut bytes) = rest.split_at(lengths_len);
            let lengths: Vec<u32> = decompress(lengths, present, "string lengths")?;
            let mut strings = Vec::with_capacity(present);
            for length in lengths {
                let length = length as usize;
                if length > bytes.len() {
                    return Err("string field: a string runs past the blob".to_string());
                }
                let (s, tail) = bytes.split_at(length);
                let s =
                    std::str::from_utf8(s).map_err(|e| format!("string field: not UTF-8: {e}"))?;
                strings.push(Value::String(s.to_string()));
                bytes = tail;
            }
            if !bytes.is_empty() {
                return Err(format!("string field: {} stray bytes", bytes.len()));
            }
            strings
        }
    };
    if let Some(validity) = validity {
        // Spread the present values over their samples, back to front, in place.
        values.resize(count, Value::Null);
        let mut next = present;
        for i in (0..count).rev() {
            if bit(validity, i) {
                next -= 1;
                values.swap(i, next);
            }
        }
        assert_eq!(next, 0, "every present value has its sample");
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metronome_core::rt::rand::{seeded, Rng};

    /// Prometheus' staleness marker: a NaN with a payload, which must survive bit for bit.
    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn round_trip(field_type: FieldType, values: &[Value]) -> Vec<Value> {
        let refs: Vec<&Value> = values.iter().collect();
        decode_field(field_type, &encode_field(field_type, &refs), values.len()).unwrap()
    }

    #[test]
    fn floats_round_trip_bit_for_bit() {
        let specials = [
            f64::from_bits(STALE_NAN),
            f64::NAN,
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE / 3.0,
            0.1,
            1e300,
        ];
        let mut rng = seeded(7);
        let mut values: Vec<Value> = (0..3000)
            .map(|i| Value::Float64(f64::from(i) * 0.25 + rng.gen_range(0.0..1.0)))
            .collect();
        for (i, x) in specials.iter().enumerate() {
            values[i * 300] = Value::Float64(*x);
        }
        let back = round_trip(FieldType::Float64, &values);
        assert_eq!(back.len(), values.len());
        for (a, b) in values.iter().zip(&back) {
            match (a, b) {
                (Value::Float64(a), Value::Float64(b)) => assert_eq!(a.to_bits(), b.to_bits()),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn every_type_round_trips_with_nulls_anywhere() {
        let mut rng = seeded(3);
        for field_type in [
            FieldType::Float64,
            FieldType::Int64,
            FieldType::Boolean,
            FieldType::String,
        ] {
            // Short runs are stored plainly, long ones with pco.
            for (null_share, n) in [(0.0, 1000), (0.3, 1000), (1.0, 1000), (0.0, 50), (0.3, 50)] {
                let values: Vec<Value> = (0..n)
                    .map(|i| {
                        if rng.gen_bool(null_share) {
                            return Value::Null;
                        }
                        match field_type {
                            FieldType::Float64 => Value::Float64(i as f64 / 8.0),
                            FieldType::Int64 => Value::Int64(i * i - 500),
                            FieldType::Boolean => Value::Boolean(i % 3 == 0),
                            FieldType::String => Value::String("é".repeat(i as usize % 5)),
                        }
                    })
                    .collect();
                assert_eq!(
                    round_trip(field_type, &values),
                    values,
                    "{field_type:?}, {n} values, {null_share} nulls"
                );
            }
        }
    }

    #[test]
    fn timestamps_and_sequences_round_trip_and_counts_are_checked() {
        let ts: Vec<i64> = (0..5760).map(|i| 1_700_000_000_000 + i * 15_000).collect();
        let blob = encode_timestamps(&ts);
        // A day of on-schedule timestamps costs next to nothing.
        assert!(blob.len() < 100, "{} bytes", blob.len());
        assert_eq!(decode_timestamps(&blob, ts.len()).unwrap(), ts);
        assert!(decode_timestamps(&blob, ts.len() - 1).is_err());
        let sequences: Vec<u64> = (0..100).map(|i| i * 7 + 3).collect();
        assert_eq!(
            decode_sequences(&encode_sequences(&sequences), 100).unwrap(),
            sequences
        );
        assert!(decode_sequences(&[], 1).is_err());
        assert!(decode_sequences(&[1, 2, 3], 0).is_err());
    }

    #[test]
    fn damaged_blobs_are_errors_not_panics() {
        let mut rng = seeded(11);
        for field_type in [
            FieldType::Float64,
            FieldType::Int64,
            FieldType::Boolean,
            FieldType::String,
        ] {
            for n in [40i64, 300] {
                let values: Vec<Value> = (0..n)
                    .map(|i| match (i % 7, field_type) {
                        (0, _) => Value::Null,
                        (_, FieldType::Float64) => Value::Float64(i as f64 * 1.5),
                        (_, FieldType::Int64) => Value::Int64(i * 1000),
                        (_, FieldType::Boolean) => Value::Boolean(i % 2 == 0),
                        (_, FieldType::String) => Value::String(format!("v{i}")),
                    })
                    .collect();
                let refs: Vec<&Value> = values.iter().collect();
                let blob = encode_field(field_type, &refs);
                for cut in 0..blob.len() {
                    assert!(
                        decode_field(field_type, &blob[..cut], values.len()).is_err(),
                        "{field_type:?} cut at {cut}"
                    );
                }
                for _ in 0..500 {
                    let mut damaged = blob.clone();
                    let at = rng.gen_range(0..damaged.len());
                    damaged[at] ^= 1 << rng.gen_range(0..8);
                    // A flipped bit may decode to other values; it must not panic, and what
                    // it decodes has the chunk's sample count.
                    if let Ok(decoded) = decode_field(field_type, &damaged, values.len()) {
                        assert_eq!(decoded.len(), values.len());
                    }
                }
            }
        }
    }
}
