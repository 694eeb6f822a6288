//! The MMU with LPAE long descriptors, in two steps.
//!
//! - [`early`], from the entry code: an identity map of the 4 GiB address
//!   space in 1 GiB blocks — the gigabyte holding the image (guest RAM,
//!   from 0x40000000) Normal write-back cacheable, the others Device — then
//!   the data and instruction caches on, so Rust (the heap, the device-tree
//!   parser) runs on cacheable memory from its first line.
//! - [`enable`], from the platform's boot: the map the device tree asks for
//!   (`xenpal_arm::lpae`'s tables, shared with AArch64: 2 MiB blocks, RAM
//!   and Xen's grant and foreign-page regions Normal, the GIC Device,
//!   nothing else), switched to with the MMU on — both maps are identity
//!   maps with the image Normal, so nothing moves under the running code.
//!
//! The descriptor format is AArch64's (the 64-bit entries of a 4 KiB-granule
//! table); with `TTBCR.T0SZ` 0 the first level has just four entries.

#[cfg(all(target_arch = "arm", target_os = "none"))]
use crate::boot_info::Region;
pub use xenpal_arm::lpae::{MemKind, MmError, Tables, VA_LIMIT_32};

/// One gigabyte, the size of a first-level block.
pub const GIB: u64 = 1 << 30;
/// `MAIR0`: attribute 0 Device-nGnRnE (0x00), attribute 1 Normal write-back
/// read/write-allocate (inner and outer).
pub const MAIR0: u32 = 0xff << 8;
/// Attribute index of Device memory.
pub const ATTR_DEVICE: u64 = 0;
/// Attribute index of Normal memory.
pub const ATTR_NORMAL: u64 = 1;

/// The first-level block descriptor mapping the gigabyte at `pa` with
/// attribute `attr`: valid block, access flag set, read/write at PL1,
/// inner shareable for Normal memory, never executable for Device memory.
pub fn block(pa: u64, attr: u64) -> u64 {
    const VALID_BLOCK: u64 = 0b01;
    const AF: u64 = 1 << 10;
    const SH_INNER: u64 = 0b11 << 8;
    const XN: u64 = 1 << 54;
    let base = (pa & !(GIB - 1)) | VALID_BLOCK | (attr << 2) | AF;
    if attr == ATTR_NORMAL {
        base | SH_INNER
    } else {
        base | XN
    }
}

