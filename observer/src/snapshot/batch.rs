//! Reading a whole BPF hash map in a few system calls.
//!
//! Walking a map key by key costs two system calls per entry (next key,
//! then lookup): over a million live buffers that is seconds. The kernel's
//! batch lookup (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6, hash maps) copies
//! thousands of entries per call. Entries the kernel adds or deletes
//! while we read are seen or not, as with the key-by-key walk; each bucket
//! is copied whole, under its lock.

use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{bail, Result};
use aya::maps::{Map, MapData};

/// `enum bpf_cmd`: BPF_MAP_LOOKUP_BATCH.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per call at first; doubled when one bucket holds
/// more (the kernel never splits a bucket across calls).
const FIRST_CHUNK: usize = 4096;
/// No hash bucket holds this many: past it, something else is wrong.
const MAX_CHUNK: usize = 1 << 20;

/// `union bpf_attr`, the part the batch commands read.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// What became of one batch call.
enum Batch {
    /// `count` entries copied, more may follow.
    More(usize),
    /// `count` entries copied, and the map has no more.
    Last(usize),
    /// A bucket holds more entries than the buffers do.
    TooSmall,
}

/// Calls `each` on every entry of the hash map `map`, whose keys are `K`
/// and values `V` (plain old data, as the eBPF side declares them).
///
/// Fails when the kernel has no batch lookup for this map (before 5.6):
/// the caller may walk key by key instead.
pub fn for_each_entry<K, V>(map: &Map, mut each: impl FnMut(&K, &V)) -> Result<()>
where
    K: aya::Pod + Default,
    V: aya::Pod + Default,
{
    let (Map::HashMap(map) | Map::LruHashMap(map)) = map else {
        bail!("batch lookup is for hash maps");
    };
    let mut chunk = FIRST_CHUNK;
    let mut keys = vec![K::default(); chunk];
    let mut values = vec![V::default(); chunk];
    // The position the kernel hands back (a bucket index for hash maps);
    // sized like a key, as the kernel's documentation asks.
    let mut position = [0u64; 8];
    let mut next = [0u64; 8];
    let mut started = false;
    loop {
        let outcome = lookup_batch(
            map,
            started.then_some(&position),
            &mut next,
            &mut keys,
            &mut values,
        )?;
        let (copied, last) = match outcome {
            Batch::More(copied) => (copied, false),
            Batch::Last(copied) => (copied, true),
            Batch::TooSmall if chunk < MAX_CHUNK => {
                chunk *= 2;
                keys = vec![K::default(); chunk];
                values = vec![V::default(); chunk];
                continue;
            }
            Batch::TooSmall => bail!("a bucket of a BPF hash map holds over {MAX_CHUNK} entries"),
        };
        for (key, value) in keys.iter().zip(&values).take(copied) {
            each(key, value);
        }
        if last {
            return Ok(());
        }
        position = next;
        started = true;
    }
}

/// One `BPF_MAP_LOOKUP_BATCH` call into `keys` and `values`.
fn lookup_batch<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    position: Option<&[u64; 8]>,
    next: &mut [u64; 8],
    keys: &mut [K],
    values: &mut [V],
) -> Result<Batch> {
    let mut attr = BatchAttr {
        in_batch: position.map_or(0, |p| p.as_ptr() as u64),
        out_batch: next.as_mut_ptr() as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` is the batch part of `union bpf_attr` (the kernel
    // zero-extends a shorter attribute); its pointers name live buffers
    // of `count` keys and values of the map's own key and value types
    // (plain old data, any bytes valid), and a position buffer larger than
    // the kernel's token, all borrowed for the duration of the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &raw mut attr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    let copied = attr.count as usize;
    if result == 0 {
        return Ok(Batch::More(copied));
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENOENT) => Ok(Batch::Last(copied)),
        Some(libc::ENOSPC) if copied == 0 => Ok(Batch::TooSmall),
        _ => Err(anyhow::Error::new(error).context("BPF_MAP_LOOKUP_BATCH")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use super::*;

    /// `enum bpf_cmd` and `enum bpf_map_type` values the test needs.
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_MAP_TYPE_HASH: u32 = 1;

    fn bpf(command: libc::c_long, attr: &mut [u64; 8]) -> libc::c_long {
        // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix whose
        // pointers (set by the callers) name live buffers.
        unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), 64usize) }
    }

    /// A real kernel hash map of u64 → u64 holding `entries`.
    fn hash_map(entries: &HashMap<u64, u64>) -> Map {
        // map_type, key_size, value_size, max_entries (u32 each).
        let mut create = [0u64; 8];
        create[0] = u64::from(BPF_MAP_TYPE_HASH) | (8 << 32);
        create[1] = 8 | ((entries.len() as u64 + 16) << 32);
        let fd = bpf(BPF_MAP_CREATE, &mut create);
        assert!(
            fd >= 0,
            "BPF_MAP_CREATE: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the kernel just gave us this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        for (key, value) in entries {
            // map_fd, key, value, flags.
            let mut update = [0u64; 8];
            update[0] = fd.as_raw_fd() as u64;
            update[1] = std::ptr::from_ref(key) as u64;
            update[2] = std::ptr::from_ref(value) as u64;
            assert_eq!(bpf(BPF_MAP_UPDATE_ELEM, &mut update), 0);
        }
        Map::HashMap(MapData::from_fd(fd).expect("a map from its descriptor"))
    }

    #[test]
    fn every_entry_is_read_once_across_many_batches() {
        let written: HashMap<u64, u64> = (0..3 * FIRST_CHUNK as u64 + 17)
            .map(|key| (key.wrapping_mul(0x9e37_79b9_7f4a_7c15), key))
            .collect();
        let map = hash_map(&written);
        let mut read = HashMap::new();
        for_each_entry(&map, |key: &u64, value: &u64| {
            assert!(read.insert(*key, *value).is_none(), "key {key} read twice");
        })
        .expect("batch lookup (Linux 5.6)");
        assert_eq!(read, written);
    }

    #[test]
    fn an_empty_map_reads_as_nothing() {
        let map = hash_map(&HashMap::new());
        let mut seen = 0;
        for_each_entry(&map, |_: &u64, _: &u64| seen += 1).expect("batch lookup");
        assert_eq!(seen, 0);
    }
}
