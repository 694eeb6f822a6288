//! Read-ahead for `embedded-sdmmc`, which reads a file one 512-byte block
//! at a time: on a PV disk each block would be a request, a grant and an
//! event round trip to the backend. [`ReadAhead`] turns a read of a block
//! that is not cached into one read of a whole window of blocks, and
//! serves the next reads from it.

use alloc::vec::Vec;
use core::cell::RefCell;
use embedded_sdmmc::{Block, BlockCount, BlockDevice, BlockIdx};

/// One cached run of blocks.
struct Window {
    /// First block.
    start: u32,
    /// The blocks (fewer than the window size at the end of the disk).
    blocks: Vec<Block>,
    /// When it was last used (a counter), for least-recently-used reuse.
    used: u64,
}

/// An `embedded_sdmmc::BlockDevice` that reads `window_blocks` blocks at a
/// time from `D` and keeps the last `windows` runs. Writes go straight
/// through to `D` and update any cached copy, so reads never see stale
/// data.
///
/// Memory: `windows × window_blocks × 512` bytes, allocated as windows
/// fill.
pub struct ReadAhead<D: BlockDevice> {
    dev: D,
    window_blocks: u32,
    windows: usize,
    cache: RefCell<(Vec<Window>, u64)>,
}

impl<D: BlockDevice> core::fmt::Debug for ReadAhead<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("window_blocks", &self.window_blocks)
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

impl<D: BlockDevice> ReadAhead<D> {
    /// Read `window_blocks` blocks at a time (at least 1) and keep
    /// `windows` of them (at least 1).
    pub fn new(dev: D, window_blocks: u32, windows: usize) -> Self {
        ReadAhead {
            dev,
            window_blocks: window_blocks.max(1),
            windows: windows.max(1),
            cache: RefCell::new((Vec::new(), 0)),
        }
    }

    /// The device underneath.
    pub fn inner(&self) -> &D {
        &self.dev
    }

    /// Copy block `idx` from the cache into `out`, filling a window first
    /// if it is not there.
    fn read_one(&self, idx: u32, out: &mut Block, total: u32) -> Result<(), D::Error> {
        let mut guard = self.cache.borrow_mut();
        let (wins, clock) = &mut *guard;
        *clock += 1;
        let now = *clock;
        if let Some(w) = wins
            .iter_mut()
            .find(|w| idx >= w.start && idx - w.start < w.blocks.len() as u32)
        {
            w.used = now;
            *out = w.blocks[(idx - w.start) as usize].clone();
            return Ok(());
        }
        // Aligned windows, so two readers of nearby blocks share one.
        let start = idx - idx % self.window_blocks;
        let len = self.window_blocks.min(total.saturating_sub(start)).max(1);
        // A full cache gives up its least recently used window, whose
        // buffer is read into as it is: no allocation, no zero-filling
        // (which was 9% of a sequential read's profile). It leaves the
        // cache first, so a failed read cannot leave it half overwritten.
        let lru = |wins: &mut Vec<Window>| {
            let i = wins
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.used)
                .map(|(i, _)| i);
            i.map(|i| wins.swap_remove(i).blocks).unwrap_or_default()
        };
        // A new window only if the heap has room for it (a guest short of
        // memory, its sockets full, must not die here): else the least
        // recently used one is reused, and with none, the block is read
        // alone.
        let mut blocks = if wins.len() >= self.windows {
            lru(wins)
        } else {
            let mut v = Vec::new();
            if v.try_reserve_exact(len as usize).is_ok() {
                v
            } else {
                lru(wins)
            }
        };
        let missing = (len as usize).saturating_sub(blocks.len());
        if blocks.try_reserve_exact(missing).is_err() {
            drop(guard);
            return self.dev.read(core::slice::from_mut(out), BlockIdx(idx));
        }
        blocks.resize(len as usize, Block::new());
        self.dev.read(&mut blocks, BlockIdx(start))?;
        *out = blocks[(idx - start) as usize].clone();
        wins.push(Window {
            start,
            blocks,
            used: now,
        });
        Ok(())
    }
}

impl<D: BlockDevice> BlockDevice for ReadAhead<D> {
    type Error = D::Error;

