//! The request/reply layer over real transports: many calls in flight on one
//! connection, multi-frame replies, timeouts, and peers that send garbage.
#![cfg(not(madsim))]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metronome_core::data::RegionId;
use metronome_core::rt::net::{FrameLimits, InProcNetwork, Listener};
use metronome_core::rt::{task, time};
use metronome_wire::fb;
use metronome_wire::frame::{self, Body, FrameKind, Header};
use metronome_wire::rpc::{self, BoxFuture, Connector, Dispatch, RpcClient, RpcError};

/// Answers a `DropRegion` for region (t, n) with `n` pages (error bodies whose message
/// is "t.n page i"), after t milliseconds; table 999 never answers.
struct Pages;

impl Dispatch for Pages {
    fn dispatch<'a>(&'a self, request: fb::RequestMessage<'a>) -> BoxFuture<'a, Vec<Body>> {
        let region = request
            .body_as_drop_region()
            .map(|drop| RegionId::new(drop.region().table(), drop.region().number()));
        Box::pin(async move {
            let Some(region) = region else {
                return vec![frame::error_body(
                    fb::ErrorKind::InvalidRequest,
                    "not a drop",
                )];
            };
            if region.table == 999 {
                std::future::pending::<()>().await;
            }
            time::sleep(Duration::from_millis(u64::from(region.table))).await;
            (0..region.number)
                .map(|page| {
                    frame::error_body(fb::ErrorKind::NotFound, &format!("{region} page {page}"))
                })
                .collect()
        })
    }
}

fn drop_request(region: RegionId) -> Body {
    frame::request_body(|builder| {
        let table = fb::DropRegion::create(
            builder,
            &fb::DropRegionArgs {
                region: Some(&fb::RegionId::new(region.table, region.number)),
            },
        );
        (fb::Request::DropRegion, table.as_union_value())
    })
}

fn messages(frames: &[Bytes]) -> Vec<String> {
    frames
        .iter()
        .map(|frame| {
            let reply = frame::verify_reply(frame).unwrap();
            reply.body_as_error().unwrap().message().to_string()
        })
        .collect()
}

