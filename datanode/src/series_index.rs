//! An SST's series index as it is stored in the file's footer: every series of the file,
//! in file order, with its tag values and chunk count.
//!
//! The tag values repeat across series (a metric name over a hundred instances, an
//! instance under a hundred metric names), so each tag position gets a dictionary of its
//! distinct values and a series is stored as indexes into them. The whole is serialized,
//! zstd-compressed and base64-encoded, because Parquet's footer metadata is text. Stored
//! as plain JSON, the index took ~90 bytes per series: 0.19 bytes per sample in a file of
//! two hours of 15-second samples, a third of the file.
//!
//! Decoding is strict: every index is checked against its dictionary and the chunk counts
//! must cover exactly the file's chunks, so a damaged footer is an error, never a panic
//! or a wrong answer. The decompressed size is bounded before anything is allocated.

use std::collections::HashMap;
use std::io::{Read, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A decompressed index larger than this is corrupt (a million series of a dozen tags
/// take ~50 MiB).
const INDEX_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// zstd's level for the index: it is written once per file and read at every open.
const ZSTD_LEVEL: i32 = 3;

/// One series of the index: its tag values, first chunk and chunk count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesEntry {
    pub tags: Vec<String>,
    pub first_chunk: u64,
    pub chunks: u64,
}

/// The serialized form: dictionaries per tag position, then per series its tag count
/// and that many dictionary indexes, and the chunk counts. First chunks are implied.
#[derive(Serialize, Deserialize)]
struct Stored {
    dictionaries: Vec<Vec<String>>,
    tags: Vec<u32>,
    chunks: Vec<u64>,
}

/// The footer text of `series`, which must tile the file's chunks in order.
pub fn encode(series: &[SeriesEntry]) -> String {
    let mut dictionaries: Vec<Vec<String>> = Vec::new();
    let mut lookup: Vec<HashMap<&str, u32>> = Vec::new();
    let mut tags = Vec::with_capacity(series.len() * 4);
    let mut chunks = Vec::with_capacity(series.len());
    let mut next_chunk = 0u64;
    for entry in series {
        assert_eq!(entry.first_chunk, next_chunk, "the index tiles the chunks");
        assert!(entry.chunks > 0, "a series has a chunk");
        next_chunk += entry.chunks;
        tags.push(u32::try_from(entry.tags.len()).expect("tag count fits u32"));
        for (position, value) in entry.tags.iter().enumerate() {
            if dictionaries.len() == position {
                dictionaries.push(Vec::new());
                lookup.push(HashMap::new());
            }
            let dictionary = &mut dictionaries[position];
            let index = *lookup[position].entry(value).or_insert_with(|| {
                dictionary.push(value.clone());
                u32::try_from(dictionary.len() - 1).expect("dictionary fits u32")
            });
            tags.push(index);
        }
        chunks.push(entry.chunks);
    }
    let json = serde_json::to_vec(&Stored {
        dictionaries,
        tags,
        chunks,
    })
    .expect("the index serializes");
    // With zstd's content checksum, a damaged index is an error rather than a series
    // with a wrong name.
    let mut encoder =
        zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).expect("a zstd encoder");
    encoder
        .include_checksum(true)
        .expect("zstd takes the checksum flag");
    encoder
        .write_all(&json)
        .expect("zstd compresses into memory");
    let compressed = encoder.finish().expect("zstd compresses into memory");
    base64::engine::general_purpose::STANDARD.encode(compressed)
}

