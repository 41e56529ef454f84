//! A data directory's incarnation: a random number it is named by from its first use,
//! kept in [`INCARNATION_FILE`]. A datanode registers with it; the metasrv, seeing another
//! one than before, knows the datanode lost its copies (a replaced disk).

use metronome_core::rt::disk::{Disk, OpenOptions};
use metronome_core::rt::rand;

/// The file that names a datanode's data directory (its incarnation), in decimal.
pub const INCARNATION_FILE: &str = "incarnation";

/// This data directory's incarnation: the one it holds, or a new one for a directory
/// that holds no shard yet. A directory with shards and no incarnation was written
/// before incarnations existed, and gets one too: the metasrv compares only known ones.
pub(crate) async fn read_or_choose(disk: &Disk) -> Result<u64, String> {
    match disk.open(INCARNATION_FILE, OpenOptions::read()).await {
        Ok(file) => {
            let text = file
                .read_exact_at(file.len() as usize, 0)
                .await
                .map_err(|error| format!("cannot read {INCARNATION_FILE}: {error}"))?;
            String::from_utf8_lossy(&text)
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| {
                    format!(
                        "{INCARNATION_FILE} in the data directory holds {:?}, not a positive \
                         number: it names the directory, restore it or start on an empty one",
                        String::from_utf8_lossy(&text)
                    )
                })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let chosen = rand::gen_range(1..u64::MAX);
            disk.write_atomic(INCARNATION_FILE, format!("{chosen}\n").into_bytes())
                .await
                .map_err(|error| format!("cannot write {INCARNATION_FILE}: {error}"))?;
            Ok(chosen)
        }
        Err(error) => Err(format!("cannot open {INCARNATION_FILE}: {error}")),
    }
}
