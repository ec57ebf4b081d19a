//! A pool of fixed-size buffers with a budget, like the story's framework
//! and its limit on direct memory: a request it cannot serve fails, here
//! with a panic (`failed to allocate N byte(s) of pooled memory`), which
//! servers catch per request.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::PooledBuf;

/// Capacity of every buffer of a [`BudgetPool`].
pub const BUDGET_BUFFER: usize = 512;
const BLOCK: Layout = match Layout::from_size_align(BUDGET_BUFFER, 16) {
    Ok(layout) => layout,
    Err(_) => panic!("a 512-byte block is a valid layout"),
};

/// Buffers of [`BUDGET_BUFFER`] bytes, at most `budget` of them at once.
pub struct BudgetPool {
    budget: usize,
    in_use: AtomicUsize,
    returned: AtomicU64,
}

impl BudgetPool {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            in_use: AtomicUsize::new(0),
            returned: AtomicU64::new(0),
        }
    }

    /// A zeroed buffer that holds `size` bytes.
    ///
    /// # Panics
    /// When `size` is larger than a buffer, or the budget is used up.
    pub fn allocate(&self, size: usize) -> PooledBuf {
        if size > BUDGET_BUFFER {
            panic!(
                "failed to allocate {size} byte(s) of pooled memory: buffers hold {BUDGET_BUFFER}"
            );
        }
        let before = self.in_use.fetch_add(1, Ordering::Relaxed);
        if before >= self.budget {
            self.in_use.fetch_sub(1, Ordering::Relaxed);
            panic!(
                "failed to allocate {size} byte(s) of pooled memory: all {} buffers in use",
                self.budget
            );
        }
        // SAFETY: BLOCK has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(BLOCK) };
        PooledBuf {
            ptr: NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(BLOCK)),
            capacity: BUDGET_BUFFER,
            len: 0,
        }
    }

    /// Takes a buffer back and frees it.
    pub fn release(&self, buf: PooledBuf) {
        self.returned.fetch_add(1, Ordering::Relaxed);
        self.in_use.fetch_sub(1, Ordering::Release);
        // SAFETY: every buffer of this pool was allocated with BLOCK.
        unsafe { alloc::dealloc(buf.ptr.as_ptr(), BLOCK) }
    }

    /// Buffers handed out and not returned (the pool's own counter).
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Buffers given back so far.
    pub fn returned(&self) -> u64 {
        self.returned.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_size_are_enforced_and_given_back() {
        let pool = BudgetPool::new(1);
        let first = pool.allocate(100);
        assert_eq!(pool.in_use(), 1);
        assert!(std::panic::catch_unwind(|| pool.allocate(10)).is_err());
        assert_eq!(pool.in_use(), 1, "a refused request takes nothing");
        pool.release(first);
        assert!(std::panic::catch_unwind(|| pool.allocate(BUDGET_BUFFER + 1)).is_err());
        assert_eq!((pool.in_use(), pool.returned()), (0, 1));
    }
}
