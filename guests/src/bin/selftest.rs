//! The guest self-test (`xenpal_apps::selftest`) as a bare-metal guest,
//! plus the checks only real hardware can make: interrupts through the GIC
//! (Arm, 64- and 32-bit) or upcalls through the event callback (x86 PV), and a malformed
//! device tree (Arm) or `start_info` (x86) rejected cleanly. Ends with a
//! `selftest verdict:` line and shuts down (poweroff if everything passed,
//! crash otherwise).
//!
//! Built with `--features fail` it also runs a test that always fails, and
//! with `--features fault` one that reads unmapped memory, to show the QEMU
//! runner reporting a failing guest and a crashing one.

#![cfg_attr(target_os = "none", no_std, no_main)]

/// Tests added by features, to show the runner judging a bad guest.
#[cfg(target_os = "none")]
mod faults {
    extern crate alloc;
    use xenpal_apps::selftest::{Extra, Outcome};

    fn always_fails() -> Outcome {
        Outcome::Fail("this guest was built to fail (--features fail)".into())
    }

    /// An address no guest maps: 128 TiB up, or on 32-bit Arm 3.75 GiB
    /// (above RAM, the GIC and Xen's regions).
    #[cfg(target_pointer_width = "64")]
    const UNMAPPED: usize = 0x7fff_0000_0000;
    #[cfg(target_pointer_width = "32")]
    const UNMAPPED: usize = 0xf000_0000;

    /// Read from [`UNMAPPED`]: the exception report and crash are the
    /// outcome; returning is a failure.
    fn touches_unmapped_memory() -> Outcome {
        // SAFETY: none, on purpose: the read faults and the arch crate's
        // exception handler reports it and crashes the domain. Volatile, so
        // the read is not optimised away.
        let v = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
        Outcome::Fail(alloc::format!("reading unmapped memory returned {v:#x}"))
    }

    /// Add the tests the enabled features ask for: `fail` (a test that
    /// fails) and `fault` (a test that takes an unexpected exception).
    pub fn add(extra: &mut alloc::vec::Vec<Extra>) {
        if cfg!(feature = "fail") {
            extra.push(("built-to-fail", always_fails));
        }
        if cfg!(feature = "fault") {
            extra.push(("unmapped-read", touches_unmapped_memory));
        }
    }
}

#[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
mod guest {
    extern crate alloc;
    use alloc::format;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use xenpal::arch;
    use xenpal_apps::selftest::{self, Extra, Outcome, Tolerances};

    fn interrupts() -> Outcome {
        let (events, timer, other) = arch::irq::counts();
        let detail = format!(
            "GIC delivered {events} event-channel and {timer} timer interrupts ({other} other)"
        );
        if events > 0 && timer > 0 {
            Outcome::Pass(detail)
        } else if timer > 0 && !arch::irq::has_event_irq() {
            Outcome::Pass(format!("{detail}; no event PPI in the device tree"))
        } else {
            Outcome::Fail(detail)
        }
    }

    static DTB: AtomicUsize = AtomicUsize::new(0);

    fn bad_device_tree() -> Outcome {
        // Copies of the real device tree, damaged on purpose: the parser
        // must say what is wrong, not fault.
        let dtb = DTB.load(Ordering::Relaxed);
        // SAFETY: the device tree Xen gave us, validated at boot; we only
        // read its header here.
        let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
        let Ok(size) = arch::boot_info::blob_size(header) else {
            return Outcome::Fail("the boot device tree no longer parses".into());
        };
        // SAFETY: as above; `size` is the blob's own, checked, size.
        let good = unsafe { core::slice::from_raw_parts(dtb as *const u8, size) };
        let truncated = &good[..size - 9];
        let mut bad_magic = alloc::vec::Vec::from(good);
        bad_magic[0] ^= 0xff;
        match (
            arch::boot_info::parse(truncated, 0),
            arch::boot_info::parse(&bad_magic, 0),
            arch::boot_info::parse(good, 0),
        ) {
            (Err(a), Err(b), Ok(_)) => {
                Outcome::Pass(format!("truncated copy: {a}; bad magic: {b}"))
            }
            (Ok(_), _, _) | (_, Ok(_), _) => {
                Outcome::Fail("a damaged device tree was accepted".into())
            }
            (_, _, Err(e)) => Outcome::Fail(format!("the good device tree failed: {e}")),
        }
    }

    fn main(dtb: usize) -> ! {
        arch::eprintln!("xenpal selftest starting (device tree at {dtb:#x})");
        DTB.store(dtb, Ordering::Relaxed);
        arch::platform::run(dtb, |b| async move {
            let mut extra: alloc::vec::Vec<Extra> = alloc::vec![
                ("interrupts", interrupts),
                ("bad-device-tree", bad_device_tree)
            ];
            crate::faults::add(&mut extra);
            let tol = Tolerances::default();
            let report = selftest::run(&b.platform, tol, &extra).await;
            report.passed()
        })
    }

