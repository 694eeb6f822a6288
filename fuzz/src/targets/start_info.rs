//! The x86_64 PV boot's `start_info` path (`xenpal_arch_x86_64`): the
//! checks of every field, and what the boot does next with the result:
//! the accessors and the layout plan. A broken domain builder (or a boot
//! that is not Xen's) can hand over any page; a bad one must be a
//! `StartInfoError`/`BootError`, never a panic.

use crate::input::Input;
use xenpal_arch_x86_64::boot_info;
use xenpal_arch_x86_64::platform::plan;

/// Run one input: a `start_info` page (the first `size_of::<StartInfo>()`
/// bytes matter), optionally followed by 8 bytes naming where the image
/// ends and two ring frames.
pub fn run(data: &[u8]) {
    let size = core::mem::size_of::<xenpal_xen_pv::abi::x86_64::StartInfo>();
    let Ok(info) = boot_info::parse(data) else {
        return;
    };
    let _ = (info.is_dom0(), info.cmdline(), info.magic_str());
    let _ = info.bootstrap_end();
    // The rest of the input: where the image ends and the ring frames (the
    // boot gets them from the p2m, so they are RAM frames).
    let mut rest = Input::new(data.get(size..).unwrap_or(&[]));
    let image_end = u64::from(rest.u32()) << 12;
    let rings: Vec<u64> = (0..2)
        .map(|_| u64::from(rest.u32()) % info.nr_pages)
        .collect();
    if let Ok(p) = plan(&info, image_end, &rings) {
        let _ = (p.shared_info(), p.grant_table(), p.map_window());
        assert!(p.first_free < p.nr_pages, "{p:?}");
    }
}
