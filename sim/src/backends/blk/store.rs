//! What a virtual disk is backed by, and the backend's volatile write cache.
//!
//! The cache models the write-back cache of a disk (or of the page cache
//! under a file): completed writes land in it, reads see it, and only a
//! flush (or a barrier, or a clean shutdown of the backend) writes it to the
//! backing store. A crash of the backend drops it: what was written and not
//! flushed is lost. A backend that offers neither flush nor barrier has no
//! cache (writes go straight to the store), as blkif implies.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes per cache entry, and the unit of every offset and length here: the
/// blkif sector.
pub(super) const SECTOR: usize = 512;

/// Dirty data beyond which the cache writes itself back (as a real cache
/// under memory pressure would): 64 MiB.
const CACHE_LIMIT_SECTORS: usize = (64 << 20) / SECTOR;

/// The backing of a virtual disk: an image file or memory.
pub struct Disk {
    pub(super) store: Store,
    pub(super) bytes: u64,
    pub(super) description: String,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("bytes", &self.bytes)
            .field("backing", &self.description)
            .finish()
    }
}

pub(super) enum Store {
    Memory(Vec<u8>),
    File(File),
}

impl Disk {
    /// A disk holding `bytes` in memory.
    pub fn memory(bytes: Vec<u8>) -> Disk {
        Disk {
            bytes: bytes.len() as u64,
            description: format!("memory ({} bytes)", bytes.len()),
            store: Store::Memory(bytes),
        }
    }

    /// A zero-filled disk of `bytes` bytes in memory.
    pub fn zeroed(bytes: usize) -> Disk {
        Disk::memory(vec![0; bytes])
    }

    /// A disk backed by the raw image file at `path`, read and written in
    /// place; its size is the file's size.
    ///
    /// Errors: the file cannot be opened for reading and writing.
    pub fn file(path: impl AsRef<Path>) -> io::Result<Disk> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(Disk {
            bytes,
            description: path.display().to_string(),
            store: Store::File(file),
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether the disk has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

impl Store {
    fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Store::Memory(m) => {
                let at = off as usize;
                buf.copy_from_slice(&m[at..at + buf.len()]);
                Ok(())
            }
            Store::File(f) => f.read_exact_at(buf, off),
        }
    }

    fn write(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        match self {
            Store::Memory(m) => {
                let at = off as usize;
                m[at..at + buf.len()].copy_from_slice(buf);
                Ok(())
            }
            Store::File(f) => f.write_all_at(buf, off),
        }
    }
}

/// A disk with the backend's volatile cache in front of it. Offsets and
/// lengths are multiples of [`SECTOR`] and within the disk (the caller
/// checks).
pub(super) struct CachedDisk {
    pub disk: Disk,
    /// Whether writes are cached (the backend offers flush or barrier).
    pub caching: bool,
    dirty: BTreeMap<u64, Box<[u8; SECTOR]>>,
}

impl CachedDisk {
    pub fn new(disk: Disk, caching: bool) -> Self {
        CachedDisk {
            disk,
            caching,
            dirty: BTreeMap::new(),
        }
    }

    /// Sectors written and not yet durable.
    pub fn dirty_sectors(&self) -> usize {
        self.dirty.len()
    }

    /// Read through the cache.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.disk.store.read(off, buf)?;
        if !self.dirty.is_empty() {
            let first = off / SECTOR as u64;
            let last = first + (buf.len() / SECTOR) as u64;
            for (&s, data) in self.dirty.range(first..last) {
                let at = (s - first) as usize * SECTOR;
                buf[at..at + SECTOR].copy_from_slice(&data[..]);
            }
        }
        Ok(())
    }

    /// Write into the cache (or straight to the store without one).
    pub fn write(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        if !self.caching {
            return self.disk.store.write(off, buf);
        }
        let first = off / SECTOR as u64;
        for (i, chunk) in buf.chunks_exact(SECTOR).enumerate() {
            let mut s = Box::new([0u8; SECTOR]);
            s.copy_from_slice(chunk);
            self.dirty.insert(first + i as u64, s);
        }
        if self.dirty.len() > CACHE_LIMIT_SECTORS {
            self.write_back()?;
        }
        Ok(())
    }

