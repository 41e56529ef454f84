//! Buffers aligned for `O_DIRECT`.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// The alignment `O_DIRECT` needs for offsets, lengths and buffer addresses: the logical
/// block size of every disk we run on (4 KiB also covers 512-byte-sector disks).
pub const DIRECT_IO_ALIGNMENT: usize = 4096;

/// A zero-initialised heap buffer whose address and capacity are multiples of
/// [`DIRECT_IO_ALIGNMENT`]. Its length (the bytes written or read) may be anything up to
/// the capacity; for `O_DIRECT` it must itself be a multiple of the alignment.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only read the initialised bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `len` zero bytes, its capacity rounded up to the alignment.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let capacity = len
            .checked_next_multiple_of(DIRECT_IO_ALIGNMENT)
            .expect("aligned buffer capacity overflows usize")
            .max(DIRECT_IO_ALIGNMENT);
        let layout = Self::layout(capacity);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len, capacity }
    }

    /// A buffer holding a copy of `data`, zero-padded up to a multiple of the alignment.
    pub fn padded_copy(data: &[u8]) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(data.len());
        buf.as_mut_slice()[..data.len()].copy_from_slice(data);
        buf.len = buf.capacity;
        buf
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, DIRECT_IO_ALIGNMENT).expect("aligned buffer layout")
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the length; the bytes up to the capacity are always initialised.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "length {len} over capacity {}",
            self.capacity
        );
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len <= capacity` bytes are allocated and initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this very layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

// SAFETY: the pointer stays valid and the first `len` bytes initialised while the buffer
// lives; monoio holds the buffer by value for the whole operation.
#[cfg(not(madsim))]
unsafe impl monoio::buf::IoBuf for AlignedBuf {
    fn read_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
}

// SAFETY: `capacity` bytes are allocated (and zero-initialised), so the kernel may write
// up to `bytes_total`; `set_init` only records how many it wrote.
#[cfg(not(madsim))]
unsafe impl monoio::buf::IoBufMut for AlignedBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn bytes_total(&mut self) -> usize {
        self.capacity
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.len = pos;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_and_zeroed() {
        for len in [0, 1, 4095, 4096, 4097, 65536] {
            let buf = AlignedBuf::zeroed(len);
            assert_eq!(buf.as_slice().as_ptr() as usize % DIRECT_IO_ALIGNMENT, 0);
            assert_eq!(buf.capacity() % DIRECT_IO_ALIGNMENT, 0);
            assert!(buf.capacity() >= len);
            assert_eq!(buf.len(), len);
            assert!(buf.as_slice().iter().all(|&b| b == 0));
        }
        let padded = AlignedBuf::padded_copy(b"hello");
        assert_eq!(padded.len(), DIRECT_IO_ALIGNMENT);
        assert_eq!(&padded.as_slice()[..5], b"hello");
        assert!(padded.as_slice()[5..].iter().all(|&b| b == 0));
    }
}
