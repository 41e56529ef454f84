//! The in-process transport: frames over bounded channels, for standalone mode (frontend
//! and datanode shards in one process) and for tests. It behaves like TCP where it matters:
//! frames keep their order, a full peer applies back-pressure, and a dropped end is seen
//! as a closed connection.
//!
//! There is no global registry: the [`InProcNetwork`] value is the namespace, handed to
//! whoever listens or connects (madsim keeps statics across determinism-check runs).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::frame::{encode_header, FrameLimits};
use super::{Address, Connection, ConnectionInner};

/// Frames buffered per direction before the sender waits.
const CONNECTION_FRAMES_MAX: usize = 64;
/// Connections waiting to be accepted before `connect` waits.
const ACCEPT_BACKLOG_MAX: usize = 128;

/// A namespace of in-process listeners.
#[derive(Clone, Default)]
pub struct InProcNetwork {
    listeners: Arc<Mutex<BTreeMap<String, async_channel::Sender<Connection>>>>,
}

impl InProcNetwork {
    pub fn new() -> InProcNetwork {
        InProcNetwork::default()
    }

    /// Listens on `name`; fails with `AddrInUse` if a live listener has it.
    pub fn listen(&self, name: &str, limits: FrameLimits) -> io::Result<InProcListener> {
        let mut listeners = self.listeners.lock().expect("in-process registry poisoned");
        if let Some(existing) = listeners.get(name) {
            if !existing.is_closed() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("inproc://{name} is already listening"),
                ));
            }
        }
        let (sender, receiver) = async_channel::bounded(ACCEPT_BACKLOG_MAX);
        listeners.insert(name.to_string(), sender);
        Ok(InProcListener {
            name: name.to_string(),
            receiver,
            limits,
        })
    }

    /// Connects to the listener on `name`; `ConnectionRefused` if there is none.
    pub async fn connect(&self, name: &str, limits: FrameLimits) -> io::Result<Connection> {
        let refused = || {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("nothing listens on inproc://{name}"),
            )
        };
        let acceptor = self
            .listeners
            .lock()
            .expect("in-process registry poisoned")
            .get(name)
            .cloned()
            .ok_or_else(refused)?;
        let (to_server, from_client) = async_channel::bounded(CONNECTION_FRAMES_MAX);
        let (to_client, from_server) = async_channel::bounded(CONNECTION_FRAMES_MAX);
        let server_end = Connection {
            inner: ConnectionInner::InProc(InProcConnection {
                sender: to_client,
                receiver: from_client,
                limits,
            }),
            peer: Address::InProc(format!("{name}/client")),
        };
        acceptor.send(server_end).await.map_err(|_| refused())?;
        Ok(Connection {
            inner: ConnectionInner::InProc(InProcConnection {
                sender: to_server,
                receiver: from_server,
                limits,
            }),
            peer: Address::InProc(name.to_string()),
        })
    }
}

/// Accepts in-process connections; dropping it refuses further connects.
pub struct InProcListener {
    name: String,
    receiver: async_channel::Receiver<Connection>,
    #[allow(dead_code)] // Kept for symmetry with TCP listeners, whose limits apply on accept.
    limits: FrameLimits,
}

impl InProcListener {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) async fn accept(&self) -> io::Result<Connection> {
        self.receiver.recv().await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                format!("inproc://{} is closed", self.name),
            )
        })
    }
}

impl Drop for InProcListener {
    fn drop(&mut self) {
        self.receiver.close();
        // Connections queued but never accepted are dropped, so their clients see the
        // connection closed instead of waiting forever.
        while self.receiver.try_recv().is_ok() {}
    }
}

pub(super) struct InProcConnection {
    sender: async_channel::Sender<Bytes>,
    receiver: async_channel::Receiver<Bytes>,
    limits: FrameLimits,
}

impl InProcConnection {
    pub(super) async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        send_frame(&self.sender, frame, self.limits).await
    }

    pub(super) async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.receiver.recv().await.ok())
    }

    pub(super) fn split(self) -> (InProcSendHalf, InProcReceiveHalf) {
        (
            InProcSendHalf {
                sender: self.sender,
                limits: self.limits,
            },
            InProcReceiveHalf {
                receiver: self.receiver,
            },
        )
    }
}

pub(super) struct InProcSendHalf {
    sender: async_channel::Sender<Bytes>,
    limits: FrameLimits,
}

impl InProcSendHalf {
    pub(super) async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        send_frame(&self.sender, frame, self.limits).await
    }
}

pub(super) struct InProcReceiveHalf {
    receiver: async_channel::Receiver<Bytes>,
}

impl InProcReceiveHalf {
    pub(super) async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.receiver.recv().await.ok())
    }
}

async fn send_frame(
    sender: &async_channel::Sender<Bytes>,
    frame: Bytes,
    limits: FrameLimits,
) -> io::Result<()> {
    // The same limit as on TCP, so code that works in standalone works in a cluster.
    encode_header(frame.len(), limits)?;
    sender.send(frame).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            "in-process peer closed the connection",
        )
    })
}
