//! `SimDisk`: an in-memory disk that is faithful to what a crash may lose.
//!
//! madsim's own file system keeps unsynced data across a simulated crash, which would hide
//! exactly the bugs the simulation exists to find. This one tracks, per file, the *live*
//! bytes (what reads return: the page cache) and the *durable* bytes (what survives power
//! loss), and per directory the live and durable entries:
//!
//! - `write_at`/`set_len` change live bytes and queue a pending operation;
//!   `sync_data` applies the pending operations to the durable bytes;
//! - `open(create)`, `rename`, `remove` and `create_dir_all` change live entries;
//!   `sync_dir(d)` makes the entries directly under `d` durable;
//! - [`SimDisk::crash`] throws away everything live that is not durable. Seeded, it may
//!   keep some of each file's unsynced writes (in order, the last of them torn), and may
//!   keep a directory's unsynced entries (a journal that happened to commit). Handles
//!   opened before the crash fail from then on, as the process that held them is gone.
//!
//! Latency injection sleeps with `rt::time::sleep_local`, so a disk with latency must be
//! used from a shard (or a madsim node).
//!
//! Faults are seeded and off unless a test turns them on ([`SimFaults`]): EIO on read,
//! write and sync; a full disk (ENOSPC); a latent corrupted read (a flipped bit that stays
//! in the stored data, found only by checksums); a torn last write at crash; and latency.
//! Every injected fault is logged with the disk's seed.
//!
//! The model is plain data behind a mutex; only latency injection awaits (outside the
//! lock), so the disk works in unit tests with any executor and in madsim.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;

use super::{DiskBuf, OpenOptions};
use crate::rt::rand::{seeded, SeededRng};

/// Which faults a [`SimDisk`] injects. The default injects none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimFaults {
    /// Probability that a read fails with EIO.
    pub read_error_probability: f64,
    /// Probability that a write fails with EIO (and changes nothing).
    pub write_error_probability: f64,
    /// Probability that `sync_data` or `sync_dir` fails with EIO. A failed `sync_data`
    /// drops the pending writes from durability, as Linux does after a writeback error.
    pub sync_error_probability: f64,
    /// Probability that a read returns, and keeps storing, one flipped bit.
    pub corrupt_read_probability: f64,
    /// Probability, per file at crash, that part of its unsynced writes survives: a
    /// random number of them in full, in the order they were made, then a random prefix
    /// of the next one (writeback had got that far).
    pub torn_write_probability: f64,
    /// Probability, per directory at crash, that its unsynced entries survive (a journal
    /// that happened to commit). Decided per directory: a rename across two directories
    /// may then keep both names or neither, which real journaling filesystems do not.
    pub unsynced_dir_survives_probability: f64,
    /// Total live bytes of file data the disk holds before writes fail with ENOSPC.
    pub capacity_bytes: Option<u64>,
    /// Each operation waits a uniformly random time up to this.
    pub latency_max: Duration,
}

/// What a [`SimDisk`] did, for tests to assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    pub reads: u64,
    pub writes: u64,
    pub syncs: u64,
    pub crashes: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub sync_errors: u64,
    pub disk_full_errors: u64,
    pub corrupt_reads: u64,
    pub torn_writes: u64,
    pub surviving_unsynced_dirs: u64,
}

/// One node's simulated disk. Clones share it; give each simulated node its own.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

struct State {
    seed: u64,
    rng: SeededRng,
    faults: SimFaults,
    /// Bumped by every crash; handles from an older generation are dead.
    generation: u64,
    inode_next: u64,
    inodes: BTreeMap<u64, Inode>,
    live: BTreeMap<PathBuf, Entry>,
    durable: BTreeMap<PathBuf, Entry>,
    stats: SimDiskStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Pending {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Pending::Write { offset, data } => write_into(bytes, *offset, data),
            Pending::SetLen(len) => bytes.resize(*len as usize, 0),
        }
    }
}

