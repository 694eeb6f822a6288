//! The boot information: `start_info`, what Xen (or the domain builder)
//! tells a PV guest at boot, checked before anything relies on it.
//!
//! The page is written by Xen, not by a peer, but a broken domain builder or
//! a guest booted the wrong way (as an HVM guest, or by a boot loader that
//! is not Xen) would hand over garbage; every field the boot uses is checked
//! here and a bad one is a [`StartInfoError`] naming it.

use core::fmt;
use hal::mem::PAGE_SIZE;
use xen_pv::abi::x86_64::{StartInfo, sif};
use zerocopy::FromBytes;

/// The magic prefix of a 64-bit PV guest's `start_info`.
pub const MAGIC_PREFIX: &[u8] = b"xen-3.0-x86_64";

/// The most RAM this crate maps (1 TiB): beyond it `nr_pages` is refused as
/// implausible rather than trusted.
pub const MAX_PAGES: u64 = 1 << 28;

/// What is wrong with a `start_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// Fewer bytes than a `start_info` holds.
    Truncated(usize),
    /// The magic does not start with `xen-3.0-x86_64` (not a 64-bit PV
    /// start: an HVM/PVH boot, or not Xen at all).
    BadMagic,
    /// `nr_pages` is 0 or beyond [`MAX_PAGES`].
    BadPageCount(u64),
    /// An address that must be page-aligned and non-zero is not: the
    /// field's name and value.
    BadAddress(&'static str, u64),
    /// The bootstrap page tables are empty or lie outside the domain's RAM.
    BadPageTables {
        /// `pt_base`.
        base: u64,
        /// `nr_pt_frames`.
        frames: u64,
    },
    /// The p2m list (`mfn_list`) does not fit in the domain's RAM.
    BadP2m(u64),
    /// A domU without a console ring, or an event channel out of range.
    BadConsole,
    /// A xenstore page without an event channel, or one out of range.
    BadXenstore,
    /// The command line has no terminating NUL.
    UnterminatedCmdline,
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartInfoError::Truncated(n) => {
                write!(
                    f,
                    "start_info: only {n} bytes, need {}",
                    size_of::<StartInfo>()
                )
            }
            StartInfoError::BadMagic => {
                f.write_str("start_info: bad magic (not a 64-bit PV boot by Xen)")
            }
            StartInfoError::BadPageCount(n) => write!(f, "start_info: nr_pages {n} is implausible"),
            StartInfoError::BadAddress(name, v) => {
                write!(f, "start_info: {name} {v:#x} is not a page-aligned address")
            }
            StartInfoError::BadPageTables { base, frames } => write!(
                f,
                "start_info: bootstrap page tables at {base:#x} ({frames} frames) are not in RAM"
            ),
            StartInfoError::BadP2m(a) => {
                write!(f, "start_info: mfn_list at {a:#x} does not fit in RAM")
            }
            StartInfoError::BadConsole => {
                f.write_str("start_info: console page or channel invalid")
            }
            StartInfoError::BadXenstore => {
                f.write_str("start_info: xenstore page or channel invalid")
            }
            StartInfoError::UnterminatedCmdline => {
                f.write_str("start_info: command line is not NUL-terminated")
            }
        }
    }
}

impl core::error::Error for StartInfoError {}

/// A ring page (xenstore or console) and its event channel.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Machine frame of the page.
    pub mfn: u64,
    /// Event channel, already bound by the builder.
    pub evtchn: u32,
}

/// A checked `start_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// The magic, e.g. `xen-3.0-x86_64`.
    pub magic: [u8; 32],
    /// Pages of RAM the domain has.
    pub nr_pages: u64,
    /// Machine address of `shared_info`.
    pub shared_info: u64,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Virtual address of the top-level (L4) page table.
    pub pt_base: u64,
    /// Frames of bootstrap page tables, from `pt_base` on.
    pub nr_pt_frames: u64,
    /// Virtual address of the p2m list (`nr_pages` machine frames).
    pub mfn_list: u64,
    /// The xenstore ring, if the builder made one.
    pub xenstore: Option<Ring>,
    /// The PV console ring (domU); `None` for dom0, which uses `console_io`.
    pub console: Option<Ring>,
    /// The first module (an initrd): start address (or PFN with
    /// `SIF_MOD_START_PFN`) and length; `None` without one.
    pub module: Option<(u64, u64)>,
    /// The command line, without its NUL.
    pub cmdline: ([u8; 1024], usize),
}

