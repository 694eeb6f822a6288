//! `cargo xtask`: developer tasks.
//!
//! ```text
//! cargo xtask qemu --arch aarch64|x86_64|arm32 [--mode pv|pvh] [--gic 2|3] [--xen 4.17|4.20]
//!                  [--dom0 linux|none] [--timeout SECS] [--features F]
//!                  [--expect pass|fail|crash] [GUEST]
//! cargo xtask report
//! cargo xtask run [--xen 4.17|4.20] [--gic 2|3] [--dom0 linux|none] [--mode pv|pvh] [--timeout SECS] ELF
//! cargo xtask new PATH
//! cargo xtask bench [--quick] [--only NAME,...] | --xen [--quick]
//! cargo xtask soak [--seeds N] [--from S] [--jobs J] | --seed S
//! ```
//!
//! `qemu` builds guest `GUEST` (default `selftest`, a binary of
//! `xenpal-guests`), fetches Xen from Debian's archive (cached), boots Xen
//! under QEMU with the guest — on AArch64 as a dom0less domU (`--gic` picks
//! the interrupt controller) or, with `--dom0 linux` (Xen 4.17), as an `xl`
//! domU of a Linux dom0 built from Debian's packages; on x86_64 as the PV
//! dom0 — and judges the guest's `selftest verdict:` line (and a Linux
//! dom0's own checks). Exits 0 if the verdict is what `--expect` says
//! (default: pass; `crash` expects the guest to report an unexpected
//! exception or Xen to report it crashed), non-zero otherwise, on an
//! unexpected crash or on a timeout, after printing the last lines of the
//! log. Logs, results and the artefacts for real hardware go to
//! `target/xenpal-qemu/out/<run>/<guest>/`.
//!
//! `run` boots a guest ELF someone else built (a unikernel's own crate:
//! this is the `runner` its `.cargo/config.toml` names), streams its console
//! and exits with its status: 0 when it powers off, 1 when it crashes,
//! fails or times out. The architecture comes from the ELF; the options may
//! also come from the environment (`XENPAL_XEN`, `XENPAL_GIC`,
//! `XENPAL_DOM0`, `XENPAL_TIMEOUT`, `XENPAL_MODE`), so a fixed `runner`
//! line serves every setting. The board artefacts go beside the ELF, in `xenpal/<name>/`; their
//! `xl` config is the crate's own `xenpal.cfg` (or `XENPAL_CONFIG`) with a
//! `kernel` line added.
//!
//! `new` writes a standalone unikernel crate at PATH (see `template.rs`).
//!
//! `bench` runs the benchmark suite (see `bench.rs`); `soak` runs seeds of
//! the simulator with faults on and checks its invariants (see `soak.rs`).
//!
//! `report` prints the self-test results of the simulator and of every
//! QEMU run saved there (those without `--features`), side by side; then
//! the conformance suite's (see `fidelity.rs`), ending with the line
//! `conformance: cases=N identical=M explained=K unexplained=U`, and fails
//! if a difference is not explained in `docs/FIDELITY.md`.

mod bench;
mod boards;
mod control;
mod cpio;
mod dom0;
mod dtb;
mod elf;
mod fetch;
mod fidelity;
mod fullstack;
mod run;
mod site;
mod soak;
mod template;

use fetch::XenVersion;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

const USAGE: &str = "usage: cargo xtask qemu --arch aarch64|x86_64|arm32 [--mode pv|pvh] [--gic 2|3] [--xen 4.17|4.20] [--dom0 linux|none] [--timeout SECS] [--features F] [--expect pass|fail|crash] [GUEST]\n       cargo xtask qemu --arch aarch64|x86_64 --xen 4.17 --dom0 linux --site DIR [--image-mib N] [--port PORT] [--check] site\n       cargo xtask run [--xen 4.17|4.20] [--gic 2|3] [--dom0 linux|none] [--mode pv|pvh] [--timeout SECS] ELF\n       cargo xtask new PATH\n       cargo xtask bench [--quick] [--only NAME,...] | --xen [--quick]\n       cargo xtask soak [--seeds N] [--from S] [--jobs J] | --seed S\n       cargo xtask report";

/// Where the guest image is loaded by QEMU (clear of the DTB QEMU puts at
/// 0x48000000 with 1 GiB of RAM).
const KERNEL_ADDR: u64 = 0x5000_0000;

/// What the run should end with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// A `selftest verdict: PASS` line.
    Pass,
    /// A `selftest verdict: FAIL` line.
    Fail,
    /// A crash before any verdict (an exception report, a panic, or Xen
    /// saying the domain crashed).
    Crash,
}

struct QemuArgs {
    arch: String,
    gic: u8,
    xen: XenVersion,
    timeout: Duration,
    features: Option<String>,
    expect: Expect,
    /// AArch64: boot a Linux dom0 that starts the guest with `xl create`,
    /// instead of the guest alone (dom0less).
    dom0_linux: bool,
    guest: String,
    /// `run`: the guest ELF to boot (built elsewhere), instead of building
    /// `guest` from this workspace.
    elf: Option<PathBuf>,
    /// `run`: the guest crate's domain config (`XENPAL_CONFIG`, else
    /// `xenpal.cfg` beside its `Cargo.toml`), which the `xl` config among
    /// the board artefacts is made from.
    domain_cfg: Option<String>,
    /// `--site DIR` and its options: the site guest's directory, image
    /// size, host port, and whether to check it.
    site: Option<site::SiteArgs>,
    /// x86_64: boot the guest PVH (`--mode pvh`) instead of PV.
    pvh: bool,
    /// `cargo xtask bench --xen`: dom0 runs the Xen measures (with this
    /// many density guests at most) instead of serving the site.
    bench_xen: Option<usize>,
}

