//! Reassembles packets from fixed-size frames taken from a [`FramePool`],
//! whose `put` is inlined into every caller.

use bufpool::FramePool;

const FRAME: usize = 512;

pub struct Reassembler {
    pool: FramePool<FRAME>,
    assembled: usize,
}

impl Reassembler {
    pub fn new() -> Self {
        Self {
            pool: FramePool::new(),
            assembled: 0,
        }
    }

    /// Copies a fragment into a frame and checks it. A fragment with a bad
    /// checksum is dropped along with its frame, which never goes back to
    /// the pool.
    pub fn fragment(&mut self, payload: &[u8], checksum: u8) -> Result<(), BadChecksum> {
        let mut frame = self.pool.get();
        let length = payload.len().min(FRAME);
        frame[..length].copy_from_slice(&payload[..length]);
        let sum = frame[..length].iter().fold(0u8, |a, b| a.wrapping_add(*b));
        if sum != checksum {
            return Err(BadChecksum);
        }
        self.assembled += length;
        self.pool.put(frame);
        Ok(())
    }

    /// A keep-alive: a frame is taken for the header and given back.
    pub fn keep_alive(&mut self) {
        let mut frame = self.pool.get();
        frame[0] = 0x7f;
        self.assembled += usize::from(frame[0] & 1);
        self.pool.put(frame);
    }

    pub fn outstanding(&self) -> usize {
        self.pool.outstanding()
    }
}

/// A fragment whose bytes do not add up to its checksum.
#[derive(Debug)]
pub struct BadChecksum;

/// Feeds `count` fragments, every fifth with a corrupted checksum.
pub fn run(count: usize) -> usize {
    let mut reassembler = Reassembler::new();
    let payload: Vec<u8> = (0..200u16).map(|b| b as u8).collect();
    let good = payload.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    for index in 0..count * 5 {
        let checksum = if index % 5 == 4 { good ^ 0x55 } else { good };
        let _ = std::hint::black_box(reassembler.fragment(&payload, checksum));
        reassembler.keep_alive();
    }
    reassembler.outstanding()
}
