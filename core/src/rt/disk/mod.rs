//! Files and directories, through one API with two backends:
//!
//! - the real disk under a root directory ([`Disk::real`]): on a shard, data I/O goes
//!   through monoio's io_uring (or epoll-fallback) operations; elsewhere, through blocking
//!   `pread`/`pwrite`. Directory operations (create, rename, remove, list, sync) are rare
//!   (a segment roll, a manifest checkpoint) and use blocking syscalls everywhere.
//! - [`SimDisk`] ([`Disk::sim`]), an in-memory disk that remembers what was synced and
//!   what was not, so a simulated crash loses exactly what a real one may lose.
//!
//! Paths are relative to the disk's root, use only normal components (no `..`, no
//! absolute paths), and are checked on every call. Buffers are owned ([`DiskBuf`]) because
//! io_uring reads and writes them after the call returns control to the executor.
//!
//! A [`File`] belongs to the task context that opened it (it is `!Send` in production,
//! because monoio's file is). Share it on a shard with `Rc`.
//!
//! # Durability contract (what callers must do, on both backends)
//! - Data written with [`File::write_at`] or [`File::append`] is durable only after
//!   [`File::sync_data`] returns `Ok`.
//! - A created, renamed or removed name is durable only after [`Disk::sync_dir`] on its
//!   parent directory returns `Ok` (both parents, for a rename across directories).
//! - A failed `sync_data` means the unsynced writes may be gone even though reads still
//!   return them (Linux drops dirty pages after a writeback error and a later fsync
//!   succeeds): treat the file as lost from the last successful sync on.

mod aligned;
#[cfg(not(madsim))]
mod real;
mod sim;
#[cfg(not(madsim))]
pub mod startup;

pub use aligned::{AlignedBuf, DIRECT_IO_ALIGNMENT};
pub use sim::{SimDisk, SimDiskStats, SimFaults};

use std::cell::Cell;
use std::io;
use std::path::{Component, Path, PathBuf};

/// An owned buffer the disk can write from.
#[cfg(not(madsim))]
pub trait DiskBuf: monoio::buf::IoBuf + AsRef<[u8]> {}
/// An owned buffer the disk can write from.
#[cfg(madsim)]
pub trait DiskBuf: AsRef<[u8]> + 'static {}

impl DiskBuf for Vec<u8> {}
impl DiskBuf for bytes::Bytes {}
impl DiskBuf for AlignedBuf {}

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenOptions {
    /// Open for reading only.
    pub read_only: bool,
    /// Create the file if it does not exist.
    pub create: bool,
    /// Truncate the file to zero length.
    pub truncate: bool,
    /// Bypass the page cache (`O_DIRECT`): offsets, lengths and buffers must be aligned to
    /// [`DIRECT_IO_ALIGNMENT`]. Filesystems without `O_DIRECT` (tmpfs) refuse to open.
    pub direct: bool,
}

impl OpenOptions {
    /// Read an existing file.
    pub fn read() -> OpenOptions {
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        }
    }

    /// Read and write an existing file.
    pub fn write() -> OpenOptions {
        OpenOptions::default()
    }

    /// Read and write, creating the file if needed.
    pub fn create() -> OpenOptions {
        OpenOptions {
            create: true,
            ..OpenOptions::default()
        }
    }

    /// The same, with `O_DIRECT`.
    pub fn with_direct(self, direct: bool) -> OpenOptions {
        OpenOptions { direct, ..self }
    }

    /// The same, truncating.
    pub fn with_truncate(self, truncate: bool) -> OpenOptions {
        OpenOptions { truncate, ..self }
    }
}

/// A disk: the real one under a root directory, or a simulated one.
#[derive(Clone)]
pub struct Disk {
    inner: DiskInner,
}

#[derive(Clone)]
enum DiskInner {
    #[cfg(not(madsim))]
    Real(real::RealDisk),
    Sim(SimDisk),
}

impl Disk {
    /// The real disk, rooted at `root` (which must exist).
    #[cfg(not(madsim))]
    pub fn real(root: impl Into<PathBuf>) -> Disk {
        Disk {
            inner: DiskInner::Real(real::RealDisk::new(root.into())),
        }
    }