fn parse(args: &[String]) -> Result<QemuArgs, String> {
    let mut a = QemuArgs {
        arch: String::new(),
        gic: 3,
        xen: XenVersion::V4_20,
        timeout: Duration::from_secs(240),
        features: None,
        expect: Expect::Pass,
        dom0_linux: false,
        guest: "selftest".into(),
        elf: None,
        domain_cfg: None,
        site: None,
        pvh: false,
        bench_xen: None,
    };
    let (mut gic_given, mut xen_given) = (false, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--arch" => a.arch = value("--arch")?,
            "--gic" => {
                gic_given = true;
                a.gic = match value("--gic")?.as_str() {
                    "2" => 2,
                    "3" => 3,
                    v => return Err(format!("--gic must be 2 or 3, not {v:?}")),
                }
            }
            "--xen" => {
                xen_given = true;
                let v = value("--xen")?;
                a.xen = XenVersion::parse(&v)
                    .ok_or(format!("--xen must be 4.17 or 4.20, not {v:?}"))?;
            }
            "--timeout" => {
                let v = value("--timeout")?;
                a.timeout = Duration::from_secs(
                    v.parse()
                        .map_err(|_| format!("--timeout needs seconds, not {v:?}"))?,
                );
            }
            "--features" => a.features = Some(value("--features")?),
            "--mode" => {
                a.pvh = match value("--mode")?.as_str() {
                    "pv" => false,
                    "pvh" => true,
                    v => return Err(format!("--mode must be pv or pvh, not {v:?}")),
                }
            }
            "--dom0" => {
                a.dom0_linux = match value("--dom0")?.as_str() {
                    "linux" => true,
                    "none" => false,
                    v => return Err(format!("--dom0 must be linux or none, not {v:?}")),
                }
            }
            "--expect" => {
                a.expect = match value("--expect")?.as_str() {
                    "pass" => Expect::Pass,
                    "fail" => Expect::Fail,
                    "crash" => Expect::Crash,
                    v => return Err(format!("--expect must be pass, fail or crash, not {v:?}")),
                }
            }
            "--site" => {
                a.site.get_or_insert_with(Default::default).dir = PathBuf::from(value("--site")?);
            }
            "--image-mib" => {
                let v = value("--image-mib")?;
                let mib: u64 = v
                    .parse()
                    .ok()
                    .filter(|m| (3..=4096).contains(m))
                    .ok_or(format!("--image-mib needs MiB from 3 to 4096, not {v:?}"))?;
                a.site.get_or_insert_with(Default::default).image_mib = mib;
            }
            "--port" => {
                let v = value("--port")?;
                let port: u16 = v
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(format!("--port needs a port from 1 to 65535, not {v:?}"))?;
                a.site.get_or_insert_with(Default::default).port = port;
            }
            "--check" => a.site.get_or_insert_with(Default::default).check = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => a.guest = s.to_string(),
        }
    }
    // 32-bit Arm has one platform so far (Debian 12's armhf Xen, GICv2):
    // its defaults.
    if a.arm32() {
        if !gic_given {
            a.gic = 2;
        }
        if !xen_given {
            a.xen = XenVersion::V4_17;
        }
    }
    check(a)
}

/// Reject option combinations that cannot work, and an unknown `--arch`.
fn check(a: QemuArgs) -> Result<QemuArgs, String> {
    if a.pvh && a.arch != "x86_64" {
        return Err("--mode pvh is for --arch x86_64".into());
    }
    match (&a.site, a.guest.as_str()) {
        (None, "site") => return Err("the site guest needs --site DIR".into()),
        (Some(_), "site") if !a.dom0_linux => {
            return Err("the site guest runs as an xl domU: add --xen 4.17 --dom0 linux".into());
        }
        (Some(s), "site") if !s.dir.is_dir() => {
            return Err(format!("--site {}: not a directory", s.dir.display()));
        }
        (Some(_), g) if g != "site" => {
            return Err(format!(
                "--site, --image-mib, --port and --check are for the site guest, not {g}"
            ));
        }
        _ => {}
    }
    if a.guest == "control" && !a.dom0_linux && a.elf.is_none() {
        return Err("the control guest waits for xl shutdown or xl reboot: run it with --xen 4.17 --dom0 linux".into());
    }
    if a.dom0_linux && a.xen != XenVersion::V4_17 {
        return Err("--dom0 linux needs --xen 4.17: its toolstack comes from Debian 12, which ships Xen 4.17".into());
    }
    if a.arm32() && (a.xen != XenVersion::V4_17 || a.gic != 2) {
        return Err(
            "--arch arm32 runs on Debian 12's armhf Xen with GICv2 (--xen 4.17 --gic 2, the defaults)"
                .into(),
        );
    }
    match a.arch.as_str() {
        "aarch64" | "x86_64" | "arm32" => Ok(a),
        "" => Err("--arch is required".into()),
        other => Err(format!(
            "--arch must be aarch64, x86_64 or arm32, not {other:?}"
        )),
    }
}

/// `cargo xtask run`'s arguments: options from the environment
/// (`XENPAL_XEN`, `XENPAL_GIC`, `XENPAL_DOM0`, `XENPAL_TIMEOUT`,
/// `XENPAL_MODE`), then from
/// the command line, then the ELF (what cargo's `runner` passes). Arguments
/// after the ELF (`cargo run -- ...`) are refused: a guest has no argv.
fn parse_run(args: &[String]) -> Result<QemuArgs, String> {
    let mut opts: Vec<String> = Vec::new();
    for (var, flag) in [
        ("XENPAL_XEN", "--xen"),
        ("XENPAL_GIC", "--gic"),
        ("XENPAL_DOM0", "--dom0"),
        ("XENPAL_TIMEOUT", "--timeout"),
        ("XENPAL_MODE", "--mode"),
    ] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            opts.extend([flag.to_string(), v]);
        }
    }
    let mut elf = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--xen" | "--gic" | "--dom0" | "--timeout" | "--mode" => {
                let v = it.next().ok_or(format!("{arg} needs a value"))?;
                opts.extend([arg.clone(), v.clone()]);
            }
            s if s.starts_with('-') && elf.is_none() => {
                return Err(format!("unknown option {s}"));
            }
            s if elf.is_none() => elf = Some(PathBuf::from(s)),
            s => {
                return Err(format!(
                    "a guest takes no arguments ({s:?}): configure it through xenstore or its build"
                ));
            }
        }
    }
    let elf = elf.ok_or("no guest ELF given")?;
    let bytes = std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let arch = elf::arch(&bytes).map_err(|e| format!("{}: {e}", elf.display()))?;
    opts.extend(["--arch".to_string(), arch.to_string()]);
    if !opts.iter().any(|o| o == "--timeout") {
        opts.extend(["--timeout".to_string(), "300".to_string()]);
    }
    let mut a = parse(&opts)?;
    a.guest = elf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{}: no file name", elf.display()))?;
    a.elf = Some(elf);
    a.domain_cfg = domain_config()?;
    Ok(a)
}