fn write_into(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(data);
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl SimDisk {
    /// An empty disk with no faults; `seed` drives every random choice it makes.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk::with_faults(seed, SimFaults::default())
    }

    /// An empty disk injecting `faults`.
    pub fn with_faults(seed: u64, faults: SimFaults) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                seed,
                rng: seeded(seed),
                faults,
                generation: 0,
                inode_next: 1,
                inodes: BTreeMap::new(),
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
                stats: SimDiskStats::default(),
            })),
        }
    }

    /// Replaces the fault configuration (for example: none while loading, some later).
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats.clone()
    }

    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// Simulates a disk replaced by a new one: every file and directory is gone, and
    /// every open handle dies (call it with the node down).
    pub fn wipe(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.inodes.clear();
        state.live.clear();
        state.durable.clear();
    }

    /// Every file whose name ends with `suffix`, with the bytes a restart would find in
    /// it (its durable ones), by path.
    pub fn durable_files(&self, suffix: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let state = self.lock();
        state
            .durable
            .iter()
            .filter(|(path, _)| path.to_string_lossy().ends_with(suffix))
            .filter_map(|(path, entry)| match entry {
                Entry::File(inode) => {
                    Some((path.clone(), state.inodes.get(inode)?.durable.clone()))
                }
                Entry::Dir => None,
            })
            .collect()
    }

    /// Simulates damage to stored data (bit rot, a misdirected write): flips every bit of
    /// byte `offset` of file `path`, in what survives a restart and in what reads return.
    /// Call it with the node down. False if the file holds no such byte.
    pub fn damage(&self, path: &Path, offset: u64) -> bool {
        let mut state = self.lock();
        let Some(Entry::File(inode)) = state.durable.get(path).copied() else {
            return false;
        };
        let Some(inode) = state.inodes.get_mut(&inode) else {
            return false;
        };
        let at = offset as usize;
        if at >= inode.durable.len() {
            return false;
        }
        inode.durable[at] ^= 0xff;
        if let Some(byte) = inode.live.get_mut(at) {
            *byte ^= 0xff;
        }
        tracing::warn!(path = %path.display(), offset, "simulated damage to stored data");
        true
    }

    /// Simulates power loss: everything not durable is lost (within the seeded
    /// allowances for torn writes and surviving directories), and every open handle dies.
    pub fn crash(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        state.generation += 1;
        state.stats.crashes += 1;

        // Directory entries: back to the durable ones, unless a directory's journal
        // happened to commit its unsynced changes.
        let mut dirty_dirs: Vec<PathBuf> = Vec::new();
        for path in state.live.keys().chain(state.durable.keys()) {
            if state.live.get(path) != state.durable.get(path) {
                let dir = parent_of(path);
                if !dirty_dirs.contains(&dir) {
                    dirty_dirs.push(dir);
                }
            }
        }
        let mut entries = state.durable.clone();
        for dir in dirty_dirs {
            if state
                .rng
                .gen_bool(state.faults.unsynced_dir_survives_probability)
            {
                state.stats.surviving_unsynced_dirs += 1;
                entries.retain(|path, _| parent_of(path) != dir);
                for (path, entry) in state.live.iter() {
                    if parent_of(path) == dir {
                        entries.insert(path.clone(), *entry);
                    }
                }
            }
        }
        // An entry whose directory did not survive is gone with it.
        let mut orphans: Vec<PathBuf> = Vec::new();
        for path in entries.keys() {
            let mut ancestor = parent_of(path);
            while !ancestor.as_os_str().is_empty() {
                if entries.get(&ancestor) != Some(&Entry::Dir) {
                    orphans.push(path.clone());
                    break;
                }
                ancestor = parent_of(&ancestor);
            }
        }
        for orphan in orphans {
            entries.remove(&orphan);
        }
        state.live = entries.clone();
        state.durable = entries;

        // File data: back to the durable bytes, perhaps with a torn last write.
        let referenced: Vec<u64> = state
            .live
            .values()
            .filter_map(|entry| match entry {
                Entry::File(inode) => Some(*inode),
                Entry::Dir => None,
            })
            .collect();
        state.inodes.retain(|inode, _| referenced.contains(inode));
        for (inode_id, inode) in state.inodes.iter_mut() {
            if !inode.pending.is_empty() && state.rng.gen_bool(state.faults.torn_write_probability)
            {
                // Writeback got through `kept` operations, and part of the next one.
                let kept = state.rng.gen_range(0..=inode.pending.len());
                for pending in &inode.pending[..kept] {
                    pending.apply(&mut inode.durable);
                }
                let mut torn_bytes = 0;
                if let Some(Pending::Write { offset, data }) = inode.pending.get(kept) {
                    torn_bytes = state.rng.gen_range(0..=data.len());
                    write_into(&mut inode.durable, *offset, &data[..torn_bytes]);
                }
                state.stats.torn_writes += 1;
                tracing::warn!(
                    seed = state.seed,
                    inode = inode_id,
                    unsynced = inode.pending.len(),
                    kept,
                    torn_bytes,
                    "SimDisk: crash kept part of the unsynced writes"
                );
            }
            inode.pending.clear();
            inode.live = inode.durable.clone();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("SimDisk state poisoned")
    }

    /// Waits the injected latency, if any, outside the lock.
    async fn delay(&self) {
        let delay = {
            let mut state = self.lock();
            let latency_max = state.faults.latency_max;
            if latency_max.is_zero() {
                return;
            }
            state.rng.gen_range(Duration::ZERO..=latency_max)
        };
        crate::rt::time::sleep_local(delay).await;
    }

    pub(super) async fn open(
        &self,
        path: &Path,
        options: OpenOptions,
    ) -> io::Result<(SimFile, u64)> {
        self.delay().await;
        let mut state = self.lock();
        let state = &mut *state;
        let parent = parent_of(path);
        if !parent.as_os_str().is_empty() && state.live.get(&parent) != Some(&Entry::Dir) {
            return Err(os_error(libc::ENOENT));
        }
        let inode = match state.live.get(path) {
            Some(Entry::Dir) => return Err(os_error(libc::EISDIR)),
            Some(Entry::File(inode)) => *inode,
            None if options.create && !options.read_only => {
                let inode = state.inode_next;
                state.inode_next += 1;
                state.inodes.insert(inode, Inode::default());
                state.live.insert(path.to_path_buf(), Entry::File(inode));
                inode
            }
            None => return Err(os_error(libc::ENOENT)),
        };
        let file = state
            .inodes
            .get_mut(&inode)
            .expect("entry points at an inode");
        if options.truncate && !options.read_only {
            file.live.clear();
            file.pending.push(Pending::SetLen(0));
        }
        let len = file.live.len() as u64;
        Ok((
            SimFile {
                disk: self.clone(),
                inode,
                generation: state.generation,
                path: path.to_path_buf(),
                read_only: options.read_only,
            },
            len,
        ))
    }

    pub(super) async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.delay().await;
        let mut state = self.lock();
        let mut prefix = PathBuf::new();
        for component in path.components() {
            prefix.push(component);
            match state.live.get(&prefix) {
                Some(Entry::Dir) => {}
                Some(Entry::File(_)) => return Err(os_error(libc::ENOTDIR)),
                None => {
                    state.live.insert(prefix.clone(), Entry::Dir);
                }
            }
        }
        Ok(())
    }

    pub(super) async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.delay().await;
        let mut state = self.lock();
        let to_parent = parent_of(to);
        if !to_parent.as_os_str().is_empty() && state.live.get(&to_parent) != Some(&Entry::Dir) {
            return Err(os_error(libc::ENOENT));
        }
        match state.live.get(from).copied() {
            None => Err(os_error(libc::ENOENT)),
            // Directory renames would need the whole subtree moved; nothing needs them.
            Some(Entry::Dir) => Err(os_error(libc::EISDIR)),
            Some(entry @ Entry::File(_)) => {
                if state.live.get(to) == Some(&Entry::Dir) {
                    return Err(os_error(libc::EISDIR));
                }
                state.live.remove(from);
                state.live.insert(to.to_path_buf(), entry);
                Ok(())
            }
        }
    }

    pub(super) async fn remove(&self, path: &Path) -> io::Result<()> {
        self.delay().await;
        let mut state = self.lock();
        match state.live.get(path) {
            None => Err(os_error(libc::ENOENT)),
            Some(Entry::Dir) if state.live.keys().any(|p| parent_of(p) == path) => {
                Err(os_error(libc::ENOTEMPTY))
            }
            Some(_) => {
                state.live.remove(path);
                Ok(())
            }
        }
    }

    pub(super) async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.delay().await;
        let state = self.lock();
        if !dir.as_os_str().is_empty() && state.live.get(dir) != Some(&Entry::Dir) {
            return Err(os_error(libc::ENOENT));
        }
        Ok(state
            .live
            .keys()
            .filter(|path| parent_of(path) == dir)
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect())
    }

    pub(super) async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.delay().await;
        let mut state = self.lock();
        let state = &mut *state;
        if !dir.as_os_str().is_empty() && state.live.get(dir) != Some(&Entry::Dir) {
            return Err(os_error(libc::ENOENT));
        }
        state.stats.syncs += 1;
        if state.rng.gen_bool(state.faults.sync_error_probability) {
            state.stats.sync_errors += 1;
            tracing::warn!(seed = state.seed, dir = %dir.display(), "SimDisk: injected EIO on sync_dir");
            return Err(os_error(libc::EIO));
        }
        // A directory whose durable entry goes away (or is replaced) takes its durable
        // contents with it, so a later directory of the same name starts empty.
        let vanished: Vec<PathBuf> = state
            .durable
            .iter()
            .filter(|(path, entry)| {
                **entry == Entry::Dir
                    && parent_of(path) == dir
                    && state.live.get(*path) != Some(&Entry::Dir)
            })
            .map(|(path, _)| path.clone())
            .collect();
        for gone in &vanished {
            state
                .durable
                .retain(|path, _| !path.starts_with(gone) || path == gone);
        }
        state.durable.retain(|path, _| parent_of(path) != dir);
        for (path, entry) in state.live.iter() {
            if parent_of(path) == dir {
                state.durable.insert(path.clone(), *entry);
            }
        }
        Ok(())
    }
}