    /// A simulated disk.
    pub fn sim(disk: SimDisk) -> Disk {
        Disk {
            inner: DiskInner::Sim(disk),
        }
    }

    /// Opens `path`.
    pub async fn open(&self, path: impl AsRef<Path>, options: OpenOptions) -> io::Result<File> {
        let path = checked_path(path.as_ref())?;
        let (inner, len) = match &self.inner {
            #[cfg(not(madsim))]
            DiskInner::Real(disk) => {
                let (file, len) = disk.open(&path, options).await?;
                (FileInner::Real(file), len)
            }
            DiskInner::Sim(disk) => {
                let (file, len) = disk.open(&path, options).await?;
                (FileInner::Sim(file), len)
            }
        };
        Ok(File {
            inner,
            path,
            direct: options.direct,
            end: Cell::new(len),
            poisoned_at: Cell::new(None),
        })
    }

    /// Creates `path` and its missing parents as directories.
    pub async fn create_dir_all(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = checked_path(path.as_ref())?;
        match &self.inner {
            #[cfg(not(madsim))]
            DiskInner::Real(disk) => disk.create_dir_all(&path),
            DiskInner::Sim(disk) => disk.create_dir_all(&path).await,
        }
    }

    /// Creates `path` and its missing parents, and makes every level durable (syncs each
    /// parent directory from the root down).
    pub async fn create_dir_all_synced(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = checked_path(path.as_ref())?;
        self.create_dir_all(&path).await?;
        let mut parent = PathBuf::new();
        for component in path.components() {
            self.sync_dir(&parent).await?;
            parent.push(component);
        }
        Ok(())
    }

    /// Replaces the file at `path` with `contents` atomically and durably: write a
    /// temporary file, sync it, rename it over `path`, sync the directory. After a crash
    /// the file holds either the old contents or the new, never a mix.
    pub async fn write_atomic(&self, path: impl AsRef<Path>, contents: Vec<u8>) -> io::Result<()> {
        let path = checked_path(path.as_ref())?;
        let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
        temp_name.push(".tmp");
        let temp = path.with_file_name(temp_name);
        let file = self
            .open(&temp, OpenOptions::create().with_truncate(true))
            .await?;
        file.write_at(contents, 0).await?;
        file.sync_data().await?;
        drop(file);
        self.rename(&temp, &path).await?;
        self.sync_dir(path.parent().unwrap_or(Path::new(""))).await
    }

    /// Renames a file, replacing `to` if it exists. Durable after `sync_dir` of the parents.
    pub async fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        let from = checked_path(from.as_ref())?;
        let to = checked_path(to.as_ref())?;
        match &self.inner {
            #[cfg(not(madsim))]
            DiskInner::Real(disk) => disk.rename(&from, &to),
            DiskInner::Sim(disk) => disk.rename(&from, &to).await,
        }
    }

    /// Removes a file or an empty directory. Durable after `sync_dir` of the parent.
    pub async fn remove(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = checked_path(path.as_ref())?;
        match &self.inner {
            #[cfg(not(madsim))]
            DiskInner::Real(disk) => disk.remove(&path),
            DiskInner::Sim(disk) => disk.remove(&path).await,
        }
    }

    /// The names in directory `dir` (`""` is the root), sorted.
    pub async fn list_dir(&self, dir: impl AsRef<Path>) -> io::Result<Vec<String>> {
        let dir = checked_dir(dir.as_ref())?;
        let mut names = match &self.inner {
            #[cfg(not(madsim))]
            DiskInner::Real(disk) => disk.list_dir(&dir)?,
            DiskInner::Sim(disk) => disk.list_dir(&dir).await?,
        };
        names.sort();
        Ok(names)
    }

    /// Makes the entries of directory `dir` (`""` is the root) durable.
    pub async fn sync_dir(&self, dir: impl AsRef<Path>) -> io::Result<()> {
        let dir = checked_dir(dir.as_ref())?;
        match &self.inner {
            #[cfg(not(madsim))]
            DiskInner::Real(disk) => disk.sync_dir(&dir),
            DiskInner::Sim(disk) => disk.sync_dir(&dir).await,
        }
    }
}

