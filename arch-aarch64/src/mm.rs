//! The MMU: an identity map (virtual address = physical address) with the
//! right memory types, then caches on.
//!
//! Xen's Arm ABI requires memory shared with Xen or another domain (RAM, the
//! grant-table region, foreign mappings) to be Normal Write-Back
//! Inner-Shareable; QEMU does not model caches, so getting this wrong would
//! only show on a board. Device frames (GIC, UART) are Device-nGnRE. Nothing
//! else is mapped, so a stray access faults and is reported.
//!
//! Layout: 4 KiB granule, 39-bit virtual addresses (`T0SZ` = 25), a level-1
//! table of 1 GiB entries pointing to level-2 tables of 2 MiB blocks.
//! Regions are rounded out to 2 MiB.

use crate::boot_info::Region;
use core::fmt;

/// Bytes covered by one level-2 block.
pub const BLOCK: u64 = 2 << 20;
/// Bytes covered by one level-1 entry.
pub const GIB: u64 = 1 << 30;
/// Highest address (exclusive) the map can cover: 39-bit VA.
pub const VA_LIMIT: u64 = 1 << 39;
/// Level-2 tables available (each maps 1 GiB).
pub const L2_TABLES: usize = 8;

/// `MAIR_EL1` attribute index of Device-nGnRE memory.
pub const ATTR_DEVICE: u64 = 0;
/// `MAIR_EL1` attribute index of Normal Write-Back memory.
pub const ATTR_NORMAL: u64 = 1;
/// `MAIR_EL1`: attr0 Device-nGnRE (0x04), attr1 Normal Inner/Outer
/// Write-Back Read/Write-Allocate (0xff).
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
    /// The region ends above what 39-bit addresses reach.
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
                "region {:#x}+{:#x} is beyond the 512 GiB identity map",
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

/// The identity map's tables. Descriptors hold table addresses, so build
/// them where they will live ([`Tables::map`] is told the address of the
/// level-2 tables).
pub struct Tables {
    /// Level 1: one entry per GiB.
    pub l1: Table,
    /// Level 2 tables, handed out in order.
    pub l2: [Table; L2_TABLES],
    /// Which GiB each level-2 table maps.
    gib_of: [Option<u64>; L2_TABLES],
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            l1: Table([0; 512]),
            l2: core::array::from_fn(|_| Table([0; 512])),
            gib_of: [None; L2_TABLES],
        }
    }
}

/// A level-2 block descriptor mapping `pa` as `kind`.
pub fn block_descriptor(pa: u64, kind: MemKind) -> u64 {
    const VALID_BLOCK: u64 = 0b01;
    const AF: u64 = 1 << 10;
    const SH_INNER: u64 = 0b11 << 8;
    const PXN: u64 = 1 << 53;
    const UXN: u64 = 1 << 54;
    let addr = pa & !(BLOCK - 1) & ((1 << 48) - 1);
    match kind {
        MemKind::Normal => addr | VALID_BLOCK | AF | SH_INNER | (ATTR_NORMAL << 2) | UXN,
        MemKind::Device => addr | VALID_BLOCK | AF | (ATTR_DEVICE << 2) | PXN | UXN,
    }
}

/// A level-1 table descriptor pointing at the table at `pa`.
pub fn table_descriptor(pa: u64) -> u64 {
    (pa & !0xfff & ((1 << 48) - 1)) | 0b11
}

impl Tables {
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
        if end > VA_LIMIT {
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
        if pa >= VA_LIMIT {
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

/// `TCR_EL1` for the map: 39-bit VAs, 4 KiB granule, walks Inner-Shareable
/// Write-Back, TTBR1 walks disabled, physical address size `ips`
/// (`ID_AA64MMFR0_EL1.PARange`).
pub fn tcr(ips: u64) -> u64 {
    const T0SZ: u64 = 64 - 39;
    const IRGN0_WB: u64 = 1 << 8;
    const ORGN0_WB: u64 = 1 << 10;
    const SH0_INNER: u64 = 0b11 << 12;
    const TG0_4K: u64 = 0 << 14;
    const EPD1: u64 = 1 << 23;
    T0SZ | IRGN0_WB | ORGN0_WB | SH0_INNER | TG0_4K | EPD1 | ((ips & 0b111) << 32)
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hw {
    use super::*;

    static mut TABLES: Option<Tables> = None;

    /// Invalidate data-cache lines covering `[start, end)`: memory written
    /// with the MMU off went straight to RAM, and stale lines must not
    /// shadow it once caches are on.
    fn invalidate_dcache(start: u64, end: u64) {
        let ctr: u64;
        // SAFETY: reading CTR_EL0 has no side effects.
        unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
        let line = 4u64 << ((ctr >> 16) & 0xf);
        let mut a = start & !(line - 1);
        while a < end {
            // SAFETY: invalidating by VA only drops cache lines; with the
            // MMU off every line there is stale (memory holds the data).
            unsafe { core::arch::asm!("dc ivac, {}", in(reg) a, options(nostack)) };
            a += line;
        }
        // SAFETY: barrier only.
        unsafe { core::arch::asm!("dsb sy", options(nostack)) };
    }

    /// Build the identity map for `regions` and turn the MMU and caches on.
    /// `image` is the guest image's range (written with the MMU off).
    pub fn enable(regions: &[(Region, MemKind)], image: Region) -> Result<(), MmError> {
        // SAFETY: runs once at boot, single vCPU, before anything else
        // reaches TABLES; the reference does not escape this function
        // except through TTBR0, which the hardware reads.
        let tables = unsafe { &mut *core::ptr::addr_of_mut!(TABLES) };
        let t = tables.insert(Tables::default());
        let l2_base = t.l2.as_ptr() as u64;
        for (r, k) in regions {
            t.map(*r, *k, l2_base)?;
        }
        let l1 = &t.l1 as *const Table as u64;
        let mmfr0: u64;
        // SAFETY: reading an ID register has no side effects.
        unsafe {
            core::arch::asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack))
        };
        invalidate_dcache(image.base, image.end());
        // SAFETY: the tables map every region the program uses (its image,
        // stack, heap and the device frames it touches), identity-mapped,
        // so turning the MMU on does not move anything under the running
        // code. The sequence follows the architecture's requirements:
        // registers, barriers, TLB invalidation, then SCTLR_EL1.M/C/I.
        unsafe {
            core::arch::asm!(
                "msr mair_el1, {mair}",
                "msr tcr_el1, {tcr}",
                "msr ttbr0_el1, {ttbr}",
                "dsb ish",
                "isb",
                "tlbi vmalle1",
                "dsb ish",
                "isb",
                "mrs {tmp}, sctlr_el1",
                "orr {tmp}, {tmp}, #(1 << 0)",
                "orr {tmp}, {tmp}, #(1 << 2)",
                "orr {tmp}, {tmp}, #(1 << 12)",
                "msr sctlr_el1, {tmp}",
                "isb",
                mair = in(reg) MAIR,
                tcr = in(reg) tcr(mmfr0 & 0b1111),
                ttbr = in(reg) l1,
                tmp = out(reg) _,
                options(nostack),
            );
        }
        Ok(())
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use hw::enable;

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
        assert_eq!(tcr(2) >> 32, 2);
        assert_eq!(tcr(0) & 0x3f, 25);
    }
}
