//! Boot: the `Xen` ELF notes the domain builder reads, the hypercall page,
//! and the entry code.
//!
//! The image is a static 64-bit ELF linked from 0x1000 with `VIRT_BASE` 0
//! and `PADDR_OFFSET` 0, so every virtual address equals its
//! pseudo-physical address and frame 0 (mapped by Xen at 0) can be unmapped
//! to catch null pointers. Xen enters [`_start`] in 64-bit mode, in its
//! guest-kernel mode (ring 3), with event delivery masked, `rsi` =
//! `start_info` and `rsp` on a one-page boot stack. The entry code clears
//! `.bss`, moves to the image's own stack and calls the Rust entry.

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
use xen_pv::abi::x86_64::elfnote;

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 2f - 1f, {guest_os}
    .asciz "Xen"
1:  .asciz "xenpal"
2:  .balign 4
    .long 4, 2f - 1f, {xen_version}
    .asciz "Xen"
1:  .asciz "xen-3.0"
2:  .balign 4
    .long 4, 2f - 1f, {loader}
    .asciz "Xen"
1:  .asciz "generic"
2:  .balign 4
    .long 4, 2f - 1f, {features}
    .asciz "Xen"
1:  .asciz "dom0"
2:  .balign 4
    .long 4, 4, {supported}
    .asciz "Xen"
    .long 1 << 11
    .long 4, 8, {virt_base}
    .asciz "Xen"
    .quad 0
    .long 4, 8, {paddr_offset}
    .asciz "Xen"
    .quad 0
    .long 4, 8, {entry}
    .asciz "Xen"
    .quad _start
    .long 4, 8, {hypercall_page}
    .asciz "Xen"
    .quad xenpal_hypercall_page

    .section .text.hypercall_page, "ax"
    .balign 4096
    .global xenpal_hypercall_page
xenpal_hypercall_page:
    .fill 4096, 1, 0xcc

    .section .text.start, "ax"
    .global _start
_start:
    cld
    mov     rbx, rsi                // start_info
    lea     rdi, [rip + __bss_start]
    lea     rcx, [rip + __bss_end]
    sub     rcx, rdi
    xor     eax, eax
    rep stosb
    lea     rsp, [rip + __stack_top]
    xor     ebp, ebp
    mov     rdi, rbx
    call    xenpal_rust_start
3:  jmp     3b
"#,
    guest_os = const elfnote::GUEST_OS,
    xen_version = const elfnote::XEN_VERSION,
    loader = const elfnote::LOADER,
    features = const elfnote::FEATURES,
    supported = const elfnote::SUPPORTED_FEATURES,
    virt_base = const elfnote::VIRT_BASE,
    paddr_offset = const elfnote::PADDR_OFFSET,
    entry = const elfnote::ENTRY,
    hypercall_page = const elfnote::HYPERCALL_PAGE,
);

// What a guest binary provides: its entry point. Defined by `entry!`.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
unsafe extern "Rust" {
    fn xenpal_app_main(start_info: usize) -> !;
}

/// Rust entry, called by the entry code with `start_info`'s address: the
/// trap table and the callbacks first (so a fault is reported, not a
/// silent crash), then the guest's `main`.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[unsafe(no_mangle)]
extern "C" fn xenpal_rust_start(start_info: usize) -> ! {
    if let Err((what, e)) = crate::exceptions::install() {
        crate::eprintln!("xenpal: boot failed: {what}: {e}");
        crate::platform::crash();
    }
    if let Err(e) = crate::irq::register(&crate::PvHypervisor) {
        crate::eprintln!("xenpal: boot failed: registering the event callback: {e}");
        crate::platform::crash();
    }
    // SAFETY: the guest binary defines `xenpal_app_main` with this exact
    // signature through `entry!`; the link fails otherwise.
    unsafe { xenpal_app_main(start_info) }
}

/// Declare the guest's entry function: `fn(start_info: usize) -> !`,
/// called with `start_info`'s address once `.bss`, the stack, the trap
/// table and the event callbacks are set up (no heap yet: boot the
/// platform with `platform::run`).
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        #[unsafe(no_mangle)]
        fn xenpal_app_main(start_info: usize) -> ! {
            let f: fn(usize) -> ! = $main;
            f(start_info)
        }
    };
}
