//! A seed for the ELF fuzz targets, compiled by `cargo xtask fuzz` with
//! full DWARF and the standard library linked dynamically (a small file):
//! Rust namespaces, linkage names, a generic pool, an inlined release.

pub struct Buf {
    data: Box<[u8]>,
    len: usize,
}

pub struct Pool<T> {
    size: usize,
    tag: T,
}

impl<T: Copy + Into<usize>> Pool<T> {
    #[inline(never)]
    pub fn allocate(&self, extra: usize) -> Buf {
        Buf {
            data: vec![0; self.size + extra].into_boxed_slice(),
            len: self.tag.into(),
        }
    }

    #[inline(always)]
    pub fn release(&self, buf: Buf) -> usize {
        buf.data.len() + buf.len
    }
}

fn main() {
    let pool = Pool { size: 64, tag: 1u8 };
    let buf = pool.allocate(std::env::args().count());
    std::process::exit((pool.release(buf) & 1) as i32);
}
