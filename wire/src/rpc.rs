//! Requests and replies over one frame connection: a client that multiplexes concurrent
//! requests by request id, and a server loop that hands each verified request to a
//! [`Dispatch`] and sends back its reply frames.
//!
//! Both ends run in the shared (tokio) context and work over any
//! `metronome_core::rt::net` transport: TCP between processes, the in-process transport
//! in standalone mode, madsim's simulated TCP in simulation. The bytes are the same.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use metronome_core::rt::net::{Connection, FrameLimits, InProcNetwork, Listener};
use metronome_core::rt::{task, time};
use tokio::sync::Semaphore;

use crate::fb;
use crate::frame::{self, Body, FrameKind, Header};

/// Requests one server connection works on at once; the connection's reader waits for
/// a slot, which pushes back on the client.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 256;
/// Reply frames queued for sending on one server connection.
const REPLY_FRAMES_QUEUED_MAX: usize = 256;
/// Requests queued for sending on one client connection.
const REQUEST_FRAMES_QUEUED_MAX: usize = 256;
/// Reply frames of one request buffered before the client's reader waits for the caller.
const CALL_FRAMES_QUEUED_MAX: usize = 16;
/// The most reply bytes one request may bring back (a scan's pages, all together).
pub const CALL_REPLY_BYTES_MAX: usize = 1 << 30;

/// A boxed future, as the dispatch and connector traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The peer could not be reached, the connection broke or the call timed out: the
    /// request may or may not have taken effect, and may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// The peer answered with something that is not a valid reply.
    #[error("{0}")]
    Protocol(String),
}

/// Opens a connection to the server; called again after a connection breaks.
pub type Connector = Arc<dyn Fn() -> BoxFuture<'static, io::Result<Connection>> + Send + Sync>;

/// Connects to `name` on an in-process network (standalone mode, tests).
pub fn inproc_connector(network: InProcNetwork, name: &str, limits: FrameLimits) -> Connector {
    let name = name.to_string();
    Arc::new(move || {
        let (network, name) = (network.clone(), name.clone());
        Box::pin(async move { network.connect(&name, limits).await })
    })
}

/// Connects over TCP.
pub fn tcp_connector(address: SocketAddr, limits: FrameLimits) -> Connector {
    Arc::new(move || Box::pin(Connection::connect_tcp(address, limits)))
}

/// The client end: one connection (opened on first use and again after it breaks),
/// shared by every concurrent call.
pub struct RpcClient {
    /// Whom the client talks to, for error messages.
    peer: String,
    connector: Connector,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    next_request_id: AtomicU64,
    call_timeout: Duration,
}

/// One open connection and the calls waiting on it.
struct Link {
    outgoing: async_channel::Sender<Bytes>,
    /// Calls waiting for replies, by request id. Dropping an entry's sender tells the call
    /// that the connection is gone.
    pending: Mutex<HashMap<u64, async_channel::Sender<(bool, Bytes)>>>,
}

impl Link {
    fn is_open(&self) -> bool {
        !self.outgoing.is_closed()
    }

    fn close(&self) {
        self.outgoing.close();
        self.pending.lock().expect("pending calls").clear();
    }
}

