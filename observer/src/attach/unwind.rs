//! Putting the unwind tables where the eBPF stack walker finds them: rows
//! into an mmap-able array (written directly, no syscall per row), the page
//! index and the process's executable mappings into maps. New mappings
//! (libraries loaded later) are added while attached, as long as the row
//! array has room.

use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{bail, Context as _, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData};
use aya::Ebpf;
use observer_ebpf::{names, MappingEntry, PageKey, PageRows, UnwindRow};
use serde::Serialize;

use crate::plan::unwind::{pages, ObjectTable};
use crate::resolve::elf::ElfLayout;
use crate::resolve::process::{Mapping, Process};
use crate::resolve::safe_file::{open_trusted, TargetRoot};

/// Room left in the row array for objects mapped after attach.
const SPARE_ROWS: usize = 1 << 18;

/// One object whose table is installed.
#[derive(Debug, Clone, Serialize)]
pub struct TabledObject {
    pub path: String,
    pub rows: usize,
    /// Rows whose rules the walker cannot follow (it uses frame pointers there).
    pub unsupported_rows: usize,
}

/// Tables built before the programs are loaded (the row array's size must
/// be known then).
pub struct PreparedTables {
    objects: Vec<PreparedObject>,
    pub capacity: u32,
}

struct PreparedObject {
    key: (u64, String),
    table: ObjectTable,
    /// Where its addresses are mapped: (start, end, bias).
    placements: Vec<(u64, u64, u64)>,
}

/// Builds the tables of every executable file the process maps.
pub fn prepare(process: &Process) -> Result<PreparedTables> {
    let mut objects: Vec<PreparedObject> = Vec::new();
    let root = process.root().ok();
    for mapping in process.executable_mappings()? {
        add_mapping(process.pid, root.as_ref(), &mut objects, &mapping);
    }
    let rows: usize = objects.iter().map(|o| o.table.rows.len()).sum();
    let capacity = u32::try_from(rows + SPARE_ROWS).context("unwind tables too large")?;
    Ok(PreparedTables { objects, capacity })
}

/// Tables for a program that is not running yet (`observer run`): built
/// from its file and those of the libraries it will load, placed once the
/// process maps them (`UnwindTables::refresh`).
pub fn prepare_for_file(path: &std::path::Path) -> Result<PreparedTables> {
    let mut objects = vec![prepared_file(path)?];
    for library in crate::resolve::libraries::needed_libraries(path) {
        if let Ok(object) = prepared_file(&library) {
            objects.push(object);
        }
    }
    let rows: usize = objects.iter().map(|o| o.table.rows.len()).sum();
    let capacity = u32::try_from(rows + SPARE_ROWS).context("unwind tables too large")?;
    Ok(PreparedTables { objects, capacity })
}

/// A file the user named (`run`'s program) or one of its libraries.
fn prepared_file(path: &std::path::Path) -> Result<PreparedObject> {
    let file = open_trusted(path).with_context(|| format!("cannot read {}", path.display()))?;
    let elf = ElfLayout::read_file(&file)?;
    let table = ObjectTable::from_elf(&elf.data)?;
    Ok(PreparedObject {
        key: (file.inode(), path.display().to_string()),
        table,
        placements: Vec::new(),
    })
}

/// Reads the mapping's file and builds or reuses its object's table.
fn add_mapping(
    pid: u32,
    root: Option<&TargetRoot>,
    objects: &mut Vec<PreparedObject>,
    mapping: &Mapping,
) {
    let key = (mapping.inode, mapping.path.clone());
    let Some(elf) = read_mapped_elf(pid, root, mapping) else {
        return;
    };
    let Some(bias) = elf.load_bias(mapping.start, mapping.end, mapping.file_offset) else {
        return;
    };
    let placement = (mapping.start, mapping.end, bias);
    if let Some(object) = objects.iter_mut().find(|o| o.key == key) {
        object.placements.push(placement);
        return;
    }
    let table = ObjectTable::from_elf(&elf.data).unwrap_or_default();
    objects.push(PreparedObject {
        key,
        table,
        placements: vec![placement],
    });
}

/// The mapping's file, opened safely (see [`Mapping::open_file`]); an
/// object that cannot be read is walked with frame pointers.
fn read_mapped_elf(pid: u32, root: Option<&TargetRoot>, mapping: &Mapping) -> Option<ElfLayout> {
    let file = mapping.open_file(pid, root).ok()?;
    ElfLayout::read_file(&file).ok()
}

/// Installed tables; keeps the row array mapped for later additions.
pub struct UnwindTables {
    rows: RowsMmap,
    used_rows: usize,
    objects: BTreeMap<(u64, String), u32>,
    /// (start, end, bias, object) of every tabled mapping.
    mappings: Vec<MappingEntry>,
    /// How many of `mappings` are in the trie.
    written: usize,
    pub tabled: Vec<TabledObject>,
}

