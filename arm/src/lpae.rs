//! Identity-map translation tables in the long-descriptor format, which
//! AArch64 (4 KiB granule) and 32-bit Arm with LPAE share: a first-level
//! table of 1 GiB entries pointing to second-level tables of 2 MiB blocks,
//! with Normal or Device memory types.
//!
//! Xen's Arm ABI requires memory shared with Xen or another domain (RAM, the
//! grant-table region, foreign mappings) to be Normal Write-Back
//! Inner-Shareable; QEMU does not model caches, so getting this wrong would
//! only show on a board. Device frames (GIC, UART) are Device-nGnRE. Nothing
//! else is mapped, so a stray access faults and is reported.
//!
//! Regions are rounded out to 2 MiB. How far the map reaches is the arch's:
//! 512 GiB (39-bit addresses) on AArch64, 4 GiB on 32-bit Arm, where a
//! virtual address is 32 bits ([`Tables::reaching`]).

use core::fmt;
use xen_pv::devicetree::Region;

/// Bytes covered by one level-2 block.
pub const BLOCK: u64 = 2 << 20;
/// Bytes covered by one level-1 entry.
pub const GIB: u64 = 1 << 30;
/// Highest address (exclusive) an AArch64 map covers: 39-bit VA.
pub const VA_LIMIT_39: u64 = 1 << 39;
/// Highest address (exclusive) a 32-bit Arm map covers.
pub const VA_LIMIT_32: u64 = 1 << 32;
/// Level-2 tables available (each maps 1 GiB).
pub const L2_TABLES: usize = 8;

/// `MAIR` attribute index of Device-nGnRE memory.
pub const ATTR_DEVICE: u64 = 0;
/// `MAIR` attribute index of Normal Write-Back memory.
pub const ATTR_NORMAL: u64 = 1;
/// `MAIR_EL1` (AArch64) or `MAIR0` (32-bit Arm, its low word): attr0
/// Device-nGnRE (0x04), attr1 Normal Inner/Outer Write-Back
/// Read/Write-Allocate (0xff).
pub const MAIR: u64 = 0x04 | (0xff << 8);

/// What kind of memory a region is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MemKind {
    /// RAM and memory shared with Xen: Normal, Write-Back, Inner-Shareable.
    Normal,
    /// Device registers: Device-nGnRE, never executable.
    Device,
}

/// Why a region cannot be mapped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MmError {
    /// The region ends above what the map reaches.
    OutOfRange(Region),
    /// More distinct gigabytes than there are level-2 tables.
    TooManyTables,
    /// The region overlaps one already mapped with another kind.
    Conflict(Region),
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmError::OutOfRange(r) => write!(
                f,
                "region {:#x}+{:#x} is beyond what the identity map reaches",
                r.base, r.size
            ),
            MmError::TooManyTables => {
                write!(f, "regions span more than {L2_TABLES} GiB-sized tables")
            }
            MmError::Conflict(r) => write!(
                f,
                "region {:#x}+{:#x} overlaps another of a different kind",
                r.base, r.size
            ),
        }
    }
}

/// One 4 KiB translation table.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct Table(pub [u64; 512]);

/// The identity map's tables, mapping nothing at or above `LIMIT` (at most
/// 512 GiB, what a first-level table of 512 entries reaches; AArch64's
/// 39-bit addresses by default). Descriptors hold table addresses, so build
/// them where they will live ([`Tables::map`] is told the address of the
/// level-2 tables). All zeroes when empty, so a `static` of them costs the
/// image no bytes (it lives in `.bss`).
pub struct Tables<const LIMIT: u64 = VA_LIMIT_39> {
    /// Level 1: one entry per GiB.
    pub l1: Table,
    /// Level 2 tables, handed out in order.
    pub l2: [Table; L2_TABLES],
    /// Which GiB each level-2 table maps.
    gib_of: [Option<u64>; L2_TABLES],
}

impl<const LIMIT: u64> Default for Tables<LIMIT> {
    fn default() -> Self {
        Tables::new()
    }
}

/// A level-2 block descriptor mapping `pa` as `kind`.
pub fn block_descriptor(pa: u64, kind: MemKind) -> u64 {
    const VALID_BLOCK: u64 = 0b01;
    const AF: u64 = 1 << 10;
    const SH_INNER: u64 = 0b11 << 8;
    const PXN: u64 = 1 << 53;
    // UXN on AArch64, XN on 32-bit Arm.
    const XN: u64 = 1 << 54;
    let addr = pa & !(BLOCK - 1) & ((1 << 48) - 1);
    match kind {
        // Executable: the image is Normal memory. (Bit 54 is AArch64's
        // UXN but 32-bit Arm's XN, which would forbid it at PL1 too; with
        // no EL0 code, leaving it clear costs AArch64 nothing.)
        MemKind::Normal => addr | VALID_BLOCK | AF | SH_INNER | (ATTR_NORMAL << 2),
        MemKind::Device => addr | VALID_BLOCK | AF | (ATTR_DEVICE << 2) | PXN | XN,
    }
}

/// A level-1 table descriptor pointing at the table at `pa`.
pub fn table_descriptor(pa: u64) -> u64 {
    (pa & !0xfff & ((1 << 48) - 1)) | 0b11
}

impl<const LIMIT: u64> Tables<LIMIT> {
    /// Empty tables (a `const fn`, for a `static`).
    pub const fn new() -> Self {
        Tables {
            l1: Table([0; 512]),
            l2: [const { Table([0; 512]) }; L2_TABLES],
            gib_of: [None; L2_TABLES],
        }
    }

