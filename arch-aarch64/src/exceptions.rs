//! Unexpected exceptions: the frame the vector code saves, which vector it
//! came through, and the report: the exception class, syndrome, faulting
//! address and where it happened, on the emergency console; then the domain
//! is crashed (`SCHEDOP_shutdown` with `SHUTDOWN_crash`). The vectors
//! themselves are in `start.rs`; an IRQ goes to `irq.rs` instead.

/// Saved registers of an exception, as the vector code pushes them.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    /// `x0`..`x18`.
    pub x: [u64; 19],
    /// Frame pointer.
    pub x29: u64,
    /// Link register.
    pub x30: u64,
    /// Exception link register: where the exception happened.
    pub elr: u64,
    /// Saved program status.
    pub spsr: u64,
    /// Padding to 16 bytes.
    pub _pad: u64,
}

/// Which vector an exception came through (index into the vector table).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VectorKind {
    /// Synchronous exception from the current EL (a fault, a bad hvc).
    CurrentSync,
    /// IRQ from the current EL.
    CurrentIrq,
    /// FIQ from the current EL.
    CurrentFiq,
    /// SError from the current EL.
    CurrentSError,
    /// Anything else (EL0, AArch32, SP_EL0): never expected.
    Other(u64),
}

impl VectorKind {
    /// From the vector number the entry code passes (0..16).
    pub fn from_index(i: u64) -> Self {
        match i {
            4 => VectorKind::CurrentSync,
            5 => VectorKind::CurrentIrq,
            6 => VectorKind::CurrentFiq,
            7 => VectorKind::CurrentSError,
            n => VectorKind::Other(n),
        }
    }
}

/// The name of an exception class (`ESR_EL1.EC`).
pub fn exception_class(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x07 => "SIMD/FP access",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x18 => "MSR/MRS/system instruction",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// Report the exception and crash the domain. Never returns.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn fatal(kind: VectorKind, frame: &ExceptionFrame) -> ! {
    let esr: u64;
    let far: u64;
    // SAFETY: reading the fault syndrome and address registers at EL1 has
    // no side effects.
    unsafe {
        core::arch::asm!("mrs {}, esr_el1", out(reg) esr, options(nomem, nostack));
        core::arch::asm!("mrs {}, far_el1", out(reg) far, options(nomem, nostack));
    }
    let ec = esr >> 26;
    crate::eprintln!(
        "xenpal: unexpected exception {kind:?}: {} (ESR_EL1 {esr:#x}, EC {ec:#x}), FAR_EL1 {far:#x}, ELR_EL1 {:#x}, SPSR {:#x}, LR {:#x}",
        exception_class(ec),
        frame.elr,
        frame.spsr,
        frame.x30
    );
    crate::platform::crash()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_common_classes() {
        assert_eq!(exception_class(0x25), "data abort");
        assert_eq!(exception_class(0x21), "instruction abort");
        assert_eq!(exception_class(0x3f), "other");
        assert_eq!(VectorKind::from_index(5), VectorKind::CurrentIrq);
    }
}
