//! The MMU with LPAE long descriptors: an identity map of the 4 GiB address
//! space in 1 GiB blocks — the gigabyte holding the image (guest RAM, from
//! 0x40000000) Normal write-back cacheable, the others Device — then the
//! data and instruction caches on. The descriptor format is AArch64's (the
//! 64-bit entries of a 4 KiB-granule table); with `TTBCR.T0SZ` 0 the first
//! level has just four entries.

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
    #[repr(C, align(32))]
    struct L1([u64; 4]);
    static mut L1_TABLE: L1 = L1([0; 4]);

    /// Build the table and turn the MMU and caches on.
    pub fn enable() {
        let image = crate::mm::enable as *const () as usize as u64;
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

/// Turn the MMU and caches on with the identity map (the entry code does,
/// before the guest runs).
pub fn enable() {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    hw::enable();
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
