//! One PostgreSQL connection: pgwire's message loop, with the client's bytes checked
//! before pgwire decodes them.
//!
//! pgwire's own `process_socket` closes the connection without a word when the bytes are
//! no valid message (an unknown protocol version, an unknown message type), and its
//! decoders trust the counts inside a message: a Parse that declares 65,535 parameter
//! types and sends none makes the decoder read past the message and panic. PostgreSQL
//! answers each of these with an ErrorResponse before it closes the connection, and so do
//! we: [`Checked`] frames the bytes as they arrive, passes whole, well-formed messages on
//! to pgwire, and turns the first malformed one into a [`Violation`] that [`process`]
//! sends as a FATAL ErrorResponse. The loop is pgwire's (`process_socket_messages`), on
//! its public parts; we offer no TLS, so an SSL or GSS request is refused as pgwire
//! refuses it without an acceptor.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{SinkExt, StreamExt};
use metronome_core::rt::time;
use pgwire::api::PgWireServerHandlers;
use pgwire::api::{ClientInfo, DefaultClient, ErrorHandler, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::response::{GssEncResponse, SslResponse};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, SslNegotiationMetaMessage};
use pgwire::tokio::server::{process_error, process_message, PgWireMessageServerCodec};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::PgServer;

/// How long a client has to complete its startup, as in pgwire.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest message a client may send: a statement of the longest SQL text
/// ([`crate::sql`] refuses longer ones) with room for its parameters.
const MESSAGE_BYTES_MAX: usize = 64 << 20;

/// The startup packet's length limit, as PostgreSQL's (`MAX_STARTUP_PACKET_LENGTH`).
const STARTUP_BYTES_MAX: usize = 10_000;

/// Request codes of untyped startup-phase packets.
const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// The protocol versions pgwire speaks: 3.0 up to 3.2.
const PROTOCOL_MAJOR: u16 = 3;
const PROTOCOL_MINOR_MAX: u16 = 2;

type Socket = Framed<Checked<TcpStream>, PgWireMessageServerCodec<String>>;

/// Serves one connection until the client leaves or breaks the protocol.
pub async fn process(socket: TcpStream, server: PgServer) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let address = socket.peer_addr()?;
    let mut socket: Socket = Framed::new(
        Checked::new(socket),
        PgWireMessageServerCodec::new(DefaultClient::new(address, false)),
    );
    let startup_handler = server.startup_handler();
    // Our own handler rather than the trait's opaque one: the loop needs its statement
    // type.
    let simple_query_handler = server.handler.clone();
    let extended_query_handler = server.handler.clone();
    let copy_handler = server.copy_handler();
    let cancel_handler = server.cancel_handler();
    let error_handler = server.error_handler();
    let started = time::now();
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingSslRequest
                | PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let message = if starting {
            let left = STARTUP_TIMEOUT.saturating_sub(metronome_core::rt::time::elapsed(started));
            match time::timeout(left, socket.next()).await {
                Ok(message) => message,
                Err(_) => return Ok(()),
            }
        } else {
            socket.next().await
        };
        let message = match message {
            None => return Ok(()),
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                // Bytes that are no message: say so, as PostgreSQL does, and hang up.
                return refuse(&mut socket, error).await;
            }
        };
        match message {
            // A Terminate means the client is leaving: close, so that it need not wait.
            PgWireFrontendMessage::Terminate(_) => return Ok(()),
            PgWireFrontendMessage::SslNegotiation(negotiation) => {
                match negotiation {
                    SslNegotiationMetaMessage::PostgresSsl(_) => {
                        socket
                            .send(PgWireBackendMessage::SslResponse(SslResponse::Refuse))
                            .await?;
                    }
                    SslNegotiationMetaMessage::PostgresGss(_) => {
                        socket
                            .send(PgWireBackendMessage::GssEncResponse(GssEncResponse::Refuse))
                            .await?;
                    }
                    // A startup packet or a cancel request follows (and is still
                    // in the buffer): read it as one.
                    SslNegotiationMetaMessage::None => {
                        socket.set_state(PgWireConnectionState::AwaitingStartup);
                    }
                }
                continue;
            }
            message => {
                let is_extended_query = match socket.state() {
                    PgWireConnectionState::CopyInProgress(extended) => extended,
                    _ => message.is_extended_query(),
                };
                let is_cancel_request = matches!(message, PgWireFrontendMessage::CancelRequest(_));
                if let Err(mut error) = process_message(
                    message,
                    &mut socket,
                    startup_handler.clone(),
                    simple_query_handler.clone(),
                    extended_query_handler.clone(),
                    copy_handler.clone(),
                    cancel_handler.clone(),
                )
                .await
                {
                    error_handler.on_error(&socket, &mut error);
                    let is_fatal = error.is_fatal();
                    process_error(&mut socket, error, is_extended_query).await?;
                    if is_fatal {
                        return Ok(());
                    }
                }
                if is_cancel_request {
                    return Ok(());
                }
            }
        }
    }
}

