//! Boot: the Linux arm64 `Image` header Xen and boot loaders expect, the
//! entry code, and the exception vectors.
//!
//! Xen (or a boot loader) loads the Image at a 2 MiB-aligned address plus
//! `text_offset` and enters it at EL1 with the MMU off and `x0` = the device
//! tree. The image is linked at address 0 as a position-independent
//! executable; the entry code applies its own `R_AARCH64_RELATIVE`
//! relocations for wherever it was loaded, so nothing depends on the load
//! address beyond what the header promises. Then it sets up a stack, clears
//! `.bss`, installs the vectors and calls [`xenpal_rust_start`].

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use crate::exceptions::{ExceptionFrame, VectorKind};

// What a guest binary provides: its entry point, called once the platform
// is up. Defined by `entry!`.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
unsafe extern "Rust" {
    fn xenpal_app_main(dtb: usize) -> !;
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       1f                      // code0: jump over the header
    .long   0                       // code1
    .quad   0x80000                 // text_offset
    .quad   __image_size            // image_size (with .bss)
    .quad   0xa                     // flags: little-endian, 4K pages, anywhere
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5
1:
    msr     daifset, #0xf
    mov     x19, x0                 // the device tree
    adr     x20, _start             // where we were loaded
    mov     x1, #(3 << 20)          // CPACR_EL1.FPEN: FP/SIMD for Rust code
    msr     cpacr_el1, x1
    isb
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    str     xzr, [x1], #8
    b       2b
3:  adrp    x1, __rela_start        // *(base + r_offset) = base + r_addend
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
4:  cmp     x1, x2
    b.hs    5f
    ldp     x3, x4, [x1], #16
    ldr     x5, [x1], #8
    cmp     x4, #1027               // R_AARCH64_RELATIVE; the linker emits no other
    b.ne    4b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       4b
5:  adrp    x1, xenpal_vectors
    add     x1, x1, :lo12:xenpal_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    mov     x1, x20
    bl      xenpal_rust_start
6:  wfe
    b       6b

    .macro VECTOR index
    .balign 0x80
    sub     sp, sp, #192
    stp     x0, x1, [sp, #0]
    mov     x0, #\index
    b       xenpal_vector_common
    .endm

    .section .text.vectors, "ax"
    .balign 2048
    .global xenpal_vectors
xenpal_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

xenpal_vector_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x29, [sp, #144]
    mrs     x1, elr_el1
    stp     x30, x1, [sp, #160]
    mrs     x1, spsr_el1
    str     x1, [sp, #176]
    mov     x1, sp
    bl      xenpal_exception
    ldr     x1, [sp, #176]
    msr     spsr_el1, x1
    ldp     x30, x1, [sp, #160]
    msr     elr_el1, x1
    ldp     x18, x29, [sp, #144]
    ldp     x16, x17, [sp, #128]
    ldp     x14, x15, [sp, #112]
    ldp     x12, x13, [sp, #96]
    ldp     x10, x11, [sp, #80]
    ldp     x8, x9, [sp, #64]
    ldp     x6, x7, [sp, #48]
    ldp     x4, x5, [sp, #32]
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #192
    eret
"#
);

/// Rust entry, called by the entry code with the device tree address and
/// the load address. Never returns.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[unsafe(no_mangle)]
extern "C" fn xenpal_rust_start(dtb: usize, _base: usize) -> ! {
    crate::heap::init();
    // SAFETY: the guest binary defines `xenpal_app_main` with this exact
    // signature through `entry!`; the link fails otherwise.
    unsafe { xenpal_app_main(dtb) }
}

/// Exception entry from the vectors: interrupts go to the GIC driver; any
/// other exception is reported on the emergency console and the domain is
/// crashed.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[unsafe(no_mangle)]
extern "C" fn xenpal_exception(index: u64, frame: &mut ExceptionFrame) {
    match VectorKind::from_index(index) {
        VectorKind::CurrentIrq => crate::irq::handle_irq(),
        kind => crate::exceptions::fatal(kind, frame),
    }
}

/// Declare the guest's entry function: `fn(dtb: usize) -> !`, called with
/// the device tree's address once the stack, `.bss`, relocations and
/// exception vectors are set up (MMU still off).
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        #[unsafe(no_mangle)]
        fn xenpal_app_main(dtb: usize) -> ! {
            let f: fn(usize) -> ! = $main;
            f(dtb)
        }
    };
}
