//! Boot: the zImage header and entry code.
//!
//! Xen loads a 32-bit Arm domU's kernel as a Linux zImage: at the address
//! the header names (the image is linked there, 32 KiB into guest RAM), and
//! enters it in ARM state, in SVC mode with interrupts masked and the MMU
//! and data cache off, with `r0` = 0, `r1` = ~0 (no machine type) and `r2` =
//! the device tree's physical address. The entry clears `.bss`, takes the
//! image's stack and calls the Rust entry with the device tree's address.

#[cfg(all(target_arch = "arm", target_os = "none"))]
core::arch::global_asm!(
    r#"
    .section .text.start, "ax"
    .arm
    .global _start
_start:
    .rept 8
    mov     r0, r0
    .endr
    b       1f
    .word   0x016f2818          @ zImage magic
    .word   _image_start        @ where to load (and run) it
    .word   _image_file_end     @ its end
1:  mov     r4, r2
    ldr     r0, =__bss_start
    ldr     r1, =__bss_end
    mov     r2, #0
2:  cmp     r0, r1
    strlo   r2, [r0], #4
    blo     2b
    ldr     sp, =__stack_top
    mov     r0, r4
    bl      xenpal_arm32_start
3:  wfi
    b       3b
"#
);

// What a guest binary provides: its entry point. Defined by `entry!`.
#[cfg(all(target_arch = "arm", target_os = "none"))]
unsafe extern "Rust" {
    fn xenpal_app_main(device_tree: usize) -> !;
}

/// Rust entry, called with the device tree's address.
#[cfg(all(target_arch = "arm", target_os = "none"))]
#[unsafe(no_mangle)]
extern "C" fn xenpal_arm32_start(device_tree: usize) -> ! {
    crate::exceptions::install();
    crate::mm::early();
    crate::heap::init();
    // SAFETY: the guest binary defines `xenpal_app_main` with this exact
    // signature through `entry!`; the link fails otherwise.
    unsafe { xenpal_app_main(device_tree) }
}

/// Declare the guest's entry function: `fn(device_tree: usize) -> !`,
/// called once `.bss` and the stack are set up.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[cfg(all(target_arch = "arm", target_os = "none"))]
        #[unsafe(no_mangle)]
        fn xenpal_app_main(device_tree: usize) -> ! {
            let f: fn(usize) -> ! = $main;
            f(device_tree)
        }
    };
}