/// The domain config of the crate being run, from `XENPAL_CONFIG` (a
/// guest crate's `.cargo/config.toml` sets it to its `xenpal.cfg`, the
/// file the simulator reads on the host; `CARGO_MANIFEST_DIR` cannot
/// serve, as the `cargo run` that starts this runner sets it to xtask's).
/// `None` if unset.
///
/// Errors: a message naming the file if it cannot be read.
fn domain_config() -> Result<Option<String>, String> {
    let Some(path) = std::env::var_os("XENPAL_CONFIG").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    std::fs::read_to_string(&path)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl QemuArgs {
    fn x86(&self) -> bool {
        self.arch == "x86_64"
    }

    fn arm32(&self) -> bool {
        self.arch == "arm32"
    }

    fn target(&self) -> &'static str {
        match self.arch.as_str() {
            "x86_64" => "x86_64-unknown-none",
            "arm32" => "armv7a-none-eabi",
            _ => "aarch64-unknown-none",
        }
    }

    /// The run's name: arch, GIC (Arm), Xen version, features.
    fn run_name(&self) -> String {
        let gic = if self.x86() {
            String::new()
        } else {
            format!("-gic{}", self.gic)
        };
        let features = self
            .features
            .as_ref()
            .map(|f| format!("-{f}"))
            .unwrap_or_default();
        let dom0 = if self.dom0_linux { "-linux-dom0" } else { "" };
        let mode = if self.pvh { "-pvh" } else { "" };
        format!(
            "{}{mode}{gic}-xen{}{dom0}{features}",
            self.arch,
            self.xen.as_str()
        )
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is in the workspace")
        .to_path_buf()
}

/// The 32-bit Arm crate's examples: probes of the arch crate alone.
const ARM32_PROBES: [&str; 2] = ["boot", "fault"];

fn build_guest(root: &Path, a: &QemuArgs) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = a.target();
    let mut cmd = Command::new(cargo);
    // The 32-bit Arm crate's own probes (`boot`, `fault`) are its examples;
    // every other guest is the same on every arch.
    let (package, kind, dir) = if a.arm32() && ARM32_PROBES.contains(&a.guest.as_str()) {
        ("xenpal-arch-arm32", "--example", "guest/examples")
    } else {
        ("xenpal-guests", "--bin", "guest")
    };
    // The workspace's `guest` profile: the size a user's crate gets from
    // the front door's template.
    cmd.current_dir(root).args([
        "build",
        "--quiet",
        "--profile",
        "guest",
        "-p",
        package,
        kind,
        &a.guest,
        "--target",
        target,
    ]);
    if let Some(f) = &a.features {
        cmd.args(["--features", f]);
    }
    let status = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("building guest {} failed ({status})", a.guest));
    }
    Ok(root.join("target").join(target).join(dir).join(&a.guest))
}

/// QEMU's Arm `virt` machine for this run, with `mem_mib` of RAM: the
/// program (`qemu-system-aarch64`, or `qemu-system-arm` for 32-bit Arm)
/// and its machine arguments.
fn arm_qemu(a: &QemuArgs, mem_mib: u32) -> (&'static str, Vec<String>) {
    if a.arm32() {
        ("qemu-system-arm", arm32_machine_args(mem_mib))
    } else {
        ("qemu-system-aarch64", machine_args(a.gic, mem_mib))
    }
}

