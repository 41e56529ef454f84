//! Frames over TCP on a shard: monoio sockets driven by io_uring in production, so that
//! each shard can listen on its own port (shard-aware addressing). Under madsim these are
//! the simulated tokio sockets, since all simulated tasks share one thread anyway.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;

use super::frame::{decode_header, encode_header, FrameLimits, FRAME_HEADER_LEN};

/// A frame connection owned by one shard.
pub struct LocalConnection {
    #[cfg(not(madsim))]
    stream: monoio::net::TcpStream,
    #[cfg(madsim)]
    stream: tokio::net::TcpStream,
    limits: FrameLimits,
    peer: SocketAddr,
}

impl LocalConnection {
    pub async fn connect(address: SocketAddr, limits: FrameLimits) -> io::Result<LocalConnection> {
        #[cfg(not(madsim))]
        let stream = monoio::net::TcpStream::connect_addr(address).await?;
        #[cfg(madsim)]
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(LocalConnection {
            stream,
            limits,
            peer: address,
        })
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one frame: the header, then the payload.
    pub async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        let header = encode_header(frame.len(), self.limits)?;
        #[cfg(not(madsim))]
        {
            use monoio::io::AsyncWriteRentExt;
            let (result, _) = self.stream.write_all(header.to_vec()).await;
            result?;
            let (result, _) = self.stream.write_all(frame).await;
            result.map(|_| ())
        }
        #[cfg(madsim)]
        {
            use tokio::io::AsyncWriteExt;
            self.stream.write_all(&header).await?;
            self.stream.write_all(&frame).await?;
            self.stream.flush().await
        }
    }

    /// Receives one frame; `Ok(None)` when the peer closed between frames. Not cancel-safe:
    /// drop the connection if a receive is abandoned mid-frame.
    pub async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        let header = match self.read_exact(FRAME_HEADER_LEN).await? {
            ReadOutcome::Full(bytes) => {
                let mut header = [0u8; FRAME_HEADER_LEN];
                header.copy_from_slice(&bytes);
                header
            }
            ReadOutcome::ClosedAt(0) => return Ok(None),
            ReadOutcome::ClosedAt(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {n} of {FRAME_HEADER_LEN} header bytes"),
                ))
            }
        };
        let len = decode_header(header, self.limits)?;
        match self.read_exact(len).await? {
            ReadOutcome::Full(payload) => Ok(Some(Bytes::from(payload))),
            ReadOutcome::ClosedAt(n) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed after {n} of {len} frame bytes"),
            )),
        }
    }

    async fn read_exact(&mut self, len: usize) -> io::Result<ReadOutcome> {
        let mut buffer: Vec<u8> = Vec::with_capacity(len);
        while buffer.len() < len {
            #[cfg(not(madsim))]
            let n = {
                use monoio::buf::IoBufMut;
                use monoio::io::AsyncReadRent;
                let filled = buffer.len();
                // Read into the spare capacity after what is already filled.
                let (result, slice) = self.stream.read(buffer.slice_mut(filled..len)).await;
                buffer = slice.into_inner();
                result?
            };
            #[cfg(madsim)]
            let n = {
                use tokio::io::AsyncReadExt;
                let filled = buffer.len();
                buffer.resize(len, 0);
                let result = self.stream.read(&mut buffer[filled..]).await;
                buffer.truncate(filled + *result.as_ref().unwrap_or(&0));
                result?
            };
            if n == 0 {
                return Ok(ReadOutcome::ClosedAt(buffer.len()));
            }
        }
        Ok(ReadOutcome::Full(buffer))
    }
}

enum ReadOutcome {
    Full(Vec<u8>),
    ClosedAt(usize),
}

/// Accepts frame connections on a shard.
pub struct LocalListener {
    #[cfg(not(madsim))]
    listener: monoio::net::TcpListener,
    #[cfg(madsim)]
    listener: tokio::net::TcpListener,
    limits: FrameLimits,
}

impl LocalListener {
    pub async fn bind(address: SocketAddr, limits: FrameLimits) -> io::Result<LocalListener> {
        #[cfg(not(madsim))]
        let listener = monoio::net::TcpListener::bind(address)?;
        #[cfg(madsim)]
        let listener = tokio::net::TcpListener::bind(address).await?;
        Ok(LocalListener { listener, limits })
    }

    pub fn local_address(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn accept(&self) -> io::Result<LocalConnection> {
        let (stream, peer) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok(LocalConnection {
            stream,
            limits: self.limits,
            peer,
        })
    }
}
