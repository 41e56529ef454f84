//! The real disk: monoio (io_uring) for data I/O on shards, blocking syscalls elsewhere.

use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{AlignedBuf, DiskBuf, OpenOptions};
use crate::rt::shard::on_shard;

#[derive(Clone)]
pub(super) struct RealDisk {
    root: Arc<PathBuf>,
}

pub(super) enum RealFile {
    /// Off a shard: blocking `pread`/`pwrite`/`fdatasync`.
    Std(std::fs::File),
    /// On a shard: monoio operations (io_uring, or epoll's fallback); `std` is a second
    /// descriptor of the same open file for the metadata calls monoio lacks (`ftruncate`).
    Monoio {
        file: monoio::fs::File,
        std: std::fs::File,
    },
}

impl RealDisk {
    pub(super) fn new(root: PathBuf) -> RealDisk {
        RealDisk {
            root: Arc::new(root),
        }
    }

    fn full(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }

    pub(super) async fn open(
        &self,
        path: &Path,
        options: OpenOptions,
    ) -> io::Result<(RealFile, u64)> {
        let full = self.full(path);
        let mut std_options = std::fs::OpenOptions::new();
        std_options
            .read(true)
            .write(!options.read_only)
            .create(options.create && !options.read_only)
            .truncate(options.truncate && !options.read_only);
        if options.direct {
            std_options.custom_flags(libc::O_DIRECT);
        }
        // Opening is one short syscall; doing it synchronously keeps O_DIRECT and the
        // other flags identical on both paths.
        let file = std_options.open(&full).map_err(|error| {
            let hint = if options.direct && error.raw_os_error() == Some(libc::EINVAL) {
                " (this filesystem does not support O_DIRECT)"
            } else {
                ""
            };
            io::Error::new(
                error.kind(),
                super::DiskError {
                    message: format!("open {}: {error}{hint}", full.display()),
                    os_code: error.raw_os_error(),
                },
            )
        })?;
        let len = file.metadata()?.len();
        if on_shard() {
            let std = file.try_clone()?;
            let file = monoio::fs::File::from_std(file)?;
            Ok((RealFile::Monoio { file, std }, len))
        } else {
            Ok((RealFile::Std(file), len))
        }
    }

    pub(super) fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let full = self.full(path);
        std::fs::create_dir_all(&full).map_err(|error| naming("create directory", &full, error))
    }

    pub(super) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (self.full(from), self.full(to));
        std::fs::rename(&from, &to).map_err(|error| {
            let op = format!("rename to {}", to.display());
            naming(&op, &from, error)
        })
    }

    pub(super) fn remove(&self, path: &Path) -> io::Result<()> {
        let full = self.full(path);
        let metadata =
            std::fs::symlink_metadata(&full).map_err(|error| naming("remove", &full, error))?;
        if metadata.is_dir() {
            std::fs::remove_dir(&full)
        } else {
            std::fs::remove_file(&full)
        }
        .map_err(|error| naming("remove", &full, error))
    }

    pub(super) fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let full = self.full(dir);
        let list = |error| naming("list directory", &full, error);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&full).map_err(list)? {
            let name = entry.map_err(list)?.file_name();
            names.push(name.to_string_lossy().into_owned());
        }
        Ok(names)
    }

    pub(super) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let full = self.full(dir);
        std::fs::File::open(&full)
            .and_then(|directory| directory.sync_all())
            .map_err(|error| naming("sync directory", &full, error))
    }
}

/// `error` of `op` on `path`, with the path in its message (the OS's own names none: a
/// bare "Not a directory" leaves an operator guessing which) and its kind and OS code
/// kept.
fn naming(op: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(
        error.kind(),
        super::DiskError {
            message: format!("{op} {}: {error}", path.display()),
            os_code: error.raw_os_error(),
        },
    )
}

impl RealFile {
    pub(super) async fn read_at(
        &self,
        len: usize,
        offset: u64,
        direct: bool,
    ) -> io::Result<Vec<u8>> {
        match self {
            RealFile::Std(file) => {
                if direct {
                    // One read: a retry after a short read would be misaligned, and a
                    // short O_DIRECT read only happens at the end of the file.
                    let mut buf = AlignedBuf::zeroed(len);
                    let n = loop {
                        match file.read_at(buf.as_mut_slice(), offset) {
                            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                            other => break other?,
                        }
                    };
                    Ok(buf.as_slice()[..n].to_vec())
                } else {
                    let mut buf = vec![0u8; len];
                    let n = read_fully_std(file, &mut buf, offset)?;
                    buf.truncate(n);
                    Ok(buf)
                }
            }
            RealFile::Monoio { file, .. } => {
                if direct {
                    // One read, as above.
                    let mut buf = AlignedBuf::zeroed(len);
                    buf.set_len(0);
                    let (result, buf) = file.read_at(buf, offset).await;
                    result?;
                    Ok(buf.as_slice().to_vec())
                } else {
                    read_fully_monoio(file, Vec::with_capacity(len), len, offset).await
                }
            }
        }
    }

    pub(super) async fn write_at<B: DiskBuf>(&self, buf: B, offset: u64) -> io::Result<B> {
        match self {
            RealFile::Std(file) => {
                file.write_all_at(buf.as_ref(), offset)?;
                Ok(buf)
            }
            RealFile::Monoio { file, .. } => {
                let (result, buf) = file.write_all_at(buf, offset).await;
                result.map(|()| buf)
            }
        }
    }

    pub(super) async fn sync_data(&self) -> io::Result<()> {
        match self {
            RealFile::Std(file) => file.sync_data(),
            RealFile::Monoio { file, .. } => file.sync_data().await,
        }
    }

    pub(super) fn set_len(&self, len: u64) -> io::Result<()> {
        match self {
            RealFile::Std(file) => file.set_len(len),
            RealFile::Monoio { std, .. } => std.set_len(len),
        }
    }
}

fn read_fully_std(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Reads until `len` bytes are in `buf` or the file ends; short reads are retried.
async fn read_fully_monoio<B: monoio::buf::IoBufMut + monoio::buf::IoBuf + AsRef<[u8]>>(
    file: &monoio::fs::File,
    mut buf: B,
    len: usize,
    offset: u64,
) -> io::Result<B> {
    use monoio::buf::SliceMut;
    loop {
        let filled = buf.bytes_init();
        if filled >= len {
            return Ok(buf);
        }
        let slice = SliceMut::new(buf, filled, len);
        let (result, slice) = file.read_at(slice, offset + filled as u64).await;
        buf = slice.into_inner();
        if result? == 0 {
            return Ok(buf);
        }
    }
}

/// An exclusive lock on a data directory, held while the process runs, so that a second
/// process pointed at the same directory fails fast instead of corrupting it.
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Takes the lock file `LOCK` in `dir`, or fails naming the directory.
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        let path = dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = io::Error::last_os_error();
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "data directory {} is in use by another Metronome process ({}: {error})",
                    dir.display(),
                    path.display()
                ),
            ));
        }
        Ok(DirLock { _file: file })
    }
}
