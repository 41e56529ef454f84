//! The WAL record format, as plain functions over bytes.
//!
//! A segment is a sequence of *commits*; a commit is the records of one group commit
//! (one write, one `fdatasync`), zero-padded to the next [`BLOCK_BYTES`] boundary, so every
//! commit starts on a block boundary and O_DIRECT can write it without touching blocks
//! of earlier, acknowledged commits. Commit numbers are consecutive across segments.
//!
//! A record is a 40-byte header and its payload (all integers little-endian):
//!
//! ```text
//!  0 header_crc  u32  CRC32C of bytes 4..40
//!  4 payload_len u32
//!  8 region      u64  RegionId::as_u64
//! 16 sequence    u64  the region's write sequence
//! 24 commit      u64  the group commit this record belongs to
//! 32 payload_crc u32  CRC32C of the payload
//! 36 reserved    u32  zero
//! 40 payload
//! ```
//!
//! The header has its own checksum so that a corrupt payload still names its region: the
//! datanode quarantines that region alone.

use metronome_core::data::RegionId;

/// Commits start at multiples of this; also the O_DIRECT alignment.
pub const BLOCK_BYTES: usize = 4096;
pub const HEADER_BYTES: usize = 40;
/// The largest payload a record may carry; a header announcing more is corrupt.
pub const PAYLOAD_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// A record's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub region: RegionId,
    pub sequence: u64,
    pub commit: u64,
    pub payload_len: u32,
    pub payload_crc: u32,
}

/// Appends one record to `out`.
pub fn encode_record(
    out: &mut Vec<u8>,
    region: RegionId,
    sequence: u64,
    commit: u64,
    payload: &[u8],
) {
    let payload_len = u32::try_from(payload.len()).expect("payload length fits u32");
    assert!(
        payload_len <= PAYLOAD_BYTES_MAX,
        "payload of {payload_len} bytes over the record limit"
    );
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&region.as_u64().to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&commit.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    let header_crc = crc32c::crc32c(&out[start + 4..start + HEADER_BYTES]);
    out[start..start + 4].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Pads `out` with zeros to the next block boundary.
pub fn pad_to_block(out: &mut Vec<u8>) {
    let padded = out.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    out.resize(padded, 0);
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// What the bytes at a position hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, intact record.
    Record {
        header: RecordHeader,
        payload: &'a [u8],
    },
    /// Zeros: padding inside a block, or the end of the log at a block boundary.
    Zeros,
    /// The header is damaged (or announces a payload that does not fit): nothing in it
    /// can be trusted, not even the region.
    BadHeader,
    /// The header is intact but the payload is not: the region is known.
    BadPayload { header: RecordHeader },
}

/// Decodes the record at the start of `bytes` (the rest of the segment).
pub fn decode_record(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() < HEADER_BYTES {
        return if bytes.iter().all(|&b| b == 0) {
            Decoded::Zeros
        } else {
            Decoded::BadHeader
        };
    }
    let header_bytes = &bytes[..HEADER_BYTES];
    if header_bytes.iter().all(|&b| b == 0) {
        return Decoded::Zeros;
    }
    if crc32c::crc32c(&header_bytes[4..]) != u32_at(header_bytes, 0)
        || u32_at(header_bytes, 36) != 0
    {
        return Decoded::BadHeader;
    }
    let header = RecordHeader {
        payload_len: u32_at(header_bytes, 4),
        region: RegionId::from_u64(u64_at(header_bytes, 8)),
        sequence: u64_at(header_bytes, 16),
        commit: u64_at(header_bytes, 24),
        payload_crc: u32_at(header_bytes, 32),
    };
    let end = HEADER_BYTES + header.payload_len as usize;
    if header.payload_len > PAYLOAD_BYTES_MAX || end > bytes.len() {
        return Decoded::BadHeader;
    }
    let payload = &bytes[HEADER_BYTES..end];
    if crc32c::crc32c(payload) != header.payload_crc {
        return Decoded::BadPayload { header };
    }
    Decoded::Record { header, payload }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_every_damage_is_classified() {
        let region = RegionId::new(3, 9);
        let mut bytes = Vec::new();
        encode_record(&mut bytes, region, 17, 5, b"payload");
        assert_eq!(bytes.len(), HEADER_BYTES + 7);
        let Decoded::Record { header, payload } = decode_record(&bytes) else {
            panic!("an intact record decodes")
        };
        assert_eq!(
            (header.region, header.sequence, header.commit),
            (region, 17, 5)
        );
        assert_eq!(payload, b"payload");

        let mut damaged_payload = bytes.clone();
        damaged_payload[HEADER_BYTES + 1] ^= 1;
        assert!(matches!(
            decode_record(&damaged_payload),
            Decoded::BadPayload { header } if header.region == region
        ));

        for at in 0..HEADER_BYTES {
            let mut damaged_header = bytes.clone();
            damaged_header[at] ^= 0x10;
            assert_eq!(
                decode_record(&damaged_header),
                Decoded::BadHeader,
                "flip at {at}"
            );
        }

        assert_eq!(
            decode_record(&bytes[..bytes.len() - 1]),
            Decoded::BadHeader,
            "truncated payload"
        );
        assert_eq!(
            decode_record(&bytes[..10]),
            Decoded::BadHeader,
            "truncated header"
        );
        assert_eq!(decode_record(&[0u8; 100]), Decoded::Zeros);
        assert_eq!(decode_record(&[0u8; 7]), Decoded::Zeros);
    }

    #[test]
    fn a_header_announcing_a_huge_payload_is_corrupt_not_an_allocation() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, RegionId::new(1, 1), 1, 1, b"x");
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[4..HEADER_BYTES]);
        bytes[0..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_record(&bytes), Decoded::BadHeader);
    }

    #[test]
    fn padding_reaches_the_next_block() {
        let mut bytes = vec![1u8; 10];
        pad_to_block(&mut bytes);
        assert_eq!(bytes.len(), BLOCK_BYTES);
        pad_to_block(&mut bytes);
        assert_eq!(bytes.len(), BLOCK_BYTES, "an aligned buffer stays as it is");
    }
}
