//! A pool of byte buffers with explicit release.
//!
//! Buffers come in size classes and are recycled through per-class free
//! lists. Like Netty's pooled direct buffers, a [`PooledBuf`] is not given
//! back when it goes out of scope: the owner must call [`BufPool::release`].
//! A buffer that is dropped instead stays allocated and counted as
//! outstanding forever.

mod budget;
mod waiting;

pub use budget::{BudgetPool, BUDGET_BUFFER};
pub use waiting::WaitingPool;

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Capacities handed out, smallest first. Larger requests get an exact,
/// unpooled allocation.
const SIZE_CLASSES: [usize; 8] = [64, 128, 256, 512, 1024, 4096, 16384, 65536];
/// Free buffers kept per class; beyond this they go back to the allocator.
const MAX_FREE_PER_CLASS: usize = 1024;
const ALIGN: usize = 16;

/// A byte buffer borrowed from a [`BufPool`].
pub struct PooledBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
}

// SAFETY: a PooledBuf exclusively owns its memory block; moving it to another
// thread moves that ownership.
unsafe impl Send for PooledBuf {}

/// Writing past a buffer's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub capacity: usize,
    pub needed: usize,
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "buffer of {} bytes cannot hold {} bytes",
            self.capacity, self.needed
        )
    }
}

impl std::error::Error for Overflow {}

