//! The AArch64 boot's device-tree path (`xenpal_arch_aarch64`): the blob's
//! size from its header, structural validation, parsing, and what the boot
//! does next with the result: plan the memory layout and build the
//! identity map of every region. Xen writes the blob, but a broken boot
//! loader or domain builder can hand over anything; a bad blob must be a
//! `DtError`/`BootError`, never a panic.

use xenpal_arch_aarch64::boot_info::{self, Region};
use xenpal_arch_aarch64::mm::Tables;
use xenpal_arch_aarch64::platform::plan;

/// Where the fuzzed blob claims to be (inside the RAM bank of the seeds,
/// above the image, as Xen places it).
const DTB_ADDR: u64 = 0x47e0_0000;

/// The image as the boot sees it: where Xen loads it under QEMU.
const IMAGE: Region = Region {
    base: 0x4008_0000,
    size: 0x22_6000,
};

/// Run one input: a device tree blob.
pub fn run(data: &[u8]) {
    // As the boot reads it: the header first, then exactly that many bytes.
    if let Ok(size) = boot_info::blob_size(data)
        && size <= data.len()
    {
        boot(&data[..size]);
    }
    // The whole buffer too: a `totalsize` that disagrees with the buffer
    // must be refused, not trusted.
    let _ = boot_info::validate(data);
    boot(data);
}

fn boot(blob: &[u8]) {
    let Ok(info) = boot_info::parse(blob, DTB_ADDR) else {
        return;
    };
    for r in &info.memory {
        let _ = r.end();
    }
    let Ok((_layout, regions)) = plan(&info, IMAGE) else {
        return;
    };
    let mut tables = Box::<Tables>::default();
    for (region, kind) in regions {
        let _ = tables.map(region, kind, 0x4100_0000);
    }
}
