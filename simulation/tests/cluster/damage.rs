//! The whole-cluster simulation's damaged disk: a durable WAL record of a datanode that
//! no longer reads back (bit rot, a misdirected write), found as it restarts.

use std::path::PathBuf;

use metronome_core::data::RegionId;
use metronome_core::rt::disk::SimDisk;
use metronome_core::rt::rand;
use metronome_datanode::wal::record::HEADER_BYTES;
use metronome_datanode::wal::replay::scan_segment;
use metronome_simulation::node::SimNode;

/// Damages `datanode`'s WAL while it is down (it powers it off first) and starts it
/// again on it: its copy of the region whose record was damaged is quarantined, and the
/// metasrv replaces that copy (`metronome_metasrv::quarantine`). Says what it did.
pub fn damage_wal_and_restart(datanode: &SimNode) -> String {
    datanode.power_off();
    let damaged = damage_wal(&datanode.disk);
    madsim::runtime::Handle::current().restart(datanode.handle().id());
    match damaged {
        Some((segment, region)) => format!(
            "{}'s WAL damaged in {} (a record of region {region}), restarted on it",
            datanode.name,
            segment.display()
        ),
        None => format!("{}'s WAL had no record to damage", datanode.name),
    }
}

/// Flips the first payload byte of the first record of one of `disk`'s WAL segments,
/// chosen at random among those whose replay will see the damage for what it is (a later
/// commit follows that record, so it cannot pass for a torn tail, and its intact header
/// names its region): the segment and the region. A damaged last record would pass for a
/// torn write, which no log can tell from one: that is not simulated.
fn damage_wal(disk: &SimDisk) -> Option<(PathBuf, RegionId)> {
    let mut candidates = Vec::new();
    for (path, mut bytes) in disk.durable_files(".wal") {
        let first_commit = path
            .file_name()
            .and_then(|name| name.to_str()?.strip_suffix(".wal")?.parse::<u64>().ok());
        let Some(first_commit) = first_commit.filter(|commit| *commit >= 1) else {
            continue;
        };
        let Some(byte) = bytes.get_mut(HEADER_BYTES) else {
            continue;
        };
        *byte ^= 0xff;
        let scan = scan_segment(&bytes, first_commit, |_, _, _| {});
        if let Some(region) = scan.corruptions.first().and_then(|c| c.region) {
            candidates.push((path, region));
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (path, region) = candidates.swap_remove(rand::gen_range(0..candidates.len()));
    assert!(
        disk.damage(&path, HEADER_BYTES as u64),
        "{path:?} holds the byte"
    );
    Some((path, region))
}