    /// Make everything durable: write the cache to the store, coalescing
    /// runs of adjacent sectors.
    pub fn write_back(&mut self) -> io::Result<()> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let mut next = None;
        for (s, data) in dirty {
            if next != Some(s) && !run.is_empty() {
                self.disk.store.write(run_start * SECTOR as u64, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = s;
            }
            run.extend_from_slice(&data[..]);
            next = Some(s + 1);
        }
        if !run.is_empty() {
            self.disk.store.write(run_start * SECTOR as u64, &run)?;
        }
        if let Store::File(f) = &self.disk.store {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Write straight to the store, past the cache (what reaches the disk
    /// of a write torn by a crash). Cached sectors of the range are
    /// dropped: the store has the newer data.
    pub fn write_durable(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let first = off / SECTOR as u64;
        let last = first + (buf.len() / SECTOR) as u64;
        let stale: Vec<u64> = self.dirty.range(first..last).map(|(&s, _)| s).collect();
        for s in stale {
            self.dirty.remove(&s);
        }
        self.disk.store.write(off, buf)
    }

    /// A crash: forget what was not written back. Returns the sectors lost.
    pub fn drop_cache(&mut self) -> usize {
        std::mem::take(&mut self.dirty).len()
    }

    /// Discard: the range reads as zeros from now on (durably).
    pub fn discard(&mut self, off: u64, len: u64) -> io::Result<()> {
        let first = off / SECTOR as u64;
        let last = first + len / SECTOR as u64;
        let doomed: Vec<u64> = self.dirty.range(first..last).map(|(&s, _)| s).collect();
        for s in doomed {
            self.dirty.remove(&s);
        }
        let zeros = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.disk.store.write(off + done, &zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Read the store, ignoring the cache: what would survive a crash.
    pub fn read_durable(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.disk.store.read(off, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_holds_writes_until_flushed_and_a_crash_loses_them() {
        let mut d = CachedDisk::new(Disk::zeroed(8 * SECTOR), true);
        d.write(SECTOR as u64, &[1; SECTOR]).unwrap();
        d.write_back().unwrap();
        d.write(2 * SECTOR as u64, &[2; 2 * SECTOR]).unwrap();
        let mut buf = vec![0; 4 * SECTOR];
        d.read(0, &mut buf).unwrap();
        assert_eq!(&buf[SECTOR..2 * SECTOR], &[1; SECTOR]);
        assert_eq!(&buf[2 * SECTOR..], &[2; 2 * SECTOR]);
        assert_eq!(d.drop_cache(), 2);
        d.read(0, &mut buf).unwrap();
        assert_eq!(&buf[SECTOR..2 * SECTOR], &[1; SECTOR]);
        assert_eq!(&buf[2 * SECTOR..], &[0; 2 * SECTOR]);
    }

    #[test]
    fn write_back_coalesces_and_discard_zeroes() {
        let mut d = CachedDisk::new(Disk::zeroed(8 * SECTOR), true);
        d.write(0, &[3; 3 * SECTOR]).unwrap();
        d.write(5 * SECTOR as u64, &[4; SECTOR]).unwrap();
        d.write_back().unwrap();
        let mut buf = vec![0; 8 * SECTOR];
        d.read_durable(0, &mut buf).unwrap();
        assert_eq!(&buf[..3 * SECTOR], &[3; 3 * SECTOR]);
        assert_eq!(&buf[5 * SECTOR..6 * SECTOR], &[4; SECTOR]);
        d.write(SECTOR as u64, &[9; SECTOR]).unwrap();
        d.discard(0, 2 * SECTOR as u64).unwrap();
        d.read(0, &mut buf).unwrap();
        assert_eq!(&buf[..2 * SECTOR], &[0; 2 * SECTOR]);
        assert_eq!(&buf[2 * SECTOR..3 * SECTOR], &[3; SECTOR]);
    }

    #[test]
    fn a_durable_write_passes_the_cache_and_replaces_what_it_held() {
        let mut d = CachedDisk::new(Disk::zeroed(4 * SECTOR), true);
        d.write(0, &[1; 2 * SECTOR]).unwrap();
        d.write_durable(SECTOR as u64, &[2; 2 * SECTOR]).unwrap();
        assert_eq!(d.dirty_sectors(), 1);
        let mut buf = vec![0; 4 * SECTOR];
        d.read(0, &mut buf).unwrap();
        assert_eq!(&buf[..SECTOR], &[1; SECTOR]);
        assert_eq!(&buf[SECTOR..3 * SECTOR], &[2; 2 * SECTOR]);
        assert_eq!(d.drop_cache(), 1);
        d.read_durable(0, &mut buf).unwrap();
        assert_eq!(&buf[..SECTOR], &[0; SECTOR]);
        assert_eq!(&buf[SECTOR..3 * SECTOR], &[2; 2 * SECTOR]);
    }

    #[test]
    fn without_a_cache_writes_are_durable_at_once() {
        let mut d = CachedDisk::new(Disk::zeroed(2 * SECTOR), false);
        d.write(0, &[7; SECTOR]).unwrap();
        assert_eq!(d.drop_cache(), 0);
        let mut buf = vec![0; SECTOR];
        d.read_durable(0, &mut buf).unwrap();
        assert_eq!(buf, [7; SECTOR]);
    }
}
