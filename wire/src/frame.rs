//! Frames of the protocol: a fixed header, then one FlatBuffer.
//!
//! The transport (`metronome_core::rt::net`) already delimits frames with a `u32`
//! length; inside that, every frame starts with a [`HEADER_LEN`]-byte header:
//!
//! | bytes  | field                                                            |
//! |--------|------------------------------------------------------------------|
//! | 0..4   | magic `MTRN`                                                     |
//! | 4..6   | protocol version, `u16` little-endian ([`PROTOCOL_VERSION`])     |
//! | 6      | kind: 1 request, 2 reply                                         |
//! | 7      | flags: bit 0 set on the last reply frame of a request            |
//! | 8..16  | request id, `u64` little-endian, chosen by the client            |
//!
//! The header is read before the FlatBuffer, so a peer speaking another version, or a
//! reply to a request nobody waits for, is turned away without parsing the body. The
//! body is verified ([`verify_request`], [`verify_reply`]) with explicit bounds before
//! anything reads it.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, VerifierOptions, WIPOffset};

use crate::fb;

pub const MAGIC: [u8; 4] = *b"MTRN";
/// The version this build speaks. A peer with another version is refused. Version 2:
/// a region's schema has a time unit, and a scan's range is in it. Version 3: catalog
/// commands and the catalog travel in the catalog's JSON, not as mirrored tables.
pub const PROTOCOL_VERSION: u16 = 4;
pub const HEADER_LEN: usize = 16;
const FLAG_LAST: u8 = 1;

/// Bounds on verifying a body, so that a hostile buffer costs bounded work. Nesting in
/// the schema is at most six tables deep (catalog → database → table → schema →
/// field); the table count allows a catalog of several hundred thousand tables.
const VERIFIER_OPTIONS: VerifierOptions = VerifierOptions {
    max_depth: 16,
    max_tables: 8_000_000,
    max_apparent_size: 1 << 31,
    ignore_missing_null_terminator: false,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Request,
    Reply,
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameKind,
    pub request_id: u64,
    /// For replies: no more frames follow for this request.
    pub last: bool,
}

/// Why a frame was refused. The message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("frame does not start with the magic \"MTRN\" (got {0:02x?})")]
    Magic([u8; 4]),
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("invalid {what} body: {reason}")]
    Body { what: &'static str, reason: String },
}

/// Reads a frame's header.
pub fn decode_header(frame: &[u8]) -> Result<Header, FrameError> {
    if frame.len() < HEADER_LEN {
        return Err(FrameError::Short(frame.len()));
    }
    let magic: [u8; 4] = frame[0..4].try_into().expect("four bytes");
    if magic != MAGIC {
        return Err(FrameError::Magic(magic));
    }
    let version = u16::from_le_bytes(frame[4..6].try_into().expect("two bytes"));
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = match frame[6] {
        1 => FrameKind::Request,
        2 => FrameKind::Reply,
        other => return Err(FrameError::Kind(other)),
    };
    Ok(Header {
        kind,
        request_id: u64::from_le_bytes(frame[8..16].try_into().expect("eight bytes")),
        last: frame[7] & FLAG_LAST != 0,
    })
}

