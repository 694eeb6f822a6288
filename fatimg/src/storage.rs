//! The image file as `fatfs` sees it: a seekable stream that keeps small
//! I/O (FAT entries, directory entries, the boot sectors) in a sector
//! cache in memory and sends whole sectors of file data straight to the
//! file, in large writes.
//!
//! Why not `std::io::BufWriter` or `fscommon::BufStream`: `fatfs` reads
//! what it writes (the FAT while allocating, directories while adding
//! entries) and jumps between the FAT and the data area for every cluster.
//! A single buffer (`BufStream` has one of 512 bytes) is flushed at each
//! jump, so a 1 GiB image cost millions of system calls; reading a
//! directory entry by entry cost one each. Here only file data reaches the
//! file system as it comes, coalesced into writes of up to 1 MiB.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

const SECTOR: u64 = 512;
/// Cached sectors before the dirty ones are written back and the cache is
/// emptied (8 MiB): bounds memory for sites of many small files.
const CACHE_SECTORS: usize = 16 * 1024;
/// No sector.
const NONE: u64 = u64::MAX;
/// Coalesced file data is written once it reaches this size.
const PENDING_BYTES: usize = 1 << 20;

/// Hashes a sector number with one multiplication: `fatfs` reads
/// directories a few bytes at a time, so the cache is looked up tens of
/// millions of times for a large site, and SipHash (std's default, made
/// to resist chosen keys, which sector numbers are not) was a third of
/// the time.
#[derive(Default)]
struct SectorHasher(u64);

impl Hasher for SectorHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The sector cache's map.
type SectorMap = HashMap<u64, Sector, BuildHasherDefault<SectorHasher>>;

/// A cached sector.
struct Sector {
    bytes: [u8; SECTOR as usize],
    dirty: bool,
}

/// The image file, `len` bytes, as a `Read + Write + Seek` stream.
pub(crate) struct Storage {
    file: File,
    len: u64,
    pos: u64,
    cache: SectorMap,
    /// The sector last used, out of the map (`NONE` if none): `fatfs`
    /// reads a directory entry field by field, a dozen calls for each.
    hot_n: u64,
    hot: Sector,
    /// Whole sectors of data not yet written, starting at `pending_at`.
    pending: Vec<u8>,
    pending_at: u64,
}

impl Storage {
    /// A stream over `file`, which must be `len` bytes long.
    pub(crate) fn new(file: File, len: u64) -> Storage {
        Storage {
            file,
            len,
            pos: 0,
            cache: SectorMap::default(),
            hot_n: NONE,
            hot: Sector {
                bytes: [0; SECTOR as usize],
                dirty: false,
            },
            pending: Vec::new(),
            pending_at: 0,
        }
    }

    /// Write everything back; the file, complete.
    pub(crate) fn finish(mut self) -> io::Result<File> {
        self.write_back()?;
        Ok(self.file)
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all_at(&self.pending, self.pending_at)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Write the pending data and the dirty sectors, and empty the cache.
    fn write_back(&mut self) -> io::Result<()> {
        self.flush_pending()?;
        self.park_hot();
        let mut dirty: Vec<(u64, Sector)> = self.cache.drain().filter(|(_, s)| s.dirty).collect();
        dirty.sort_unstable_by_key(|&(n, _)| n);
        // Runs of consecutive sectors in one write each.
        let mut run: Vec<u8> = Vec::new();
        let mut run_at = 0;
        for (n, s) in dirty {
            if !run.is_empty() && run_at + run.len() as u64 != n * SECTOR {
                self.file.write_all_at(&run, run_at)?;
                run.clear();
            }
            if run.is_empty() {
                run_at = n * SECTOR;
            }
            run.extend_from_slice(&s.bytes);
        }
        if !run.is_empty() {
            self.file.write_all_at(&run, run_at)?;
        }
        Ok(())
    }

    /// Put the hot sector back in the map.
    fn park_hot(&mut self) {
        if self.hot_n != NONE {
            let hot = Sector {
                bytes: self.hot.bytes,
                dirty: self.hot.dirty,
            };
            self.cache.insert(self.hot_n, hot);
            self.hot_n = NONE;
        }
    }

    /// Sector `n`, read from the file if it is not cached.
    fn sector(&mut self, n: u64) -> io::Result<&mut Sector> {
        if n == self.hot_n {
            return Ok(&mut self.hot);
        }
        self.park_hot();
        self.hot = match self.cache.remove(&n) {
            Some(s) => s,
            None => {
                if self.cache.len() >= CACHE_SECTORS {
                    self.write_back()?;
                }
                let at = n * SECTOR;
                if at < self.pending_at + self.pending.len() as u64 && at + SECTOR > self.pending_at
                {
                    self.flush_pending()?;
                }
                let mut bytes = [0u8; SECTOR as usize];
                self.file.read_exact_at(&mut bytes, at)?;
                Sector {
                    bytes,
                    dirty: false,
                }
            }
        };
        self.hot_n = n;
        Ok(&mut self.hot)
    }

    fn check(&self, len: usize) -> io::Result<()> {
        if self.pos + len as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{len} bytes at {} pass the end of the {}-byte image",
                    self.pos, self.len
                ),
            ));
        }
        Ok(())
    }
}

