//! The shard context under simulation: shards are tasks on their node, each listening on
//! its own port (shard-aware addressing), and `buggify!` fires only here.
#![cfg(madsim)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use metronome_core::buggify;
use metronome_core::rt::net::local::{LocalConnection, LocalListener};
use metronome_core::rt::net::FrameLimits;
use metronome_core::rt::shard::{self, IoDriver, IoDriverChoice, ShardsConfig};
use metronome_core::rt::{task, time};
use metronome_simulation::node::SimNode;

const SHARDS: u16 = 3;
const BASE_PORT: u16 = 7100;

fn shard_address(shard: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, 1], BASE_PORT + shard))
}

/// Each shard answers every frame with its own id prepended.
async fn datanode_main() {
    let config = ShardsConfig {
        count: SHARDS,
        pin_to_cores: false,
        io_driver: IoDriverChoice::Auto,
        uring_entries: 64,
    };
    let shards = shard::start(&config, |context| async move {
        assert_eq!(context.driver, IoDriver::Simulated);
        let address = SocketAddr::from(([0, 0, 0, 0], BASE_PORT + context.id.0));
        let listener = LocalListener::bind(address, FrameLimits::default())
            .await
            .unwrap();
        loop {
            let mut connection = listener.accept().await.unwrap();
            let shard = context.id.0;
            task::spawn_local(async move {
                while let Ok(Some(frame)) = connection.recv().await {
                    let mut reply = shard.to_le_bytes().to_vec();
                    reply.extend_from_slice(&frame);
                    if connection.send(Bytes::from(reply)).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
    .unwrap();
    std::future::pending::<()>().await;
    drop(shards);
}

#[madsim::test]
async fn each_shard_serves_its_own_port() {
    let _datanode = SimNode::start(
        "datanode",
        shard_address(0).ip(),
        Default::default(),
        |_| datanode_main(),
    );
    let client = SimNode::idle("client", "10.0.1.2".parse().unwrap());
    let replies = client
        .handle()
        .spawn(async {
            // Give the datanode's shards a moment to bind.
            time::sleep(Duration::from_millis(10)).await;
            let mut replies = Vec::new();
            for shard in 0..SHARDS {
                let mut connection =
                    LocalConnection::connect(shard_address(shard), FrameLimits::default())
                        .await
                        .unwrap();
                connection.send(Bytes::from_static(b"ping")).await.unwrap();
                replies.push(connection.recv().await.unwrap().unwrap());
            }
            replies
        })
        .await
        .unwrap();
    for (shard, reply) in replies.iter().enumerate() {
        assert_eq!(&reply[..2], (shard as u16).to_le_bytes());
        assert_eq!(&reply[2..], b"ping");
    }
}

#[madsim::test]
async fn shards_stop_when_asked() {
    let config = ShardsConfig {
        count: SHARDS,
        pin_to_cores: false,
        io_driver: IoDriverChoice::Auto,
        uring_entries: 64,
    };
    let host = SimNode::idle("host", "10.0.1.3".parse().unwrap());
    let stopped = host
        .handle()
        .spawn(async move {
            let (sender, receiver) = async_channel_pair();
            let shards = shard::start(&config, move |context| {
                let sender = sender.clone();
                async move {
                    context.stop.stopped().await;
                    sender.send(context.id.0).await.unwrap();
                }
            })
            .unwrap();
            time::sleep(Duration::from_millis(5)).await;
            assert!(receiver.is_empty(), "no shard stops before it is asked");
            shards.stop_and_join().await.unwrap();
            let mut ids = Vec::new();
            while let Ok(id) = receiver.try_recv() {
                ids.push(id);
            }
            ids.sort();
            ids
        })
        .await
        .unwrap();
    assert_eq!(stopped, (0..SHARDS).collect::<Vec<_>>());
}

fn async_channel_pair() -> (async_channel::Sender<u16>, async_channel::Receiver<u16>) {
    async_channel::bounded(usize::from(SHARDS))
}

#[madsim::test]
async fn buggify_fires_only_when_enabled() {
    assert!(
        (0..1000).all(|_| !buggify!(0.5)),
        "off unless the simulation enables it"
    );
    metronome_core::rt::rand::enable_buggify(true);
    let fired = (0..1000).filter(|_| buggify!(0.5)).count();
    assert!(
        (350..650).contains(&fired),
        "fired {fired} of 1000 at p = 0.5"
    );
}
