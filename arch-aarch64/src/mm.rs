//! The MMU: an identity map (virtual address = physical address) with the
//! right memory types, then caches on.
//!
//! The tables are `xenpal_arm::lpae`'s (shared with 32-bit Arm, whose LPAE
//! descriptors are these): 4 KiB granule, a level-1 table of 1 GiB entries
//! pointing to level-2 tables of 2 MiB blocks. Here: 39-bit virtual
//! addresses (`T0SZ` = 25), and the AArch64 registers that turn it on.

pub use xenpal_arm::lpae::{
    ATTR_DEVICE, ATTR_NORMAL, BLOCK, GIB, L2_TABLES, MAIR, MemKind, MmError, Table, Tables,
    block_descriptor, table_descriptor,
};

/// Highest address (exclusive) the map can cover: 39-bit VA.
pub const VA_LIMIT: u64 = xenpal_arm::lpae::VA_LIMIT_39;

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
    use crate::boot_info::Region;

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

    #[test]
    fn tcr_has_39_bit_addresses_and_the_physical_size() {
        assert_eq!(tcr(2) >> 32, 2);
        assert_eq!(tcr(0) & 0x3f, 25);
    }
}