fn inproc_server(name: &str) -> (InProcNetwork, Connector) {
    let network = InProcNetwork::new();
    let listener = network.listen(name, FrameLimits::default()).unwrap();
    task::spawn(rpc::serve(
        Listener::from(listener),
        Arc::new(Pages),
        FrameLimits::default(),
    ));
    let connector = rpc::inproc_connector(network.clone(), name, FrameLimits::default());
    (network, connector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_each_get_their_own_pages_in_order() {
    let (_network, connector) = inproc_server("pages");
    let client = Arc::new(RpcClient::new("pages", connector, Duration::from_secs(10)));
    // Slow calls first, so that replies come back in another order than requests went.
    let calls: Vec<_> = (0..64u32)
        .map(|i| {
            let client = client.clone();
            let region = RegionId::new(64 - i, i % 5 + 1);
            task::spawn(async move { (region, client.call(drop_request(region)).await) })
        })
        .collect();
    for call in calls {
        let (region, frames) = call.await.unwrap();
        let frames = frames.unwrap();
        let expected: Vec<String> = (0..region.number)
            .map(|page| format!("{region} page {page}"))
            .collect();
        assert_eq!(messages(&frames), expected);
        let last: Vec<bool> = frames
            .iter()
            .map(|f| frame::decode_header(f).unwrap().last)
            .collect();
        assert_eq!(last.iter().filter(|l| **l).count(), 1);
        assert!(last.last().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_times_out_leaves_the_connection_usable() {
    let (_network, connector) = inproc_server("slow");
    let client = RpcClient::new("slow", connector, Duration::from_millis(200));
    let error = client
        .call(drop_request(RegionId::new(999, 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Unavailable(m) if m.contains("within 200 ms")),
        "{error:?}"
    );
    let frames = client
        .call(drop_request(RegionId::new(1, 2)))
        .await
        .unwrap();
    assert_eq!(messages(&frames), ["1.2 page 0", "1.2 page 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_same_frames_work() {
    let listener = Listener::bind_tcp("127.0.0.1:0".parse().unwrap(), FrameLimits::default())
        .await
        .unwrap();
    let address = match listener.local_address().unwrap() {
        metronome_core::rt::net::Address::Tcp(address) => address,
        other => panic!("{other}"),
    };
    task::spawn(rpc::serve(
        listener,
        Arc::new(Pages),
        FrameLimits::default(),
    ));
    let connector = rpc::tcp_connector(address, FrameLimits::default());
    let client = RpcClient::new(address.to_string(), connector, Duration::from_secs(10));
    let frames = client
        .call(drop_request(RegionId::new(0, 3)))
        .await
        .unwrap();
    assert_eq!(
        messages(&frames),
        ["0.3 page 0", "0.3 page 1", "0.3 page 2"]
    );

    let unreachable = rpc::tcp_connector("127.0.0.1:1".parse().unwrap(), FrameLimits::default());
    let client = RpcClient::new("nobody", unreachable, Duration::from_secs(10));
    let error = client
        .call(drop_request(RegionId::new(0, 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Unavailable(m) if m.contains("cannot connect to nobody")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bodies_get_an_error_reply_and_garbage_headers_close_the_connection() {
    let (network, _connector) = inproc_server("garbage");
    let mut connection = network
        .connect("garbage", FrameLimits::default())
        .await
        .unwrap();
    let header = |request_id| {
        frame::done_body().into_frame(Header {
            kind: FrameKind::Request,
            request_id,
            last: true,
        })[..frame::HEADER_LEN]
            .to_vec()
    };
    // A valid header in front of a body that is not a request.
    let mut bad = header(41);
    bad.extend_from_slice(&[0xff; 40]);
    connection.send(Bytes::from(bad)).await.unwrap();
    // A well-formed request whose union names a type this build does not know.
    let unknown = frame::request_body(|builder| {
        let table = fb::GetCatalog::create(builder, &fb::GetCatalogArgs {});
        (fb::Request(200), table.as_union_value())
    })
    .into_frame(Header {
        kind: FrameKind::Request,
        request_id: 42,
        last: true,
    });
    let error = frame::verify_request(&unknown).unwrap_err();
    assert!(
        error.to_string().contains("unknown request type 200"),
        "{error}"
    );
    connection.send(unknown).await.unwrap();
    // Requests run concurrently, so their replies may come back in either order.
    let mut replies = Vec::new();
    for _ in 0..2 {
        replies.push(connection.recv().await.unwrap().unwrap());
    }
    replies.sort_by_key(|reply| frame::decode_header(reply).unwrap().request_id);
    for (reply, request_id) in replies.iter().zip([41, 42]) {
        let header = frame::decode_header(reply).unwrap();
        assert_eq!(header.request_id, request_id);
        let error = frame::verify_reply(reply).unwrap();
        let error = error.body_as_error().unwrap();
        assert_eq!(error.kind(), fb::ErrorKind::InvalidRequest);
        assert!(error.message().contains("request"), "{}", error.message());
    }
    // A header from another protocol version: nothing can be answered, the connection
    // closes.
    let mut other_version = header(43);
    other_version[4] = 9;
    connection.send(Bytes::from(other_version)).await.unwrap();
    assert!(connection.recv().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_client_ends_the_server_side_of_its_connection() {
    let limits = FrameLimits::default();
    let network = InProcNetwork::new();
    let inproc = Listener::from(network.listen("drop", limits).unwrap());
    let tcp = Listener::bind_tcp("127.0.0.1:0".parse().unwrap(), limits)
        .await
        .unwrap();
    let metronome_core::rt::net::Address::Tcp(address) = tcp.local_address().unwrap() else {
        unreachable!("a TCP listener has a TCP address")
    };
    let cases = [
        (
            inproc,
            rpc::inproc_connector(network.clone(), "drop", limits),
        ),
        (tcp, rpc::tcp_connector(address, limits)),
    ];
    for (listener, connector) in cases {
        let client = RpcClient::new("drop", connector, Duration::from_secs(10));
        let call = task::spawn(async move {
            let frames = client.call(drop_request(RegionId::new(0, 1))).await;
            (client, frames)
        });
        let connection = listener.accept().await.unwrap();
        let served = task::spawn(rpc::serve_connection(connection, Arc::new(Pages), limits));
        let (client, frames) = call.await.unwrap();
        assert_eq!(messages(&frames.unwrap()), ["0.1 page 0"]);
        assert!(!served.is_finished());
        drop(client);
        time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the server's connection ends once its client is dropped")
            .unwrap();
    }
}
