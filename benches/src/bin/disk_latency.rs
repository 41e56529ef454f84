//! 4 KiB append + fdatasync latency, the floor under every acknowledged write.
//!
//! Cases, all appending to a file that grows from empty (as a fresh WAL segment does):
//! - `rt io_uring O_DIRECT`: `metronome_core::rt::disk` on a monoio shard, aligned buffers;
//! - `rt io_uring buffered`: the same without O_DIRECT;
//! - `std pwrite+fdatasync`: plain `std::fs`, the peer every database starts from;
//! - `std O_DIRECT pwrite+fdatasync`: plain `std::fs` with O_DIRECT, to separate the effect
//!   of io_uring from the effect of bypassing the page cache.
//!
//! Each round runs every case once, in a rotated order, so drift on this shared machine
//! falls on all cases alike. Run it in release:
//!
//! ```text
//! cargo run --release -p metronome-benches --bin disk_latency -- --dir /path/on/the/disk
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use clap::Parser;
use metronome_benches::{markdown_table, LatencyRecorder};
use metronome_core::rt::disk::{AlignedBuf, Disk, OpenOptions};
use metronome_core::rt::shard::{self, IoDriverChoice, ShardsConfig};

#[derive(Parser, Clone)]
#[command(about = "4 KiB append + fdatasync latency: rt::disk (io_uring) next to std::fs")]
struct Args {
    /// Directory on the disk to measure (files are created and removed there).
    #[arg(long, default_value = "target/bench-disk")]
    dir: PathBuf,
    /// Appends per case per round.
    #[arg(long, default_value_t = 1000)]
    ops: u32,
    /// Rounds; the case order rotates every round.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Bytes per append (a multiple of 4096 for the O_DIRECT cases).
    #[arg(long, default_value_t = 4096)]
    block_bytes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    RtUringDirect,
    RtUringBuffered,
    StdBuffered,
    StdDirect,
}

const CASES: [Case; 4] = [
    Case::RtUringDirect,
    Case::RtUringBuffered,
    Case::StdBuffered,
    Case::StdDirect,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::RtUringDirect => "rt io_uring O_DIRECT",
            Case::RtUringBuffered => "rt io_uring buffered",
            Case::StdBuffered => "std pwrite+fdatasync",
            Case::StdDirect => "std O_DIRECT pwrite+fdatasync",
        }
    }
}

async fn run_case(
    case: Case,
    args: &Args,
    disk: &Disk,
    recorder: &mut LatencyRecorder,
) -> std::io::Result<()> {
    let name = format!("bench-{}.log", case as u8);
    let path = args.dir.join(&name);
    let _ = std::fs::remove_file(&path);
    match case {
        Case::RtUringDirect | Case::RtUringBuffered => {
            let direct = case == Case::RtUringDirect;
            let file = disk
                .open(&name, OpenOptions::create().with_direct(direct))
                .await?;
            let mut aligned = Some(AlignedBuf::padded_copy(&vec![0x5a; args.block_bytes]));
            let mut plain = Some(vec![0x5au8; args.block_bytes]);
            for _ in 0..args.ops {
                let start = Instant::now();
                if direct {
                    let (_, buf) = file
                        .append(aligned.take().expect("buffer returned"))
                        .await?;
                    aligned = Some(buf);
                } else {
                    let (_, buf) = file.append(plain.take().expect("buffer returned")).await?;
                    plain = Some(buf);
                }
                file.sync_data().await?;
                recorder.record(start.elapsed());
            }
        }
        Case::StdBuffered | Case::StdDirect => {
            let mut options = std::fs::OpenOptions::new();
            options.read(true).write(true).create(true).truncate(true);
            let data = if case == Case::StdDirect {
                options.custom_flags(libc::O_DIRECT);
                AlignedBuf::padded_copy(&vec![0x5a; args.block_bytes])
            } else {
                let mut buf = AlignedBuf::zeroed(args.block_bytes);
                buf.as_mut_slice().fill(0x5a);
                buf
            };
            let file = options.open(&path)?;
            let mut offset = 0u64;
            for _ in 0..args.ops {
                let start = Instant::now();
                file.write_all_at(data.as_slice(), offset)?;
                file.sync_data()?;
                recorder.record(start.elapsed());
                offset += data.len() as u64;
            }
        }
    }
    std::fs::remove_file(&path)?;
    Ok(())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let (sender, results) = mpsc::channel();
    let config = ShardsConfig {
        count: 1,
        pin_to_cores: true,
        io_driver: IoDriverChoice::IoUring,
        uring_entries: 256,
    };
    let shard_args = args.clone();
    let shards = shard::start(&config, move |context| {
        let args = shard_args.clone();
        let sender = sender.clone();
        async move {
            let disk = Disk::real(args.dir.clone());
            let mut recorders: Vec<LatencyRecorder> = CASES
                .iter()
                .map(|c| LatencyRecorder::new(c.name()))
                .collect();
            let mut outcome = Ok(());
            'rounds: for round in 0..args.rounds as usize {
                for i in 0..CASES.len() {
                    let index = (round + i) % CASES.len();
                    if let Err(error) =
                        run_case(CASES[index], &args, &disk, &mut recorders[index]).await
                    {
                        outcome = Err(format!("{}: {error}", CASES[index].name()));
                        break 'rounds;
                    }
                    recorders[index].end_round();
                }
            }
            let _ = sender.send((context.driver, outcome.map(|()| recorders)));
        }
    })
    .map_err(|e| e.to_string())?;
    let (driver, outcome) = results
        .recv()
        .map_err(|_| "the benchmark shard died".to_string())?;
    shards.stop_and_join().map_err(|e| e.to_string())?;
    let recorders = outcome?;
    let summaries: Vec<_> = recorders.iter().map(LatencyRecorder::summary).collect();
    println!(
        "## {} B append + fdatasync, {} rounds × {} ops per case, shard driver {driver}, dir {}\n",
        args.block_bytes,
        args.rounds,
        args.ops,
        args.dir.display()
    );
    println!("{}", markdown_table(&summaries, Case::StdBuffered.name()));
    Ok(())
}