fn encode_header(header: Header) -> [u8; HEADER_LEN] {
    let mut bytes = [0u8; HEADER_LEN];
    bytes[0..4].copy_from_slice(&MAGIC);
    bytes[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    bytes[6] = match header.kind {
        FrameKind::Request => 1,
        FrameKind::Reply => 2,
    };
    bytes[7] = if header.last { FLAG_LAST } else { 0 };
    bytes[8..16].copy_from_slice(&header.request_id.to_le_bytes());
    bytes
}

/// A finished FlatBuffer, waiting for its header.
#[derive(Debug, Clone)]
pub struct Body {
    /// The builder's buffer; the FlatBuffer is `buffer[head..]`.
    buffer: Vec<u8>,
    head: usize,
}

impl Body {
    fn finish<T>(mut builder: FlatBufferBuilder<'_>, root: WIPOffset<T>) -> Body {
        builder.finish_minimal(root);
        let (buffer, head) = builder.collapse();
        Body { buffer, head }
    }

    pub fn len(&self) -> usize {
        self.buffer.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame: header, then the FlatBuffer. The builder fills its buffer from the
    /// back, so there is usually room in front for the header and nothing is copied.
    pub fn into_frame(mut self, header: Header) -> Bytes {
        let header = encode_header(header);
        if self.head >= HEADER_LEN {
            let start = self.head - HEADER_LEN;
            self.buffer[start..self.head].copy_from_slice(&header);
            Bytes::from(self.buffer).slice(start..)
        } else {
            let mut frame = Vec::with_capacity(HEADER_LEN + self.len());
            frame.extend_from_slice(&header);
            frame.extend_from_slice(&self.buffer[self.head..]);
            Bytes::from(frame)
        }
    }
}

/// Builds a request body: `build` adds the request's table and names its type.
pub fn request_body(
    build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> (fb::Request, WIPOffset<UnionWIPOffset>),
) -> Body {
    let mut builder = FlatBufferBuilder::with_capacity(256);
    let (body_type, body) = build(&mut builder);
    let root = fb::RequestMessage::create(
        &mut builder,
        &fb::RequestMessageArgs {
            body_type,
            body: Some(body),
        },
    );
    Body::finish(builder, root)
}

/// Builds a reply body: `build` adds the reply's table and names its type.
pub fn reply_body(
    build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> (fb::Reply, WIPOffset<UnionWIPOffset>),
) -> Body {
    let mut builder = FlatBufferBuilder::with_capacity(128);
    let (body_type, body) = build(&mut builder);
    let root = fb::ReplyMessage::create(
        &mut builder,
        &fb::ReplyMessageArgs {
            body_type,
            body: Some(body),
        },
    );
    Body::finish(builder, root)
}

/// A reply that succeeded with nothing to say.
pub fn done_body() -> Body {
    reply_body(|builder| {
        let done = fb::Done::create(builder, &fb::DoneArgs {});
        (fb::Reply::Done, done.as_union_value())
    })
}

/// An error reply.
pub fn error_body(kind: fb::ErrorKind, message: &str) -> Body {
    reply_body(|builder| {
        let message = builder.create_string(message);
        let error = fb::Error::create(
            builder,
            &fb::ErrorArgs {
                kind,
                message: Some(message),
            },
        );
        (fb::Reply::Error, error.as_union_value())
    })
}

/// The request in a frame whose header was read, verified.
pub fn verify_request(frame: &[u8]) -> Result<fb::RequestMessage<'_>, FrameError> {
    let body = frame
        .get(HEADER_LEN..)
        .ok_or(FrameError::Short(frame.len()))?;
    let message = flatbuffers::root_with_opts::<fb::RequestMessage>(&VERIFIER_OPTIONS, body)
        .map_err(|error| FrameError::Body {
            what: "request",
            reason: error.to_string(),
        })?;
    if message.body_type() == fb::Request::NONE
        || !fb::Request::ENUM_VALUES.contains(&message.body_type())
    {
        return Err(FrameError::Body {
            what: "request",
            reason: format!("unknown request type {}", message.body_type().0),
        });
    }
    Ok(message)
}

/// The reply in a frame whose header was read, verified.
pub fn verify_reply(frame: &[u8]) -> Result<fb::ReplyMessage<'_>, FrameError> {
    let body = frame
        .get(HEADER_LEN..)
        .ok_or(FrameError::Short(frame.len()))?;
    let message = flatbuffers::root_with_opts::<fb::ReplyMessage>(&VERIFIER_OPTIONS, body)
        .map_err(|error| FrameError::Body {
            what: "reply",
            reason: error.to_string(),
        })?;
    if message.body_type() == fb::Reply::NONE
        || !fb::Reply::ENUM_VALUES.contains(&message.body_type())
    {
        return Err(FrameError::Body {
            what: "reply",
            reason: format!("unknown reply type {}", message.body_type().0),
        });
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_named() {
        let header = Header {
            kind: FrameKind::Reply,
            request_id: 0x0102_0304_0506_0708,
            last: true,
        };
        let frame = done_body().into_frame(header);
        assert_eq!(decode_header(&frame).unwrap(), header);
        assert_eq!(
            verify_reply(&frame).unwrap().body_type(),
            fb::Reply::Done,
            "the body survives the header being written in front of it"
        );

        assert_eq!(decode_header(&frame[..15]), Err(FrameError::Short(15)));
        let mut bad = frame.to_vec();
        bad[0] = b'X';
        assert!(matches!(decode_header(&bad), Err(FrameError::Magic(_))));
        let mut bad = frame.to_vec();
        bad[4] = 2;
        let error = decode_header(&bad).unwrap_err();
        assert_eq!(error, FrameError::Version(2));
        assert!(error.to_string().contains("version 2"), "{error}");
        let mut bad = frame.to_vec();
        bad[6] = 9;
        assert_eq!(decode_header(&bad), Err(FrameError::Kind(9)));
    }

    #[test]
    fn error_replies_carry_kind_and_message() {
        let frame = error_body(fb::ErrorKind::NotFound, "no region 1.2").into_frame(Header {
            kind: FrameKind::Reply,
            request_id: 7,
            last: true,
        });
        let reply = verify_reply(&frame).unwrap();
        let error = reply.body_as_error().unwrap();
        assert_eq!(error.kind(), fb::ErrorKind::NotFound);
        assert_eq!(error.message(), "no region 1.2");
    }

    #[test]
    fn garbage_bodies_fail_verification() {
        let header = encode_header(Header {
            kind: FrameKind::Request,
            request_id: 1,
            last: false,
        });
        for body in [
            &[][..],
            &[0u8; 3],
            &[0xff; 64],
            &[4, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f],
        ] {
            let mut frame = header.to_vec();
            frame.extend_from_slice(body);
            assert!(verify_request(&frame).is_err(), "{body:?}");
            assert!(verify_reply(&frame).is_err(), "{body:?}");
        }
    }
}
