//! Where things are in a simulated guest's physical address space: what a
//! device tree would tell an Arm guest.

use hal::DomId;
use hal::mem::Gfn;
use xen_pv::platform::AutoLayout;

/// Frame where guests map `shared_info` (just above 2 GiB).
pub const SHARED_INFO_GFN: u64 = 0x8_0000;
/// First frame of the grant table.
pub const GRANT_TABLE_GFN: u64 = 0x8_0010;
/// First frame of the window for mapping other domains' grants.
pub const MAP_WINDOW_GFN: u64 = 0x9_0000;
/// Frames in the map window (16 MiB).
pub const MAP_WINDOW_PAGES: u32 = 4096;
/// RAM frames the toolstack keeps at the top of RAM for the xenstore and
/// console pages. They are allocated with the domain; the rest of its RAM
/// when the guest first reaches it (see `p2m`).
pub const MAGIC_PAGES: usize = 2;

/// The layout for a domain with `ram_pages` frames of RAM and
/// `grant_frames` grant frames. Frame 0 is kept out of the allocator:
/// address 0 means "none" in several hypercalls (a runstate area at 0
/// unregisters it), as it does on real hardware.
pub fn guest_layout(domid: DomId, ram_pages: usize, grant_frames: usize) -> AutoLayout {
    AutoLayout {
        domid,
        ram: (Gfn(1), ram_pages - MAGIC_PAGES - 1),
        shared_info: Gfn(SHARED_INFO_GFN),
        grant_table: Gfn(GRANT_TABLE_GFN),
        grant_frames,
        map_window: (Gfn(MAP_WINDOW_GFN), MAP_WINDOW_PAGES),
    }
}

/// Frame of the xenstore page.
pub fn store_gfn(ram_pages: usize) -> Gfn {
    Gfn(ram_pages as u64 - 1)
}

/// Frame of the console page.
pub fn console_gfn(ram_pages: usize) -> Gfn {
    Gfn(ram_pages as u64 - 2)
}