impl RpcClient {
    pub fn new(peer: impl Into<String>, connector: Connector, call_timeout: Duration) -> Self {
        RpcClient {
            peer: peer.into(),
            connector,
            link: tokio::sync::Mutex::new(None),
            next_request_id: AtomicU64::new(1),
            call_timeout,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Sends a request and returns its reply frames (headers included), the last one
    /// last. A request id is never reused, so a late reply to a call that timed out is
    /// recognised and dropped.
    pub async fn call(&self, request: Body) -> Result<Vec<Bytes>, RpcError> {
        let link = self.link().await?;
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (replies_sender, replies) = async_channel::bounded(CALL_FRAMES_QUEUED_MAX);
        link.pending
            .lock()
            .expect("pending calls")
            .insert(request_id, replies_sender);
        if !link.is_open() {
            // The connection closed between `link()` and registering: its reader may
            // already have emptied `pending`, and would never answer this call.
            link.pending
                .lock()
                .expect("pending calls")
                .remove(&request_id);
            return Err(RpcError::Unavailable(format!(
                "connection to {} lost",
                self.peer
            )));
        }
        let frame = request.into_frame(Header {
            kind: FrameKind::Request,
            request_id,
            last: true,
        });
        let lost = || RpcError::Unavailable(format!("connection to {} lost", self.peer));
        let exchange = async {
            link.outgoing.send(frame).await.map_err(|_| lost())?;
            let mut frames = Vec::new();
            let mut bytes = 0usize;
            loop {
                let (last, frame) = replies.recv().await.map_err(|_| lost())?;
                bytes += frame.len();
                if bytes > CALL_REPLY_BYTES_MAX {
                    return Err(RpcError::Protocol(format!(
                        "{} sent more than {CALL_REPLY_BYTES_MAX} bytes of replies to one request",
                        self.peer
                    )));
                }
                frames.push(frame);
                if last {
                    return Ok(frames);
                }
            }
        };
        let outcome = time::timeout(self.call_timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(RpcError::Unavailable(format!(
                    "{} did not answer within {} ms",
                    self.peer,
                    self.call_timeout.as_millis()
                )))
            });
        link.pending
            .lock()
            .expect("pending calls")
            .remove(&request_id);
        outcome
    }

    /// Calls and verifies the single reply frame; an `Error` reply comes back as `Ok`
    /// for the caller to interpret.
    pub async fn call_one<T>(
        &self,
        request: Body,
        read: impl FnOnce(fb::ReplyMessage<'_>) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let frames = self.call(request).await?;
        let [frame] = frames.as_slice() else {
            return Err(RpcError::Protocol(format!(
                "{} sent {} reply frames where one was expected",
                self.peer,
                frames.len()
            )));
        };
        let reply = frame::verify_reply(frame)
            .map_err(|error| RpcError::Protocol(format!("from {}: {error}", self.peer)))?;
        read(reply)
    }

    /// The open connection, opening one if there is none.
    async fn link(&self) -> Result<Arc<Link>, RpcError> {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_ref().filter(|link| link.is_open()) {
            return Ok(link.clone());
        }
        // A host that is down answers no SYN: connecting waits out the call's timeout,
        // not the kernel's two minutes.
        let connection = time::timeout(self.call_timeout, (self.connector)())
            .await
            .map_err(|elapsed| {
                RpcError::Unavailable(format!("cannot connect to {}: {elapsed}", self.peer))
            })?
            .map_err(|error| {
                RpcError::Unavailable(format!("cannot connect to {}: {error}", self.peer))
            })?;
        let (mut sender, mut receiver) = connection.split();
        let (outgoing, to_send) = async_channel::bounded::<Bytes>(REQUEST_FRAMES_QUEUED_MAX);
        let link = Arc::new(Link {
            outgoing,
            pending: Mutex::new(HashMap::new()),
        });
        let writer_link = link.clone();
        let peer = self.peer.clone();
        task::spawn(async move {
            while let Ok(frame) = to_send.recv().await {
                if let Err(error) = sender.send(frame).await {
                    tracing::warn!(%peer, %error, "sending a request failed; closing the connection");
                    break;
                }
            }
            writer_link.close();
            // The server sees the connection end and closes its side, which ends the
            // reader below.
            let _ = sender.close().await;
        });
        let reader_link = link.clone();
        let peer = self.peer.clone();
        task::spawn(async move {
            loop {
                let frame = match receiver.recv().await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%peer, %error, "receiving a reply failed; closing the connection");
                        break;
                    }
                };
                let header = match frame::decode_header(&frame) {
                    Ok(header) if header.kind == FrameKind::Reply => header,
                    Ok(_) => {
                        tracing::warn!(%peer, "the server sent a request frame; closing the connection");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%peer, %error, "bad reply frame; closing the connection");
                        break;
                    }
                };
                let waiting = reader_link
                    .pending
                    .lock()
                    .expect("pending calls")
                    .get(&header.request_id)
                    .cloned();
                let Some(waiting) = waiting else {
                    // The call timed out and left; its reply is of no use to anyone.
                    tracing::debug!(%peer, request_id = header.request_id, "dropping a late reply");
                    continue;
                };
                // A call that left in the meantime has dropped its receiver; that is
                // not the connection's problem.
                let _ = waiting.send((header.last, frame)).await;
            }
            reader_link.close();
        });
        *slot = Some(link.clone());
        Ok(link)
    }
}