/// An open file. Its length is tracked by the handle, so appends from several tasks on one
/// shard get disjoint offsets.
pub struct File {
    inner: FileInner,
    path: PathBuf,
    direct: bool,
    end: Cell<u64>,
    /// Set when an append failed: the bytes after this offset are unknown, so further
    /// appends would leave a hole. The owner must reopen (and usually recover) the file.
    poisoned_at: Cell<Option<u64>>,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("len", &self.end.get())
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

enum FileInner {
    #[cfg(not(madsim))]
    Real(real::RealFile),
    Sim(sim::SimFile),
}

impl File {
    /// The path relative to the disk root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length of the file as this handle knows it (size at open, plus what it wrote).
    pub fn len(&self) -> u64 {
        self.end.get()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `len` bytes at `offset`; fewer at the end of the file as this handle
    /// knows it ([`File::len`]). Clamping to the known length means a length read from
    /// corrupt bytes cannot make us allocate more than the file holds.
    pub async fn read_at(&self, len: usize, offset: u64) -> io::Result<Vec<u8>> {
        let len = len.min(self.end.get().saturating_sub(offset) as usize);
        if len == 0 {
            return Ok(Vec::new());
        }
        self.check_alignment("read", offset, len)?;
        let result = match &self.inner {
            #[cfg(not(madsim))]
            FileInner::Real(file) => file.read_at(len, offset, self.direct).await,
            FileInner::Sim(file) => file.read_at(len, offset).await,
        };
        result.map_err(|error| self.context(error, "read", offset, len))
    }

    /// Reads exactly `len` bytes at `offset`, or fails with `UnexpectedEof`.
    pub async fn read_exact_at(&self, len: usize, offset: u64) -> io::Result<Vec<u8>> {
        let data = self.read_at(len, offset).await?;
        if data.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: wanted {len} bytes at offset {offset}, the file ends after {}",
                    self.path.display(),
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    /// Writes all of `buf` at `offset` and gives the buffer back for reuse.
    pub async fn write_at<B: DiskBuf>(&self, buf: B, offset: u64) -> io::Result<B> {
        let len = buf.as_ref().len();
        self.check_alignment("write", offset, len)?;
        self.check_buffer_address("write", buf.as_ref())?;
        let buf = self.write_raw(buf, offset).await?;
        self.end.set(self.end.get().max(offset + len as u64));
        Ok(buf)
    }

    /// Writes `buf` at the end of the file; returns the offset it was written at.
    ///
    /// If an append fails or is cancelled, the handle is poisoned: the bytes from that
    /// offset on are unknown, so further appends and syncs fail until the file is reopened
    /// (a later append, or a concurrent one that succeeded past the hole, must never be
    /// reported durable).
    pub async fn append<B: DiskBuf>(&self, buf: B) -> io::Result<(u64, B)> {
        self.check_poison()?;
        let len = buf.as_ref().len();
        let offset = self.end.get();
        self.check_alignment("append", offset, len)?;
        self.check_buffer_address("append", buf.as_ref())?;
        // Reserve the range before awaiting, so a concurrent append gets the next one.
        self.end.set(offset + len as u64);
        let guard = PoisonOnDrop {
            file: self,
            offset,
            armed: true,
        };
        let result = self.write_raw(buf, offset).await;
        let mut guard = guard;
        guard.armed = result.is_err();
        drop(guard);
        Ok((offset, result?))
    }

    fn check_poison(&self) -> io::Result<()> {
        match self.poisoned_at.get() {
            None => Ok(()),
            Some(offset) => Err(io::Error::other(format!(
                "{}: an append at offset {offset} failed or was cancelled; reopen the file",
                self.path.display()
            ))),
        }
    }

    async fn write_raw<B: DiskBuf>(&self, buf: B, offset: u64) -> io::Result<B> {
        let len = buf.as_ref().len();
        let result = match &self.inner {
            #[cfg(not(madsim))]
            FileInner::Real(file) => file.write_at(buf, offset).await,
            FileInner::Sim(file) => file.write_at(buf, offset).await,
        };
        result.map_err(|error| self.context(error, "write", offset, len))
    }

    /// Makes everything written so far durable (`fdatasync`). Fails on a poisoned handle.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.check_poison()?;
        let result = match &self.inner {
            #[cfg(not(madsim))]
            FileInner::Real(file) => file.sync_data().await,
            FileInner::Sim(file) => file.sync_data().await,
        };
        result.map_err(|error| self.context(error, "sync", 0, 0))
    }

    /// Truncates or extends (with zeros) the file to `len` bytes. Durable after `sync_data`.
    pub async fn set_len(&self, len: u64) -> io::Result<()> {
        let result = match &self.inner {
            #[cfg(not(madsim))]
            FileInner::Real(file) => file.set_len(len),
            FileInner::Sim(file) => file.set_len(len).await,
        };
        result.map_err(|error| self.context(error, "set_len", len, 0))?;
        self.end.set(len);
        Ok(())
    }

    fn check_alignment(&self, op: &str, offset: u64, len: usize) -> io::Result<()> {
        let alignment = DIRECT_IO_ALIGNMENT as u64;
        if self.direct
            && (!offset.is_multiple_of(alignment) || !(len as u64).is_multiple_of(alignment))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: O_DIRECT {op} of {len} bytes at offset {offset} is not aligned to {alignment} bytes",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    fn check_buffer_address(&self, op: &str, buf: &[u8]) -> io::Result<()> {
        if self.direct && !(buf.as_ptr() as usize).is_multiple_of(DIRECT_IO_ALIGNMENT) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: O_DIRECT {op} needs a buffer aligned to {DIRECT_IO_ALIGNMENT} bytes (use AlignedBuf)",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Adds the path and position to an error, keeping its kind and OS error code visible.
    fn context(&self, error: io::Error, op: &str, offset: u64, len: usize) -> io::Error {
        let kind = error.kind();
        let code = error
            .raw_os_error()
            .map(|code| format!(" (os error {code})"))
            .unwrap_or_default();
        let position = if op == "sync" {
            String::new()
        } else {
            format!(" of {len} bytes at offset {offset}")
        };
        io::Error::new(
            kind,
            DiskError {
                message: format!("{}: {op}{position}: {error}{code}", self.path.display()),
                os_code: error.raw_os_error(),
            },
        )
    }
}

/// Poisons an append's file unless disarmed: a future dropped mid-write leaves the bytes
/// of its range unknown.
struct PoisonOnDrop<'a> {
    file: &'a File,
    offset: u64,
    armed: bool,
}

impl Drop for PoisonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed && self.file.poisoned_at.get().is_none() {
            self.file.poisoned_at.set(Some(self.offset));
        }
    }
}

