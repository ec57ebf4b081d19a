//! A pool of a fixed number of buffers whose `take` waits for one to be
//! given back, as connection and buffer pools of bounded size do.

use std::ptr::NonNull;
use std::sync::{Condvar, Mutex};

use crate::{allocate_block, free_block, PooledBuf};

/// `count` buffers of `capacity` bytes; `take` blocks while all are out.
pub struct WaitingPool {
    capacity: usize,
    free: Mutex<Vec<NonNull<u8>>>,
    returned: Condvar,
}

// SAFETY: the free list holds blocks nobody else references, behind a mutex.
unsafe impl Send for WaitingPool {}
// SAFETY: as above.
unsafe impl Sync for WaitingPool {}

impl WaitingPool {
    pub fn new(count: usize, capacity: usize) -> Self {
        Self {
            capacity,
            free: Mutex::new((0..count).map(|_| allocate_block(capacity)).collect()),
            returned: Condvar::new(),
        }
    }

    /// A buffer, waiting until one is free.
    pub fn take(&self) -> PooledBuf {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(ptr) = free.pop() {
                return PooledBuf {
                    ptr,
                    capacity: self.capacity,
                    len: 0,
                };
            }
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Gives a buffer back, waking one waiting `take`.
    pub fn give(&self, buf: PooledBuf) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push(buf.ptr);
        self.returned.notify_one();
    }
}

impl Drop for WaitingPool {
    fn drop(&mut self) {
        let free = self.free.get_mut().unwrap_or_else(|p| p.into_inner());
        for ptr in free.drain(..) {
            free_block(ptr, self.capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn take_waits_for_a_give() {
        let pool = Arc::new(WaitingPool::new(1, 64));
        let first = pool.take();
        let waiter = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || pool.take().capacity())
        };
        pool.give(first);
        assert_eq!(waiter.join().unwrap(), 64);
    }
}
