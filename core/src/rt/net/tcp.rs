//! Frames over TCP in the shared (tokio) context; simulated by madsim under `--cfg madsim`.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::frame::{decode_header, encode_header, FrameLimits, FRAME_HEADER_LEN};

pub(super) struct TcpConnection {
    stream: tokio::net::TcpStream,
    limits: FrameLimits,
}

impl TcpConnection {
    pub(super) async fn connect(address: SocketAddr, limits: FrameLimits) -> io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        Self::new(stream, limits)
    }

    fn new(stream: tokio::net::TcpStream, limits: FrameLimits) -> io::Result<Self> {
        // Frames are whole messages; Nagle's delay only adds latency to them.
        stream.set_nodelay(true)?;
        Ok(TcpConnection { stream, limits })
    }

    pub(super) async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        send_frame(&mut self.stream, frame, self.limits).await
    }

    pub(super) async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        recv_frame(&mut self.stream, self.limits).await
    }

    pub(super) fn split(self) -> (TcpSendHalf, TcpReceiveHalf) {
        // tokio's generic split (a lock shared by the halves), because madsim's simulated
        // stream has no `into_split`.
        let (reader, writer) = tokio::io::split(self.stream);
        (
            TcpSendHalf {
                writer,
                limits: self.limits,
            },
            TcpReceiveHalf {
                reader,
                limits: self.limits,
            },
        )
    }
}

pub(super) struct TcpSendHalf {
    writer: WriteHalf<tokio::net::TcpStream>,
    limits: FrameLimits,
}

impl TcpSendHalf {
    pub(super) async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        send_frame(&mut self.writer, frame, self.limits).await
    }

    pub(super) async fn close(mut self) -> io::Result<()> {
        self.writer.shutdown().await
    }
}

pub(super) struct TcpReceiveHalf {
    reader: ReadHalf<tokio::net::TcpStream>,
    limits: FrameLimits,
}

impl TcpReceiveHalf {
    pub(super) async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        recv_frame(&mut self.reader, self.limits).await
    }
}

async fn send_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: Bytes,
    limits: FrameLimits,
) -> io::Result<()> {
    let header = encode_header(frame.len(), limits)?;
    writer.write_all(&header).await?;
    writer.write_all(&frame).await?;
    // madsim's simulated stream sends nothing until flushed.
    writer.flush().await
}

async fn recv_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: FrameLimits,
) -> io::Result<Option<Bytes>> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut filled = 0;
    while filled < FRAME_HEADER_LEN {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed after {filled} of {FRAME_HEADER_LEN} header bytes"),
            ));
        }
        filled += n;
    }
    let len = decode_header(header, limits)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("reading a frame of {len} bytes: {error}"),
        )
    })?;
    Ok(Some(Bytes::from(payload)))
}

pub(super) struct TcpListener {
    listener: tokio::net::TcpListener,
    limits: FrameLimits,
}

impl TcpListener {
    pub(super) async fn bind(address: SocketAddr, limits: FrameLimits) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        Ok(TcpListener { listener, limits })
    }

    pub(super) fn local_address(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub(super) async fn accept(&self) -> io::Result<(TcpConnection, SocketAddr)> {
        let (stream, peer) = self.listener.accept().await?;
        Ok((TcpConnection::new(stream, self.limits)?, peer))
    }
}
