//! The frame header, as plain functions over bytes (no I/O), shared by every transport.

use std::io;

/// Bytes in a frame header: a little-endian `u32` payload length.
pub const FRAME_HEADER_LEN: usize = 4;

/// Bounds on what a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// The largest payload accepted or sent, in bytes.
    pub frame_bytes_max: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        // Large enough for a generous remote-write batch or scan result page; small enough
        // that a bogus header cannot make us allocate without bound.
        FrameLimits {
            frame_bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// The header for a payload of `payload_len` bytes, or an error if it is over the limit.
pub fn encode_header(
    payload_len: usize,
    limits: FrameLimits,
) -> io::Result<[u8; FRAME_HEADER_LEN]> {
    match u32::try_from(payload_len) {
        Ok(len) if len <= limits.frame_bytes_max => Ok(len.to_le_bytes()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {payload_len} bytes exceeds the limit of {} bytes",
                limits.frame_bytes_max
            ),
        )),
    }
}

/// The payload length a header announces, checked against the limit before anyone
/// allocates for it.
pub fn decode_header(header: [u8; FRAME_HEADER_LEN], limits: FrameLimits) -> io::Result<usize> {
    let len = u32::from_le_bytes(header);
    if len > limits.frame_bytes_max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "peer announced a frame of {len} bytes, over the limit of {} bytes",
                limits.frame_bytes_max
            ),
        ));
    }
    Ok(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_enforces_the_limit() {
        let limits = FrameLimits {
            frame_bytes_max: 1000,
        };
        for len in [0usize, 1, 999, 1000] {
            let header = encode_header(len, limits).unwrap();
            assert_eq!(decode_header(header, limits).unwrap(), len);
        }
        assert_eq!(
            encode_header(1001, limits).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let error = decode_header(1001u32.to_le_bytes(), limits).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("1001"), "{error}");
        // A hostile header announcing 4 GiB is refused without allocating.
        assert!(decode_header([0xff; 4], limits).is_err());
    }
}
