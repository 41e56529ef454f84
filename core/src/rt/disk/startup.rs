//! Blocking file operations for process startup, before any runtime exists: reading the
//! configuration file and creating the data directory. They take absolute or relative OS
//! paths (a config file may live anywhere), so they are not part of [`super::Disk`], and
//! they exist only in production builds: a simulation never starts a process this way.
//! The process's own figures under `/proc/self` (for `/metrics`) are read with them too.

use std::io;
use std::path::Path;

/// Reads a whole text file (the configuration).
pub fn read_to_string(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

/// Creates a directory and its missing parents (the data directory).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)
}

/// Counts the entries of a directory (for `/proc/self/fd`: the open descriptors). Blocks;
/// for callers off the shards.
pub fn count_dir_entries(path: &Path) -> io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(path)? {
        entry?;
        count += 1;
    }
    Ok(count)
}

/// Writes a small file whole and syncs it (a supervisor's notes, before anything starts).
/// Blocks; for callers off the shards.
pub fn write_synced(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