/// The four first-level entries: the gigabyte containing `image` Normal,
/// the rest Device.
pub fn table(image: u64) -> [u64; 4] {
    let mut t = [0u64; 4];
    for (i, e) in t.iter_mut().enumerate() {
        let pa = i as u64 * GIB;
        let attr = if image / GIB == i as u64 {
            ATTR_NORMAL
        } else {
            ATTR_DEVICE
        };
        *e = block(pa, attr);
    }
    t
}

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod hw {
    use super::*;

    #[repr(C, align(32))]
    struct L1([u64; 4]);
    static mut L1_TABLE: L1 = L1([0; 4]);

    static mut TABLES: Tables<VA_LIMIT_32> = Tables::new();

    /// Build the map for `regions` and switch to it.
    pub fn enable(regions: &[(Region, MemKind)]) -> Result<(), MmError> {
        // SAFETY: runs once at boot, single vCPU, before anything else
        // reaches TABLES; the reference does not escape this function
        // except through TTBR0, which the hardware reads.
        let t = unsafe { &mut *core::ptr::addr_of_mut!(TABLES) };
        let l2_base = t.l2.as_ptr() as usize as u64;
        for (r, k) in regions {
            t.map(*r, *k, l2_base)?;
        }
        let l1 = &t.l1 as *const _ as usize as u32;
        // SAFETY: the new tables identity-map every region the program
        // uses (its image, stack and heap are in RAM, mapped Normal as in
        // the early map), so switching TTBR0 with the MMU on moves nothing
        // under the running code; the barriers make the table writes
        // visible to the walker before the switch, and the TLB is
        // invalidated after it.
        unsafe {
            core::arch::asm!(
                "dsb",
                "mcrr p15, 0, {l1}, {zero}, c2",
                "isb",
                "mcr p15, 0, {zero}, c8, c7, 0",
                "dsb",
                "isb",
                l1 = in(reg) l1,
                zero = in(reg) 0u32,
                options(nostack),
            );
        }
        Ok(())
    }

    /// Build the early table and turn the MMU and caches on.
    pub fn early() {
        let image = crate::mm::early as *const () as usize as u64;
        let t = super::table(image);
        let table = (&raw mut L1_TABLE).cast::<u64>();
        for (i, e) in t.iter().enumerate() {
            // SAFETY: the table is ours, written before the MMU uses it.
            unsafe { table.add(i).write_volatile(*e) };
        }
        let base = table as u32;
        // TTBCR: EAE, T0SZ 0, walks inner/outer write-back, inner shareable.
        let ttbcr: u32 = (1 << 31) | (0b11 << 12) | (0b01 << 10) | (0b01 << 8);
        // SCTLR: M (MMU), C (data cache), I (instruction cache).
        let sctlr_on: u32 = 1 | (1 << 2) | (1 << 12);
        // SAFETY: the table identity-maps the whole address space, the
        // image's gigabyte as Normal memory, so execution continues at the
        // same addresses once the MMU is on; the barriers order the writes
        // before the switch.
        unsafe {
            core::arch::asm!(
                "dsb",
                "mcr p15, 0, {mair0}, c10, c2, 0",
                "mcr p15, 0, {zero}, c10, c2, 1",
                "mcr p15, 0, {ttbcr}, c2, c0, 2",
                "mcrr p15, 0, {base}, {zero}, c2",
                "mcr p15, 0, {zero}, c8, c7, 0",
                "dsb",
                "isb",
                "mrc p15, 0, {tmp}, c1, c0, 0",
                "orr {tmp}, {tmp}, {on}",
                "mcr p15, 0, {tmp}, c1, c0, 0",
                "isb",
                mair0 = in(reg) super::MAIR0,
                zero = in(reg) 0u32,
                ttbcr = in(reg) ttbcr,
                base = in(reg) base,
                on = in(reg) sctlr_on,
                tmp = out(reg) _,
                options(nostack),
            );
        }
    }
}

/// Whether the MMU and both caches are on (`SCTLR.M`, `.C`, `.I`); false
/// off target.
pub fn enabled() -> bool {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    {
        let sctlr: u32;
        // SAFETY: reading SCTLR has no side effect.
        unsafe {
            core::arch::asm!("mrc p15, 0, {}, c1, c0, 0", out(reg) sctlr, options(nomem, nostack))
        };
        let on = 1 | (1 << 2) | (1 << 12);
        sctlr & on == on
    }
    #[cfg(not(all(target_arch = "arm", target_os = "none")))]
    false
}

/// Turn the MMU and caches on with the early identity map (the entry code
/// does, before the guest runs).
pub fn early() {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    hw::early();
}

/// Switch to the identity map of `regions` (the platform's boot does, once
/// it has read the device tree).
///
/// Errors: [`MmError`] (a region reaches past 4 GiB, overlaps another of a
/// different kind, or the regions span more gigabytes than there are
/// tables); the early map then stays.
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub fn enable(regions: &[(Region, MemKind)]) -> Result<(), MmError> {
    hw::enable(regions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_map_in_gigabytes() {
        let t = table(0x4000_8000);
        assert_eq!(
            t[1],
            0x4000_0000 | 0b01 | (ATTR_NORMAL << 2) | (1 << 10) | (0b11 << 8)
        );
        assert_eq!(t[0], 0b01 | (ATTR_DEVICE << 2) | (1 << 10) | (1 << 54));
        assert_eq!(t[3] & !(GIB - 1) & ((1 << 40) - 1), 3 * GIB);
        assert!(
            t.iter().all(|e| e & (1 << 10) != 0),
            "access flag everywhere"
        );
    }
}
