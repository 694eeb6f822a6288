//! The heap of an Arm guest: a buddy allocator over a fixed region in
//! `.bss`, so `alloc` works from the first line of Rust and the image file
//! stays small (`.bss` is not in the file); the boot [`grow`]s it with free
//! RAM once the MMU maps that.

/// Size of the heap in `.bss`, in bytes.
pub const HEAP_SIZE: usize = 2 << 20;

#[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
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

    /// # Safety
    /// As [`super::grow`].
    pub unsafe fn grow(start: usize, len: usize) {
        // SAFETY: the caller hands `start..start + len` over for good.
        unsafe { ALLOCATOR.lock().add_to_heap(start, start + len) };
    }
}

/// Add `len` bytes at `start` to the heap.
///
/// # Safety
/// `start..start + len` must be mapped, writable RAM that nothing else uses,
/// now or later.
pub unsafe fn grow(start: usize, len: usize) {
    #[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
    // SAFETY: the caller's contract.
    unsafe {
        imp::grow(start, len)
    };
    #[cfg(not(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none")))]
    let _ = (start, len);
}

/// Set up the heap (idempotent). The entry code calls this first.
pub fn init() {
    #[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
    imp::init();
}
