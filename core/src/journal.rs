//! A durable state machine on [`Disk`]: a checkpoint of the whole state plus a log of the
//! edits made since, the shape both region manifests and the metadata catalog take.
//!
//! On disk, in one directory:
//! - the **checkpoint** (`<name>`), the whole state at some version, replaced atomically
//!   (temp, sync, rename, sync dir). Format: a line `crc32c=<hex>`, then the JSON the
//!   checksum covers.
//! - the **edit log** (`edits-<version>.log`) of the edits made since the checkpoint of
//!   that version, each a `[len u32][crc32c u32][json]` record, appended and synced before
//!   the edit takes effect.
//!
//! Loading reads the checkpoint and then its log. A damaged record at the end of the log
//! is a torn append (never acknowledged) and is cut off, so later appends do not land
//! behind it. A checkpoint that fails its checksum or does not parse is an error naming the
//! file: the caller quarantines what it describes rather than guess.
//!
//! This module owns the format only; what a version is and when to checkpoint is the
//! caller's decision.

use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::rt::disk::{Disk, OpenOptions};

/// The bytes of a checkpoint holding `state`.
pub fn encode_checkpoint<T: Serialize>(state: &T) -> Vec<u8> {
    let json = serde_json::to_vec(state).expect("journaled state serializes");
    let mut out = format!("crc32c={:08x}\n", crc32c::crc32c(&json)).into_bytes();
    out.extend_from_slice(&json);
    out
}

/// The state in a checkpoint's bytes, or what is wrong with them.
pub fn decode_checkpoint<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no checksum line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "checksum line is not text")?;
    let expected = header
        .strip_prefix("crc32c=")
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("bad checksum line {header:?}"))?;
    let json = &bytes[newline + 1..];
    let actual = crc32c::crc32c(json);
    if actual != expected {
        return Err(format!(
            "checksum mismatch: stored {expected:08x}, computed {actual:08x}"
        ));
    }
    serde_json::from_slice(json).map_err(|error| format!("invalid checkpoint: {error}"))
}

/// The edit log that follows the checkpoint of `version` in `dir`.
pub fn edits_path(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("edits-{version}.log"))
}

