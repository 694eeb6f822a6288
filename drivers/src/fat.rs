//! Checks of a FAT volume before `embedded_sdmmc` reads it.
//!
//! A disk is data another domain controls: blkback serves whatever image
//! it was given. `embedded_sdmmc` 0.10 trusts the metadata it reads. Found
//! by fuzzing (`fuzz/`, target `fat`):
//!
//! - a boot sector with 0 sectors per cluster divides by zero, in every
//!   build;
//! - a FAT32 directory entry naming a cluster above 2^30 hits an explicit
//!   `panic!` in every build;
//! - reserved, FAT and root-directory sizes larger than the volume, and
//!   cluster numbers 0 and 1 in a directory entry or a FAT16 chain,
//!   overflow its `u32` arithmetic: a panic in builds with overflow checks
//!   (the simulator's tests), reads of the wrong blocks otherwise;
//! - a directory whose cluster chain loops is listed forever.
//!
//! So a guest checks what `embedded_sdmmc` will rely on first:
//! [`check_volume`] before `open_raw_volume`, and [`list_dir`] to list a
//! directory, which returns only entries whose clusters are in range and
//! whose chains end (and are long enough for the file). Everything is read
//! with bounds: each chain walk stops after the clusters the entry can
//! use. Every failure is a typed [`FatError`].

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::ControlFlow;
use embedded_sdmmc::{Block, BlockDevice, BlockIdx, DirEntry, LfnBuffer, ShortFileName};

/// What is wrong with a volume or a directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FatError {
    /// A block could not be read (the device's error, as text).
    Device(String),
    /// The partition table (MBR) is unusable: what is wrong.
    Partition(&'static str),
    /// The boot sector (BPB) is inconsistent: what is wrong.
    BootSector(&'static str),
    /// A cluster chain is broken (out of range, looping, too short): what
    /// is wrong.
    Chain(&'static str),
    /// Listing a directory failed (`embedded_sdmmc`'s error, as text).
    Directory(String),
}

impl fmt::Display for FatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FatError::Device(e) => write!(f, "FAT: reading the disk: {e}"),
            FatError::Partition(why) => write!(f, "FAT: partition table: {why}"),
            FatError::BootSector(why) => write!(f, "FAT: boot sector: {why}"),
            FatError::Chain(why) => write!(f, "FAT: cluster chain: {why}"),
            FatError::Directory(e) => write!(f, "FAT: listing a directory: {e}"),
        }
    }
}

impl core::error::Error for FatError {}

/// FAT16 or FAT32 (`embedded_sdmmc` reads no FAT12), by cluster count as
/// the specification decides it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FatKind {
    /// Fewer than 65,525 clusters.
    Fat16,
    /// 65,525 clusters or more.
    Fat32,
}

/// A checked volume: where its parts are, in absolute 512-byte blocks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// FAT16 or FAT32.
    pub kind: FatKind,
    /// First block of the partition (its boot sector).
    pub lba_start: u32,
    /// Blocks per cluster (a power of two, 1 to 128).
    pub blocks_per_cluster: u32,
    /// First block of the first FAT.
    pub fat_start: u32,
    /// First block of the data area (cluster 2).
    pub first_data_block: u32,
    /// Clusters in the data area (valid numbers: 2 to `clusters + 1`).
    pub clusters: u32,
    /// FAT32: the root directory's first cluster; FAT16: 0.
    pub root_cluster: u32,
}

/// Partition types `embedded_sdmmc` opens.
const PARTITION_TYPES: [u8; 5] = [0x04, 0x06, 0x0B, 0x0C, 0x0E];

/// A directory holds at most 65,536 entries of 32 bytes (2 MiB).
const MAX_DIR_BYTES: u64 = 65_536 * 32;

fn le16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_block<D: BlockDevice>(dev: &D, idx: u32) -> Result<Block, FatError>
where
    D::Error: fmt::Debug,
{
    let mut b = [Block::new()];
    dev.read(&mut b, BlockIdx(idx))
        .map_err(|e| FatError::Device(alloc::format!("block {idx}: {e:?}")))?;
    let [b] = b;
    Ok(b)
}

/// The last few blocks read: a directory's entries share blocks, and so do
/// the FAT entries of a chain.
struct Cached<'d, D> {
    dev: &'d D,
    slots: Vec<(u32, Block)>,
    next: usize,
}

