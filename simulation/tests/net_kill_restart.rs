//! Two simulated nodes exchange frames over `rt::net` while one of them loses power again
//! and again. The server persists each frame to its SimDisk and syncs before answering, so
//! every frame the client saw acknowledged must be in the server's log afterwards.
#![cfg(madsim)]

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use metronome_core::rt::disk::{Disk, OpenOptions, SimFaults};
use metronome_core::rt::net::{Connection, FrameLimits, Listener};
use metronome_core::rt::{rand, task, time};
use metronome_simulation::node::SimNode;

const SERVER_PORT: u16 = 7000;
const RECORD_BYTES: u64 = 8;
const FRAMES: u64 = 200;
const POWER_CYCLES: usize = 4;

fn server_address() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], SERVER_PORT))
}

/// Opens the log, dropping a torn partial record at its end, and serves appends.
async fn server_main(disk: Disk) {
    let file = match disk.open("log", OpenOptions::write()).await {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let file = disk.open("log", OpenOptions::create()).await.unwrap();
            disk.sync_dir("").await.unwrap();
            file
        }
        Err(error) => panic!("opening the log: {error}"),
    };
    let whole = file.len() / RECORD_BYTES * RECORD_BYTES;
    if whole != file.len() {
        file.set_len(whole).await.unwrap();
        file.sync_data().await.unwrap();
    }
    let file = Rc::new(file);
    let listener = Listener::bind_tcp(
        SocketAddr::from(([0, 0, 0, 0], SERVER_PORT)),
        FrameLimits::default(),
    )
    .await
    .unwrap();
    loop {
        let Ok(connection) = listener.accept().await else {
            continue;
        };
        task::spawn_local(serve(connection, file.clone()));
    }
}

async fn serve(mut connection: Connection, file: Rc<metronome_core::rt::disk::File>) {
    while let Ok(Some(frame)) = connection.recv().await {
        assert_eq!(
            frame.len() as u64,
            RECORD_BYTES,
            "the client sends whole records"
        );
        file.append(frame.to_vec()).await.unwrap();
        file.sync_data().await.unwrap();
        // Acknowledge only what is durable.
        if connection.send(frame).await.is_err() {
            return;
        }
    }
}

/// Sends records 0..FRAMES, retrying each until acknowledged; returns the acknowledged
/// ones and how many times it had to reconnect.
async fn client_main() -> (Vec<u64>, u32) {
    let mut reconnects = 0u32;
    let mut acknowledged = Vec::new();
    let mut connection: Option<Connection> = None;
    let mut attempts = 0u32;
    let mut sequence = 0u64;
    while sequence < FRAMES {
        attempts += 1;
        assert!(attempts < 100_000, "the client makes progress");
        if connection.is_none() {
            let connect = Connection::connect_tcp(server_address(), FrameLimits::default());
            match time::timeout(Duration::from_secs(1), connect).await {
                Ok(Ok(fresh)) => {
                    reconnects += u32::from(sequence > 0);
                    connection = Some(fresh);
                }
                _ => {
                    time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let open = connection.as_mut().expect("connected above");
        let frame = Bytes::copy_from_slice(&sequence.to_le_bytes());
        let round_trip = async {
            open.send(frame.clone()).await?;
            open.recv().await
        };
        match time::timeout(Duration::from_secs(1), round_trip).await {
            Ok(Ok(Some(reply))) => {
                assert_eq!(reply, frame, "the server echoes the record it stored");
                acknowledged.push(sequence);
                sequence += 1;
            }
            _ => {
                connection = None;
                time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (acknowledged, reconnects)
}

#[madsim::test]
async fn acknowledged_frames_survive_server_power_loss() {
    let faults = SimFaults {
        latency_max: Duration::from_millis(2),
        torn_write_probability: 0.5,
        ..SimFaults::default()
    };
    let server = SimNode::start("server", server_address().ip(), faults, server_main);
    let client = SimNode::idle("client", "10.0.0.2".parse().unwrap());
    let client_task = client.handle().spawn(client_main());

    for _ in 0..POWER_CYCLES {
        time::sleep(Duration::from_millis(rand::gen_range(50..800))).await;
        server.power_cycle();
    }
    let (acknowledged, reconnects) = client_task.await.expect("the client finishes");
    assert!(
        reconnects >= 1,
        "the power cycles hit the client mid-stream"
    );
    assert_eq!(acknowledged, (0..FRAMES).collect::<Vec<_>>());

    server.power_off();
    assert_eq!(server.disk.stats().crashes, POWER_CYCLES as u64 + 1);
    let disk = Disk::sim(server.disk.clone());
    let log = disk
        .open("log", OpenOptions::read())
        .await
        .expect("the log is durable");
    let bytes = log.read_at(log.len() as usize, 0).await.unwrap();
    let stored: BTreeSet<u64> = bytes
        .chunks_exact(RECORD_BYTES as usize)
        .map(|record| u64::from_le_bytes(record.try_into().unwrap()))
        .collect();
    let lost: Vec<u64> = acknowledged
        .iter()
        .copied()
        .filter(|s| !stored.contains(s))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(
        stored.iter().all(|s| *s < FRAMES),
        "no phantom records: {stored:?}"
    );
}
