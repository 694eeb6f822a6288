//! `cargo xtask`: developer tasks.
//!
//! ```text
//! cargo xtask qemu --arch aarch64 [--gic 2|3] [--xen 4.17|4.20] [--timeout SECS]
//!                  [--features F] [--expect pass|fail] [GUEST]
//! ```
//!
//! Builds guest `GUEST` (default `selftest`, a binary of `xenpal-guests`),
//! fetches Xen from Debian's archive (cached), writes the dom0less device
//! tree, boots Xen under QEMU with the guest, and judges the guest's
//! `selftest verdict:` line. Exits 0 if the verdict is what `--expect` says
//! (default: pass), non-zero otherwise, on a crash or on a timeout, after
//! printing the last lines of the log. Logs and the board artefacts go to
//! `target/xenpal-qemu/out/<run>/`.

mod boards;
mod dtb;
mod elf;
mod fetch;
mod run;

use fetch::XenVersion;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

const USAGE: &str = "usage: cargo xtask qemu --arch aarch64 [--gic 2|3] [--xen 4.17|4.20] [--timeout SECS] [--features F] [--expect pass|fail] [GUEST]";

/// Where the guest image is loaded by QEMU (clear of the DTB QEMU puts at
/// 0x48000000 with 1 GiB of RAM).
const KERNEL_ADDR: u64 = 0x5000_0000;

struct QemuArgs {
    arch: String,
    gic: u8,
    xen: XenVersion,
    timeout: Duration,
    features: Option<String>,
    expect_pass: bool,
    guest: String,
}