    /// Blocks from the cache, each missing one bringing in its window.
    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), Self::Error> {
        let total = self.dev.num_blocks()?.0;
        if start.0.saturating_add(blocks.len() as u32) > total {
            // Let the device report the out-of-range read its own way.
            return self.dev.read(blocks, start);
        }
        for (i, b) in blocks.iter_mut().enumerate() {
            self.read_one(start.0 + i as u32, b, total)?;
        }
        Ok(())
    }

    /// Write through, then update the cached copies.
    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), Self::Error> {
        self.dev.write(blocks, start)?;
        let mut guard = self.cache.borrow_mut();
        for w in guard.0.iter_mut() {
            for (i, b) in blocks.iter().enumerate() {
                let idx = start.0 + i as u32;
                if idx >= w.start && idx - w.start < w.blocks.len() as u32 {
                    w.blocks[(idx - w.start) as usize] = b.clone();
                }
            }
        }
        Ok(())
    }

    fn num_blocks(&self) -> Result<BlockCount, Self::Error> {
        self.dev.num_blocks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// A disk of `n` blocks, block `i` filled with `i as u8`, counting the
    /// reads it serves.
    struct Disk {
        data: RefCell<Vec<Block>>,
        reads: Cell<u32>,
        /// The next read scribbles over its buffer and fails.
        fail_next: Cell<bool>,
    }

    impl Disk {
        fn new(n: u32) -> Self {
            let data = (0..n)
                .map(|i| {
                    let mut b = Block::new();
                    b.contents.fill(i as u8);
                    b
                })
                .collect();
            Disk {
                data: RefCell::new(data),
                reads: Cell::new(0),
                fail_next: Cell::new(false),
            }
        }
    }

    impl BlockDevice for &Disk {
        type Error = core::fmt::Error;
        fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), core::fmt::Error> {
            self.reads.set(self.reads.get() + 1);
            if self.fail_next.replace(false) {
                for b in blocks.iter_mut() {
                    b.contents.fill(0xbd);
                }
                return Err(core::fmt::Error);
            }
            let data = self.data.borrow();
            for (i, b) in blocks.iter_mut().enumerate() {
                *b = data
                    .get(start.0 as usize + i)
                    .ok_or(core::fmt::Error)?
                    .clone();
            }
            Ok(())
        }
        fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), core::fmt::Error> {
            let mut data = self.data.borrow_mut();
            for (i, b) in blocks.iter().enumerate() {
                *data.get_mut(start.0 as usize + i).ok_or(core::fmt::Error)? = b.clone();
            }
            Ok(())
        }
        fn num_blocks(&self) -> Result<BlockCount, core::fmt::Error> {
            Ok(BlockCount(self.data.borrow().len() as u32))
        }
    }

    fn read(ra: &ReadAhead<&Disk>, idx: u32) -> u8 {
        let mut b = [Block::new()];
        ra.read(&mut b, BlockIdx(idx)).unwrap();
        b[0].contents[0]
    }

    #[test]
    fn sequential_reads_fetch_whole_windows_and_writes_stay_visible() {
        let disk = Disk::new(100);
        let ra = ReadAhead::new(&disk, 16, 2);
        for i in 0..40 {
            assert_eq!(read(&ra, i), i as u8);
        }
        // Blocks 0..48: three windows of 16, not 40 reads.
        assert_eq!(disk.reads.get(), 3);
        // The last window is short, and reads past the end fail.
        assert_eq!(read(&ra, 99), 99);
        let mut b = [Block::new(), Block::new()];
        assert!(ra.read(&mut b, BlockIdx(99)).is_err());
        // A write is seen by the next read, cached or not.
        let mut w = Block::new();
        w.contents.fill(0xee);
        ra.write(&[w], BlockIdx(98)).unwrap();
        assert_eq!(read(&ra, 98), 0xee);
        assert_eq!(disk.data.borrow()[98].contents[0], 0xee);
        // Two windows kept: the least recently used goes.
        let before = disk.reads.get();
        assert_eq!(read(&ra, 97), 97);
        assert_eq!(read(&ra, 5), 5);
        assert_eq!(disk.reads.get(), before + 1);
    }

    #[test]
    fn a_failed_read_leaves_no_half_written_window_and_buffers_are_reused_safely() {
        let disk = Disk::new(100);
        let ra = ReadAhead::new(&disk, 16, 2);
        assert_eq!(read(&ra, 0), 0);
        assert_eq!(read(&ra, 16), 16);
        // A miss evicts window 0..16 and reads into its buffer; the read
        // fails after scribbling over it.
        disk.fail_next.set(true);
        let mut b = [Block::new()];
        assert!(ra.read(&mut b, BlockIdx(40)).is_err());
        // Window 0..16 is gone, not garbage: it is read again.
        let before = disk.reads.get();
        assert_eq!(read(&ra, 3), 3);
        assert_eq!(disk.reads.get(), before + 1);
        // Window 16..32 survived.
        assert_eq!(read(&ra, 20), 20);
        assert_eq!(disk.reads.get(), before + 1);
        // A reused 16-block buffer serves the short last window (96..100)
        // and then a full one again, each block right.
        for i in [97, 99, 50, 63, 96] {
            assert_eq!(read(&ra, i), i as u8);
        }
    }
}