/// Answers bytes that are no valid message with a FATAL ErrorResponse, then closes.
async fn refuse(socket: &mut Socket, error: PgWireError) -> io::Result<()> {
    let info = match error {
        PgWireError::IoError(error) => {
            match error.get_ref().and_then(|e| e.downcast_ref::<Violation>()) {
                Some(violation) => violation.info(),
                // The connection itself failed: there is no one to answer.
                None => return Err(error),
            }
        }
        // What pgwire's decoder refused after our checks passed it.
        other => Violation {
            sqlstate: "08P01",
            message: format!("invalid message: {other}"),
        }
        .info(),
    };
    tracing::debug!(
        message = info.message,
        "refusing a PostgreSQL client's message"
    );
    socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await?;
    socket.close().await
}

/// A client's bytes broke the protocol; PostgreSQL's SQLSTATE and message for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Violation {
    pub sqlstate: &'static str,
    pub message: String,
}

impl Violation {
    fn protocol(message: impl Into<String>) -> Violation {
        Violation {
            sqlstate: "08P01",
            message: message.into(),
        }
    }

    fn info(&self) -> ErrorInfo {
        ErrorInfo::new(
            "FATAL".to_string(),
            self.sqlstate.to_string(),
            self.message.clone(),
        )
    }
}

/// Which kind of message comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Untyped packets: SSL and GSS requests, then the startup packet or a cancel request.
    Startup,
    /// Typed messages: a type byte, then the length.
    Typed,
}

/// A client's byte stream that yields only whole, well-formed messages: each message is
/// held until all of it has arrived and has been checked. The first malformed one ends
/// the stream with an `InvalidData` error carrying a [`Violation`]. Writes pass through.
pub struct Checked<S> {
    inner: S,
    /// Bytes read and not yet handed on; the first `checked` of them are whole messages.
    buffer: BytesMut,
    checked: usize,
    phase: Phase,
    violation: Option<Violation>,
    ended: bool,
}

impl<S> Checked<S> {
    pub fn new(inner: S) -> Checked<S> {
        Checked {
            inner,
            buffer: BytesMut::new(),
            checked: 0,
            phase: Phase::Startup,
            violation: None,
            ended: false,
        }
    }

    /// Checks the whole messages after the `checked` bytes; stops at the first message
    /// that has not fully arrived, or at the first malformed one.
    fn check(&mut self) {
        while self.violation.is_none() {
            let rest = &self.buffer[self.checked..];
            match check_message(self.phase, rest) {
                Ok(Some((length, phase))) => {
                    self.checked += length;
                    self.phase = phase;
                }
                Ok(None) => return,
                Err(violation) => self.violation = Some(violation),
            }
        }
    }
}