fn parse(args: &[String]) -> Result<QemuArgs, String> {
    let mut a = QemuArgs {
        arch: String::new(),
        gic: 3,
        xen: XenVersion::V4_20,
        timeout: Duration::from_secs(240),
        features: None,
        expect_pass: true,
        guest: "selftest".into(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--arch" => a.arch = value("--arch")?,
            "--gic" => {
                a.gic = match value("--gic")?.as_str() {
                    "2" => 2,
                    "3" => 3,
                    v => return Err(format!("--gic must be 2 or 3, not {v:?}")),
                }
            }
            "--xen" => {
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
            "--expect" => {
                a.expect_pass = match value("--expect")?.as_str() {
                    "pass" => true,
                    "fail" => false,
                    v => return Err(format!("--expect must be pass or fail, not {v:?}")),
                }
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => a.guest = s.to_string(),
        }
    }
    match a.arch.as_str() {
        "aarch64" => Ok(a),
        "" => Err("--arch is required".into()),
        other => Err(format!("--arch {other} is not supported yet (aarch64)")),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu/ is in the workspace")
        .to_path_buf()
}

fn build_guest(root: &Path, a: &QemuArgs) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = "aarch64-unknown-none";
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "xenpal-guests",
        "--bin",
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
    Ok(root
        .join("target")
        .join(target)
        .join("release")
        .join(&a.guest))
}

fn dump_dtb(dir: &Path, gic: u8) -> Result<Vec<u8>, String> {
    let path = dir.join(format!("qemu-virt-gic{gic}.dtb"));
    let out = Command::new("qemu-system-aarch64")
        .args(machine_args(gic))
        .arg("-machine")
        .arg(format!("dumpdtb={}", path.display()))
        .output()
        .map_err(|e| format!("qemu-system-aarch64: {e} (install Debian's qemu-system-arm)"))?;
    std::fs::read(&path).map_err(|e| {
        format!(
            "QEMU did not dump its device tree: {e}; {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn machine_args(gic: u8) -> Vec<String> {
    [
        "-machine",
        &format!("virt,virtualization=on,gic-version={gic}"),
        "-cpu",
        "cortex-a57",
        "-m",
        "1024",
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
    use xenpal_examples::selftest;
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

/// `selftest NAME: WORD (...)` → `(NAME, WORD)`.
fn line_parts(line: &str) -> (String, String) {
    let rest = line.strip_prefix("selftest ").unwrap_or(line);
    let (name, tail) = rest.split_once(": ").unwrap_or((rest, ""));
    (
        name.to_string(),
        tail.split_whitespace().next().unwrap_or("").to_string(),
    )
}

fn qemu(a: QemuArgs) -> Result<bool, String> {
    let root = root();
    let run_name = format!(
        "{}-gic{}-xen{}{}",
        a.arch,
        a.gic,
        a.xen.as_str(),
        a.features
            .as_ref()
            .map(|f| format!("-{f}"))
            .unwrap_or_default()
    );
    let base = root.join("target/xenpal-qemu");
    let out = base.join("out").join(&run_name).join(&a.guest);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    println!("== {run_name}: building guest {}", a.guest);
    let elf = build_guest(&root, &a)?;
    let image = elf::to_flat(&std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?)?;
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
    boards::write(&out, &a.guest, &image)?;
    println!("== fetching Xen {} (arm64) from Debian", a.xen.as_str());
    let xen = fetch::xen_arm64(&base.join("cache"), a.xen)?;
    let base_dtb = dump_dtb(&out, a.gic)?;
    let domu = dtb::DomU {
        memory_kib: 128 * 1024,
        kernel_addr: KERNEL_ADDR,
        kernel_size: image.len() as u64,
        // Xen 4.17 panics on xen,enhanced without a dom0; 4.20 supports
        // "no-xenstore": grants and event channels with no dom0 at all.
        enhanced: (a.xen == XenVersion::V4_20).then_some("no-xenstore"),
        bootargs: "console=hvc0".into(),
    };
    let dtb = dtb::dom0less(&base_dtb, "loglvl=all guest_loglvl=all", &domu)?;
    let dtb_path = out.join("xen.dtb");
    std::fs::write(&dtb_path, &dtb).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args(machine_args(a.gic))
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&xen)
        .arg("-dtb")
        .arg(&dtb_path)
        .arg("-device")
        .arg(format!(
            "loader,file={},addr={KERNEL_ADDR:#x}",
            out.join("Image").display()
        ));
    println!(
        "== booting Xen {} + guest under qemu-system-aarch64 (GICv{}), timeout {:?}",
        a.xen.as_str(),
        a.gic,
        a.timeout
    );
    let log = out.join("qemu.log");
    let o = run::run(cmd, &log, a.timeout)?;
    for l in &o.guest_lines {
        println!("   | {l}");
    }
    if let Some(t) = o.first_line {
        println!(
            "   first guest line {:.2} s after QEMU started; verdict after {:.2} s",
            t.as_secs_f64(),
            o.elapsed.as_secs_f64()
        );
    }
    println!("   log: {}", log.display());
    if a.guest == "selftest" {
        let sim = sim_selftest();
        let qemu: Vec<(String, String)> = o
            .guest_lines
            .iter()
            .filter(|l| l.starts_with("selftest ") && !l.starts_with("selftest verdict"))
            .map(|l| line_parts(l))
            .collect();
        println!(
            "== side by side: {:<18} {:<10} QEMU {run_name}",
            "test", "simulator"
        );
        let mut names: Vec<&String> = qemu.iter().map(|(n, _)| n).collect();
        for (n, _) in &sim {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        for n in names {
            let find = |v: &Vec<(String, String)>| {
                v.iter()
                    .find(|(m, _)| m == n)
                    .map(|(_, w)| w.clone())
                    .unwrap_or_else(|| "-".into())
            };
            println!("   {:<30} {:<10} {}", n, find(&sim), find(&qemu));
        }
    }
    let passed = match &o.ending {
        run::Ending::Verdict(pass) => {
            let ok = *pass == a.expect_pass;
            println!(
                "== verdict: {} ({})",
                if *pass { "PASS" } else { "FAIL" },
                if ok { "as expected" } else { "NOT as expected" }
            );
            ok
        }
        other => {
            println!("== no verdict: {other:?}");
            false
        }
    };
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
        Some("qemu") => match parse(&args[1..]).and_then(qemu) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("xtask qemu: {e}\n{USAGE}");
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
        assert!(
            !parse(&s(&["--arch", "aarch64", "--expect", "fail"]))
                .unwrap()
                .expect_pass
        );
        assert_eq!(
            line_parts("selftest alarm: PASS (3 alarms)"),
            ("alarm".into(), "PASS".into())
        );
    }
}
