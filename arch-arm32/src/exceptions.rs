//! Unexpected exceptions on 32-bit Arm: the vector table (at `VBAR`), which
//! vector an exception came through, and the report — the kind, where it
//! happened, and for an abort the fault status and address from `cp15` —
//! on the emergency console; then the domain is crashed, as on AArch64.

/// The ARMv7 exception vectors, in table order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Vector {
    /// Reset (never taken by a guest).
    Reset,
    /// Undefined instruction.
    Undefined,
    /// Supervisor call (`svc`), which nothing here issues.
    Svc,
    /// Prefetch abort: fetching an instruction faulted.
    PrefetchAbort,
    /// Data abort: a load or store faulted.
    DataAbort,
    /// The unused slot.
    Reserved,
    /// IRQ: handled ([`crate::irq`]) and returned from, never reported.
    Irq,
    /// FIQ.
    Fiq,
}

impl Vector {
    /// From the table index the entry code passes (0..8).
    pub fn from_index(i: u32) -> Self {
        match i {
            0 => Vector::Reset,
            1 => Vector::Undefined,
            2 => Vector::Svc,
            3 => Vector::PrefetchAbort,
            4 => Vector::DataAbort,
            6 => Vector::Irq,
            7 => Vector::Fiq,
            _ => Vector::Reserved,
        }
    }

    /// How far `lr` is past the instruction that took the exception.
    pub fn lr_offset(self) -> u32 {
        match self {
            Vector::DataAbort => 8,
            Vector::PrefetchAbort | Vector::Irq | Vector::Fiq => 4,
            Vector::Undefined | Vector::Svc => 4,
            Vector::Reset | Vector::Reserved => 0,
        }
    }

    /// The name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Vector::Reset => "reset",
            Vector::Undefined => "undefined instruction",
            Vector::Svc => "supervisor call",
            Vector::PrefetchAbort => "prefetch abort",
            Vector::DataAbort => "data abort",
            Vector::Reserved => "reserved vector",
            Vector::Irq => "IRQ",
            Vector::Fiq => "FIQ",
        }
    }
}

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod entry {
    use super::Vector;

    // The table: one branch per vector. The IRQ vector saves the
    // interrupted context on the SVC stack (where the guest runs), calls the
    // handler and returns. Every other vector goes to a stub that passes its
    // index and the `lr` of the mode the exception entered (on that mode's
    // stack, which is the image's stack: the report never returns).
    core::arch::global_asm!(
        r#"
        .section .text.vectors, "ax"
        .arm
        .balign 32
        .global xenpal_arm32_vectors
    xenpal_arm32_vectors:
        .irp i, 0,1,2,3,4,5
        b       xenpal_arm32_vector\i
        .endr
        b       xenpal_arm32_irq_entry
        b       xenpal_arm32_vector7
        .irp i, 0,1,2,3,4,5,7
    xenpal_arm32_vector\i:
        ldr     sp, =__stack_top
        mov     r1, lr
        mov     r0, #\i
        bl      xenpal_arm32_exception
        .endr

    xenpal_arm32_irq_entry:
        sub     lr, lr, #4          @ where to resume
        srsdb   sp!, #0x13          @ push it and SPSR_irq on the SVC stack
        cps     #0x13               @ continue in SVC mode
        push    {{r0-r3, r12, lr}}  @ what a call may clobber, and lr_svc
        and     r1, sp, #4          @ 8-byte align the stack for the call
        sub     sp, sp, r1
        push    {{r1, r2}}
        bl      xenpal_arm32_irq
        pop     {{r1, r2}}
        add     sp, sp, r1
        pop     {{r0-r3, r12, lr}}
        clrex                       @ no exclusive access spans the handler
        rfeia   sp!                 @ back, with the interrupted CPSR
        "#
    );

    #[unsafe(no_mangle)]
    extern "C" fn xenpal_arm32_irq() {
        crate::irq::handle_irq();
    }

    unsafe extern "C" {
        static xenpal_arm32_vectors: u8;
    }

    /// Point `VBAR` at the table.
    pub fn install() {
        let base = (&raw const xenpal_arm32_vectors) as u32;
        // SAFETY: the table is 32-byte aligned code in the image, which stays
        // where it is; setting VBAR only redirects exceptions to it.
        unsafe {
            core::arch::asm!("mcr p15, 0, {}, c12, c0, 0", "isb", in(reg) base, options(nostack))
        };
    }

    /// The fault status and address registers of an abort: `DFSR`/`DFAR`
    /// for a data abort, `IFSR`/`IFAR` for a prefetch abort.
    fn fault_registers(v: Vector) -> Option<(u32, u32)> {
        let (status, address): (u32, u32);
        match v {
            // SAFETY: reading DFSR and DFAR has no side effect.
            Vector::DataAbort => unsafe {
                core::arch::asm!(
                    "mrc p15, 0, {0}, c5, c0, 0",
                    "mrc p15, 0, {1}, c6, c0, 0",
                    out(reg) status, out(reg) address, options(nomem, nostack),
                )
            },
            // SAFETY: reading IFSR and IFAR has no side effect.
            Vector::PrefetchAbort => unsafe {
                core::arch::asm!(
                    "mrc p15, 0, {0}, c5, c0, 1",
                    "mrc p15, 0, {1}, c6, c0, 2",
                    out(reg) status, out(reg) address, options(nomem, nostack),
                )
            },
            _ => return None,
        }
        Some((status, address))
    }

    #[unsafe(no_mangle)]
    extern "C" fn xenpal_arm32_exception(index: u32, lr: u32) -> ! {
        let v = Vector::from_index(index);
        let at = lr.wrapping_sub(v.lr_offset());
        match fault_registers(v) {
            Some((status, address)) => crate::eprintln!(
                "xenpal: unexpected exception: {} at pc {at:#x}, address {address:#x}, status {status:#x}",
                v.name()
            ),
            None => crate::eprintln!("xenpal: unexpected exception: {} at pc {at:#x}", v.name()),
        }
        crate::platform::crash()
    }
}

/// Install the vector table (the entry code does, before the guest runs).
pub fn install() {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    entry::install();
}

#[cfg(test)]
mod tests {
    use super::Vector;

    #[test]
    fn vectors_and_where_they_point() {
        assert_eq!(Vector::from_index(4), Vector::DataAbort);
        assert_eq!(Vector::from_index(4).lr_offset(), 8);
        assert_eq!(Vector::from_index(1).name(), "undefined instruction");
        assert_eq!(Vector::from_index(5), Vector::Reserved);
        assert_eq!(Vector::from_index(99), Vector::Reserved);
    }
}