/// The length of the message at the start of `bytes` and the phase after it; `None` if
/// it has not fully arrived.
fn check_message(phase: Phase, bytes: &[u8]) -> Result<Option<(usize, Phase)>, Violation> {
    match phase {
        Phase::Startup => {
            let Some(length) = read_u32(bytes, 0) else {
                return Ok(None);
            };
            let length = length as usize;
            if !(8..=STARTUP_BYTES_MAX).contains(&length) {
                return Err(Violation::protocol("invalid length of startup packet"));
            }
            if bytes.len() < length {
                return Ok(None);
            }
            let code = read_u32(bytes, 4).unwrap_or_default();
            let next = match code {
                SSL_REQUEST | GSS_REQUEST => Phase::Startup,
                CANCEL_REQUEST => Phase::Typed,
                _ => {
                    let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
                    if major != PROTOCOL_MAJOR || minor > PROTOCOL_MINOR_MAX {
                        return Err(Violation {
                            sqlstate: "0A000",
                            message: format!(
                                "unsupported frontend protocol {major}.{minor}: server \
                                 supports {PROTOCOL_MAJOR}.0 to \
                                 {PROTOCOL_MAJOR}.{PROTOCOL_MINOR_MAX}"
                            ),
                        });
                    }
                    Phase::Typed
                }
            };
            Ok(Some((length, next)))
        }
        Phase::Typed => {
            let Some(&kind) = bytes.first() else {
                return Ok(None);
            };
            if !b"pQPBCDEHSXdcf".contains(&kind) {
                return Err(Violation::protocol(format!(
                    "invalid frontend message type {kind}"
                )));
            }
            let Some(length) = read_u32(bytes, 1) else {
                return Ok(None);
            };
            let length = length as usize;
            if !(4..=MESSAGE_BYTES_MAX).contains(&length) {
                return Err(Violation::protocol(format!(
                    "invalid message length {length}"
                )));
            }
            if bytes.len() < length + 1 {
                return Ok(None);
            }
            let body = &bytes[5..length + 1];
            if !well_formed(kind, body) {
                return Err(Violation::protocol(format!(
                    "invalid message format: a {} message whose contents do not match its \
                     length",
                    char::from(kind)
                )));
            }
            Ok(Some((length + 1, Phase::Typed)))
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// Whether the body of an extended-query message holds what its counts say; pgwire's
/// decoders read these without bounds checks.
fn well_formed(kind: u8, body: &[u8]) -> bool {
    let mut reader = Reader { bytes: body };
    let ok = match kind {
        // Parse: name, query, parameter type count, the types.
        b'P' => (|| {
            reader.cstring()?;
            reader.cstring()?;
            let count = reader.u16()?;
            reader.skip(usize::from(count) * 4)
        })(),
        // Bind: portal, statement, format codes, parameters, result formats.
        b'B' => (|| {
            reader.cstring()?;
            reader.cstring()?;
            let formats = reader.u16()?;
            reader.skip(usize::from(formats) * 2)?;
            let parameters = reader.u16()?;
            for _ in 0..parameters {
                let length = reader.u32()? as i32;
                if length > 0 {
                    reader.skip(length as usize)?;
                }
            }
            let results = reader.u16()?;
            reader.skip(usize::from(results) * 2)
        })(),
        // Execute: portal, row limit.
        b'E' => (|| {
            reader.cstring()?;
            reader.u32().map(drop)
        })(),
        // Describe and Close: target kind, name.
        b'D' | b'C' => (|| {
            reader.skip(1)?;
            reader.cstring()
        })(),
        _ => Some(()),
    };
    ok.is_some()
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn skip(&mut self, count: usize) -> Option<()> {
        self.bytes = self.bytes.get(count..)?;
        Some(())
    }

    fn cstring(&mut self) -> Option<()> {
        let end = self.bytes.iter().position(|&b| b == 0)?;
        self.skip(end + 1)
    }

    fn u16(&mut self) -> Option<u16> {
        let value = u16::from_be_bytes([*self.bytes.first()?, *self.bytes.get(1)?]);
        self.skip(2)?;
        Some(value)
    }

    fn u32(&mut self) -> Option<u32> {
        let value = read_u32(self.bytes, 0)?;
        self.skip(4)?;
        Some(value)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Checked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.checked > 0 {
                let count = this.checked.min(out.remaining());
                out.put_slice(&this.buffer[..count]);
                this.buffer.advance(count);
                this.checked -= count;
                return Poll::Ready(Ok(()));
            }
            if let Some(violation) = this.violation.take() {
                this.ended = true;
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, violation)));
            }
            if this.ended {
                // The end of the stream (a message left half-sent stays unread).
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.ended = true,
                Poll::Ready(Ok(())) => {
                    this.buffer.extend_from_slice(read.filled());
                    this.check();
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Checked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(major: u16, minor: u16) -> Vec<u8> {
        let mut packet = Vec::new();
        let body = b"user\0metronome\0\0";
        packet.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
        packet.extend_from_slice(&major.to_be_bytes());
        packet.extend_from_slice(&minor.to_be_bytes());
        packet.extend_from_slice(body);
        packet
    }

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut message = vec![kind];
        message.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    #[test]
    fn startup_packets_are_checked_and_split_messages_wait() {
        let packet = startup(3, 0);
        assert_eq!(
            check_message(Phase::Startup, &packet),
            Ok(Some((packet.len(), Phase::Typed)))
        );
        assert_eq!(check_message(Phase::Startup, &packet[..7]), Ok(None));
        let error = check_message(Phase::Startup, &startup(9, 9)).unwrap_err();
        assert_eq!(error.sqlstate, "0A000");
        assert!(error.message.contains("9.9"), "{error}");
        assert!(check_message(Phase::Startup, &startup(3, 3)).is_err());
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        assert_eq!(
            check_message(Phase::Startup, &ssl),
            Ok(Some((8, Phase::Startup)))
        );
        assert!(check_message(Phase::Startup, &[0x16, 3, 1, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn typed_messages_are_checked() {
        let query = typed(b'Q', b"SELECT 1\0");
        assert_eq!(
            check_message(Phase::Typed, &query),
            Ok(Some((query.len(), Phase::Typed)))
        );
        assert_eq!(check_message(Phase::Typed, &query[..4]), Ok(None));
        let error = check_message(Phase::Typed, &typed(b'!', b"")).unwrap_err();
        assert_eq!(error.sqlstate, "08P01");
        // A Parse that declares 65,535 parameter types and carries none.
        let mut parse = b"\0SELECT 1\0".to_vec();
        parse.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(check_message(Phase::Typed, &typed(b'P', &parse)).is_err());
        let mut parse = b"s1\0SELECT $1\0".to_vec();
        parse.extend_from_slice(&1u16.to_be_bytes());
        parse.extend_from_slice(&25u32.to_be_bytes());
        assert!(check_message(Phase::Typed, &typed(b'P', &parse)).is_ok());
        // A Bind whose parameter is longer than the message.
        let mut bind = b"\0s1\0".to_vec();
        bind.extend_from_slice(&0u16.to_be_bytes());
        bind.extend_from_slice(&1u16.to_be_bytes());
        bind.extend_from_slice(&100u32.to_be_bytes());
        assert!(check_message(Phase::Typed, &typed(b'B', &bind)).is_err());
        assert!(check_message(Phase::Typed, &typed(b'E', b"\0")).is_err());
    }
}