/// The device tree of that machine, as QEMU dumps it.
fn dump_dtb(dir: &Path, a: &QemuArgs, mem_mib: u32) -> Result<Vec<u8>, String> {
    let (qemu, args) = arm_qemu(a, mem_mib);
    let path = dir.join(format!("qemu-virt-{}-gic{}.dtb", a.arch, a.gic));
    let out = Command::new(qemu)
        .args(args)
        .arg("-machine")
        .arg(format!("dumpdtb={}", path.display()))
        .output()
        .map_err(|e| format!("{qemu}: {e} (install Debian's qemu-system-arm)"))?;
    std::fs::read(&path).map_err(|e| {
        format!(
            "QEMU did not dump its device tree: {e}; {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Write the dom0less device tree for the guest `kernel` (`kernel_size`
/// bytes; `enhanced`: its `xen,enhanced` value, if any) and return the
/// QEMU command booting Xen (`xen`) with it, the guest at [`KERNEL_ADDR`].
fn dom0less_command(
    a: &QemuArgs,
    out: &Path,
    xen: &Path,
    kernel: &Path,
    kernel_size: u64,
    enhanced: Option<&'static str>,
) -> Result<Command, String> {
    let base_dtb = dump_dtb(out, a, 1024)?;
    let domu = dtb::DomU {
        memory_kib: 128 * 1024,
        kernel_addr: KERNEL_ADDR,
        kernel_size,
        enhanced,
        bootargs: "console=hvc0".into(),
    };
    let dtb = dtb::dom0less(&base_dtb, "loglvl=all guest_loglvl=all", &domu)?;
    let dtb_path = out.join("xen.dtb");
    std::fs::write(&dtb_path, &dtb).map_err(|e| e.to_string())?;
    let cmd = arm_xen_command(a, 1024, xen, &dtb_path, &[(kernel, KERNEL_ADDR)]);
    println!(
        "== booting Xen {} + guest under {} (GICv{}), timeout {:?}",
        a.xen.as_str(),
        arm_qemu(a, 1024).0,
        a.gic,
        a.timeout
    );
    Ok(cmd)
}

/// The QEMU command that boots Xen (`xen`) on this run's Arm machine with
/// `mem_mib` of RAM, the device tree at `dtb`, and each file of `loads`
/// put at its address by QEMU's loader (the boot modules the device tree
/// names).
fn arm_xen_command(
    a: &QemuArgs,
    mem_mib: u32,
    xen: &Path,
    dtb: &Path,
    loads: &[(&Path, u64)],
) -> Command {
    let (qemu, args) = arm_qemu(a, mem_mib);
    let mut cmd = Command::new(qemu);
    cmd.args(args)
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(xen)
        .arg("-dtb")
        .arg(dtb);
    for (file, addr) in loads {
        cmd.arg("-device")
            .arg(format!("loader,file={},addr={addr:#x}", file.display()));
    }
    cmd
}

fn machine_args(gic: u8, mem_mib: u32) -> Vec<String> {
    [
        "-machine",
        &format!("virt,virtualization=on,gic-version={gic}"),
        "-cpu",
        "cortex-a57",
        "-m",
        &mem_mib.to_string(),
        "-smp",
        "2",
        "-nographic",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The simulator's results for the same self-test, by test name.
fn sim_selftest() -> Vec<(String, String)> {
    use std::sync::{Arc, Mutex};
    use xenpal_apps::selftest;
    let mut sim = xenpal_sim::Sim::new(xenpal_sim::SimConfig::seeded(1));
    let out: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let o = out.clone();
    let cfg = xenpal_sim::DomainConfig::new("selftest").without_xenstore();
    if sim
        .spawn(cfg, move |p| async move {
            let r = selftest::run(&p, selftest::Tolerances::default(), &[]).await;
            let mut v = o.lock().unwrap();
            for i in 0..r.results.len() {
                v.push(line_parts(&r.line(i)));
            }
        })
        .is_err()
    {
        return Vec::new();
    }
    sim.run();

    out.lock().unwrap().clone()
}

/// `PASS` or `FAIL`.
fn word(ok: bool) -> String {
    if ok { "PASS" } else { "FAIL" }.to_string()
}

/// `selftest NAME: WORD (...)` → `(NAME, WORD)`.
fn line_parts(line: &str) -> (String, String) {
    let rest = line.strip_prefix("selftest ").unwrap_or(line);
    let (name, tail) = rest.split_once(": ").unwrap_or((rest, ""));
    (
        name.to_string(),
        tail.split_whitespace().next().unwrap_or("").to_string(),
    )
}

/// Make the AArch64 image and board artefacts, fetch Xen and write the
/// dom0less device tree; returns the QEMU command.
fn aarch64_boot(a: &QemuArgs, base: &Path, out: &Path, elf: &[u8]) -> Result<Command, String> {
    let image = elf::to_flat(elf)?;
    let loaded = u64::from_le_bytes(
        image
            .get(16..24)
            .ok_or("image too short")?
            .try_into()
            .unwrap(),
    );
    println!(
        "   image: {} bytes on disk, {} KiB in memory with .bss/stack/heap",
        image.len(),
        loaded / 1024
    );
    boards::write(out, &a.guest, "Image", &image, a.domain_cfg.as_deref())?;
    println!("== fetching Xen {} (arm64) from Debian", a.xen.as_str());
    let xen = fetch::xen_arm64(&base.join("cache"), a.xen)?;
    if a.dom0_linux {
        return linux_dom0_boot(a, base, out, &image, &xen);
    }
    // Xen 4.17 panics on xen,enhanced without a dom0; 4.20 supports
    // "no-xenstore": grants and event channels with no dom0 at all.
    let enhanced = (a.xen == XenVersion::V4_20).then_some("no-xenstore");
    dom0less_command(
        a,
        out,
        &xen,
        &out.join("Image"),
        image.len() as u64,
        enhanced,
    )
}

/// Make the 32-bit Arm zImage, fetch Debian's armhf Xen and write the
/// dom0less device tree; returns the QEMU command (`qemu-system-arm`,
/// Cortex-A15 with the virtualization extensions, GICv2).
fn arm32_boot(a: &QemuArgs, base: &Path, out: &Path, elf: &[u8]) -> Result<Command, String> {
    let image = elf::to_flat32(elf)?;
    println!("   image: {} bytes (a zImage)", image.len());
    boards::write(out, &a.guest, "zImage", &image, a.domain_cfg.as_deref())?;
    let zimage = out.join("zImage");
    println!("== fetching Xen {} (armhf) from Debian", a.xen.as_str());
    let xen = fetch::xen_armhf(&base.join("cache"), a.xen)?;
    if a.dom0_linux {
        return linux_dom0_boot(a, base, out, &image, &xen);
    }
    dom0less_command(a, out, &xen, &zimage, image.len() as u64, None)
}

fn arm32_machine_args(mem_mib: u32) -> Vec<String> {
    [
        "-machine",
        // highmem=off: Linux as dom0 of Xen 4.17 arm32 hangs probing PCI
        // through the ECAM window QEMU otherwise puts above 4 GiB
        // (0x4010000000); below, it boots.
        "virt,virtualization=on,gic-version=2,highmem=off",
        "-cpu",
        "cortex-a15",
        "-m",
        &mem_mib.to_string(),
        "-smp",
        "2",
        "-nographic",
    ]
    .map(String::from)
    .to_vec()
}

/// Where QEMU's loader puts dom0's kernel and initramfs (clear of Xen and
/// the device tree, with room for a 64 MiB kernel).
const DOM0_KERNEL_ADDR: u64 = 0x5000_0000;
const DOM0_INITRD_ADDR: u64 = 0x5400_0000;

/// Build the Linux dom0 (Debian's packages, our `/init`) that starts the
/// guest (`image`: an Arm `Image` or `zImage`, or an x86 ELF) with `xl create`;
/// returns the QEMU command that boots Xen (`xen`) with it.
fn linux_dom0_boot(
    a: &QemuArgs,
    base: &Path,
    out: &Path,
    image: &[u8],
    xen: &Path,
) -> Result<Command, String> {
    let arch = if a.x86() {
        dom0::Arch::Amd64
    } else if a.arm32() {
        dom0::Arch::Armhf
    } else {
        dom0::Arch::Arm64
    };
    println!(
        "== building a Linux dom0 from Debian's {} packages",
        arch.debian()
    );
    let mut extra = Vec::new();
    let mut drive = None;
    let mut site_images = Vec::new();
    let mut devices = String::new();
    if a.guest == "fullstack" {
        let disk = out.join("disk.img");
        let data = fullstack::input();
        fullstack::write_disk(&disk, &data)?;
        println!(
            "   guest disk: {} (FAT, {} = {} bytes), dom0's /dev/vda",
            disk.display(),
            xenpal_apps::fullstack::INPUT,
            data.len()
        );
        let backing = if a.arm32() {
            fullstack::Backing::RamCopy
        } else {
            fullstack::Backing::Virtio
        };
        devices = fullstack::guest_devices(backing);
        extra = fullstack::dom0_files(&data, backing);
        drive = Some(disk);
    } else if a.guest == "control" {
        extra = control::dom0_files();
    } else if a.guest == "conformance" {
        extra = fidelity::dom0_files();
    } else if let Some(site) = &a.site {
        let images = site::pack(&site.dir, site.image_mib, out)?;
        println!(
            "   site: {} packed into {} FAT image(s) of at most {} MiB",
            site.dir.display(),
            images.len(),
            site.image_mib
        );
        devices = site::guest_devices(images.len());
        extra = match a.bench_xen {
            Some(guests) => {
                let cache = base.join("cache");
                let kernel = dom0::kernel(&cache, arch, a.xen)?;
                let bb = fetch::package(&cache, a.xen.suite(), arch.debian(), "busybox-static")?
                    .join("bin/busybox");
                let busybox = std::fs::read(&bb).map_err(|e| format!("{}: {e}", bb.display()))?;
                bench::xen::dom0_files(&kernel, &busybox, guests)?
            }
            None => site::dom0_files(images.len()),
        };
        site_images = images;
    }
    // Preserved after shutdown, so dom0 can read its last console lines
    // and the devices' final states.
    let cfg = format!(
        "name = \"xenpal\"\n{}kernel = \"/guest/kernel\"\nmemory = 128\nvcpus = 1\n\
         on_poweroff = \"preserve\"\non_crash = \"preserve\"\n{devices}",
        match (a.x86(), a.pvh) {
            (true, true) => "type = \"pvh\"\n",
            (true, false) => "type = \"pv\"\n",
            _ => "",
        }
    );
    let d = dom0::build(&base.join("cache"), out, arch, a.xen, image, &cfg, extra)?;
    let kernel_size = std::fs::metadata(&d.kernel)
        .map_err(|e| e.to_string())?
        .len();
    let initrd_size = std::fs::metadata(&d.initramfs)
        .map_err(|e| e.to_string())?
        .len();
    println!(
        "   dom0: Linux {} ({} MiB), initramfs of {} files ({} MiB)",
        d.release,
        kernel_size >> 20,
        d.files,
        initrd_size >> 20
    );
    // The density measure's guests each cost dom0 several MiB in Linux's
    // backends (netback's and blkback's page pools): 512 MiB runs about 50.
    let dom0_mib = if a.bench_xen.is_some() { 1024 } else { 512 };
    let xen_args = format!("dom0_mem={dom0_mib}M,max:{dom0_mib}M loglvl=all guest_loglvl=all");
    let dom0_args = "console=hvc0 rdinit=/init quiet";
    let mut cmd;
    if a.x86() {
        // Multiboot modules: dom0's kernel (with its command line after a
        // space), then its initramfs.
        for p in [&d.kernel, &d.initramfs] {
            if p.display().to_string().contains([',', ' ']) {
                return Err(format!(
                    "QEMU cannot load a multiboot module from a path with ',' or ' ': {}",
                    p.display()
                ));
            }
        }
        // Not `-cpu max`: Linux 6.1 as a PV dom0 dies in its first
        // exception under TCG with it (Xen cannot write the bounce frame),
        // and with Skylake too; qemu64 works.
        cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-machine",
            "q35",
            "-cpu",
            if a.pvh { "qemu64,+svm,+npt" } else { "qemu64" },
            "-m",
            "2048",
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(xen)
        .arg("-append")
        .arg(format!("console=com1 com1=115200 {xen_args}"))
        .arg("-initrd")
        .arg(format!(
            "{} {dom0_args},{}",
            d.kernel.display(),
            d.initramfs.display()
        ));
    } else {
        if DOM0_KERNEL_ADDR + kernel_size > DOM0_INITRD_ADDR {
            return Err(format!(
                "dom0's kernel ({kernel_size} bytes) overlaps its initramfs"
            ));
        }
        let base_dtb = dump_dtb(out, a, 2048)?;
        let modules = dtb::Dom0Modules {
            kernel: (DOM0_KERNEL_ADDR, kernel_size),
            ramdisk: (DOM0_INITRD_ADDR, initrd_size),
            bootargs: dom0_args.into(),
        };
        let dtb = dtb::with_dom0(&base_dtb, &xen_args, &modules)?;
        let dtb_path = out.join("xen-dom0.dtb");
        std::fs::write(&dtb_path, &dtb).map_err(|e| e.to_string())?;
        cmd = arm_xen_command(
            a,
            2048,
            xen,
            &dtb_path,
            &[
                (&d.kernel, DOM0_KERNEL_ADDR),
                (&d.initramfs, DOM0_INITRD_ADDR),
            ],
        );
    }
    if let Some(disk) = drive {
        cmd.arg("-drive")
            .arg(format!(
                "file={},if=none,format=raw,id=guestdisk",
                disk.display()
            ))
            .arg("-device")
            .arg(if a.x86() {
                "virtio-blk-pci,drive=guestdisk"
            } else {
                "virtio-blk-device,drive=guestdisk"
            });
    }
    if let Some(site) = &a.site {
        site::qemu_devices(&mut cmd, &site_images, site.port, a.x86());
    }
    println!(
        "== booting Xen {} + Linux dom0 under QEMU; dom0 runs `xl create`, timeout {:?}",
        a.xen.as_str(),
        a.timeout
    );
    Ok(cmd)
}

/// Strip the x86_64 guest and write it with its `xl` config, fetch Xen;
/// returns the QEMU command, which boots Xen with the guest as PV dom0.
fn x86_64_boot(a: &QemuArgs, base: &Path, out: &Path, elf: &[u8]) -> Result<Command, String> {
    let (image, in_memory) = elf::strip(elf)?;
    println!(
        "   image: {} bytes on disk (stripped ELF), {} KiB in memory with .bss/stack",
        image.len(),
        in_memory / 1024
    );
    let path = boards::write_x86(out, &a.guest, &image, a.domain_cfg.as_deref(), a.pvh)?;
    // The image is linked at 0x1000 (arch-x86_64/link.ld); a PVH dom0 sees
    // the host's legacy hole from 640 KiB, where it cannot be loaded.
    let end = 0x1000 + in_memory;
    if a.pvh && !a.dom0_linux && end > PVH_DOM0_IMAGE_END {
        return Err(format!(
            "as a PVH dom0 the image must end below {PVH_DOM0_IMAGE_END:#x} (the legacy hole \
             at 640 KiB), and {} ends at {end:#x}: run it as a domU (--xen 4.17 --dom0 linux)",
            a.guest
        ));
    }
    if a.dom0_linux {
        println!("== fetching Xen {} (amd64) from Debian", a.xen.as_str());
        let xen = fetch::xen_amd64(&base.join("cache"), a.xen)?;
        return linux_dom0_boot(a, base, out, &image, &xen);
    }
    // QEMU's multiboot loader splits -initrd at commas and takes what
    // follows a space as the module's command line.
    let module = path.display().to_string();
    if module.contains([',', ' ']) {
        return Err(format!(
            "QEMU cannot load a multiboot module from a path with ',' or ' ': {module}"
        ));
    }
    println!("== fetching Xen {} (amd64) from Debian", a.xen.as_str());
    let xen = fetch::xen_amd64(&base.join("cache"), a.xen)?;
    let mut cmd = Command::new("qemu-system-x86_64");
    // A PVH dom0 needs an IOMMU (Xen refuses one without), and RDTSCP
    // hidden: TCG's SVM gives Xen no next-RIP to skip it (docs/PVH.md).
    let (cpu, mode) = if a.pvh {
        ("max,-rdtscp", " dom0=pvh iommu=1")
    } else {
        ("max", "")
    };
    cmd.args(["-machine", "q35", "-cpu", cpu, "-m", "512", "-smp", "1"]);
    if a.pvh {
        cmd.args(["-device", "amd-iommu"]);
    }
    cmd.args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&xen)
        .arg("-append")
        .arg(format!(
            "console=com1 com1=115200 loglvl=all guest_loglvl=all dom0_mem=64M{mode}"
        ))
        .arg("-initrd")
        .arg(&module);
    println!(
        "== booting Xen {} + guest as {} dom0 under qemu-system-x86_64 (q35), timeout {:?}",
        a.xen.as_str(),
        if a.pvh { "PVH" } else { "PV" },
        a.timeout
    );
    Ok(cmd)
}

/// Where a PVH dom0's image must end: the host's memory below 640 KiB
/// (the e820's first RAM region under QEMU's BIOS).
const PVH_DOM0_IMAGE_END: u64 = 0x9f000;

/// Where a QEMU run of the self-test saves its results (`name\tWORD` lines).
const RESULTS: &str = "results.tsv";

/// The self-test results of every saved QEMU run under `base/out`, by run
/// name, sorted.
fn saved_runs(base: &Path) -> Vec<(String, Vec<(String, String)>)> {
    let mut runs = Vec::new();
    let Ok(dirs) = std::fs::read_dir(base.join("out")) else {
        return runs;
    };
    for d in dirs.flatten() {
        let Ok(text) = std::fs::read_to_string(d.path().join("selftest").join(RESULTS)) else {
            continue;
        };
        let results = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, w)| (n.to_string(), w.to_string()))
            .collect();
        runs.push((d.file_name().to_string_lossy().into_owned(), results));
    }
    runs.sort();
    runs
}

/// Print the simulator's self-test results next to every saved QEMU run's.
fn side_by_side(base: &Path) {
    let mut columns = vec![("simulator".to_string(), sim_selftest())];
    columns.extend(saved_runs(base));
    let mut names: Vec<&String> = Vec::new();
    for (_, results) in &columns {
        for (n, _) in results {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let width = |c: &(String, Vec<(String, String)>)| c.0.len().max(6) + 2;
    let mut header = format!("   {:<18}", "test");
    for c in &columns {
        header.push_str(&format!("{:<w$}", c.0, w = width(c)));
    }
    println!(
        "== self-test results side by side (QEMU runs saved under {}):",
        base.join("out").display()
    );
    println!("{}", header.trim_end());
    for n in names {
        let mut row = format!("   {n:<18}");
        for c in &columns {
            let word = c.1.iter().find(|(m, _)| m == n).map_or("-", |(_, w)| w);
            row.push_str(&format!("{word:<w$}", w = width(c)));
        }
        println!("{}", row.trim_end());
    }
}

fn qemu(a: QemuArgs) -> Result<bool, String> {
    let root = root();
    let run_name = a.run_name();
    let base = root.join("target/xenpal-qemu");
    // A guest built elsewhere keeps its artefacts beside its ELF.
    let out = match &a.elf {
        Some(elf) => elf
            .parent()
            .unwrap_or(Path::new("."))
            .join("xenpal")
            .join(&a.guest),
        None => base.join("out").join(&run_name).join(&a.guest),
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let elf = match &a.elf {
        Some(e) => {
            println!("== {run_name}: {}", e.display());
            e.clone()
        }
        None => {
            println!("== {run_name}: building guest {}", a.guest);
            build_guest(&root, &a)?
        }
    };
    let elf = std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    // The guest is dom0 on x86 unless a Linux dom0 runs it as domain 1.
    let console = if a.x86() && !a.dom0_linux {
        run::GuestConsole::Dom0
    } else {
        run::GuestConsole::Domain1
    };
    // Everything a boot needs, made afresh (disks included) for each try.
    let boot = || {
        if a.x86() {
            x86_64_boot(&a, &base, &out, &elf)
        } else if a.arm32() {
            arm32_boot(&a, &base, &out, &elf)
        } else {
            aarch64_boot(&a, &base, &out, &elf)
        }
    };
    let cmd = boot()?;
    let log = out.join("qemu.log");
    if let Some(site) = &a.site {
        return site::serve(cmd, &log, site, a.timeout);
    }
    let _ = std::fs::remove_file(out.join(RESULTS));
    let end_marker = a.dom0_linux.then_some("dom0: done");
    let echo = a.elf.is_some();
    let mut o = run::run(cmd, &log, a.timeout, console, end_marker, echo, run::STALL)?;
    if let run::Ending::Stalled(last) = &o.ending {
        // Seen now and then on a loaded machine: Xen or Linux dom0 stops
        // printing mid-boot, and the same command passes right after.
        let stalled = out.join("qemu-stalled.log");
        let _ = std::fs::rename(&log, &stalled);
        println!(
            "== no console output for {} s before a verdict (last line: {}); log kept as {}; booting once more",
            run::STALL.as_secs(),
            last.trim_end(),
            stalled.display()
        );
        o = run::run(
            boot()?,
            &log,
            a.timeout,
            console,
            end_marker,
            echo,
            run::STALL,
        )?;
    }
    if !echo {
        for l in &o.guest_lines {
            println!("   | {l}");
        }
    }
    if let Some(t) = o.first_line {
        println!(
            "   first guest line {:.2} s after QEMU started; verdict after {:.2} s",
            t.as_secs_f64(),
            o.elapsed.as_secs_f64()
        );
    }
    println!("   log: {}", log.display());
    // The table compares platforms: runs built with extra features (to
    // fail or crash on purpose) stay out of it.
    if a.guest == "conformance" && a.features.is_none() && a.elf.is_none() {
        fidelity::save(&out, &o.guest_lines)?;
    }
    if a.guest == "selftest" && a.features.is_none() && a.elf.is_none() {
        let results: Vec<(String, String)> = o
            .guest_lines
            .iter()
            .filter(|l| l.starts_with("selftest ") && !l.starts_with("selftest verdict"))
            .map(|l| line_parts(l))
            .collect();
        let text: String = results.iter().map(|(n, w)| format!("{n}\t{w}\n")).collect();
        std::fs::write(out.join(RESULTS), text).map_err(|e| e.to_string())?;
        side_by_side(&base);
    }
    // With a Linux dom0, its own checks count too, and for the full-stack
    // guest so does the disk image afterwards.
    let mut extra_ok = true;
    if a.dom0_linux {
        for l in o.all_lines.iter().filter(|l| l.starts_with("dom0: ")) {
            println!("   {l}");
        }
        if let Some(f) = o.all_lines.iter().find(|l| l.starts_with("dom0: FAILED")) {
            println!("== dom0 reported a failure: {f}");
            extra_ok = false;
        } else if !o.all_lines.iter().any(|l| l.starts_with("dom0: done")) {
            println!("== dom0 did not finish its checks");
            extra_ok = false;
        }
        if a.guest == "fullstack" {
            let data = fullstack::input();
            let disk_ok = match fullstack::check_disk(&out.join("disk.img"), &data) {
                Ok(m) => {
                    println!("== disk after the run: {m}");
                    true
                }
                Err(e) => {
                    println!("== disk after the run: {e}");
                    extra_ok = false;
                    false
                }
            };
            let mut qemu_rows: Vec<(String, String)> = o
                .guest_lines
                .iter()
                .filter(|l| l.starts_with("selftest ") && !l.starts_with("selftest verdict"))
                .map(|l| line_parts(l))
                .collect();
            for f in [
                xenpal_apps::fullstack::INPUT,
                xenpal_apps::fullstack::OUTPUT,
            ] {
                let fetched = o
                    .all_lines
                    .iter()
                    .any(|l| l.starts_with(&format!("dom0: net: GET /{f}:")));
                qemu_rows.push((format!("peer GET /{f}"), word(fetched)));
            }
            qemu_rows.push(("disk image after".into(), word(disk_ok)));
            let sim_disk = out.join("disk-sim.img");
            let sim_rows = fullstack::write_disk(&sim_disk, &data)
                .and_then(|()| fullstack::on_simulator(&sim_disk, &data))
                .unwrap_or_else(|e| vec![("simulator".into(), format!("FAIL ({e})"))]);
            println!("== the same guest code on the simulator and against Linux's backends:");
            println!("   {:<22} {:<10} QEMU, Linux dom0", "check", "simulator");
            for (n, w) in &qemu_rows {
                let sim = sim_rows
                    .iter()
                    .find(|(m, _)| m == n)
                    .map_or("-", |(_, w)| w.as_str());
                println!("   {n:<22} {sim:<10} {w}");
            }
        }
    }
    let verdict_ok = match &o.ending {
        run::Ending::Verdict(pass) => {
            let ok = a.expect == if *pass { Expect::Pass } else { Expect::Fail };
            println!(
                "== verdict: {} ({})",
                if *pass { "PASS" } else { "FAIL" },
                if ok { "as expected" } else { "NOT as expected" }
            );
            ok
        }
        run::Ending::Crashed(line) => {
            let ok = a.expect == Expect::Crash;
            println!(
                "== crashed: {} ({})",
                line.trim_end(),
                if ok { "as expected" } else { "NOT as expected" }
            );
            ok
        }
        run::Ending::PoweredOff => {
            let ok = a.expect == Expect::Pass;
            println!(
                "== the guest powered off ({})",
                if ok { "as expected" } else { "NOT as expected" }
            );
            ok
        }
        other => {
            println!("== no verdict: {other:?}");
            false
        }
    };
    let passed = extra_ok && verdict_ok;
    if !passed {
        println!("== last lines of {}:", log.display());
        let n = o.all_lines.len();
        for l in &o.all_lines[n.saturating_sub(30)..] {
            println!("   {l}");
        }
    }
    Ok(passed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("report") => {
            let base = root().join("target/xenpal-qemu");
            side_by_side(&base);
            match fidelity::report(&root(), &base) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xtask report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("qemu") => match parse(&args[1..]).and_then(qemu) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("xtask qemu: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("run") => match parse_run(&args[1..]).and_then(qemu) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("xtask run: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("bench") => match bench::run(&args[1..], &root()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("xtask bench: {e}");
                ExitCode::from(2)
            }
        },
        Some("soak") => match soak::run(&args[1..], &root()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("xtask soak: {e}");
                ExitCode::from(2)
            }
        },
        Some("new") => match template::new_crate(&args[1..], &root()) {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xtask new: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let a = parse(&s(&[
            "--arch", "aarch64", "--gic", "2", "--xen", "4.17", "hello",
        ]))
        .unwrap();
        assert_eq!(
            (a.gic, a.xen, a.guest.as_str()),
            (2, XenVersion::V4_17, "hello")
        );
        assert!(parse(&s(&["--arch", "aarch64", "--gic", "4"])).is_err());
        assert!(parse(&s(&["--gic", "3"])).is_err(), "--arch is required");
        assert!(parse(&s(&["--arch", "aarch64", "--bogus"])).is_err());
        assert!(parse(&s(&["--arch", "riscv64"])).is_err());
        let x = parse(&s(&["--arch", "x86_64", "--features", "fail"])).unwrap();
        assert_eq!(
            (x.target(), x.run_name().as_str()),
            ("x86_64-unknown-none", "x86_64-xen4.20-fail")
        );
        assert_eq!(a.run_name(), "aarch64-gic2-xen4.17");
        let d = parse(&s(&[
            "--arch", "aarch64", "--xen", "4.17", "--dom0", "linux",
        ]))
        .unwrap();
        assert_eq!(d.run_name(), "aarch64-gic3-xen4.17-linux-dom0");
        assert!(
            parse(&s(&["--arch", "aarch64", "--dom0", "linux"])).is_err(),
            "needs 4.17"
        );
        let x = parse(&s(&[
            "--arch", "x86_64", "--xen", "4.17", "--dom0", "linux",
        ]))
        .unwrap();
        assert_eq!(x.run_name(), "x86_64-xen4.17-linux-dom0");
        assert!(parse(&s(&["--arch", "x86_64", "--dom0", "linux"])).is_err());
        assert!(parse(&s(&["--arch", "aarch64", "--dom0", "bsd"])).is_err());
        let p = parse(&s(&[
            "--arch", "x86_64", "--mode", "pvh", "--xen", "4.17", "--dom0", "linux",
        ]))
        .unwrap();
        assert!(p.pvh);
        assert_eq!(p.run_name(), "x86_64-pvh-xen4.17-linux-dom0");
        assert!(
            !parse(&s(&["--arch", "x86_64", "--mode", "pv"]))
                .unwrap()
                .pvh
        );
        assert!(parse(&s(&["--arch", "x86_64", "--mode", "hvm"])).is_err());
        assert!(
            parse(&s(&["--arch", "aarch64", "--mode", "pvh"])).is_err(),
            "PVH is x86"
        );
        let arm32 = parse(&s(&[
            "--arch", "arm32", "--xen", "4.17", "--gic", "2", "boot",
        ]))
        .unwrap();
        assert_eq!(
            (arm32.target(), arm32.run_name().as_str()),
            ("armv7a-none-eabi", "arm32-gic2-xen4.17")
        );
        assert!(
            parse(&s(&["--arch", "arm32", "--gic", "3", "boot"])).is_err(),
            "Xen 4.17, GICv2 only"
        );
        assert_eq!(
            parse(&s(&["--arch", "arm32", "selftest"]))
                .unwrap()
                .run_name(),
            "arm32-gic2-xen4.17",
            "the one arm32 platform is the default"
        );
        assert_eq!(
            parse(&s(&["--arch", "arm32", "--dom0", "linux", "selftest"]))
                .unwrap()
                .run_name(),
            "arm32-gic2-xen4.17-linux-dom0"
        );
        assert!(
            parse(&s(&["--arch", "aarch64", "--expect", "fail"]))
                .unwrap()
                .expect
                == Expect::Fail
        );
        assert_eq!(
            line_parts("selftest alarm: PASS (3 alarms)"),
            ("alarm".into(), "PASS".into())
        );
    }

    #[test]
    fn elf_machines() {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1; // EV_CURRENT, as every linker writes
        h[18] = 183;
        assert_eq!(elf::arch(&h), Ok("aarch64"));
        h[18] = 62;
        assert_eq!(elf::arch(&h), Ok("x86_64"));
        h[18] = 40;
        assert!(elf::arch(&h).unwrap_err().contains("machine 40"));
        h[18] = 62;
        h[6] = 0;
        assert!(elf::arch(&h).is_err(), "EI_VERSION 0");
        h[6] = 1;
        // A 32-bit header: 52 bytes, e_machine at the same offset.
        let mut h32 = h[..52].to_vec();
        h32[4] = 1;
        h32[18] = 40;
        assert_eq!(elf::arch(&h32), Ok("arm32"));
        h32[18] = 3;
        assert!(elf::arch(&h32).unwrap_err().contains("machine 3"), "i386");
        assert_eq!(elf::arch(b"#!/bin/sh"), Err("not an ELF file".into()));
        assert!(
            elf::to_flat32(&h).is_err(),
            "a 64-bit file is not flattened as 32-bit"
        );
    }

    /// The ELF paths `cargo xtask qemu` and `run` take, on the real hello
    /// guest of each architecture, built the way `qemu` builds it: the
    /// architecture `run` reads, Arm's flat Image and x86's stripped ELF.
    #[test]
    fn real_guest_elfs() {
        use object::LittleEndian as LE;
        use object::elf::{FileHeader64, PT_NOTE};
        use object::read::elf::{FileHeader, ProgramHeader};
        for arch in ["aarch64", "x86_64"] {
            let a = parse(&s(&["--arch", arch, "hello"])).unwrap();
            let path = build_guest(&root(), &a).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(elf::arch(&bytes), Ok(arch), "{}", path.display());
            let flat = elf::to_flat(&bytes).unwrap();
            let (stripped, in_memory) = elf::strip(&bytes).unwrap();
            assert!(stripped.len() < bytes.len(), "symbols and debug info go");
            assert_eq!(elf::arch(&stripped), Ok(arch));
            assert_eq!(elf::to_flat(&stripped).unwrap(), flat, "same segments");
            assert!(in_memory as usize >= flat.len(), "memory spans the bytes");
            let header = FileHeader64::<LE>::parse(&stripped[..]).unwrap();
            let original = FileHeader64::<LE>::parse(&bytes[..]).unwrap();
            assert_eq!(header.e_entry(LE), original.e_entry(LE));
            assert_eq!(header.e_shoff(LE), 0, "no section table");
            assert_eq!(header.e_shnum(LE), 0);
            if arch == "aarch64" {
                // The Image header: its magic, and an image_size (what
                // aarch64_boot prints) covering the file's bytes.
                assert_eq!(&flat[56..60], b"ARM\x64");
                let image_size = u64::from_le_bytes(flat[16..24].try_into().unwrap());
                assert!(image_size as usize >= flat.len());
            } else {
                // Xen reads a PV kernel's notes from the program headers:
                // the stripped file keeps them.
                let mut xen_notes = 0;
                for ph in header.program_headers(LE, &stripped[..]).unwrap() {
                    if ph.p_type(LE) != PT_NOTE {
                        continue;
                    }
                    let mut notes = ph.notes(LE, &stripped[..]).unwrap().unwrap();
                    while let Some(note) = notes.next().unwrap() {
                        xen_notes += usize::from(note.name() == b"Xen");
                    }
                }
                assert!(xen_notes > 0, "the stripped PV kernel has no Xen notes");
            }
        }
    }

    #[test]
    fn run_arguments() {
        let dir = std::env::temp_dir().join(format!("xtask-runargs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let elf = dir.join("myguest");
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[18] = 62;
        std::fs::write(&elf, &h).unwrap();
        let p = elf.display().to_string();
        let a = parse_run(&s(&["--xen", "4.17", &p])).unwrap();
        assert_eq!((a.arch.as_str(), a.guest.as_str()), ("x86_64", "myguest"));
        assert_eq!(a.xen, XenVersion::V4_17);
        assert!(
            parse_run(&s(&[&p, "extra"])).is_err(),
            "guests take no argv"
        );
        assert!(parse_run(&s(&["--bogus", &p])).is_err());
        assert!(parse_run(&s(&[])).is_err());
        assert!(parse_run(&s(&[&dir.join("missing").display().to_string()])).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