impl Drop for RpcClient {
    fn drop(&mut self) {
        // The connection's tasks hold the link too; closing it ends them, and the server
        // then ends the connection.
        if let Some(link) = self.link.get_mut().take() {
            link.close();
        }
    }
}

/// The server side of a service: turns one verified request into its reply bodies.
pub trait Dispatch: Send + Sync + 'static {
    /// The replies to `request`, at least one; every one but the last is a page of a
    /// longer answer (a scan's rows).
    fn dispatch<'a>(&'a self, request: fb::RequestMessage<'a>) -> BoxFuture<'a, Vec<Body>>;
}

/// Accepts connections on `listener` and serves each with `dispatch`, until accepting
/// fails (the listener is closed). Abort the task running it to stop listening.
pub async fn serve(listener: Listener, dispatch: Arc<dyn Dispatch>, limits: FrameLimits) {
    loop {
        match listener.accept().await {
            Ok(connection) => {
                task::spawn(serve_connection(connection, dispatch.clone(), limits));
            }
            Err(error) => {
                tracing::info!(%error, "no longer accepting connections");
                return;
            }
        }
    }
}

/// Serves requests on one connection until the client closes it or breaks the
/// protocol. Requests run concurrently, at most [`REQUESTS_IN_FLIGHT_MAX`] at a time;
/// their replies go out as they complete.
pub async fn serve_connection(
    connection: Connection,
    dispatch: Arc<dyn Dispatch>,
    limits: FrameLimits,
) {
    let peer = connection.peer().to_string();
    let (mut sender, mut receiver) = connection.split();
    let (replies, to_send) = async_channel::bounded::<Bytes>(REPLY_FRAMES_QUEUED_MAX);
    let writer_peer = peer.clone();
    task::spawn(async move {
        while let Ok(frame) = to_send.recv().await {
            if let Err(error) = sender.send(frame).await {
                tracing::warn!(peer = %writer_peer, %error, "sending a reply failed; closing the connection");
                to_send.close();
                return;
            }
        }
        // Every request of the connection has been answered and the client is gone.
        let _ = sender.close().await;
    });
    let slots = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    loop {
        let frame = match receiver.recv().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%peer, %error, "receiving a request failed; closing the connection");
                return;
            }
        };
        let request_id = match frame::decode_header(&frame) {
            Ok(header) if header.kind == FrameKind::Request => header.request_id,
            Ok(_) => {
                tracing::warn!(%peer, "the client sent a reply frame; closing the connection");
                return;
            }
            Err(error) => {
                // Without a header there is no request id to answer to.
                tracing::warn!(%peer, %error, "bad request frame; closing the connection");
                return;
            }
        };
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (dispatch, replies) = (dispatch.clone(), replies.clone());
        task::spawn(async move {
            let bodies = match frame::verify_request(&frame) {
                Ok(request) => dispatch.dispatch(request).await,
                Err(error) => vec![frame::error_body(
                    fb::ErrorKind::InvalidRequest,
                    &error.to_string(),
                )],
            };
            assert!(!bodies.is_empty(), "every request gets a reply");
            let count = bodies.len();
            for (index, body) in bodies.into_iter().enumerate() {
                let body = if body.len() + frame::HEADER_LEN > limits.frame_bytes_max as usize {
                    // Pages are sized to fit; a reply that does not is a bug, reported
                    // to the caller rather than left unanswered.
                    frame::error_body(
                        fb::ErrorKind::Internal,
                        &format!(
                            "reply of {} bytes exceeds the frame limit of {} bytes",
                            body.len(),
                            limits.frame_bytes_max
                        ),
                    )
                } else {
                    body
                };
                let frame = body.into_frame(Header {
                    kind: FrameKind::Reply,
                    request_id,
                    last: index + 1 == count,
                });
                if replies.send(frame).await.is_err() {
                    break;
                }
            }
            drop(slot);
        });
    }
}
