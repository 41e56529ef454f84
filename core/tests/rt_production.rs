//! `rt` on the real runtimes: tokio sockets, monoio shards with io_uring and epoll, and
//! real files. (Under `--cfg madsim` these are covered by the simulation crate instead.)
#![cfg(not(madsim))]
// These tests check `rt` against the real OS, so they look at the OS directly too: a raw
// socket that misbehaves, and the bytes on the real file system.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;

use bytes::Bytes;
use metronome_core::rt::disk::{AlignedBuf, Disk, OpenOptions, DIRECT_IO_ALIGNMENT};
use metronome_core::rt::net::local::{LocalConnection, LocalListener};
use metronome_core::rt::net::{Address, Connection, FrameLimits, InProcNetwork, Listener};
use metronome_core::rt::shard::{self, IoDriver, IoDriverChoice, ShardContext, ShardsConfig};
use metronome_core::rt::task;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Frames of assorted sizes, including empty and larger than a socket buffer.
fn sample_frames() -> Vec<Bytes> {
    [0usize, 1, 4096, 1 << 20]
        .into_iter()
        .map(|len| Bytes::from((0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>()))
        .collect()
}

/// Runs `body` on one shard with the given driver and returns what it returns.
fn on_shard<T, F, Fut>(driver: IoDriverChoice, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(ShardContext) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    shard::run_on_one_shard(driver, body).unwrap()
}

#[tokio::test]
async fn frames_round_trip_over_loopback_tcp() {
    let listener = Listener::bind_tcp(loopback(), FrameLimits::default())
        .await
        .unwrap();
    let Address::Tcp(address) = listener.local_address().unwrap() else {
        panic!("a TCP listener has a TCP address")
    };
    let server = task::spawn(async move {
        let mut connection = listener.accept().await.unwrap();
        while let Some(frame) = connection.recv().await.unwrap() {
            connection.send(frame).await.unwrap();
        }
    });
    let mut client = Connection::connect_tcp(address, FrameLimits::default())
        .await
        .unwrap();
    for frame in sample_frames() {
        client.send(frame.clone()).await.unwrap();
        assert_eq!(client.recv().await.unwrap().unwrap(), frame);
    }
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn an_oversized_or_truncated_frame_is_an_error_not_an_allocation() {
    let limits = FrameLimits {
        frame_bytes_max: 1024,
    };
    let listener = Listener::bind_tcp(loopback(), limits).await.unwrap();
    let Address::Tcp(address) = listener.local_address().unwrap() else {
        unreachable!()
    };
    let server = task::spawn(async move {
        let mut errors = Vec::new();
        for _ in 0..2 {
            let mut connection = listener.accept().await.unwrap();
            errors.push(connection.recv().await.unwrap_err());
        }
        errors
    });
    // A peer with a bigger limit sends a frame over ours.
    let mut client = Connection::connect_tcp(address, FrameLimits::default())
        .await
        .unwrap();
    client.send(Bytes::from(vec![0u8; 2048])).await.unwrap();
    // A peer that announces 100 bytes and hangs up after 3.
    let mut raw = tokio::net::TcpStream::connect(address).await.unwrap();
    use tokio::io::AsyncWriteExt;
    raw.write_all(&100u32.to_le_bytes()).await.unwrap();
    raw.write_all(b"abc").await.unwrap();
    drop(raw);

    let errors = server.await.unwrap();
    assert_eq!(errors[0].kind(), io::ErrorKind::InvalidData);
    assert!(errors[0].to_string().contains("2048"), "{}", errors[0]);
    assert_eq!(errors[1].kind(), io::ErrorKind::UnexpectedEof);
    // Our own oversized send is refused before it leaves.
    let listener = Listener::bind_tcp(loopback(), limits).await.unwrap();
    let Address::Tcp(address) = listener.local_address().unwrap() else {
        unreachable!()
    };
    let mut small = Connection::connect_tcp(address, limits).await.unwrap();
    let error = small.send(Bytes::from(vec![0u8; 2048])).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn frames_round_trip_in_process_and_closing_is_seen() {
    let network = InProcNetwork::new();
    let listener: Listener = network
        .listen("datanode-0", FrameLimits::default())
        .unwrap()
        .into();
    assert!(
        network
            .listen("datanode-0", FrameLimits::default())
            .is_err(),
        "a name is taken once"
    );
    let server = task::spawn(async move {
        let mut connection = listener.accept().await.unwrap();
        let mut count = 0;
        while let Some(frame) = connection.recv().await.unwrap() {
            connection.send(frame).await.unwrap();
            count += 1;
        }
        count
    });
    let mut client = network
        .connect("datanode-0", FrameLimits::default())
        .await
        .unwrap();
    for frame in sample_frames() {
        client.send(frame.clone()).await.unwrap();
        assert_eq!(client.recv().await.unwrap().unwrap(), frame);
    }
    drop(client);
    assert_eq!(server.await.unwrap(), sample_frames().len());
    let refused = network
        .connect("nobody", FrameLimits::default())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn a_connection_never_accepted_is_closed_when_its_listener_goes() {
    let network = InProcNetwork::new();
    let listener = network.listen("shard-1", FrameLimits::default()).unwrap();
    let mut client = network
        .connect("shard-1", FrameLimits::default())
        .await
        .unwrap();
    drop(listener);
    assert_eq!(
        client.recv().await.unwrap(),
        None,
        "the client sees the connection closed"
    );
    let refused = network
        .connect("shard-1", FrameLimits::default())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn frames_round_trip_between_shards_over_monoio_tcp() {
    for driver in [IoDriverChoice::IoUring, IoDriverChoice::Epoll] {
        let received = on_shard(driver, |context| async move {
            let listener = LocalListener::bind(loopback(), FrameLimits::default())
                .await
                .unwrap();
            let address = listener.local_address().unwrap();
            let server = task::spawn_local(async move {
                let mut connection = listener.accept().await.unwrap();
                while let Some(frame) = connection.recv().await.unwrap() {
                    connection.send(frame).await.unwrap();
                }
            });
            let mut client = LocalConnection::connect(address, FrameLimits::default())
                .await
                .unwrap();
            let mut received = Vec::new();
            for frame in sample_frames() {
                client.send(frame).await.unwrap();
                received.push(client.recv().await.unwrap().unwrap());
            }
            drop(client);
            server.await.unwrap();
            (context.driver, received)
        });
        let expected = match driver {
            IoDriverChoice::IoUring => IoDriver::IoUring,
            _ => IoDriver::Epoll,
        };
        assert_eq!(received.0, expected);
        assert_eq!(received.1, sample_frames(), "{driver:?}");
    }
}

#[test]
fn a_file_written_and_synced_through_io_uring_reads_back() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = dir.path().to_path_buf();
    let (driver, content, listing) = on_shard(IoDriverChoice::IoUring, move |context| {
        let disk = Disk::real(root.clone());
        async move {
            disk.create_dir_all("wal").await.unwrap();
            let file = disk
                .open("wal/0001.log", OpenOptions::create())
                .await
                .unwrap();
            let mut offsets = Vec::new();
            for record in [&b"first"[..], b"second", b"third"] {
                offsets.push(file.append(record.to_vec()).await.unwrap().0);
            }
            assert_eq!(offsets, [0, 5, 11]);
            file.sync_data().await.unwrap();
            disk.sync_dir("wal").await.unwrap();
            let reopened = disk
                .open("wal/0001.log", OpenOptions::read())
                .await
                .unwrap();
            let content = reopened.read_exact_at(16, 0).await.unwrap();
            let short = reopened.read_exact_at(17, 0).await.unwrap_err();
            assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
            disk.rename("wal/0001.log", "wal/0002.log").await.unwrap();
            (context.driver, content, disk.list_dir("wal").await.unwrap())
        }
    });
    assert_eq!(driver, IoDriver::IoUring);
    assert_eq!(content, b"firstsecondthird");
    assert_eq!(listing, ["0002.log"]);
    // And the bytes really are on the file system.
    assert_eq!(
        std::fs::read(dir.path().join("wal/0002.log")).unwrap(),
        b"firstsecondthird"
    );
}

#[test]
fn o_direct_writes_through_io_uring_read_back() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = dir.path().to_path_buf();
    let outcome = on_shard(IoDriverChoice::IoUring, move |_| {
        let disk = Disk::real(root.clone());
        async move {
            let file = match disk
                .open("direct", OpenOptions::create().with_direct(true))
                .await
            {
                Ok(file) => file,
                // tmpfs and a few others refuse O_DIRECT; the error must say so.
                Err(error) => return Err(error.to_string()),
            };
            let mut block = AlignedBuf::zeroed(2 * DIRECT_IO_ALIGNMENT);
            block.as_mut_slice().fill(0xa5);
            file.append(block).await.unwrap();
            file.sync_data().await.unwrap();
            let misaligned = file.write_at(vec![0u8; 10], 0).await.unwrap_err();
            assert_eq!(misaligned.kind(), io::ErrorKind::InvalidInput);
            Ok(file
                .read_exact_at(2 * DIRECT_IO_ALIGNMENT, 0)
                .await
                .unwrap())
        }
    });
    match outcome {
        Ok(data) => {
            assert!(data.len() == 2 * DIRECT_IO_ALIGNMENT && data.iter().all(|&b| b == 0xa5))
        }
        Err(message) => assert!(message.contains("O_DIRECT"), "{message}"),
    }
}

#[test]
fn yield_now_on_a_shard_lets_other_ready_tasks_run() {
    for driver in [IoDriverChoice::IoUring, IoDriverChoice::Epoll] {
        let ran = on_shard(driver, |_| async {
            let ran = std::rc::Rc::new(std::cell::Cell::new(0));
            for _ in 0..3 {
                let ran = ran.clone();
                task::spawn_local(async move { ran.set(ran.get() + 1) });
            }
            task::yield_now().await;
            ran.get()
        });
        assert_eq!(ran, 3, "{driver:?}: the spawned tasks ran during one yield");
    }
}

#[test]
fn shards_start_one_per_config_and_stop_on_request() {
    let config = ShardsConfig {
        count: 3,
        pin_to_cores: true,
        io_driver: IoDriverChoice::Auto,
        uring_entries: 64,
    };
    let (sender, receiver) = mpsc::channel();
    let shards = shard::start(&config, move |context| {
        let sender = sender.clone();
        async move {
            context.stop.stopped().await;
            assert!(context.stop.is_stopped());
            sender.send(context.id.0).unwrap();
        }
    })
    .unwrap();
    assert!(
        receiver.try_recv().is_err(),
        "no shard finishes before stop is requested"
    );
    shards.stop_and_join().unwrap();
    let mut ids: Vec<u16> = receiver.try_iter().collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 2]);
}