impl UnwindTables {
    /// Writes the prepared tables into the loaded object's maps.
    pub fn install(ebpf: &mut Ebpf, prepared: PreparedTables) -> Result<Self> {
        let rows = RowsMmap::map(ebpf, prepared.capacity as usize)?;
        let mut tables = Self {
            rows,
            used_rows: 0,
            objects: BTreeMap::new(),
            mappings: Vec::new(),
            written: 0,
            tabled: Vec::new(),
        };
        for object in prepared.objects {
            tables.add_object(ebpf, object)?;
        }
        tables.write_mappings(ebpf)?;
        Ok(tables)
    }

    /// Tables objects mapped since the last call (e.g. `dlopen`).
    pub fn refresh(&mut self, ebpf: &mut Ebpf, process: &Process) -> Result<()> {
        let Ok(current) = process.executable_mappings() else {
            return Ok(());
        };
        let gone = self.forget_unmapped(ebpf, &current)?;
        let fresh: Vec<Mapping> = current
            .into_iter()
            .filter(|m| {
                !self
                    .mappings
                    .iter()
                    .any(|e| e.start == m.start && e.end == m.end)
            })
            .collect();
        if gone {
            // Keys of a gone mapping may be shared with one now in its place.
            self.written = 0;
        }
        if fresh.is_empty() && !gone {
            return Ok(());
        }
        let mut prepared = Vec::new();
        let root = process.root().ok();
        for mapping in &fresh {
            let key = (mapping.inode, mapping.path.clone());
            match self.objects.get(&key) {
                // Tabled already (another mapping of it, or `run`'s program).
                Some(&object) => self.place(process.pid, root.as_ref(), mapping, object),
                None => add_mapping(process.pid, root.as_ref(), &mut prepared, mapping),
            }
        }
        for object in prepared {
            self.add_object(ebpf, object)?;
        }
        self.write_mappings(ebpf)?;
        bump_generation(ebpf)
    }

    /// Drops the mappings the process no longer has from the trie. The
    /// dynamic loader maps a library once whole, then maps its segments
    /// over that: a look at the maps in between sees a mapping that is soon
    /// gone, and its stale bias must not outlive it. Returns whether any
    /// went (the rest are then written again, as keys may be shared).
    fn forget_unmapped(&mut self, ebpf: &mut Ebpf, current: &[Mapping]) -> Result<bool> {
        let exists =
            |e: &MappingEntry| current.iter().any(|m| m.start == e.start && m.end == e.end);
        let (kept, gone): (Vec<MappingEntry>, Vec<MappingEntry>) =
            self.mappings.iter().copied().partition(exists);
        if gone.is_empty() {
            return Ok(false);
        }
        let mut trie: LpmTrie<&mut MapData, [u8; 8], MappingEntry> =
            LpmTrie::try_from(map_mut(ebpf, names::MAP_UNWIND_MAPPINGS)?)?;
        for mapping in &gone {
            for (prefix_len, base) in prefixes(mapping.start, mapping.end) {
                // Absent keys (shared with another gone mapping) are fine.
                let _ = trie.remove(&Key::new(prefix_len, base.to_be_bytes()));
            }
        }
        self.mappings = kept;
        Ok(true)
    }

    fn place(&mut self, pid: u32, root: Option<&TargetRoot>, mapping: &Mapping, object: u32) {
        let Some(elf) = read_mapped_elf(pid, root, mapping) else {
            return;
        };
        if let Some(bias) = elf.load_bias(mapping.start, mapping.end, mapping.file_offset) {
            self.mappings.push(MappingEntry {
                start: mapping.start,
                end: mapping.end,
                bias,
                object,
                tabled: 1,
            });
        }
    }

    fn add_object(&mut self, ebpf: &mut Ebpf, object: PreparedObject) -> Result<()> {
        let id = match self.objects.get(&object.key) {
            Some(&id) => id,
            None => {
                let rows = &object.table.rows;
                if self.used_rows + rows.len() > self.rows.capacity {
                    // Out of room: this object is walked with frame pointers.
                    return Ok(());
                }
                let id = self.objects.len() as u32;
                let base = self.used_rows as u32;
                self.rows.write(self.used_rows, rows);
                self.used_rows += rows.len();
                write_pages(ebpf, id, rows, base)?;
                self.objects.insert(object.key.clone(), id);
                self.tabled.push(TabledObject {
                    path: object.key.1.clone(),
                    rows: rows.len(),
                    unsupported_rows: object.table.unsupported_rows,
                });
                id
            }
        };
        for (start, end, bias) in object.placements {
            self.mappings.push(MappingEntry {
                start,
                end,
                bias,
                object: id,
                tabled: 1,
            });
        }
        Ok(())
    }