    arch::entry!(main);
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod guest {
    extern crate alloc;
    use alloc::format;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use xenpal::arch;
    use xenpal_apps::selftest::{self, Extra, Outcome, Tolerances};

    fn upcalls() -> Outcome {
        let n = arch::irq::upcalls();
        let detail = format!("Xen entered the event callback {n} times");
        if n > 0 {
            Outcome::Pass(detail)
        } else {
            Outcome::Fail(detail)
        }
    }

    static START_INFO: AtomicUsize = AtomicUsize::new(0);

    fn bad_start_info() -> Outcome {
        if arch::pvh::active() {
            return bad_hvm_start_info();
        }
        use xenpal::xen_pv::abi::x86_64::StartInfo;
        let at = START_INFO.load(Ordering::Relaxed);
        // SAFETY: start_info's page, mapped since boot and never written
        // after Xen filled it; read only.
        let good = unsafe {
            core::slice::from_raw_parts(at as *const u8, core::mem::size_of::<StartInfo>())
        };
        let mut bad_magic = alloc::vec::Vec::from(good);
        bad_magic[0] ^= 0xff;
        let mut no_pages = alloc::vec::Vec::from(good);
        no_pages[32..40].fill(0);
        match (
            arch::boot_info::parse(&good[..100]),
            arch::boot_info::parse(&bad_magic),
            arch::boot_info::parse(&no_pages),
            arch::boot_info::parse(good),
        ) {
            (Err(a), Err(b), Err(c), Ok(_)) => {
                Outcome::Pass(format!("truncated: {a}; bad magic: {b}; no pages: {c}"))
            }
            (_, _, _, Err(e)) => Outcome::Fail(format!("the real start_info failed: {e}")),
            _ => Outcome::Fail("a damaged start_info was accepted".into()),
        }
    }

    /// The same for a PVH boot's `hvm_start_info`.
    fn bad_hvm_start_info() -> Outcome {
        use xenpal::xen_pv::abi::x86_64::HvmStartInfo;
        let at = START_INFO.load(Ordering::Relaxed);
        // SAFETY: hvm_start_info, identity-mapped and never written after
        // Xen filled it; read only.
        let good = unsafe {
            core::slice::from_raw_parts(at as *const u8, core::mem::size_of::<HvmStartInfo>())
        };
        let mut bad_magic = alloc::vec::Vec::from(good);
        bad_magic[0] ^= 0xff;
        let mut later = alloc::vec::Vec::from(good);
        later[4] = 9;
        match (
            arch::pvh::parse_start_info(&good[..20]),
            arch::pvh::parse_start_info(&bad_magic),
            arch::pvh::parse_start_info(&later),
            arch::pvh::parse_start_info(good),
        ) {
            (Err(a), Err(b), Err(c), Ok(_)) => Outcome::Pass(format!(
                "truncated: {a}; bad magic: {b}; unknown version: {c}"
            )),
            (_, _, _, Err(e)) => Outcome::Fail(format!("the real hvm_start_info failed: {e}")),
            _ => Outcome::Fail("a damaged hvm_start_info was accepted".into()),
        }
    }

    fn main(start_info: usize) -> ! {
        arch::eprintln!("xenpal selftest starting (start_info at {start_info:#x})");
        START_INFO.store(start_info, Ordering::Relaxed);
        arch::platform::run(start_info, |b| async move {
            let m = b.memory;
            let what = match &b.boot {
                arch::platform::Boot::Pv(i) => format!(
                    "{} ({}), {} pages; {} page tables added",
                    i.magic_str(),
                    if i.is_dom0() { "dom0" } else { "domU" },
                    i.nr_pages,
                    m.tables
                ),
                arch::platform::Boot::Pvh(i) => format!(
                    "PVH ({}), hvm_start_info version {}",
                    if b.boot.is_dom0() { "dom0" } else { "domU" },
                    i.version
                ),
            };
            arch::eprintln!(
                "xenpal: {what}, heap {} KiB, {} pages for the page allocator",
                m.heap / 1024,
                m.pool
            );
            let mut extra: alloc::vec::Vec<Extra> =
                alloc::vec![("interrupts", upcalls), ("bad-start-info", bad_start_info)];
            crate::faults::add(&mut extra);
            // A PVH guest must not map its own grants (Xen takes the page
            // from its first frame number): see selftest::run_with.
            let self_map = !arch::pvh::active();
            let report =
                selftest::run_with(&b.platform, Tolerances::default(), &extra, self_map).await;
            report.passed()
        })
    }

    arch::entry!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this guest is built for bare metal: cargo xtask qemu --arch aarch64 selftest");
}