impl PooledBuf {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the block were written by put_*.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole block, for reading into; see [`PooledBuf::set_len`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: the block is `capacity` bytes, zeroed at allocation, and
        // exclusively ours while we hold `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// Marks the first `len` bytes as filled.
    pub fn set_len(&mut self, len: usize) -> Result<(), Overflow> {
        self.check_room(len, 0)?;
        self.len = len;
        Ok(())
    }

    pub fn put_slice(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        self.check_room(self.len, bytes.len())?;
        let start = self.len;
        self.spare_mut()[start..start + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }

    pub fn put_u8(&mut self, byte: u8) -> Result<(), Overflow> {
        self.put_slice(&[byte])
    }

    pub fn put_u16(&mut self, value: u16) -> Result<(), Overflow> {
        self.put_slice(&value.to_be_bytes())
    }

    fn check_room(&self, at: usize, extra: usize) -> Result<(), Overflow> {
        let needed = at + extra;
        if needed > self.capacity {
            return Err(Overflow {
                capacity: self.capacity,
                needed,
            });
        }
        Ok(())
    }
}

/// The pool. Share it with `Arc`.
pub struct BufPool {
    free: [Mutex<Vec<NonNull<u8>>>; SIZE_CLASSES.len()],
    outstanding_bytes: AtomicUsize,
    outstanding_buffers: AtomicUsize,
}

// SAFETY: the free lists hold blocks nobody else references, behind mutexes.
unsafe impl Send for BufPool {}
// SAFETY: as above; every shared access goes through a Mutex or an atomic.
unsafe impl Sync for BufPool {}

impl Default for BufPool {
    fn default() -> Self {
        Self::new()
    }
}

impl BufPool {
    pub fn new() -> Self {
        Self {
            free: std::array::from_fn(|_| Mutex::new(Vec::new())),
            outstanding_bytes: AtomicUsize::new(0),
            outstanding_buffers: AtomicUsize::new(0),
        }
    }

    /// Hands out an empty buffer that can hold at least `size` bytes.
    pub fn allocate(&self, size: usize) -> PooledBuf {
        let capacity = capacity_for(size);
        let recycled = class_of(capacity).and_then(|class| lock(&self.free[class]).pop());
        let ptr = recycled.unwrap_or_else(|| allocate_block(capacity));
        self.outstanding_bytes
            .fetch_add(capacity, Ordering::Relaxed);
        self.outstanding_buffers.fetch_add(1, Ordering::Relaxed);
        PooledBuf {
            ptr,
            capacity,
            len: 0,
        }
    }

    /// Takes a buffer back.
    pub fn release(&self, buf: PooledBuf) {
        self.outstanding_bytes
            .fetch_sub(buf.capacity, Ordering::Relaxed);
        self.outstanding_buffers.fetch_sub(1, Ordering::Relaxed);
        if let Some(class) = class_of(buf.capacity) {
            let mut free = lock(&self.free[class]);
            if free.len() < MAX_FREE_PER_CLASS {
                free.push(buf.ptr);
                return;
            }
        }
        free_block(buf.ptr, buf.capacity);
    }

    /// Bytes handed out and not released (the pool's own counter).
    pub fn outstanding_bytes(&self) -> usize {
        self.outstanding_bytes.load(Ordering::Relaxed)
    }

    /// Buffers handed out and not released.
    pub fn outstanding_buffers(&self) -> usize {
        self.outstanding_buffers.load(Ordering::Relaxed)
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        for (class, free) in self.free.iter_mut().enumerate() {
            let free = free
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for ptr in free.drain(..) {
                free_block(ptr, SIZE_CLASSES[class]);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn capacity_for(size: usize) -> usize {
    SIZE_CLASSES
        .iter()
        .copied()
        .find(|&class| class >= size)
        .unwrap_or(size.max(1))
}

fn class_of(capacity: usize) -> Option<usize> {
    SIZE_CLASSES.iter().position(|&class| class == capacity)
}

fn layout(capacity: usize) -> Layout {
    Layout::from_size_align(capacity, ALIGN).expect("buffer size overflows a Layout")
}

fn allocate_block(capacity: usize) -> NonNull<u8> {
    let layout = layout(capacity);
    // SAFETY: capacity_for never returns 0, so the layout has a non-zero size.
    let ptr = unsafe { alloc::alloc_zeroed(layout) };
    NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

fn free_block(ptr: NonNull<u8>, capacity: usize) {
    // SAFETY: every block was allocated by allocate_block with this capacity.
    unsafe { alloc::dealloc(ptr.as_ptr(), layout(capacity)) }
}

/// Values a [`TypedPool`] creates at a time.
pub const TYPED_CHUNK: usize = 16;

/// A pool of boxed values of one type, for pools of structured objects
/// rather than bytes. Values come back with [`TypedPool::give_back`]; a
/// box that is dropped instead is lost to the pool (and counted).
pub struct TypedPool<T> {
    free: Mutex<Vec<Box<T>>>,
    handed_out: AtomicUsize,
    created: AtomicUsize,
}

impl<T: Default> Default for TypedPool<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Default> TypedPool<T> {
    pub fn new() -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            handed_out: AtomicUsize::new(0),
            created: AtomicUsize::new(0),
        }
    }

    /// A value from the pool, in its default state. The pool grows by a
    /// chunk of [`TYPED_CHUNK`] values when it runs dry.
    pub fn take(&self) -> Box<T> {
        let mut free = lock(&self.free);
        if free.is_empty() {
            free.reserve(TYPED_CHUNK);
            for _ in 0..TYPED_CHUNK {
                free.push(Box::default());
            }
            self.created.fetch_add(TYPED_CHUNK, Ordering::Relaxed);
        }
        let value = free.pop().expect("the free list was just refilled");
        drop(free);
        self.handed_out.fetch_add(1, Ordering::Relaxed);
        value
    }

    /// Takes a value back for reuse. It is scrubbed here, so no data
    /// survives from one user to the next; a free list grown past twice the
    /// usual size is trimmed back.
    pub fn give_back(&self, mut value: Box<T>) {
        *value = T::default();
        self.handed_out.fetch_sub(1, Ordering::Relaxed);
        let mut free = lock(&self.free);
        free.push(value);
        if free.len() > 2 * MAX_FREE_PER_CLASS {
            let excess = free.len() - MAX_FREE_PER_CLASS;
            free.drain(..excess);
            self.created.fetch_sub(excess, Ordering::Relaxed);
        }
    }

    /// Values taken and not given back.
    pub fn outstanding(&self) -> usize {
        self.handed_out.load(Ordering::Relaxed)
    }
}

/// A fixed-size frame borrowed from a [`FramePool`]. Like a
/// [`PooledBuf`], it is not given back when it goes out of scope: the owner
/// must call [`FramePool::put`], and a dropped frame is lost.
pub struct Frame<const N: usize> {
    ptr: NonNull<[u8; N]>,
}

impl<const N: usize> std::ops::Deref for Frame<N> {
    type Target = [u8; N];

    fn deref(&self) -> &[u8; N] {
        // SAFETY: the frame owns this allocation until it is put back.
        unsafe { self.ptr.as_ref() }
    }
}

impl<const N: usize> std::ops::DerefMut for Frame<N> {
    fn deref_mut(&mut self) -> &mut [u8; N] {
        // SAFETY: as for Deref, and `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

/// A single-threaded pool of fixed-size frames, for hot loops that want
/// no locking. Handing a frame back is a couple of stores, so it is marked
/// `#[inline]` like most such pools, and the compiler copies it into every
/// caller: the binary has no `put` function to probe, only its inlined
/// instances.
pub struct FramePool<const N: usize> {
    free: std::cell::RefCell<Vec<NonNull<[u8; N]>>>,
    handed_out: std::cell::Cell<usize>,
}

impl<const N: usize> Default for FramePool<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FramePool<N> {
    pub fn new() -> Self {
        Self {
            free: std::cell::RefCell::new(Vec::with_capacity(TYPED_CHUNK)),
            handed_out: std::cell::Cell::new(0),
        }
    }

    /// A zeroed frame; the pool grows by [`TYPED_CHUNK`] frames when empty.
    pub fn get(&self) -> Frame<N> {
        let mut free = self.free.borrow_mut();
        if free.is_empty() {
            free.extend((0..TYPED_CHUNK).map(|_| NonNull::from(Box::leak(Box::new([0; N])))));
        }
        let ptr = free.pop().expect("the free list was just refilled");
        let mut frame = Frame { ptr };
        frame.fill(0);
        self.handed_out.set(self.handed_out.get() + 1);
        frame
    }

    /// Takes a frame back.
    #[inline]
    pub fn put(&self, frame: Frame<N>) {
        self.handed_out.set(self.handed_out.get() - 1);
        self.free.borrow_mut().push(frame.ptr);
    }

    /// Frames handed out and not put back.
    pub fn outstanding(&self) -> usize {
        self.handed_out.get()
    }
}

impl<const N: usize> Drop for FramePool<N> {
    fn drop(&mut self) {
        for ptr in self.free.get_mut().drain(..) {
            // SAFETY: every free frame came from Box::leak in `get` and is
            // owned by the pool alone.
            drop(unsafe { Box::from_raw(ptr.as_ptr()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_released_buffers() {
        let pool = BufPool::new();
        let buf = pool.allocate(200);
        assert_eq!(buf.capacity(), 256);
        let first = buf.ptr;
        pool.release(buf);
        let again = pool.allocate(256);
        assert_eq!(again.ptr, first);
        pool.release(again);
        assert_eq!(pool.outstanding_buffers(), 0);
    }

    #[test]
    fn dropped_buffer_stays_outstanding() {
        let pool = BufPool::new();
        let forgotten = pool.allocate(10);
        let _ = forgotten;
        assert_eq!(pool.outstanding_bytes(), 64);
    }

    #[test]
    fn put_checks_capacity() {
        let pool = BufPool::new();
        let mut buf = pool.allocate(64);
        assert!(buf.put_slice(&[0; 64]).is_ok());
        assert_eq!(
            buf.put_u8(1),
            Err(Overflow {
                capacity: 64,
                needed: 65
            })
        );
        pool.release(buf);
    }
}