    /// Writes the tabled mappings not yet in the address trie (a refresh
    /// costs only what changed).
    fn write_mappings(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        let mut trie: LpmTrie<&mut MapData, [u8; 8], MappingEntry> =
            LpmTrie::try_from(map_mut(ebpf, names::MAP_UNWIND_MAPPINGS)?)?;
        let unwritten = &self.mappings[self.written.min(self.mappings.len())..];
        self.written = self.mappings.len();
        for mapping in unwritten {
            for (prefix_len, base) in prefixes(mapping.start, mapping.end) {
                trie.insert(&Key::new(prefix_len, base.to_be_bytes()), mapping, 0)
                    .context("the mapping trie is full")?;
            }
        }
        Ok(())
    }
}

/// Tells the walks the tables changed: a thread's cached walk was walked
/// with the old ones and is not used again (written after the tables, so
/// a walk that sees the new generation sees the new tables).
fn bump_generation(ebpf: &mut Ebpf) -> Result<()> {
    let mut generation: Array<&mut MapData, u64> =
        Array::try_from(map_mut(ebpf, names::MAP_UNWIND_GENERATION)?)?;
    let next = generation.get(&0, 0)?.wrapping_add(1);
    generation.set(0, next, 0)?;
    Ok(())
}

/// `[start, end)` as aligned power-of-two blocks: (prefix length, base).
fn prefixes(start: u64, end: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let mut size = if at == 0 {
            1u64 << 63
        } else {
            at & at.wrapping_neg()
        };
        while size > end - at {
            size >>= 1;
        }
        out.push((64 - size.trailing_zeros(), at));
        at += size;
    }
    out
}

fn write_pages(ebpf: &mut Ebpf, object: u32, rows: &[UnwindRow], base: u32) -> Result<()> {
    let mut index: HashMap<&mut MapData, PageKey, PageRows> =
        HashMap::try_from(map_mut(ebpf, names::MAP_UNWIND_PAGES)?)?;
    for (page, first, count) in pages(rows, base) {
        index
            .insert(PageKey { object, page }, PageRows { first, count }, 0)
            .context("the unwind page index is full")?;
    }
    Ok(())
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("eBPF object has no map {name}"))
}

/// The row array, mapped into our address space (BPF_F_MMAPABLE).
struct RowsMmap {
    pointer: *mut UnwindRow,
    length: usize,
    capacity: usize,
}

impl RowsMmap {
    fn map(ebpf: &mut Ebpf, capacity: usize) -> Result<Self> {
        let Map::Array(data) = map_mut(ebpf, names::MAP_UNWIND_ROWS)? else {
            bail!("{} is not an array", names::MAP_UNWIND_ROWS);
        };
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let length = (capacity * size_of::<UnwindRow>()).div_ceil(page) * page;
        // SAFETY: mapping a valid BPF array fd created with BPF_F_MMAPABLE,
        // shared and writable, at offset 0 where its values start; the
        // kernel checks the length against the map's size.
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if pointer == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("cannot mmap the unwind rows");
        }
        Ok(Self {
            pointer: pointer.cast(),
            length,
            capacity,
        })
    }

    fn write(&mut self, at: usize, rows: &[UnwindRow]) {
        assert!(at + rows.len() <= self.capacity, "row array overflow");
        // SAFETY: the range was checked against the capacity the map was
        // created with; UnwindRow is 8-byte POD, the array's element stride.
        unsafe {
            std::ptr::copy_nonoverlapping(rows.as_ptr(), self.pointer.add(at), rows.len());
        }
    }
}

// SAFETY: the mapping belongs to this value alone (nothing else holds the
// pointer) and is written only through `&mut self`; which thread does that,
// or unmaps it, does not matter. Needed to attach on a blocking thread.
unsafe impl Send for RowsMmap {}

impl Drop for RowsMmap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.pointer.cast(), self.length) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_aligned_prefixes() {
        assert_eq!(prefixes(0x1000, 0x3000), vec![(52, 0x1000), (52, 0x2000)]);
        assert_eq!(prefixes(0x2000, 0x6000), vec![(51, 0x2000), (51, 0x4000)]);
        assert_eq!(prefixes(0x1000, 0x2000), vec![(52, 0x1000)]);
        let blocks = prefixes(0x5555_5555_0000, 0x5555_5566_3000);
        let covered: u64 = blocks.iter().map(|(len, _)| 1u64 << (64 - len)).sum();
        assert_eq!(covered, 0x11_3000);
        assert!(blocks
            .iter()
            .all(|(len, base)| base % (1u64 << (64 - len)) == 0));
    }
}