/// The series of a footer text, checked to name `tags_max` tags at most per series and to
/// tile exactly `total_chunks` chunks.
pub fn decode(text: &str, tags_max: usize, total_chunks: u64) -> Result<Vec<SeriesEntry>, String> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("series index is not base64: {e}"))?;
    let mut json = Vec::new();
    zstd::stream::read::Decoder::new(compressed.as_slice())
        .and_then(|decoder| decoder.take(INDEX_BYTES_MAX + 1).read_to_end(&mut json))
        .map_err(|e| format!("series index does not decompress: {e}"))?;
    if json.len() as u64 > INDEX_BYTES_MAX {
        return Err(format!(
            "series index decompresses past {INDEX_BYTES_MAX} bytes"
        ));
    }
    let stored: Stored =
        serde_json::from_slice(&json).map_err(|e| format!("series index does not parse: {e}"))?;
    if stored.dictionaries.len() > tags_max {
        return Err(format!(
            "series index has {} tag dictionaries, the file's schema {tags_max} tags",
            stored.dictionaries.len()
        ));
    }
    let mut series = Vec::with_capacity(stored.chunks.len());
    let mut tags = stored.tags.iter();
    let mut next_chunk = 0u64;
    for (number, &chunks) in stored.chunks.iter().enumerate() {
        let count = *tags
            .next()
            .ok_or_else(|| format!("series index ends inside series {number}"))?
            as usize;
        if count > stored.dictionaries.len() {
            return Err(format!(
                "series {number} of the index has {count} tags, more than there are dictionaries"
            ));
        }
        let mut values = Vec::with_capacity(count);
        for dictionary in &stored.dictionaries[..count] {
            let index = *tags
                .next()
                .ok_or_else(|| format!("series index ends inside series {number}"))?;
            let value = dictionary.get(index as usize).ok_or_else(|| {
                format!("series {number} of the index names tag value {index} past its dictionary")
            })?;
            values.push(value.clone());
        }
        if chunks == 0 || chunks > total_chunks - next_chunk {
            return Err(format!(
                "series {number} of the index claims {chunks} chunks at chunk {next_chunk} of {total_chunks}"
            ));
        }
        series.push(SeriesEntry {
            tags: values,
            first_chunk: next_chunk,
            chunks,
        });
        next_chunk += chunks;
    }
    if tags.next().is_some() {
        return Err("series index has tag values after its last series".to_string());
    }
    if next_chunk != total_chunks {
        return Err(format!(
            "series index covers {next_chunk} chunks of the file's {total_chunks}"
        ));
    }
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<SeriesEntry> {
        let mut series = Vec::new();
        let mut first_chunk = 0;
        for metric in 0..20 {
            for instance in 0..50 {
                let mut tags = vec![
                    format!("metric_{metric}"),
                    format!("10.0.0.{instance}:9100"),
                ];
                // Trailing empty tags are left out, so series differ in tag count.
                if instance % 3 == 0 {
                    tags.push("node".to_string());
                }
                let chunks = 1 + (metric + instance) as u64 % 3;
                series.push(SeriesEntry {
                    tags,
                    first_chunk,
                    chunks,
                });
                first_chunk += chunks;
            }
        }
        series
    }

    #[test]
    fn the_index_round_trips_and_is_small() {
        let series = entries();
        let total: u64 = series.iter().map(|s| s.chunks).sum();
        let text = encode(&series);
        assert_eq!(decode(&text, 3, total).unwrap(), series);
        // The tags alone are ~30 bytes per series; dictionaries and zstd take that well
        // below 10.
        assert!(
            text.len() < series.len() * 10,
            "{} bytes for {} series",
            text.len(),
            series.len()
        );
        assert_eq!(decode(&encode(&[]), 0, 0).unwrap(), Vec::new());
    }

    #[test]
    fn a_damaged_index_is_an_error() {
        let series = entries();
        let total: u64 = series.iter().map(|s| s.chunks).sum();
        let text = encode(&series);
        assert!(decode(&text, 3, total + 1).unwrap_err().contains("covers"));
        assert!(decode(&text, 3, total - 1).unwrap_err().contains("claims"));
        assert!(decode(&text, 2, total)
            .unwrap_err()
            .contains("dictionaries"));
        assert!(decode("not base64!", 3, total)
            .unwrap_err()
            .contains("base64"));
        let engine = base64::engine::general_purpose::STANDARD;
        let json =
            |stored: &str| engine.encode(zstd::bulk::compress(stored.as_bytes(), 1).unwrap());
        assert!(decode(
            &json(r#"{"dictionaries":[["a"]],"tags":[1,5],"chunks":[1]}"#),
            1,
            1
        )
        .unwrap_err()
        .contains("past its dictionary"));
        assert!(decode(
            &json(r#"{"dictionaries":[["a"]],"tags":[2,0,0],"chunks":[1]}"#),
            1,
            1
        )
        .unwrap_err()
        .contains("more than there are"));
        assert!(decode(
            &json(r#"{"dictionaries":[["a"]],"tags":[1,0,0],"chunks":[1]}"#),
            1,
            1
        )
        .unwrap_err()
        .contains("after its last series"));
        assert!(decode(
            &json(r#"{"dictionaries":[],"tags":[0],"chunks":[0]}"#),
            1,
            1
        )
        .unwrap_err()
        .contains("claims 0 chunks"));
        // A flipped bit anywhere gives an error, never another index.
        let bytes = engine.decode(&text).unwrap();
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 1 << (position % 8);
            if let Ok(decoded) = decode(&engine.encode(&damaged), 3, total) {
                assert_eq!(
                    decoded, series,
                    "a flip at byte {position} changed the index"
                );
            }
        }
    }
}
