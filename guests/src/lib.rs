//! Guest images for real Xen. The binaries under `src/bin` are built by
//! `cargo xtask qemu` for `aarch64-unknown-none` and `x86_64-unknown-none`;
//! on the host they are empty stubs.
//!
//! Both arch crates offer the same entry points (`entry!`, `eprintln!`,
//! `platform::run`, `platform::crash`), so a guest that needs nothing
//! arch-specific is one module with `arch` naming the right crate.

#![no_std]

/// The panic handler every guest uses: print the panic on Xen's emergency
/// console and crash the domain. `$arch` names the arch crate.
#[macro_export]
macro_rules! panic_crashes {
    ($arch:ident) => {
        #[panic_handler]
        fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
            $arch::eprintln!("panic: {info}");
            $arch::platform::crash()
        }
    };
}