impl<'d, D: BlockDevice> Cached<'d, D>
where
    D::Error: fmt::Debug,
{
    const SLOTS: usize = 4;

    fn new(dev: &'d D) -> Self {
        Cached {
            dev,
            slots: Vec::new(),
            next: 0,
        }
    }

    fn read(&mut self, idx: u32) -> Result<&Block, FatError> {
        if let Some(k) = self.slots.iter().position(|(i, _)| *i == idx) {
            return Ok(&self.slots[k].1);
        }
        let b = read_block(self.dev, idx)?;
        let k = if self.slots.len() < Self::SLOTS {
            self.slots.push((idx, b));
            self.slots.len() - 1
        } else {
            let k = self.next;
            self.slots[k] = (idx, b);
            self.next = (k + 1) % Self::SLOTS;
            k
        };
        Ok(&self.slots[k].1)
    }
}

/// Check partition `index` (0 to 3) of `dev` and its boot sector, as
/// `embedded_sdmmc`'s `open_raw_volume(VolumeIdx(index))` will read them:
/// the MBR signature, the partition's status, type and extent (inside the
/// disk), and the boot sector's sizes (512-byte sectors, a power-of-two
/// cluster size, one or two FATs large enough for every cluster, a data
/// area inside the partition, enough clusters for FAT16, a FAT32 root
/// directory chain that ends).
///
/// Errors: [`FatError`] saying what is wrong.
pub fn check_volume<D: BlockDevice>(dev: &D, index: usize) -> Result<Volume, FatError>
where
    D::Error: fmt::Debug,
{
    if index > 3 {
        return Err(FatError::Partition("no such partition"));
    }
    let disk_blocks = dev
        .num_blocks()
        .map_err(|e| FatError::Device(alloc::format!("size: {e:?}")))?
        .0;
    let mbr = read_block(dev, 0)?;
    let mbr = &mbr.contents;
    if le16(mbr, 510) != 0xAA55 {
        return Err(FatError::Partition("no MBR signature"));
    }
    let p = &mbr[446 + 16 * index..446 + 16 * (index + 1)];
    if p[0] & 0x7F != 0 {
        return Err(FatError::Partition("invalid status"));
    }
    if !PARTITION_TYPES.contains(&p[4]) {
        return Err(FatError::Partition("not a FAT16 or FAT32 partition"));
    }
    let lba_start = le32(p, 8);
    let num_blocks = le32(p, 12);
    if num_blocks == 0 || u64::from(lba_start) + u64::from(num_blocks) > u64::from(disk_blocks) {
        return Err(FatError::Partition("extends past the end of the disk"));
    }

    let bpb = read_block(dev, lba_start)?;
    let b = &bpb.contents;
    let bad = |why| Err(FatError::BootSector(why));
    if le16(b, 510) != 0xAA55 {
        return bad("no signature");
    }
    if le16(b, 11) != 512 {
        return bad("sectors are not 512 bytes");
    }
    let blocks_per_cluster = u32::from(b[13]);
    if !blocks_per_cluster.is_power_of_two() {
        return bad("sectors per cluster is not a power of two");
    }
    let reserved = le16(b, 14);
    let num_fats = u32::from(b[16]);
    let root_entries = le16(b, 17);
    let total = match le16(b, 19) {
        0 => le32(b, 32),
        n => n,
    };
    let fat_size = match le16(b, 22) {
        0 => le32(b, 36),
        n => n,
    };
    if reserved == 0 {
        return bad("no reserved sectors");
    }
    if num_fats == 0 || num_fats > 2 {
        return bad("not one or two FATs");
    }
    if fat_size == 0 {
        return bad("empty FAT");
    }
    if total == 0 || total > num_blocks {
        return bad("total sectors do not fit the partition");
    }
    let root_blocks = (u64::from(root_entries) * 32).div_ceil(512);
    let non_data = u64::from(reserved) + u64::from(num_fats) * u64::from(fat_size) + root_blocks;
    if non_data >= u64::from(total) {
        return bad("FATs and root directory leave no data area");
    }
    // Below `total` <= u32::MAX, so these fit.
    let clusters = ((u64::from(total) - non_data) / u64::from(blocks_per_cluster)) as u32;
    let kind = if clusters < 4085 {
        return bad("FAT12 (fewer than 4085 clusters)");
    } else if clusters < 65_525 {
        FatKind::Fat16
    } else if clusters <= 0x0FFF_FFF5 {
        FatKind::Fat32
    } else {
        return bad("more clusters than FAT32 can number");
    };
    let entry_bytes = if kind == FatKind::Fat16 { 2 } else { 4 };
    if u64::from(fat_size) * 512 < (u64::from(clusters) + 2) * entry_bytes {
        return bad("the FAT is smaller than the clusters it maps");
    }
    let fat_start = lba_start + reserved;
    let first_data_block = lba_start + non_data as u32;
    let root_cluster = match kind {
        FatKind::Fat16 => {
            if root_entries == 0 {
                return bad("FAT16 without a root directory");
            }
            0
        }
        FatKind::Fat32 => {
            if le16(b, 42) != 0 {
                return bad("FAT32 version is not 0.0");
            }
            let info = le16(b, 48);
            if info == 0 || info >= reserved {
                return bad("FSInfo sector outside the reserved sectors");
            }
            le32(b, 44)
        }
    };
    let vol = Volume {
        kind,
        lba_start,
        blocks_per_cluster,
        fat_start,
        first_data_block,
        clusters,
        root_cluster,
    };
    if kind == FatKind::Fat32 {
        vol.dir_chain(&mut Cached::new(dev), root_cluster)?;
    }
    Ok(vol)
}