impl BootInfo {
    /// Whether this is the initial domain (dom0).
    pub fn is_dom0(&self) -> bool {
        self.flags & sif::INITDOMAIN != 0
    }

    /// The command line (lossy UTF-8 is the caller's choice: these are
    /// bytes as given).
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline.0[..self.cmdline.1]
    }

    /// The magic as text, up to its NUL.
    pub fn magic_str(&self) -> &str {
        let n = self.magic.iter().position(|&b| b == 0).unwrap_or(32);
        core::str::from_utf8(&self.magic[..n]).unwrap_or("?")
    }

    /// The end (exclusive, a virtual address) of everything the builder
    /// put in the bootstrap area that the boot must keep: the page tables
    /// and the boot stack page Xen placed right after them.
    pub fn bootstrap_end(&self) -> u64 {
        self.pt_base + (self.nr_pt_frames + 1) * PAGE_SIZE as u64
    }
}

fn page_aligned(v: u64) -> bool {
    v != 0 && v.is_multiple_of(PAGE_SIZE as u64)
}

/// Check the `start_info` in `bytes` (at least `size_of::<StartInfo>()`
/// bytes; its virtual address equals its pseudo-physical address, as in
/// every layout this crate boots with).
///
/// Errors: the first [`StartInfoError`] found.
pub fn parse(bytes: &[u8]) -> Result<BootInfo, StartInfoError> {
    let (si, _) =
        StartInfo::read_from_prefix(bytes).map_err(|_| StartInfoError::Truncated(bytes.len()))?;
    if !si.magic.starts_with(MAGIC_PREFIX) {
        return Err(StartInfoError::BadMagic);
    }
    if si.nr_pages == 0 || si.nr_pages > MAX_PAGES {
        return Err(StartInfoError::BadPageCount(si.nr_pages));
    }
    let ram_end = si.nr_pages * PAGE_SIZE as u64;
    if !page_aligned(si.shared_info) {
        return Err(StartInfoError::BadAddress("shared_info", si.shared_info));
    }
    if !page_aligned(si.pt_base) {
        return Err(StartInfoError::BadAddress("pt_base", si.pt_base));
    }
    let pt_end = si
        .nr_pt_frames
        .checked_add(1)
        .and_then(|n| n.checked_mul(PAGE_SIZE as u64))
        .and_then(|n| n.checked_add(si.pt_base));
    if si.nr_pt_frames == 0 || pt_end.is_none_or(|e| e > ram_end) {
        return Err(StartInfoError::BadPageTables {
            base: si.pt_base,
            frames: si.nr_pt_frames,
        });
    }
    let p2m_end = si
        .nr_pages
        .checked_mul(8)
        .and_then(|n| n.checked_add(si.mfn_list));
    if si.mfn_list == 0 || !si.mfn_list.is_multiple_of(8) || p2m_end.is_none_or(|e| e > ram_end) {
        return Err(StartInfoError::BadP2m(si.mfn_list));
    }
    let port_ok = |p: u32| p != 0 && p < xen_pv::abi::EVTCHN_2L_NR_CHANNELS;
    let dom0 = si.flags & sif::INITDOMAIN != 0;
    let xenstore = match (si.store_mfn, si.store_evtchn) {
        (0, _) => None,
        (mfn, port) if port_ok(port) => Some(Ring { mfn, evtchn: port }),
        _ => return Err(StartInfoError::BadXenstore),
    };
    let console = if dom0 {
        None
    } else if si.console.mfn != 0 && port_ok(si.console.evtchn) {
        Some(Ring {
            mfn: si.console.mfn,
            evtchn: si.console.evtchn,
        })
    } else {
        return Err(StartInfoError::BadConsole);
    };
    let n = si
        .cmd_line
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartInfoError::UnterminatedCmdline)?;
    let mut cmdline = [0u8; 1024];
    cmdline[..n].copy_from_slice(&si.cmd_line[..n]);
    Ok(BootInfo {
        magic: si.magic,
        nr_pages: si.nr_pages,
        shared_info: si.shared_info,
        flags: si.flags,
        pt_base: si.pt_base,
        nr_pt_frames: si.nr_pt_frames,
        mfn_list: si.mfn_list,
        xenstore,
        console,
        module: (si.mod_start != 0 && si.mod_len != 0).then_some((si.mod_start, si.mod_len)),
        cmdline: (cmdline, n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromZeros, IntoBytes};

    /// A dom0 `start_info` like the one Xen 4.20 gave our guest under QEMU.
    pub(crate) fn dom0() -> StartInfo {
        let mut si = StartInfo::new_zeroed();
        si.magic[..17].copy_from_slice(b"xen-3.0-x86_64\0\0\0");
        si.nr_pages = 16384;
        si.shared_info = 0x3_1234_5000;
        si.flags = sif::PRIVILEGED | sif::INITDOMAIN;
        si.pt_base = 0x6a000;
        si.nr_pt_frames = 5;
        si.mfn_list = 0x45000;
        si.cmd_line[..6].copy_from_slice(b"quiet\0");
        si
    }

    #[test]
    fn a_dom0_start_info_parses() {
        let b = parse(dom0().as_bytes()).unwrap();
        assert!(b.is_dom0());
        assert_eq!(b.magic_str(), "xen-3.0-x86_64");
        assert_eq!(b.cmdline(), b"quiet");
        assert_eq!(b.console, None);
        assert_eq!(b.xenstore, None);
        assert_eq!(b.bootstrap_end(), 0x6a000 + 6 * 4096);
    }

    #[test]
    fn a_domu_needs_its_console_ring() {
        let mut si = dom0();
        si.flags = 0;
        assert_eq!(parse(si.as_bytes()), Err(StartInfoError::BadConsole));
        si.console.mfn = 0x1234;
        si.console.evtchn = 2;
        si.store_mfn = 0x1235;
        si.store_evtchn = 1;
        let b = parse(si.as_bytes()).unwrap();
        assert_eq!(
            b.console,
            Some(Ring {
                mfn: 0x1234,
                evtchn: 2
            })
        );
        assert_eq!(
            b.xenstore,
            Some(Ring {
                mfn: 0x1235,
                evtchn: 1
            })
        );
        si.store_evtchn = 5000;
        assert_eq!(parse(si.as_bytes()), Err(StartInfoError::BadXenstore));
    }

    #[test]
    fn damaged_fields_are_named() {
        let bytes = dom0();
        assert_eq!(
            parse(&bytes.as_bytes()[..100]),
            Err(StartInfoError::Truncated(100))
        );
        type Damage = fn(&mut StartInfo);
        let cases: [(Damage, StartInfoError); 7] = [
            (|s| s.magic[0] = b'X', StartInfoError::BadMagic),
            (|s| s.nr_pages = 0, StartInfoError::BadPageCount(0)),
            (
                |s| s.shared_info = 0x1001,
                StartInfoError::BadAddress("shared_info", 0x1001),
            ),
            (
                |s| s.nr_pt_frames = 1 << 40,
                StartInfoError::BadPageTables {
                    base: 0x6a000,
                    frames: 1 << 40,
                },
            ),
            (
                |s| s.mfn_list = u64::MAX - 7,
                StartInfoError::BadP2m(u64::MAX - 7),
            ),
            (
                |s| s.cmd_line = [b'x'; 1024],
                StartInfoError::UnterminatedCmdline,
            ),
            (|s| s.pt_base = 0, StartInfoError::BadAddress("pt_base", 0)),
        ];
        for (damage, want) in cases {
            let mut si = bytes;
            damage(&mut si);
            assert_eq!(parse(si.as_bytes()), Err(want.clone()));
            // Every error prints as a sentence naming start_info.
            assert!(alloc::format!("{want}").starts_with("start_info: "));
        }
    }
}
