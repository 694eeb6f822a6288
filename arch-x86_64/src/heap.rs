//! The heap: a buddy allocator over RAM the boot hands it (a slice of the
//! frames `mm` mapped), so its size follows the domain's memory instead of
//! being fixed in the image.

/// The share of free RAM given to the heap, at most this many bytes; the
/// rest goes to the page allocator for grants and rings.
pub const MAX_HEAP: u64 = 16 << 20;

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod imp {
    use buddy_system_allocator::LockedHeap;
    use core::sync::atomic::{AtomicBool, Ordering};

    #[global_allocator]
    static ALLOCATOR: LockedHeap<32> = LockedHeap::empty();
    static DONE: AtomicBool = AtomicBool::new(false);

    /// # Safety
    /// `[start, start + size)` must be mapped, writable RAM used by nothing
    /// else, ever.
    pub unsafe fn init(start: usize, size: usize) {
        if DONE.swap(true, Ordering::SeqCst) {
            return;
        }
        // SAFETY: the caller hands the region over for good; `DONE` makes
        // sure it is handed over once.
        unsafe { ALLOCATOR.lock().init(start, size) };
    }
}

/// Give the heap `[start, start + size)` (only the first call counts).
///
/// # Safety
/// The region must be mapped, writable RAM that nothing else uses, ever.
pub unsafe fn init(start: usize, size: usize) {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    // SAFETY: passed on from our caller.
    unsafe {
        imp::init(start, size)
    };
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    let _ = (start, size);
}