/// The framed record of one edit.
pub fn encode_edit<E: Serialize>(edit: &E) -> Vec<u8> {
    let json = serde_json::to_vec(edit).expect("an edit serializes");
    let mut record = Vec::with_capacity(8 + json.len());
    record.extend_from_slice(&(json.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    record.extend_from_slice(&json);
    record
}

/// The edit at the start of `bytes` and its record's length, or `None` if the record is
/// incomplete or damaged.
pub fn decode_edit<E: DeserializeOwned>(bytes: &[u8]) -> Option<(E, usize)> {
    let header: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let json = bytes.get(8..8usize.checked_add(len)?)?;
    if crc32c::crc32c(json) != crc {
        return None;
    }
    Some((serde_json::from_slice(json).ok()?, 8 + len))
}

/// Writes `state` as the checkpoint `dir/<name>` of `version`, atomically and durably, and
/// deletes the edit logs it supersedes.
pub async fn store_checkpoint<T: Serialize>(
    disk: &Disk,
    dir: &Path,
    name: &str,
    state: &T,
    version: u64,
) -> io::Result<()> {
    disk.create_dir_all_synced(dir).await?;
    disk.write_atomic(dir.join(name), encode_checkpoint(state))
        .await?;
    let current = format!("edits-{version}.log");
    let mut removed = false;
    for entry in disk.list_dir(dir).await? {
        if entry.starts_with("edits-") && entry != current {
            disk.remove(dir.join(&entry)).await?;
            removed = true;
        }
    }
    if removed {
        disk.sync_dir(dir).await?;
    }
    Ok(())
}

/// Appends `edit` to the log after the checkpoint of `checkpoint_version` in `dir` and
/// syncs it; the caller applies the edit in memory only after this returns.
pub async fn append_edit<E: Serialize>(
    disk: &Disk,
    dir: &Path,
    checkpoint_version: u64,
    edit: &E,
) -> io::Result<()> {
    let path = edits_path(dir, checkpoint_version);
    let (file, new) = match disk.open(&path, OpenOptions::write()).await {
        Ok(file) => (file, false),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            (disk.open(&path, OpenOptions::create()).await?, true)
        }
        Err(error) => return Err(error),
    };
    file.append(encode_edit(edit)).await?;
    file.sync_data().await?;
    if new {
        // A log whose name is lost in a crash loses its synced edits with it.
        disk.sync_dir(dir).await?;
    }
    Ok(())
}

/// Size limits past which a file is taken as corrupt rather than read into memory.
#[derive(Debug, Clone, Copy)]
pub struct JournalLimits {
    pub checkpoint_bytes_max: u64,
    pub edits_bytes_max: u64,
}

/// Loads the checkpoint at `path` (`None` if there is none) and the edits of its log, in
/// order, cutting a torn record off the log's end. `version_of` says which log follows
/// the checkpoint. Errors name the file and the damage.
pub async fn load<T: DeserializeOwned, E: DeserializeOwned>(
    disk: &Disk,
    path: &Path,
    limits: JournalLimits,
    version_of: impl FnOnce(&T) -> u64,
) -> Result<Option<(T, Vec<E>)>, String> {
    let describe = |what: String| format!("checkpoint {}: {what}", path.display());
    let file = match disk.open(path, OpenOptions::read()).await {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(describe(error.to_string())),
    };
    if file.len() > limits.checkpoint_bytes_max {
        return Err(describe(format!("{} bytes is over the limit", file.len())));
    }
    let bytes = file
        .read_exact_at(file.len() as usize, 0)
        .await
        .map_err(|error| describe(error.to_string()))?;
    let state: T = decode_checkpoint(&bytes).map_err(describe)?;

    let dir = path.parent().unwrap_or(Path::new(""));
    let edits_file = edits_path(dir, version_of(&state));
    let describe_edits = |what: String| format!("edit log {}: {what}", edits_file.display());
    let log = match disk.open(&edits_file, OpenOptions::write()).await {
        Ok(log) => log,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(Some((state, Vec::new())))
        }
        Err(error) => return Err(describe_edits(error.to_string())),
    };
    if log.len() > limits.edits_bytes_max {
        return Err(describe_edits(format!(
            "{} bytes is over the limit",
            log.len()
        )));
    }
    let bytes = log
        .read_exact_at(log.len() as usize, 0)
        .await
        .map_err(|e| describe_edits(e.to_string()))?;
    let mut offset = 0usize;
    let mut edits = Vec::new();
    while let Some((edit, len)) = decode_edit(&bytes[offset..]) {
        edits.push(edit);
        offset += len;
    }
    if offset < bytes.len() {
        // An append torn by a crash: never acknowledged, and in the way of the next.
        tracing::warn!(log = %edits_file.display(), offset, "truncating a torn edit record");
        log.set_len(offset as u64)
            .await
            .map_err(|e| describe_edits(e.to_string()))?;
        log.sync_data()
            .await
            .map_err(|e| describe_edits(e.to_string()))?;
    }
    Ok(Some((state, edits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_damage_is_named() {
        let state = vec![1u32, 2, 3];
        let bytes = encode_checkpoint(&state);
        assert_eq!(decode_checkpoint::<Vec<u32>>(&bytes).unwrap(), state);
        let mut damaged = bytes.clone();
        let last = damaged.len() - 2;
        damaged[last] ^= 1;
        assert!(decode_checkpoint::<Vec<u32>>(&damaged)
            .unwrap_err()
            .contains("checksum"));
        assert!(decode_checkpoint::<Vec<u32>>(b"nonsense").is_err());
    }

    #[test]
    fn edit_records_reject_every_truncation_and_any_flipped_bit() {
        let record = encode_edit(&"an edit".to_string());
        let (edit, len) = decode_edit::<String>(&record).unwrap();
        assert_eq!((edit.as_str(), len), ("an edit", record.len()));
        for cut in 0..record.len() {
            assert!(decode_edit::<String>(&record[..cut]).is_none(), "cut {cut}");
        }
        for bit in 0..record.len() * 8 {
            let mut flipped = record.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            // A flip in the length may still frame a shorter, valid-looking record only
            // if the checksum matches, which a single flip cannot achieve.
            assert!(decode_edit::<String>(&flipped).is_none(), "bit {bit}");
        }
    }
}