impl Read for Storage {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min((self.len - self.pos.min(self.len)) as usize);
        let mut done = 0;
        while done < n {
            let at = self.pos + done as u64;
            let (s, off) = (at / SECTOR, (at % SECTOR) as usize);
            let k = (n - done).min(SECTOR as usize - off);
            let sector = self.sector(s)?;
            buf[done..done + k].copy_from_slice(&sector.bytes[off..off + k]);
            done += k;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Storage {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check(buf.len())?;
        let whole = buf.len() as u64 >= SECTOR
            && self.pos.is_multiple_of(SECTOR)
            && (buf.len() as u64).is_multiple_of(SECTOR);
        if whole {
            // File data: past any cached copy of these sectors, coalesced.
            let first = self.pos / SECTOR;
            let end = first + buf.len() as u64 / SECTOR;
            for s in first..end {
                self.cache.remove(&s);
            }
            if (first..end).contains(&self.hot_n) {
                self.hot_n = NONE;
            }
            if self.pending_at + self.pending.len() as u64 != self.pos
                || self.pending.len() + buf.len() > PENDING_BYTES
            {
                self.flush_pending()?;
                self.pending_at = self.pos;
            }
            if buf.len() >= PENDING_BYTES {
                self.file.write_all_at(buf, self.pos)?;
            } else {
                self.pending.extend_from_slice(buf);
            }
        } else {
            let mut done = 0;
            while done < buf.len() {
                let at = self.pos + done as u64;
                let (s, off) = (at / SECTOR, (at % SECTOR) as usize);
                let k = (buf.len() - done).min(SECTOR as usize - off);
                let sector = self.sector(s)?;
                sector.bytes[off..off + k].copy_from_slice(&buf[done..done + k]);
                sector.dirty = true;
                done += k;
            }
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Storage {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match pos {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the image",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mixed small and whole-sector writes, reads in between, the cache
    /// emptied on the way: the file ends up as a plain buffer would.
    #[test]
    fn behaves_as_a_plain_buffer() {
        let dir = std::env::temp_dir().join(format!("fatimg-storage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img");
        let len = 64 * 1024 * 1024;
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(len).unwrap();
        let mut s = Storage::new(file, len);
        let mut model = vec![0u8; len as usize];
        let mut x: u64 = 1;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        for i in 0..15_000u64 {
            let whole = next(3) == 0;
            let (at, n) = if whole {
                (
                    next(len / SECTOR - 2100) * SECTOR,
                    (1 + next(2048)) * SECTOR,
                )
            } else {
                (next(len - 2000), 1 + next(1500))
            };
            s.seek(SeekFrom::Start(at)).unwrap();
            if next(4) == 0 {
                let mut got = vec![0u8; n as usize];
                s.read_exact(&mut got).unwrap();
                assert!(
                    got == model[at as usize..(at + n) as usize],
                    "read {i} at {at}"
                );
            } else {
                let data: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
                s.write_all(&data).unwrap();
                model[at as usize..(at + n) as usize].copy_from_slice(&data);
            }
        }
        s.seek(SeekFrom::Start(len - 10)).unwrap();
        assert!(s.write_all(&[0; 11]).is_err(), "past the end");
        s.finish().unwrap();
        let got = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(got == model);
    }
}