impl State {
    /// Bytes of the files reachable by name: what the disk holds once deleted files' open
    /// handles are gone.
    fn live_bytes_reachable(&self) -> u64 {
        self.live
            .values()
            .filter_map(|entry| match entry {
                Entry::File(inode) => self.inodes.get(inode),
                Entry::Dir => None,
            })
            .map(|inode| inode.live.len() as u64)
            .sum()
    }
}

/// A handle to a file on a [`SimDisk`].
pub(super) struct SimFile {
    disk: SimDisk,
    inode: u64,
    generation: u64,
    path: PathBuf,
    read_only: bool,
}

impl SimFile {
    /// The state and this file's inode, if the handle is still alive.
    fn with_inode<R>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<R>) -> io::Result<R> {
        let mut state = self.disk.lock();
        if state.generation != self.generation {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!(
                    "SimDisk: the handle for {} was opened before a crash",
                    self.path.display()
                ),
            ));
        }
        f(&mut state, self.inode)
    }

    pub(super) async fn read_at(&self, len: usize, offset: u64) -> io::Result<Vec<u8>> {
        self.disk.delay().await;
        self.with_inode(|state, inode_id| {
            state.stats.reads += 1;
            if state.rng.gen_bool(state.faults.read_error_probability) {
                state.stats.read_errors += 1;
                tracing::warn!(seed = state.seed, path = %self.path.display(), offset, len, "SimDisk: injected EIO on read");
                return Err(os_error(libc::EIO));
            }
            let corrupt = state.rng.gen_bool(state.faults.corrupt_read_probability);
            let flip_at: usize = state.rng.gen();
            let flip_bit: u8 = state.rng.gen_range(0..8);
            let inode = state.inodes.get_mut(&inode_id).expect("live handle has an inode");
            let start = (offset as usize).min(inode.live.len());
            let end = start.saturating_add(len).min(inode.live.len());
            if corrupt && end > start {
                // Latent corruption: the stored bit is wrong from now on, durably.
                let at = start + flip_at % (end - start);
                let mask = 1u8 << flip_bit;
                inode.live[at] ^= mask;
                if at < inode.durable.len() {
                    inode.durable[at] ^= mask;
                }
                state.stats.corrupt_reads += 1;
                tracing::warn!(seed = state.seed, path = %self.path.display(), at, "SimDisk: injected a corrupted bit");
            }
            Ok(inode.live[start..end].to_vec())
        })
    }

    pub(super) async fn write_at<B: DiskBuf>(&self, buf: B, offset: u64) -> io::Result<B> {
        self.disk.delay().await;
        self.with_inode(|state, inode_id| {
            if self.read_only {
                return Err(os_error(libc::EBADF));
            }
            let data = buf.as_ref();
            state.stats.writes += 1;
            if state.rng.gen_bool(state.faults.write_error_probability) {
                state.stats.write_errors += 1;
                tracing::warn!(seed = state.seed, path = %self.path.display(), offset, len = data.len(), "SimDisk: injected EIO on write");
                return Err(os_error(libc::EIO));
            }
            let live_len = state.inodes[&inode_id].live.len() as u64;
            let new_len = live_len.max(offset + data.len() as u64);
            if let Some(capacity) = state.faults.capacity_bytes {
                let used = state.live_bytes_reachable();
                if used.saturating_sub(live_len) + new_len > capacity {
                    state.stats.disk_full_errors += 1;
                    tracing::warn!(seed = state.seed, path = %self.path.display(), capacity, "SimDisk: disk full");
                    return Err(os_error(libc::ENOSPC));
                }
            }
            let inode = state.inodes.get_mut(&inode_id).expect("live handle has an inode");
            write_into(&mut inode.live, offset, data);
            inode.pending.push(Pending::Write {
                offset,
                data: data.to_vec(),
            });
            Ok(())
        })?;
        Ok(buf)
    }

    pub(super) async fn sync_data(&self) -> io::Result<()> {
        self.disk.delay().await;
        self.with_inode(|state, inode_id| {
            state.stats.syncs += 1;
            let fail = state.rng.gen_bool(state.faults.sync_error_probability);
            let inode = state.inodes.get_mut(&inode_id).expect("live handle has an inode");
            if fail {
                // Linux marks the failed pages clean: the data stays readable until a
                // crash, but no later sync will ever make it durable.
                inode.pending.clear();
                state.stats.sync_errors += 1;
                tracing::warn!(seed = state.seed, path = %self.path.display(), "SimDisk: injected EIO on sync_data");
                return Err(os_error(libc::EIO));
            }
            for pending in inode.pending.drain(..) {
                pending.apply(&mut inode.durable);
            }
            Ok(())
        })
    }

    pub(super) async fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.delay().await;
        self.with_inode(|state, inode_id| {
            if self.read_only {
                return Err(os_error(libc::EBADF));
            }
            let live_len = state.inodes[&inode_id].live.len() as u64;
            if let Some(capacity) = state.faults.capacity_bytes {
                let used: u64 = state
                    .inodes
                    .values()
                    .map(|inode| inode.live.len() as u64)
                    .sum();
                if len > live_len && used - live_len + len > capacity {
                    state.stats.disk_full_errors += 1;
                    return Err(os_error(libc::ENOSPC));
                }
            }
            let inode = state
                .inodes
                .get_mut(&inode_id)
                .expect("live handle has an inode");
            inode.live.resize(len as usize, 0);
            inode.pending.push(Pending::SetLen(len));
            Ok(())
        })
    }
}
