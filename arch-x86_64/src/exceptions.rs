//! Unexpected exceptions: the trap table, where every CPU exception a PV
//! guest can take goes to a stub that reports it (vector, error code,
//! where, `cr2` for a page fault) on the emergency console and crashes the
//! domain, and the failsafe callback, which reports the segments Xen could
//! not restore and crashes too. A unikernel has no exception it expects to
//! survive.

/// The name of exception `vector`.
pub fn name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD error",
        _ => "reserved",
    }
}

/// Whether the CPU pushes an error code for exception `vector`.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// Vectors the trap table covers (0..=19; 9 and 15 are reserved).
pub const VECTORS: [u8; 18] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19,
];

/// The frame Xen pushes for an exception, decoded: `rcx, r11, [error],
/// rip, cs, rflags, rsp, ss`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TrapFrame {
    /// The error code (0 if the vector has none).
    pub error: u64,
    /// Where it happened.
    pub rip: u64,
    /// The stack pointer at the time.
    pub rsp: u64,
    /// Flags at the time.
    pub rflags: u64,
}

impl TrapFrame {
    /// Decode the words Xen pushed for `vector` (at least 8).
    pub fn decode(vector: u8, words: &[u64; 8]) -> Self {
        let at = if has_error_code(vector) { 3 } else { 2 };
        TrapFrame {
            error: if has_error_code(vector) { words[2] } else { 0 },
            rip: words[at],
            rflags: words[at + 2],
            rsp: words[at + 3],
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod entry {
    use super::*;
    use xen_pv::abi::x86_64::{FLAT_KERNEL_CS, TrapInfo};

    // One stub per vector (vector number in edi, frame in rsi), and a table
    // of their addresses in the order of `VECTORS`.
    macro_rules! stubs {
        ($($v:literal),*) => {
            core::arch::global_asm!(
                ".section .text.xenpal_traps, \"ax\"",
                $(
                    concat!(".global xenpal_trap_", $v),
                    concat!("xenpal_trap_", $v, ":"),
                    concat!("    mov edi, ", $v),
                    "    jmp xenpal_trap_common",
                )*
                "xenpal_trap_common:",
                "    mov rsi, rsp",
                "    and rsp, -16",
                "    call xenpal_trap",
                "2:  jmp 2b",
                ".section .rodata.xenpal_traps, \"a\"",
                ".balign 8",
                ".global xenpal_trap_addrs",
                "xenpal_trap_addrs:",
                $(concat!("    .quad xenpal_trap_", $v),)*
            );
        };
    }
    stubs!(
        0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19
    );

    unsafe extern "C" {
        static xenpal_trap_addrs: [u64; VECTORS.len()];
    }

    // Xen could not load our segment registers on a return: it enters the
    // failsafe callback with the frame rcx, r11, ds, es, fs, gs, rip, cs,
    // rflags, rsp, ss. Report it.
    core::arch::global_asm!(
        r#"
        .section .text.xenpal_traps, "ax"
        .global xenpal_failsafe_callback
    xenpal_failsafe_callback:
        mov     rdi, rsp
        and     rsp, -16
        call    xenpal_failsafe
    2:  jmp     2b
    "#
    );

    unsafe extern "C" {
        fn xenpal_failsafe_callback();
    }

    #[unsafe(no_mangle)]
    extern "C" fn xenpal_failsafe(frame: *const [u64; 11]) -> ! {
        // SAFETY: the entry code passes the frame Xen pushed on our stack.
        let f = unsafe { frame.read() };
        crate::eprintln!(
            "xenpal: unexpected exception: failsafe callback (Xen could not restore segments: ds {:#x} es {:#x} fs {:#x} gs {:#x}) at rip {:#x}",
            f[2],
            f[3],
            f[4],
            f[5],
            f[6]
        );
        crate::platform::crash()
    }

    #[unsafe(no_mangle)]
    extern "C" fn xenpal_trap(vector: u32, frame: *const [u64; 8]) -> ! {
        let vector = vector as u8;
        // SAFETY: the stub passes the frame Xen pushed on our stack, at
        // least 8 words (7 without an error code, then our caller's data).
        let f = TrapFrame::decode(vector, unsafe { &*frame });
        // No allocation here: the heap may be what faulted.
        struct Address(Option<Option<u64>>);
        impl core::fmt::Display for Address {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.0 {
                    Some(Some(a)) => write!(f, ", address {a:#x}"),
                    Some(None) => f.write_str(", address unknown (shared_info not mapped yet)"),
                    None => Ok(()),
                }
            }
        }
        let cr2 = Address((vector == 14).then(crate::irq::fault_address));
        crate::eprintln!(
            "xenpal: unexpected exception: {} (vector {vector}), error {:#x}, rip {:#x}, rsp {:#x}, rflags {:#x}{cr2}",
            name(vector),
            f.error,
            f.rip,
            f.rsp,
            f.rflags
        );
        crate::platform::crash()
    }

    /// Install the trap table and register the failsafe callback.
    pub fn install() -> Result<(), (&'static str, xen_pv::abi::Errno)> {
        use xen_pv::abi::x86_64::callback;
        // SAFETY: a table of code addresses the assembly above defines,
        // read-only and never written.
        let addrs = unsafe { xenpal_trap_addrs };
        let mut table = [TrapInfo::default(); VECTORS.len() + 1];
        for (i, v) in VECTORS.iter().enumerate() {
            table[i] = TrapInfo {
                vector: *v,
                // DPL 0 (int3 from our own code still reaches it: we run
                // in Xen's guest-kernel mode); bit 2: mask events.
                flags: 1 << 2 | if *v == 3 { 3 } else { 0 },
                cs: FLAT_KERNEL_CS,
                _pad0: 0,
                address: addrs[i],
            };
        }
        let h = crate::PvHypervisor;
        xen_pv::hypercall::set_trap_table(&h, &table).map_err(|e| ("set_trap_table", e))?;
        xen_pv::hypercall::callback_register(
            &h,
            callback::FAILSAFE,
            xenpal_failsafe_callback as *const () as u64,
            callback::F_MASK_EVENTS,
        )
        .map_err(|e| ("registering the failsafe callback", e))
    }
}

/// Install the trap table and register the failsafe callback with Xen.
///
/// Errors: the step that failed (`set_trap_table`, `registering the
/// failsafe callback`) and what Xen returned.
pub fn install() -> Result<(), (&'static str, xen_pv::abi::Errno)> {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    return entry::install();
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    Err(("set_trap_table", xen_pv::abi::Errno::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_with_and_without_error_codes() {
        let words = [1, 2, 3, 4, 5, 6, 7, 8];
        // #PF: rcx, r11, error, rip, cs, rflags, rsp, ss.
        assert_eq!(
            TrapFrame::decode(14, &words),
            TrapFrame {
                error: 3,
                rip: 4,
                rflags: 6,
                rsp: 7
            }
        );
        // #UD: rcx, r11, rip, cs, rflags, rsp, ss.
        assert_eq!(
            TrapFrame::decode(6, &words),
            TrapFrame {
                error: 0,
                rip: 3,
                rflags: 5,
                rsp: 6
            }
        );
        assert_eq!(name(13), "#GP general protection");
        assert!(!VECTORS.contains(&9) && !VECTORS.contains(&15));
    }
}
