//! Frames over the network: every message between Metronome processes is one frame, a
//! little-endian `u32` length followed by that many payload bytes.
//!
//! Three transports carry the same frames:
//! - [`Connection`] / [`Listener`] in the shared (tokio) context, over TCP or over the
//!   in-process transport ([`InProcNetwork`]) that standalone mode and tests use;
//! - [`local::LocalConnection`] / [`local::LocalListener`] on a shard, over monoio TCP
//!   (io_uring), so each shard can listen on its own port.
//!
//! Buffers are owned ([`Bytes`]), which fits both monoio's completion model and tokio's
//! readiness model. A peer's length prefix is checked against [`FrameLimits`] before any
//! allocation, so a corrupt or hostile header costs an error, not memory.

mod frame;
mod inproc;
pub mod local;
mod tcp;

pub use bytes::Bytes;
pub use frame::{decode_header, encode_header, FrameLimits, FRAME_HEADER_LEN};
pub use inproc::{InProcListener, InProcNetwork};

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;

/// Where to listen or connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP socket address, e.g. `127.0.0.1:4001`.
    Tcp(SocketAddr),
    /// A name on an [`InProcNetwork`], written `inproc://name`.
    InProc(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(address) => write!(f, "{address}"),
            Address::InProc(name) => write!(f, "inproc://{name}"),
        }
    }
}

impl FromStr for Address {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("inproc://") {
            if name.is_empty() {
                return Err("an inproc:// address needs a name".to_string());
            }
            return Ok(Address::InProc(name.to_string()));
        }
        text.parse::<SocketAddr>()
            .map(Address::Tcp)
            .map_err(|error| {
                format!("invalid address {text:?}: {error} (expected host:port or inproc://name)")
            })
    }
}

/// A frame connection in the shared (tokio) context.
pub struct Connection {
    inner: ConnectionInner,
    peer: Address,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

enum ConnectionInner {
    Tcp(tcp::TcpConnection),
    InProc(inproc::InProcConnection),
}

impl Connection {
    /// Connects over TCP. In-process addresses need [`InProcNetwork::connect`].
    pub async fn connect_tcp(address: SocketAddr, limits: FrameLimits) -> io::Result<Connection> {
        let inner = tcp::TcpConnection::connect(address, limits).await?;
        Ok(Connection {
            inner: ConnectionInner::Tcp(inner),
            peer: Address::Tcp(address),
        })
    }

    /// The address of the other end.
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// Sends one frame and flushes it.
    pub async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        match &mut self.inner {
            ConnectionInner::Tcp(connection) => connection.send(frame).await,
            ConnectionInner::InProc(connection) => connection.send(frame).await,
        }
    }

    /// Receives one frame; `Ok(None)` when the peer closed the connection between frames.
    /// A connection closed inside a frame, or a frame over the limit, is an error.
    ///
    /// Not cancel-safe: if the future is dropped mid-frame (a timeout), the connection has
    /// lost its place in the stream and must be dropped too.
    pub async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        match &mut self.inner {
            ConnectionInner::Tcp(connection) => connection.recv().await,
            ConnectionInner::InProc(connection) => connection.recv().await,
        }
    }

    /// Splits the connection into a sending and a receiving half, so that one task can
    /// wait for frames while another sends (`recv` is not cancel-safe, so the two cannot
    /// share a `select!`). The connection closes when both halves are dropped.
    pub fn split(self) -> (FrameSender, FrameReceiver) {
        let peer = self.peer;
        let (sender, receiver) = match self.inner {
            ConnectionInner::Tcp(connection) => {
                let (sender, receiver) = connection.split();
                (SenderInner::Tcp(sender), ReceiverInner::Tcp(receiver))
            }
            ConnectionInner::InProc(connection) => {
                let (sender, receiver) = connection.split();
                (SenderInner::InProc(sender), ReceiverInner::InProc(receiver))
            }
        };
        (
            FrameSender {
                inner: sender,
                peer: peer.clone(),
            },
            FrameReceiver {
                inner: receiver,
                peer,
            },
        )
    }
}

/// The sending half of a [`Connection`].
pub struct FrameSender {
    inner: SenderInner,
    peer: Address,
}

enum SenderInner {
    Tcp(tcp::TcpSendHalf),
    InProc(inproc::InProcSendHalf),
}

impl FrameSender {
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// Sends one frame and flushes it.
    pub async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        match &mut self.inner {
            SenderInner::Tcp(half) => half.send(frame).await,
            SenderInner::InProc(half) => half.send(frame).await,
        }
    }

    /// Tells the peer that no more frames follow: it sees the connection closed after
    /// the last frame (a TCP half-close), while frames can still arrive the other way.
    pub async fn close(self) -> io::Result<()> {
        match self.inner {
            SenderInner::Tcp(half) => half.close().await,
            // Dropping the channel's sender is the close.
            SenderInner::InProc(_) => Ok(()),
        }
    }
}

/// The receiving half of a [`Connection`].
pub struct FrameReceiver {
    inner: ReceiverInner,
    peer: Address,
}

enum ReceiverInner {
    Tcp(tcp::TcpReceiveHalf),
    InProc(inproc::InProcReceiveHalf),
}

impl FrameReceiver {
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// Receives one frame, as [`Connection::recv`] does (and, like it, not cancel-safe).
    pub async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        match &mut self.inner {
            ReceiverInner::Tcp(half) => half.recv().await,
            ReceiverInner::InProc(half) => half.recv().await,
        }
    }
}

/// Accepts frame connections in the shared (tokio) context.
pub struct Listener {
    inner: ListenerInner,
}

enum ListenerInner {
    Tcp(tcp::TcpListener),
    InProc(InProcListener),
}

impl Listener {
    /// Listens on a TCP address (port 0 picks a free port; see [`Listener::local_address`]).
    pub async fn bind_tcp(address: SocketAddr, limits: FrameLimits) -> io::Result<Listener> {
        Ok(Listener {
            inner: ListenerInner::Tcp(tcp::TcpListener::bind(address, limits).await?),
        })
    }

    /// The address this listener accepts on.
    pub fn local_address(&self) -> io::Result<Address> {
        match &self.inner {
            ListenerInner::Tcp(listener) => listener.local_address().map(Address::Tcp),
            ListenerInner::InProc(listener) => Ok(Address::InProc(listener.name().to_string())),
        }
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<Connection> {
        match &self.inner {
            ListenerInner::Tcp(listener) => {
                let (inner, peer) = listener.accept().await?;
                Ok(Connection {
                    inner: ConnectionInner::Tcp(inner),
                    peer: Address::Tcp(peer),
                })
            }
            ListenerInner::InProc(listener) => listener.accept().await,
        }
    }
}

impl From<InProcListener> for Listener {
    fn from(listener: InProcListener) -> Listener {
        Listener {
            inner: ListenerInner::InProc(listener),
        }
    }
}

/// A plain TCP listener for protocol servers that do their own framing (HTTP, the
/// PostgreSQL wire protocol), in the shared context. Port 0 picks a free port.
pub async fn bind_stream_listener(address: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}