impl Volume {
    /// Bytes in a cluster.
    pub fn bytes_per_cluster(&self) -> u64 {
        u64::from(self.blocks_per_cluster) * 512
    }

    fn max_dir_clusters(&self) -> u64 {
        MAX_DIR_BYTES.div_ceil(self.bytes_per_cluster())
    }

    fn in_range(&self, cluster: u32) -> bool {
        cluster >= 2 && u64::from(cluster) < u64::from(self.clusters) + 2
    }

    /// Follow the chain from `first` for at most `limit` clusters: every
    /// cluster must be in range. Returns the clusters seen and whether the
    /// chain ended (an end-of-chain mark) within them.
    ///
    /// Errors: [`FatError::Chain`] (out of range, a bad cluster);
    /// [`FatError::Device`].
    pub fn check_chain<D: BlockDevice>(
        &self,
        dev: &D,
        first: u32,
        limit: u64,
    ) -> Result<(u64, bool), FatError>
    where
        D::Error: fmt::Debug,
    {
        self.walk(&mut Cached::new(dev), first, limit)
    }

    /// A directory's chain: it must end within the largest directory.
    fn dir_chain<D: BlockDevice>(&self, dev: &mut Cached<'_, D>, first: u32) -> Result<(), FatError>
    where
        D::Error: fmt::Debug,
    {
        match self.walk(dev, first, self.max_dir_clusters() + 1)? {
            (_, true) => Ok(()),
            (_, false) => Err(FatError::Chain(
                "a directory longer than FAT allows (a loop?)",
            )),
        }
    }

    fn walk<D: BlockDevice>(
        &self,
        dev: &mut Cached<'_, D>,
        first: u32,
        limit: u64,
    ) -> Result<(u64, bool), FatError>
    where
        D::Error: fmt::Debug,
    {
        let (bytes, end, bad) = match self.kind {
            FatKind::Fat16 => (2u64, 0xFFF8, 0xFFF7),
            FatKind::Fat32 => (4, 0x0FFF_FFF8, 0x0FFF_FFF7),
        };
        let mut cluster = first;
        let mut seen = 0u64;
        loop {
            if !self.in_range(cluster) {
                return Err(FatError::Chain("cluster number out of range"));
            }
            seen += 1;
            if seen >= limit {
                return Ok((seen, false));
            }
            // `cluster` < clusters + 2, which the FAT covers (checked), so
            // the block is inside the partition.
            let offset = u64::from(cluster) * bytes;
            let block = self.fat_start + (offset / 512) as u32;
            let at = (offset % 512) as usize;
            let data = &dev.read(block)?.contents;
            let next = match self.kind {
                FatKind::Fat16 => le16(data, at),
                FatKind::Fat32 => le32(data, at) & 0x0FFF_FFFF,
            };
            if next >= end || (self.kind == FatKind::Fat32 && next == 1) {
                return Ok((seen, true));
            }
            if next == bad {
                return Err(FatError::Chain("a bad cluster"));
            }
            cluster = next;
        }
    }

    /// Check what `embedded_sdmmc` will do with directory entry `e`: a
    /// directory's chain must be in range and end within the largest
    /// directory FAT allows, 2 MiB (cluster 0 is the root); a file's chain
    /// must be in range as far as its size needs, and that long.
    ///
    /// Errors: [`FatError::Chain`]; [`FatError::Device`].
    pub fn check_entry<D: BlockDevice>(&self, dev: &D, e: &DirEntry) -> Result<(), FatError>
    where
        D::Error: fmt::Debug,
    {
        self.entry(&mut Cached::new(dev), e)
    }

    fn entry<D: BlockDevice>(&self, dev: &mut Cached<'_, D>, e: &DirEntry) -> Result<(), FatError>
    where
        D::Error: fmt::Debug,
    {
        // The entry's cluster as stored (embedded_sdmmc keeps it private).
        if e.entry_offset > 512 - 32 {
            return Err(FatError::Chain("directory entry outside its block"));
        }
        let block = &dev.read(e.entry_block.0)?.contents;
        let raw = &block[e.entry_offset as usize..e.entry_offset as usize + 32];
        let lo = le16(raw, 26);
        let cluster = match self.kind {
            FatKind::Fat16 => lo,
            FatKind::Fat32 => (le16(raw, 20) << 16) | lo,
        };
        if e.attributes.is_directory() {
            if cluster == 0 {
                return Ok(());
            }
            self.dir_chain(dev, cluster)
        } else if e.size == 0 {
            Ok(())
        } else {
            let need = u64::from(e.size).div_ceil(self.bytes_per_cluster());
            if self.walk(dev, cluster, need)?.0 < need {
                return Err(FatError::Chain("shorter than the file"));
            }
            Ok(())
        }
    }
}

/// A directory entry that [`list_dir`] found safe to open, with its long
/// name if it has one.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The entry.
    pub entry: DirEntry,
    /// Its long (VFAT) name.
    pub long_name: Option<String>,
}

/// List `dir` (at most `max` entries), skipping `.`, `..` and volume
/// labels, and return the entries that are safe to open by their short
/// name: each passes [`Volume::check_entry`] (read from `dev`, the device
/// under `dir`'s volume manager), and its short name opens it and nothing
/// else (corrupt directories can hold names that do not round-trip, or the
/// same name twice). Entries that fail are left out; the second element
/// says how many, with the first reason.
///
/// Errors: [`FatError::Directory`] if the listing itself fails.
#[allow(clippy::type_complexity)]
pub fn list_dir<
    D: BlockDevice,
    T: embedded_sdmmc::TimeSource,
    const DIRS: usize,
    const FILES: usize,
    const VOLUMES: usize,
    C: BlockDevice,
>(
    dir: &embedded_sdmmc::Directory<'_, D, T, DIRS, FILES, VOLUMES>,
    vol: &Volume,
    dev: &C,
    max: usize,
) -> Result<(Vec<Listed>, usize, Option<FatError>), FatError>
where
    D::Error: fmt::Debug,
    C::Error: fmt::Debug,
{
    let mut storage = [0u8; 256];
    let mut lfn = LfnBuffer::new(&mut storage);
    let mut all: Vec<Listed> = Vec::new();
    dir.iterate_dir_lfn(&mut lfn, |e, long| {
        let dot = e.name == ShortFileName::this_dir() || e.name == ShortFileName::parent_dir();
        if !e.attributes.is_volume() && !dot {
            all.push(Listed {
                entry: e.clone(),
                long_name: long.map(String::from),
            });
        }
        if all.len() >= max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .map_err(|e| FatError::Directory(alloc::format!("{e:?}")))?;
    let mut count: BTreeMap<ShortFileName, usize> = BTreeMap::new();
    for l in &all {
        *count.entry(l.entry.name).or_insert(0) += 1;
    }
    let mut reader = Cached::new(dev);
    let mut out = Vec::with_capacity(all.len());
    let mut skipped = 0;
    let mut first = None;
    for l in all {
        let name = alloc::format!("{}", l.entry.name);
        let unique = count.get(&l.entry.name) == Some(&1);
        let round_trips = ShortFileName::create_from_str(&name).is_ok_and(|n| n == l.entry.name);
        let checked = if unique && round_trips {
            vol.entry(&mut reader, &l.entry)
        } else {
            Err(FatError::Chain(
                "a short name that does not open this entry",
            ))
        };
        match checked {
            Ok(()) => out.push(l),
            Err(e) => {
                skipped += 1;
                first.get_or_insert(e);
            }
        }
    }
    Ok((out, skipped, first))
}