    /// Highest address (exclusive) the map may cover.
    const fn limit() -> u64 {
        if LIMIT < VA_LIMIT_39 {
            LIMIT
        } else {
            VA_LIMIT_39
        }
    }

    /// Map `region` (rounded out to 2 MiB) as `kind`. `l2_base` is the
    /// physical address of `self.l2[0]` (tables are contiguous).
    ///
    /// Errors: [`MmError`].
    pub fn map(&mut self, region: Region, kind: MemKind, l2_base: u64) -> Result<(), MmError> {
        if region.size == 0 {
            return Ok(());
        }
        let start = region.base & !(BLOCK - 1);
        let end = region
            .end()
            .checked_add(BLOCK - 1)
            .ok_or(MmError::OutOfRange(region))?
            & !(BLOCK - 1);
        if end > Self::limit() {
            return Err(MmError::OutOfRange(region));
        }
        let mut pa = start;
        while pa < end {
            let gib = pa / GIB;
            let t = match self.gib_of.iter().position(|g| *g == Some(gib)) {
                Some(t) => t,
                None => {
                    let t = self
                        .gib_of
                        .iter()
                        .position(Option::is_none)
                        .ok_or(MmError::TooManyTables)?;
                    self.gib_of[t] = Some(gib);
                    self.l1.0[gib as usize] = table_descriptor(l2_base + (t as u64) * 4096);
                    t
                }
            };
            let idx = ((pa % GIB) / BLOCK) as usize;
            let want = block_descriptor(pa, kind);
            let have = self.l2[t].0[idx];
            if have != 0 && have != want {
                return Err(MmError::Conflict(region));
            }
            self.l2[t].0[idx] = want;
            pa += BLOCK;
        }
        Ok(())
    }

    /// How `pa` is mapped: its kind, or `None` if unmapped.
    pub fn lookup(&self, pa: u64) -> Option<MemKind> {
        if pa >= Self::limit() {
            return None;
        }
        let t = self.gib_of.iter().position(|g| *g == Some(pa / GIB))?;
        let d = self.l2[t].0[((pa % GIB) / BLOCK) as usize];
        if d & 1 == 0 {
            return None;
        }
        Some(if (d >> 2) & 0b111 == ATTR_NORMAL {
            MemKind::Normal
        } else {
            MemKind::Device
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;

    #[test]
    fn maps_ram_and_devices_with_the_right_types() {
        let mut t = Box::<Tables>::default();
        let base = 0x1000_0000;
        t.map(
            Region {
                base: 0x4000_0000,
                size: 0x800_0000,
            },
            MemKind::Normal,
            base,
        )
        .unwrap();
        t.map(
            Region {
                base: 0x0800_0000,
                size: 0x1_0000,
            },
            MemKind::Device,
            base,
        )
        .unwrap();
        t.map(
            Region {
                base: 0x3800_0000,
                size: 0x100_0000,
            },
            MemKind::Normal,
            base,
        )
        .unwrap();
        assert_eq!(t.lookup(0x4000_0000), Some(MemKind::Normal));
        assert_eq!(t.lookup(0x47ff_ffff), Some(MemKind::Normal));
        assert_eq!(t.lookup(0x4800_0000), None, "nothing past the bank");
        assert_eq!(t.lookup(0x0800_1000), Some(MemKind::Device));
        assert_eq!(t.lookup(0x3900_0000), None, "grant region is 16 MiB");
        // GiB 1 (RAM, mapped first) and GiB 0 each got a level-2 table.
        assert_eq!(t.l1.0[1], table_descriptor(base));
        assert_eq!(t.l1.0[0], table_descriptor(base + 4096));
        // Normal is inner-shareable write-back (attr 1), device is XN.
        let n = block_descriptor(0x4000_0000, MemKind::Normal);
        assert_eq!((n >> 2) & 7, ATTR_NORMAL);
        assert_eq!((n >> 8) & 3, 0b11);
        let d = block_descriptor(0x0800_0000, MemKind::Device);
        assert_ne!(d & (1 << 53), 0);
    }

    #[test]
    fn conflicts_and_limits_are_errors() {
        let mut t = Box::<Tables>::default();
        let r = Region {
            base: 0x0900_0000,
            size: 0x1000,
        };
        t.map(r, MemKind::Device, 0).unwrap();
        assert_eq!(t.map(r, MemKind::Normal, 0), Err(MmError::Conflict(r)));
        let far = Region {
            base: 1 << 40,
            size: 0x1000,
        };
        assert_eq!(
            t.map(far, MemKind::Normal, 0),
            Err(MmError::OutOfRange(far))
        );
        for g in 1..L2_TABLES as u64 {
            t.map(
                Region {
                    base: g * GIB,
                    size: 1,
                },
                MemKind::Normal,
                0,
            )
            .unwrap();
        }
        assert_eq!(
            t.map(
                Region {
                    base: 20 * GIB,
                    size: 1
                },
                MemKind::Normal,
                0
            ),
            Err(MmError::TooManyTables)
        );
        // A 32-bit map stops at 4 GiB.
        let mut t32 = Box::new(Tables::<VA_LIMIT_32>::new());
        let high = Region {
            base: 0xffe0_0000,
            size: 0x20_0001,
        };
        assert_eq!(
            t32.map(high, MemKind::Device, 0),
            Err(MmError::OutOfRange(high))
        );
        t32.map(
            Region {
                base: 0xffe0_0000,
                size: 0x20_0000,
            },
            MemKind::Device,
            0,
        )
        .unwrap();
        assert_eq!(t32.lookup(0xffff_f000), Some(MemKind::Device));
    }
}
