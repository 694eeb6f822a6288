//! The heap: a buddy allocator over a fixed region in `.bss`, so `alloc`
//! works from the first line of Rust and the image file stays small, as on
//! AArch64.

/// Size of the heap in bytes.
pub const HEAP_SIZE: usize = 256 << 10;

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod imp {
    use super::HEAP_SIZE;
    use buddy_system_allocator::LockedHeap;
    use core::sync::atomic::{AtomicBool, Ordering};

    #[global_allocator]
    static ALLOCATOR: LockedHeap<32> = LockedHeap::empty();

    #[repr(C, align(4096))]
    struct Space([u8; HEAP_SIZE]);

    static mut SPACE: Space = Space([0; HEAP_SIZE]);
    static DONE: AtomicBool = AtomicBool::new(false);

    pub fn init() {
        if DONE.swap(true, Ordering::SeqCst) {
            return;
        }
        let start = core::ptr::addr_of_mut!(SPACE) as usize;
        // SAFETY: `SPACE` is used only here, once (guarded by `DONE`), and
        // handed over whole to the allocator, which owns it from now on.
        unsafe { ALLOCATOR.lock().init(start, HEAP_SIZE) };
    }
}

/// Set up the heap (idempotent). The entry code calls this first.
pub fn init() {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    imp::init();
}