/// The error inside every `io::Error` a [`File`] returns: a message naming the file and
/// position, and the OS error code (`EIO`, `ENOSPC`, …) when there was one.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DiskError {
    pub message: String,
    pub os_code: Option<i32>,
}

/// The OS error code behind a disk error, looking through the context [`File`] adds.
pub fn os_error_code(error: &io::Error) -> Option<i32> {
    error.raw_os_error().or_else(|| {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<DiskError>())
            .and_then(|disk_error| disk_error.os_code)
    })
}

/// Checks that `path` names something under the root: relative, normal components only.
fn checked_path(path: &Path) -> io::Result<PathBuf> {
    let checked = checked_dir(path)?;
    if checked.as_os_str().is_empty() {
        return Err(invalid_path(path, "is empty"));
    }
    Ok(checked)
}

/// Like [`checked_path`], but the empty path (the root) is allowed.
fn checked_dir(path: &Path) -> io::Result<PathBuf> {
    let mut checked = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => checked.push(part),
            Component::CurDir => {}
            _ => return Err(invalid_path(path, "must be relative, without '..'")),
        }
    }
    Ok(checked)
}

fn invalid_path(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("disk path {:?} {why}", path.display()),
    )
}

#[cfg(not(madsim))]
pub use real::DirLock;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined_to_the_root() {
        assert_eq!(
            checked_path(Path::new("wal/0001.log")).unwrap(),
            PathBuf::from("wal/0001.log")
        );
        assert_eq!(checked_path(Path::new("./a")).unwrap(), PathBuf::from("a"));
        assert_eq!(checked_dir(Path::new("")).unwrap(), PathBuf::new());
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
            let error = checked_path(Path::new(bad)).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
